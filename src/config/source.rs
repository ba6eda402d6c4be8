//! Precedence, once for every setting: a flag beats the config file, which
//! beats the libpq variable, which beats the default. A connection string
//! in `--dbname` (or in `dbname` of the config file) comes right after the
//! explicit settings of the same layer, and a pg_service.conf service after
//! the config file, before the variables, as libpq orders them. The value
//! chosen remembers where it came from ([`Origin`]), for messages.

use std::fmt;

use anyhow::Result;

use super::setting::{Section, Setting};

/// Where a setting's value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A command-line flag, e.g. `--sslmode`.
    Flag(&'static str),
    /// A key of the config file.
    File { key: &'static str, section: Section },
    /// A keyword of a connection string or of a service, e.g. `host` in
    /// `--dbname 'host=db dbname=findings'`.
    Part { keyword: &'static str, of: Whole },
    /// A libpq variable, e.g. `PGSSLMODE`.
    Env(&'static str),
    /// Nothing set it.
    Default,
}

impl fmt::Display for Origin {
    /// The setting's name: "--sslmode", "mode in [alerts.postgres.tls]",
    /// "PGSSLMODE", "the default".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(flag) => f.write_str(flag),
            Origin::File { key, section } => write!(f, "{key} in {section}"),
            Origin::Part { keyword, of } => write!(f, "{keyword} in {of}"),
            Origin::Env(name) => f.write_str(name),
            Origin::Default => f.write_str("the default"),
        }
    }
}

/// What holds a set of libpq keywords.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Whole {
    /// A connection string or URI given to `--dbname`.
    DbnameFlag,
    /// A connection string or URI in `dbname` of the config file.
    DbnameFile,
    /// A service of a pg_service.conf: "service \"name\" of PATH". Leaked
    /// once per run, so that origins stay `Copy`.
    Service(&'static str),
}

impl fmt::Display for Whole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Whole::DbnameFlag => f.write_str("the connection string of --dbname"),
            Whole::DbnameFile => {
                f.write_str("the connection string of dbname in [alerts.postgres]")
            }
            Whole::Service(service) => f.write_str(service),
        }
    }
}

impl Whole {
    fn layer(self) -> Layer {
        match self {
            Whole::DbnameFlag => Layer::FlagPart,
            Whole::DbnameFile => Layer::FilePart,
            Whole::Service(_) => Layer::Service,
        }
    }
}

/// The libpq keywords of one connection string or service, in the order
/// written (a keyword given twice: the last one counts, as in libpq).
#[derive(Clone, Debug)]
pub struct Params {
    pub whole: Whole,
    pub values: Vec<(&'static str, String)>,
}

impl Params {
    pub fn get(&self, keyword: &str) -> Option<&str> {
        self.values
            .iter()
            .rev()
            .find(|(k, _)| *k == keyword)
            .map(|(_, v)| v.as_str())
    }
}
impl Origin {
    /// The setting with its value, as the user wrote it: "--sslcert
    /// /c.pem", "client_cert = \"/c.pem\" in [alerts.postgres.tls]",
    /// "PGSSLCERT=/c.pem".
    pub fn show(&self, value: &str) -> String {
        match self {
            Origin::Flag(flag) => format!("{flag} {value}"),
            Origin::Env(name) => format!("{name}={value}"),
            Origin::Part { keyword, of } => format!("{keyword}={value} in {of}"),
            Origin::File { .. } | Origin::Default => self.show_quoted(value),
        }
    }

    /// The same with the value quoted, for a value that is wrong: a stray
    /// space or an empty value shows.
    pub fn show_quoted(&self, value: &str) -> String {
        match self {
            Origin::Flag(flag) => format!("{flag} {value:?}"),
            Origin::File { key, section } => format!("{key} = {value:?} in {section}"),
            Origin::Env(name) => format!("{name}={value:?}"),
            Origin::Part { keyword, of } => format!("{keyword}={value:?} in {of}"),
            Origin::Default => format!("{value:?} (the default)"),
        }
    }
}

/// A value and where it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sourced<T> {
    pub value: T,
    pub origin: Origin,
}

