//! libpq's connection strings, in both forms: `keyword=value` pairs
//! (`host=db dbname=findings user=loader`) and URIs
//! (`postgresql://loader@db:5432/findings?sslmode=verify-full`), as psql
//! takes them in place of a database name; and the keyword table they share
//! with pg_service.conf ([`service`](super::service)).
//!
//! postgres::Config parses both forms too, but does not fit here: it refuses
//! libpq's sslmodes allow, verify-ca and verify-full and the keywords
//! sslrootcert, sslcert, sslkey, passfile and service, and it gives a URI
//! host without a port the port 5432, where libpq leaves the port unset (so
//! that PGPORT or --port still apply). The parse here keeps libpq's
//! meaning. Error messages never quote the string: it may hold a password.

use anyhow::{Result, bail};

use super::source::{Params, Whole};

/// The libpq keywords pgsense-pg uses (see README, "libpq's conventions").
pub const HONOURED: &[&str] = &[
    "host",
    "port",
    "dbname",
    "user",
    "password",
    "passfile",
    "connect_timeout",
    "application_name",
    "options",
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "target_session_attrs",
    "service",
    // psql's own fallback name wins over a connection string's, and so
    // does pgsense-pg's: accepted, and not a reason for a warning.
    "fallback_application_name",
];

/// libpq keywords pgsense-pg does not use: accepted with a warning, so that a
/// service file shared with psql still works.
pub const NOT_USED: &[&str] = &[
    "hostaddr",
    "require_auth",
    "channel_binding",
    "client_encoding",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "replication",
    "gssencmode",
    "requiressl",
    "sslnegotiation",
    "sslcompression",
    "sslpassword",
    "sslcertmode",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "sslkeylogfile",
    "requirepeer",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "min_protocol_version",
    "max_protocol_version",
    "krbsrvname",
    "gsslib",
    "gssdelegation",
    "load_balance_hosts",
];

/// Whether `text` is a connection string rather than a database name, by
/// psql's rule: it has an `=` or starts with a URI prefix.
pub fn is_conninfo(text: &str) -> bool {
    text.contains('=') || uri_rest(text).is_some()
}

/// The keywords of a connection string or URI.
pub fn parse(text: &str, whole: Whole) -> Result<Params> {
    // After an unquoted password with a space in it (or, in a URI's query,
    // with an "&"), the "keyword" may be the password's tail: it is not
    // shown. In a URI only a parameter after a `password=` one can be (the
    // user info's password is percent-encoded).
    let (pairs, password_at) = match uri_rest(text) {
        Some(rest) => {
            let (pairs, query) = parse_uri(rest)?;
            let password_at = pairs[query..]
                .iter()
                .position(|(keyword, _)| keyword == "password")
                .map(|at| query + at);
            (pairs, password_at)
        }
        None => {
            let pairs = parse_pairs(text)?;
            let password = pairs.iter().any(|(keyword, _)| keyword == "password");
            (pairs, password.then_some(0))
        }
    };
    let mut values = Vec::new();
    for (index, (keyword, value)) in pairs.into_iter().enumerate() {
        if password_at.is_some_and(|at| index >= at)
            && !HONOURED.contains(&keyword.as_str())
            && !NOT_USED.contains(&keyword.as_str())
        {
            bail!(
                "keyword number {} is not a libpq connection keyword \
                 (a password with spaces must be quoted: password='...')",
                index + 1
            );
        }
        if let Some(keyword) = known(&keyword, &whole)? {
            values.push((keyword, value));
        }
    }
    Ok(Params { whole, values })
}

/// The keyword as a `'static` name from the tables; None (with a warning)
/// for one pgsense-pg does not use; an error for one libpq does not know.
pub fn known(keyword: &str, whole: &Whole) -> Result<Option<&'static str>> {
    if let Some(known) = HONOURED.iter().find(|k| **k == keyword) {
        return Ok(Some(known));
    }
    if NOT_USED.contains(&keyword) {
        log::warn!("{keyword} in {whole} is not used by pgsense-pg");
        return Ok(None);
    }
    bail!("{keyword:?} is not a libpq connection keyword")
}

fn uri_rest(text: &str) -> Option<&str> {
    ["postgresql://", "postgres://"]
        .iter()
        .find_map(|prefix| text.strip_prefix(prefix))
}

/// `keyword = value` pairs separated by spaces; a value may be quoted with
/// `'`, and `\` escapes the next character, as in libpq.
fn parse_pairs(text: &str) -> Result<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut keyword = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            keyword.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            // Not the word itself: it may be the tail of an unquoted password.
            bail!(
                "missing \"=\" after keyword number {} of the connection string",
                pairs.len() + 1
            );
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\'') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                    None => bail!("unterminated quoted value of {keyword:?}"),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((keyword, value));
    }
}

/// `[user[:password]@][host[:port][,...]][/dbname][?keyword=value&...]`,
/// percent-decoded.
/// The keywords of a URI (after its prefix), and the index of the first
/// of its query's.
fn parse_uri(rest: &str) -> Result<(Vec<(String, String)>, usize)> {
    let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = before_query.split_once('/').unwrap_or((before_query, ""));
    if path.contains('@') {
        // The "/" was part of the user name or password, which a port
        // or host message would then show.
        bail!(
            "the URI has an \"@\" after its first \"/\": a \"/\" in a user name or \
             password must be percent-encoded, as %2F"
        );
    }
    let mut pairs = Vec::new();
    let hostspec = match authority.rsplit_once('@') {
        Some((userinfo, hostspec)) => {
            let (user, password) = match userinfo.split_once(':') {
                Some((user, password)) => (user, Some(password)),
                None => (userinfo, None),
            };
            if !user.is_empty() {
                pairs.push(("user".to_owned(), decode(user, "user")?));
            }
            if let Some(password) = password {
                pairs.push(("password".to_owned(), decode(password, "password")?));
            }
            hostspec
        }
        None => authority,
    };
    pairs.extend(hosts_and_ports(hostspec)?);
    if !path.is_empty() {
        pairs.push(("dbname".to_owned(), decode(path, "dbname")?));
    }
    let first_of_query = pairs.len();
    for param in query.split('&').filter(|p| !p.is_empty()) {
        let Some((keyword, value)) = param.split_once('=') else {
            bail!("a URI parameter has no \"=\"");
        };
        let keyword = decode(keyword, "a parameter name")?;
        let value = decode(value, &keyword)?;
        pairs.push((keyword, value));
    }
    Ok((pairs, first_of_query))
}

