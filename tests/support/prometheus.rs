//! A checking parser of the Prometheus text exposition format, as
//! node_exporter's textfile collector reads it.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

/// One sample of the Prometheus text format.
#[derive(Debug)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A file in the Prometheus text exposition format, checked as
/// node_exporter's textfile collector would: every sample's metric has a
/// TYPE line before it (and a HELP line), each family's samples are
/// together, no series twice, a newline at the end.
#[derive(Debug, Default)]
pub struct Exposition {
    pub help: BTreeMap<String, String>,
    pub kind: BTreeMap<String, String>,
    pub samples: Vec<Sample>,
}

impl Exposition {
    pub fn parse(text: &str) -> Result<Exposition, String> {
        if !text.is_empty() && !text.ends_with('\n') {
            return Err("the last line does not end with a newline".into());
        }
        let mut exposition = Exposition::default();
        let mut families: Vec<String> = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let at = |e: String| format!("line {}: {e}: {line:?}", index + 1);
            if line.trim().is_empty() {
                continue;
            }
            if let Some(comment) = line.strip_prefix('#') {
                let comment = comment.trim_start();
                if let Some(rest) = comment.strip_prefix("HELP ") {
                    let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
                    metric_name(name).map_err(at)?;
                    if exposition.help.insert(name.into(), help.into()).is_some() {
                        return Err(at("a second HELP".into()));
                    }
                } else if let Some(rest) = comment.strip_prefix("TYPE ") {
                    let (name, kind) = rest
                        .split_once(' ')
                        .ok_or_else(|| at("TYPE without a type".into()))?;
                    metric_name(name).map_err(at)?;
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(at(format!("unknown type {kind:?}")));
                    }
                    if families.iter().any(|f| f == name) {
                        return Err(at("TYPE after samples of its metric".into()));
                    }
                    if exposition.kind.insert(name.into(), kind.into()).is_some() {
                        return Err(at("a second TYPE".into()));
                    }
                }
                continue;
            }
            let sample = parse_sample(line).map_err(at)?;
            let family = exposition.family(&sample.name);
            if !exposition.kind.contains_key(&family) {
                return Err(at(format!("no TYPE line for {family} before it")));
            }
            if families.last() != Some(&family) {
                if families.contains(&family) {
                    return Err(at(format!("samples of {family} are not together")));
                }
                families.push(family);
            }
            if exposition
                .samples
                .iter()
                .any(|s| s.name == sample.name && s.labels == sample.labels)
            {
                return Err(at("the same series twice".into()));
            }
            exposition.samples.push(sample);
        }
        if let Some(name) = exposition
            .kind
            .keys()
            .find(|name| !exposition.help.contains_key(*name))
        {
            return Err(format!("{name} has a TYPE line but no HELP line"));
        }
        Ok(exposition)
    }

    /// The metric a sample belongs to (a histogram's `_bucket` belongs to
    /// the histogram).
    fn family(&self, name: &str) -> String {
        if !self.kind.contains_key(name) {
            for suffix in ["_bucket", "_sum", "_count"] {
                if let Some(base) = name.strip_suffix(suffix)
                    && matches!(
                        self.kind.get(base).map(String::as_str),
                        Some("histogram" | "summary")
                    )
                {
                    return base.into();
                }
            }
        }
        name.into()
    }

    /// The value of the series `name{labels}`, or a panic.
    #[track_caller]
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == labels)
            .unwrap_or_else(|| panic!("no series {name}{labels:?} in {:#?}", self.samples))
            .value
    }
}

pub fn metric_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    valid
        .then_some(())
        .ok_or_else(|| format!("invalid metric name {name:?}"))
}

pub fn label_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    valid
        .then_some(())
        .ok_or_else(|| format!("invalid label name {name:?}"))
}

/// `name{label="value",...} value [timestamp]`.
pub fn parse_sample(line: &str) -> Result<Sample, String> {
    let end = line
        .find(['{', ' ', '\t'])
        .ok_or("a sample without a value")?;
    let name = &line[..end];
    metric_name(name)?;
    let mut rest = &line[end..];
    let mut labels = BTreeMap::new();
    if let Some(mut inside) = rest.strip_prefix('{') {
        loop {
            inside = inside.trim_start();
            if let Some(after) = inside.strip_prefix('}') {
                inside = after;
                break;
            }
            let (label, after) = inside.split_once('=').ok_or("a label without =")?;
            let label = label.trim();
            label_name(label)?;
            let mut chars = after
                .trim_start()
                .strip_prefix('"')
                .ok_or("a label value not in double quotes")?
                .chars();
            let mut value = String::new();
            loop {
                match chars.next() {
                    None => return Err("an unterminated label value".into()),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some('n') => value.push('\n'),
                        other => return Err(format!("a bad escape \\{other:?}")),
                    },
                    Some(c) => value.push(c),
                }
            }
            if labels.insert(label.to_owned(), value).is_some() {
                return Err(format!("label {label} twice"));
            }
            inside = chars.as_str().trim_start();
            if let Some(after) = inside.strip_prefix(',') {
                inside = after;
            } else if !inside.starts_with('}') {
                return Err("expected , or } after a label".into());
            }
        }
        rest = inside;
    }
    if !rest.starts_with([' ', '\t']) {
        return Err("no space before the value".into());
    }
    let mut fields = rest.split_whitespace();
    let value = fields.next().ok_or("no value")?;
    let value = match value {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        _ => value
            .parse()
            .map_err(|_| format!("value {value:?} is not a number"))?,
    };
    if let Some(timestamp) = fields.next() {
        timestamp
            .parse::<i64>()
            .map_err(|_| format!("timestamp {timestamp:?} is not an integer"))?;
    }
    if fields.next().is_some() {
        return Err("text after the timestamp".into());
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Reads and parses a metrics file, or panics with its text.
#[track_caller]
pub fn read_metrics(path: &Path) -> Exposition {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    Exposition::parse(&text)
        .unwrap_or_else(|e| panic!("{} is not Prometheus text: {e}\n{text}", path.display()))
}