impl<T: fmt::Display> fmt::Display for Sourced<T> {
    /// The value alone.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt(f)
    }
}

/// The layers in the order they are offered, strongest first.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Layer {
    Flag,
    FlagPart,
    File,
    FilePart,
    Service,
    Env,
}

/// Picks one setting's value: offer the layers strongest first, and the
/// first one set wins. A layer that needs parsing is parsed only when it
/// wins, so a bad value that is overridden is no error.
pub struct Precedence<T> {
    setting: &'static Setting,
    chosen: Option<Sourced<T>>,
    /// The last layer offered, to catch layers offered out of order.
    reached: Layer,
}

impl<T> Precedence<T> {
    pub fn of(setting: &'static Setting) -> Precedence<T> {
        Precedence {
            setting,
            chosen: None,
            reached: Layer::Flag,
        }
    }

    pub fn flag(self, value: Option<T>) -> Precedence<T> {
        let origin = Origin::Flag(self.setting.flag);
        self.offer(Layer::Flag, origin, value)
    }

    /// The setting's own key in the config file.
    pub fn file(self, value: Option<T>) -> Precedence<T> {
        let key = self.setting.key;
        self.file_key(key, value)
    }

    /// Another key of the setting's section that sets it too.
    pub fn file_key(self, key: &'static str, value: Option<T>) -> Precedence<T> {
        let origin = self.file_origin(key);
        self.offer(Layer::File, origin, value)
    }

    pub fn try_file<R>(
        self,
        raw: Option<R>,
        parse: impl FnOnce(R, Origin) -> Result<T>,
    ) -> Result<Precedence<T>> {
        let origin = self.file_origin(self.setting.key);
        self.try_offer(Layer::File, origin, raw, parse)
    }

    /// The setting's keyword in `params`, taken as it is.
    pub fn part(self, params: Option<&Params>, map: impl FnOnce(String) -> T) -> Precedence<T> {
        self.try_part(params, |text, _| Ok(map(text)))
            .expect("taking a value as it is cannot fail")
    }

    /// The setting's keyword in `params` (if any), parsed when it wins.
    pub fn try_part(
        self,
        params: Option<&Params>,
        parse: impl FnOnce(String, Origin) -> Result<T>,
    ) -> Result<Precedence<T>> {
        let Some(params) = params else {
            return Ok(self);
        };
        let keyword = self
            .setting
            .keyword
            .expect("only settings with a libpq keyword are offered parts");
        let origin = Origin::Part {
            keyword,
            of: params.whole,
        };
        let value = params.get(keyword).map(str::to_owned);
        self.try_offer(params.whole.layer(), origin, value, parse)
    }

    pub fn env(self, value: Option<T>) -> Precedence<T> {
        let origin = self.env_origin();
        self.offer(Layer::Env, origin, value)
    }

    pub fn try_env<R>(
        self,
        raw: Option<R>,
        parse: impl FnOnce(R, Origin) -> Result<T>,
    ) -> Result<Precedence<T>> {
        let origin = self.env_origin();
        self.try_offer(Layer::Env, origin, raw, parse)
    }

    /// The value chosen, if any layer was set.
    pub fn get(self) -> Option<Sourced<T>> {
        self.chosen
    }

    /// The value chosen, or `value` from [`Origin::Default`].
    pub fn or_default(self, value: T) -> Sourced<T> {
        self.chosen.unwrap_or(Sourced {
            value,
            origin: Origin::Default,
        })
    }

    fn file_origin(&self, key: &'static str) -> Origin {
        Origin::File {
            key,
            section: self.setting.section,
        }
    }

    fn env_origin(&self) -> Origin {
        Origin::Env(
            self.setting
                .env
                .expect("only settings with a libpq variable are offered one"),
        )
    }