/// `host=a,b` and, when any host has one, `port=p,q` (an entry without a
/// port is empty: the default).
fn hosts_and_ports(hostspec: &str) -> Result<Vec<(String, String)>> {
    if hostspec.is_empty() {
        return Ok(Vec::new());
    }
    let mut hosts = Vec::new();
    let mut ports = Vec::new();
    for entry in hostspec.split(',') {
        let (host, port) = if let Some(inner) = entry.strip_prefix('[') {
            let Some((host, after)) = inner.split_once(']') else {
                bail!("an IPv6 address in the URI lacks its \"]\"");
            };
            match after.strip_prefix(':') {
                Some(port) => (host, port),
                None if after.is_empty() => (host, ""),
                None => bail!("unexpected text after an IPv6 address in the URI"),
            }
        } else {
            entry.split_once(':').unwrap_or((entry, ""))
        };
        hosts.push(decode(host, "host")?);
        ports.push(decode(port, "port")?);
    }
    let mut pairs = vec![("host".to_owned(), hosts.join(","))];
    if ports.iter().any(|port| !port.is_empty()) {
        pairs.push(("port".to_owned(), ports.join(",")));
    }
    Ok(pairs)
}

/// Percent-decoding; `what` names the part in an error (never its value).
fn decode(text: &str, what: &str) -> Result<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3).unwrap_or("");
            let Ok(byte) = u8::from_str_radix(hex, 16) else {
                bail!("invalid percent-encoding in the {what} of the URI");
            };
            // libpq refuses it too: no connection parameter holds a NUL.
            if byte == 0 {
                bail!(
                    "the {what} of the URI holds %00, a NUL byte, which no connection parameter can"
                );
            }
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| anyhow::anyhow!("the {what} of the URI is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(text: &str) -> Vec<(&'static str, String)> {
        parse(text, Whole::DbnameFlag).unwrap().values
    }

    fn owned(list: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        list.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
    }

    #[test]
    fn keyword_value_pairs_with_quotes_and_escapes() {
        assert_eq!(
            pairs("host=db  dbname = findings user='lo ader' password='it\\'s'"),
            owned(&[
                ("host", "db"),
                ("dbname", "findings"),
                ("user", "lo ader"),
                ("password", "it's")
            ])
        );
        assert_eq!(pairs("host=''"), owned(&[("host", "")]));
        assert!(parse("host", Whole::DbnameFlag).is_err());
        let err = parse("password=two words", Whole::DbnameFlag).unwrap_err();
        assert!(!format!("{err:#}").contains("words"), "{err:#}");
        let err = parse("password='secret", Whole::DbnameFlag).unwrap_err();
        assert!(!format!("{err:#}").contains("secret"), "{err:#}");
        assert!(parse("hots=db", Whole::DbnameFlag).is_err());
    }

    #[test]
    fn uris_as_libpq_reads_them() {
        assert_eq!(
            pairs("postgresql://lo%40der:p%3Ass@db.internal:6432/find%20ings?sslmode=verify-full"),
            owned(&[
                ("user", "lo@der"),
                ("password", "p:ss"),
                ("host", "db.internal"),
                ("port", "6432"),
                ("dbname", "find ings"),
                ("sslmode", "verify-full"),
            ])
        );
        // A host without a port leaves the port unset; a list keeps its
        // places.
        assert_eq!(
            pairs("postgres://db/x"),
            owned(&[("host", "db"), ("dbname", "x")])
        );
        assert_eq!(
            pairs("postgresql://a,[::1]:5433,c:5434"),
            owned(&[("host", "a,::1,c"), ("port", ",5433,5434")])
        );
        assert_eq!(
            pairs("postgresql:///findings?host=%2Frun%2Fpostgresql"),
            owned(&[("dbname", "findings"), ("host", "/run/postgresql")])
        );
        assert_eq!(pairs("postgresql://"), owned(&[]));
        assert!(parse("postgresql://db/x?nonsense=1", Whole::DbnameFlag).is_err());
        assert!(parse("postgresql://db/%zz", Whole::DbnameFlag).is_err());
        let Err(nul) = parse("postgresql://db/find%00ings", Whole::DbnameFlag) else {
            panic!("a NUL is refused");
        };
        assert!(nul.to_string().contains("%00"), "{nul}");
    }

    #[test]
    fn unused_keywords_are_dropped() {
        assert_eq!(
            pairs("host=db keepalives=0 fallback_application_name=x"),
            owned(&[("host", "db"), ("fallback_application_name", "x")])
        );
    }

    #[test]
    fn conninfo_or_database_name() {
        assert!(is_conninfo("host=db"));
        assert!(is_conninfo("postgresql://db"));
        assert!(is_conninfo("postgres://"));
        assert!(!is_conninfo("findings"));
        assert!(!is_conninfo("postgresql:/x"));
    }
}
