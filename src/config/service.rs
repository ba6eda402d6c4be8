//! libpq's connection service file: `[name]` sections of `keyword=value`
//! lines, looked up in the user's file (PGSERVICEFILE, else
//! ~/.pg_service.conf) and then in the system's (pg_service.conf in
//! PGSYSCONFDIR, else in Debian's /etc/postgresql-common); the first file
//! that has the service gives all of it, as in libpq.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::conninfo;
use super::source::{Params, Whole};

/// Where libpq looks when PGSYSCONFDIR is not set: `pg_config --sysconfdir`
/// of Debian's packages.
const SYSCONFDIR: &str = "/etc/postgresql-common";

/// The variables that place the files.
pub struct Places<'a> {
    pub servicefile: Option<&'a str>,
    pub sysconfdir: Option<&'a str>,
    pub home: Option<&'a str>,
}

impl Places<'_> {
    fn files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        match (self.servicefile, self.home) {
            (Some(file), _) => files.push(PathBuf::from(file)),
            (None, Some(home)) => files.push(Path::new(home).join(".pg_service.conf")),
            (None, None) => {}
        }
        let sysconfdir = self.sysconfdir.unwrap_or(SYSCONFDIR);
        files.push(Path::new(sysconfdir).join("pg_service.conf"));
        files
    }
}

/// The keywords of service `name`; an error naming the files looked in when
/// none has it.
pub fn lookup(name: &str, places: &Places) -> Result<Params> {
    let files = places.files();
    for file in &files {
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            // Named by PGSERVICEFILE, it must be there, as libpq says.
            Err(err)
                if err.kind() == ErrorKind::NotFound
                    && places
                        .servicefile
                        .is_some_and(|named| Path::new(named) == file) =>
            {
                bail!(
                    "service file {} not found (from PGSERVICEFILE), looking for service {name:?}",
                    file.display()
                );
            }
            Err(err) if err.kind() == ErrorKind::NotFound => continue,
            Err(err) => {
                return Err(err)
                    .with_context(|| format!("cannot read service file {}", file.display()));
            }
        };
        // Leaked once per run: an origin names it for as long as the run.
        let described: &'static str =
            Box::leak(format!("service {name:?} of {}", file.display()).into_boxed_str());
        if let Some(params) = section(&text, name, file, Whole::Service(described))? {
            log::debug!("using {described}");
            if params.get("password").is_some() {
                super::secret::warn_if_inline_password_readable(
                    "service file",
                    file,
                    &format!("service {name:?}"),
                );
            }
            return Ok(params);
        }
    }
    let looked: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    bail!(
        "service {name:?} is not defined in {} (set PGSERVICEFILE to the file that \
         defines it, or check --service and PGSERVICE)",
        looked.join(" nor in ")
    )
}

/// The keywords of `[name]` in `text`, None when it has no such section.
fn section(text: &str, name: &str, file: &Path, whole: Whole) -> Result<Option<Params>> {
    let mut found = false;
    let mut values = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(header) = line.strip_prefix('[') {
            if found {
                break;
            }
            found = header.strip_suffix(']') == Some(name);
            continue;
        }
        if !found {
            continue;
        }
        let at = || format!("{}, line {}", file.display(), index + 1);
        let Some((keyword, value)) = line.split_once('=') else {
            bail!("{}: not keyword=value", at());
        };
        let keyword = keyword.trim();
        if keyword == "service" {
            bail!("{}: a service cannot name another service", at());
        }
        if let Some(keyword) = conninfo::known(keyword, &whole).with_context(at)? {
            values.push((keyword, value.trim().to_owned()));
        }
    }
    Ok(found.then_some(Params { whole, values }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# comment\n[other]\nhost=elsewhere\n\n[loader]\n  host = db.internal \n\
                        port=6432\n# inside\nkeepalives=1\ndbname=findings\n[next]\nuser=x\n";

    fn whole() -> Whole {
        Whole::Service("test")
    }

    #[test]
    fn the_named_section_only() {
        let params = section(FILE, "loader", Path::new("f"), whole())
            .unwrap()
            .unwrap();
        assert_eq!(
            params.values,
            vec![
                ("host", "db.internal".to_owned()),
                ("port", "6432".to_owned()),
                ("dbname", "findings".to_owned())
            ]
        );
        assert!(
            section(FILE, "missing", Path::new("f"), whole())
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn bad_lines_are_errors_with_their_line() {
        let err = section("[s]\nhost\n", "s", Path::new("f"), whole()).unwrap_err();
        assert!(format!("{err:#}").contains("f, line 2"), "{err:#}");
        assert!(section("[s]\nservice=t\n", "s", Path::new("f"), whole()).is_err());
        assert!(section("[s]\nhots=t\n", "s", Path::new("f"), whole()).is_err());
    }

    #[test]
    fn user_file_then_system_file() {
        let places = Places {
            servicefile: None,
            sysconfdir: Some("/etc/pg"),
            home: Some("/home/u"),
        };
        assert_eq!(
            places.files(),
            vec![
                PathBuf::from("/home/u/.pg_service.conf"),
                PathBuf::from("/etc/pg/pg_service.conf")
            ]
        );
        let places = Places {
            servicefile: Some("/s.conf"),
            sysconfdir: None,
            home: Some("/home/u"),
        };
        assert_eq!(
            places.files(),
            vec![
                PathBuf::from("/s.conf"),
                PathBuf::from("/etc/postgresql-common/pg_service.conf")
            ]
        );
    }

    #[test]
    fn a_service_file_named_and_missing_is_said_so() {
        let missing = "/nonexistent/pg_service.conf";
        let places = Places {
            servicefile: Some(missing),
            sysconfdir: Some("/nonexistent"),
            home: None,
        };
        let err = lookup("loader", &places).expect_err("no file").to_string();
        assert!(
            err.contains(&format!(
                "service file {missing} not found (from PGSERVICEFILE)"
            )),
            "{err}"
        );
        // The files looked in by default may be missing.
        let places = Places {
            servicefile: None,
            ..places
        };
        let err = lookup("loader", &places).expect_err("no file").to_string();
        assert!(err.contains("is not defined in"), "{err}");
    }
}