    fn offer(self, layer: Layer, origin: Origin, value: Option<T>) -> Precedence<T> {
        self.try_offer(layer, origin, value, |value, _| Ok(value))
            .expect("taking a value as it is cannot fail")
    }

    fn try_offer<R>(
        mut self,
        layer: Layer,
        origin: Origin,
        raw: Option<R>,
        parse: impl FnOnce(R, Origin) -> Result<T>,
    ) -> Result<Precedence<T>> {
        debug_assert!(
            layer >= self.reached,
            "{layer:?} offered after {:?}",
            self.reached
        );
        self.reached = layer;
        if self.chosen.is_none()
            && let Some(raw) = raw
        {
            let value = parse(raw, origin)?;
            self.chosen = Some(Sourced { value, origin });
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::super::setting::{HOST, PORT, SCHEMA, SSLMODE};
    use super::*;

    fn host(flag: Option<&str>, file: Option<&str>, env: Option<&str>) -> Sourced<String> {
        let owned = |value: Option<&str>| value.map(str::to_owned);
        Precedence::of(&HOST)
            .flag(owned(flag))
            .file(owned(file))
            .env(owned(env))
            .or_default("localhost".to_owned())
    }

    #[test]
    fn flag_beats_file_beats_env_beats_default() {
        let all = host(Some("f"), Some("c"), Some("e"));
        assert_eq!(all.value, "f");
        assert_eq!(all.origin, Origin::Flag("--host"));
        let no_flag = host(None, Some("c"), Some("e"));
        assert_eq!(no_flag.value, "c");
        assert_eq!(no_flag.origin.to_string(), "host in [alerts.postgres]");
        let env_only = host(None, None, Some("e"));
        assert_eq!(env_only.value, "e");
        assert_eq!(env_only.origin, Origin::Env("PGHOST"));
        let none = host(None, None, None);
        assert_eq!(none.value, "localhost");
        assert_eq!(none.origin.to_string(), "the default");
    }

    #[test]
    fn a_layer_is_parsed_only_when_it_wins() {
        let bad = || Some("not a port");
        let parse = |text: &str, origin: Origin| -> Result<u16> {
            text.parse()
                .map_err(|_| anyhow::anyhow!("{} is not a port number", origin.show_quoted(text)))
        };
        let port = Precedence::of(&PORT)
            .flag(Some(6432))
            .try_env(bad(), parse)
            .expect("an overridden variable is not parsed")
            .or_default(5432);
        assert_eq!((port.value, port.origin), (6432, Origin::Flag("--port")));
        let err = Precedence::of(&PORT)
            .flag(None)
            .try_env(bad(), parse)
            .err()
            .expect("the variable wins and is parsed");
        assert_eq!(
            err.to_string(),
            "PGPORT=\"not a port\" is not a port number"
        );
    }

    #[test]
    fn another_key_of_the_section_remembers_its_name() {
        let mode = Precedence::of(&SSLMODE)
            .flag(None)
            .file(None)
            .file_key("enabled", Some(true))
            .env(Some(false))
            .or_default(false);
        assert!(mode.value);
        assert_eq!(mode.origin.to_string(), "enabled in [alerts.postgres.tls]");
    }

    #[test]
    fn origins_show_values_as_written() {
        let file = Origin::File {
            key: SCHEMA.key,
            section: SCHEMA.section,
        };
        assert_eq!(file.show("a b"), "schema = \"a b\" in [alerts.postgres]");
        assert_eq!(Origin::Env("PGSSLKEY").show("/k.pem"), "PGSSLKEY=/k.pem");
        assert_eq!(Origin::Flag("--sslcert").show("/c.pem"), "--sslcert /c.pem");
        assert_eq!(Origin::Env("PGSSLMODE").show_quoted("x"), "PGSSLMODE=\"x\"");
    }
}
