//! Unit tests of settings resolution: precedence and origins, files and
//! secrets, and libpq's conventions.

mod resolve {
    use super::super::*;
    use clap::Parser;
    use source::Origin;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    fn no_env() -> PgEnv {
        PgEnv::default()
    }

    fn global(args: &[&str]) -> GlobalArgs {
        let mut argv = vec!["pgsense-pg"];
        argv.extend_from_slice(args);
        argv.push("init");
        crate::cli::Cli::try_parse_from(argv).unwrap().global
    }

    /// A scratch directory for config and secret files, removed on Drop.
    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Dir {
            let dir =
                std::env::temp_dir().join(format!("pgsense-pg-unit-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir(&dir).unwrap();
            Dir(dir)
        }

        fn write(&self, name: &str, text: &str, mode: u32) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            path
        }

        fn path(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn with_config(dir: &Dir, text: &str, args: &[&str], env: &PgEnv) -> Result<Settings> {
        let config = dir.write("config.toml", text, 0o600);
        let mut argv = vec!["-c", config.to_str().unwrap()];
        argv.extend_from_slice(args);
        resolve(&global(&argv), env)
    }

    /// An empty value is no value, as libpq takes it: the next source or
    /// the default applies, and an empty password does not keep .pgpass
    /// from being read.
    #[test]
    fn empty_values_are_unset() {
        let dir = Dir::new("empty");
        let text = "[alerts.postgres]\nusername = \"\"\ndbname = \"\"\npassword = \"\"\n";
        let settings = with_config(&dir, text, &[], &no_env()).unwrap();
        assert_eq!(settings.username.value, "postgres");
        assert_eq!(settings.dbname.value, "postgres");
        assert!(settings.password.for_host(0).is_none());
        let env = PgEnv {
            user: Some("loader".into()),
            dbname: Some(String::new()),
            ..PgEnv::default()
        };
        let settings = with_config(&dir, text, &["--username", ""], &env).unwrap();
        assert_eq!(settings.username.value, "loader");
        assert_eq!(settings.dbname.value, "postgres");
        let env = PgEnv {
            password: Some(String::new()),
            ..PgEnv::default()
        };
        let settings = with_config(&dir, text, &["--dbname", "password="], &env).unwrap();
        assert!(settings.password.for_host(0).is_none());
        // As libpq: an empty user or dbname in a connection string is the
        // default, not PGUSER (a given keyword keeps the variable out).
        let env = PgEnv {
            user: Some("loader".into()),
            dbname: Some("findings".into()),
            ..PgEnv::default()
        };
        let settings = with_config(&dir, text, &["--dbname", "user='' dbname=''"], &env).unwrap();
        assert_eq!(settings.username.value, "postgres");
        assert_eq!(settings.dbname.value, "postgres");
        let env = PgEnv {
            password: Some("from-env".into()),
            ..PgEnv::default()
        };
        let settings = with_config(&dir, text, &[], &env).unwrap();
        assert_eq!(
            settings
                .password
                .for_host(0)
                .cloned()
                .map(|p| p.secret.expose().to_owned())
                .as_deref(),
            Some("from-env")
        );
    }

    #[test]
    fn a_password_file_table_takes_no_other_key() {
        let dir = Dir::new("pwkeys");
        let secret = dir.write("pw", "hunter2\n", 0o600);
        let text = format!(
            "[alerts.postgres]\npassword = {{ file = {:?}, mode = \"x\" }}\n",
            secret.to_str().unwrap()
        );
        let err = with_config(&dir, &text, &[], &no_env())
            .err()
            .expect("an error");
        assert!(format!("{err:#}").contains("no other key"), "{err:#}");
        let text = format!(
            "[alerts.postgres]\npassword = {{ file = {:?} }}\n",
            secret.to_str().unwrap()
        );
        let settings = with_config(&dir, &text, &[], &no_env()).unwrap();
        assert_eq!(
            settings
                .password
                .for_host(0)
                .cloned()
                .map(|p| p.secret.expose().to_owned())
                .as_deref(),
            Some("hunter2")
        );
    }

    #[test]
    fn defaults_then_env_then_flags() {
        let s = resolve(&global(&[]), &no_env()).unwrap();
        assert_eq!(
            (
                s.hosts.value.join(","),
                s.ports.value[0],
                s.dbname.value.as_str(),
                s.username.value.as_str()
            ),
            ("localhost".to_owned(), 5432, "postgres", "postgres")
        );
        assert_eq!(
            (s.schema.value.as_str(), s.table.value.as_str()),
            ("pgsense", "findings")
        );
        assert_eq!(s.tls.mode.value, SslMode::Prefer);
        let env = PgEnv {
            host: Some("envhost".into()),
            port: Some("6543".into()),
            ..no_env()
        };
        let s = resolve(&global(&["--host", "flaghost"]), &env).unwrap();
        assert_eq!(
            (s.hosts.value.join(","), s.ports.value[0]),
            ("flaghost".into(), 6543)
        );
        assert_eq!(
            (s.hosts.origin, s.ports.origin),
            (Origin::Flag("--host"), Origin::Env("PGPORT"))
        );
    }

    #[test]
    fn identifiers_are_checked() {
        assert!(check_identifier("table", "findings_2026").is_ok());
        for bad in ["", "a-b", "a.b", "a\"b", "é", &"x".repeat(64)] {
            assert!(check_identifier("table", bad).is_err(), "{bad}");
        }
        assert!(check_identifier("table", &"x".repeat(63)).is_ok());
    }

    #[test]
    fn sslmode_precedence_flag_then_config_then_env() {
        let dir = Dir::new("sslmode");
        let env = PgEnv {
            sslmode: Some("require".into()),
            ..no_env()
        };
        let mode = |config: &str, args: &[&str], env: &PgEnv| {
            let s = with_config(&dir, &format!("[alerts.postgres]\n{config}"), args, env).unwrap();
            (s.tls.mode.value, s.tls.mode.origin.to_string())
        };
        assert_eq!(
            mode("", &[], &no_env()),
            (SslMode::Prefer, "the default".into())
        );
        assert_eq!(mode("", &[], &env), (SslMode::Require, "PGSSLMODE".into()));
        let enabled = "[alerts.postgres.tls]\nenabled = true";
        assert_eq!(mode(enabled, &[], &env).0, SslMode::VerifyFull);
        // The scanner's enabled = false is the default, prefer: it does not
        // weaken a mode set elsewhere.
        let disabled = "[alerts.postgres.tls]\nenabled = false";
        assert_eq!(
            mode(disabled, &[], &no_env()),
            (SslMode::Prefer, "the default".into())
        );
        assert_eq!(
            mode(disabled, &[], &env),
            (SslMode::Require, "PGSSLMODE".into())
        );
        // mode overrides enabled; the flag overrides both.
        let both = "[alerts.postgres.tls]\nenabled = true\nmode = \"disable\"";
        assert_eq!(mode(both, &[], &env).0, SslMode::Disable);
        assert_eq!(
            mode(both, &["--sslmode", "allow"], &env),
            (SslMode::Allow, "--sslmode".into())
        );
        // A tls table without enabled or mode leaves the choice to PGSSLMODE.
        let no_mode = "[alerts.postgres.tls]\ntrusted_root_certs = \"/nonexistent\"";
        assert_eq!(mode(no_mode, &[], &env).0, SslMode::Require);
    }

    #[test]
    fn bad_sslmodes_name_the_setting() {
        let dir = Dir::new("badmode");
        let env = PgEnv {
            sslmode: Some("verify_full".into()),
            ..no_env()
        };
        let err = resolve(&global(&[]), &env).err().unwrap().to_string();
        assert!(err.contains("PGSSLMODE=\"verify_full\""), "{err}");
        assert!(err.contains("verify-full"), "{err}");
        let err = with_config(
            &dir,
            "[alerts.postgres]\n[alerts.postgres.tls]\nmode = \"strict\"",
            &[],
            &no_env(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.contains("mode = \"strict\" in [alerts.postgres.tls]"),
            "{err}"
        );
        let err = with_config(
            &dir,
            "[alerts.postgres]\n[alerts.postgres.tls]\nverify = true",
            &[],
            &no_env(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("verify"), "{err}");
    }

    #[test]
    fn verify_ca_needs_a_root_certificate() {
        let err = resolve(&global(&["--sslmode", "verify-ca"]), &no_env())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("--sslrootcert"), "{err}");
        let err = resolve(
            &global(&["--sslmode", "verify-ca", "--sslrootcert", "system"]),
            &no_env(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("verify-full"), "{err}");
        // verify-full against the system's roots is the scanner's enabled = true.
        let s = resolve(&global(&["--sslmode", "verify-full"]), &no_env()).unwrap();
        assert!(matches!(s.tls.roots, Roots::System));
    }

    #[test]
    fn root_certificates_are_read_only_when_they_are_used() {
        let dir = Dir::new("roots");
        let env = PgEnv {
            sslrootcert: Some("/nonexistent/env-ca.pem".into()),
            ..no_env()
        };
        // Unused under prefer: not read, no error.
        assert!(resolve(&global(&[]), &env).is_ok());
        let err = resolve(&global(&["--sslmode", "verify-full"]), &env)
            .err()
            .unwrap();
        assert!(
            format!("{err:#}").contains("PGSSLROOTCERT=/nonexistent/env-ca.pem"),
            "{err:#}"
        );
        // The flag wins over the environment; a file without a certificate
        // is an error naming it.
        let empty = dir.write("empty.pem", "not a certificate\n", 0o644);
        let err = resolve(
            &global(&[
                "--sslmode",
                "verify-full",
                "--sslrootcert",
                empty.to_str().unwrap(),
            ]),
            &env,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.contains("--sslrootcert") && err.contains("no PEM certificate"),
            "{err}"
        );
        // Inline PEM in the config file is told apart from a path.
        let err = with_config(
            &dir,
            "[alerts.postgres]\n[alerts.postgres.tls]\nenabled = true\n\
             trusted_root_certs = \"-----BEGIN CERTIFICATE-----\\nAAAA\\n-----END CERTIFICATE-----\"",
            &[],
            &env,
        )
        .err()
        .unwrap();
        assert!(
            format!("{err:#}").contains("trusted_root_certs (inline PEM)"),
            "{err:#}"
        );
    }

    #[test]
    fn a_client_certificate_needs_its_key() {
        let err = resolve(&global(&["--sslcert", "/c.pem"]), &no_env())
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("--sslcert /c.pem") && err.contains("--sslkey"),
            "{err}"
        );
        let env = PgEnv {
            sslkey: Some("/k.pem".into()),
            ..no_env()
        };
        let err = resolve(&global(&[]), &env).err().unwrap().to_string();
        assert!(
            err.contains("PGSSLKEY=/k.pem") && err.contains("--sslcert"),
            "{err}"
        );
    }

    #[test]
    fn password_sources_in_order() {
        let dir = Dir::new("passwords");
        let flag_file = dir.write("flag-pw", "from-flag\n", 0o600);
        let config_file = dir.write("config-pw", "from-config-file \n", 0o600);
        dir.write(".pgpass", "*:*:*:*:from-pgpass\n", 0o600);
        let other_pgpass = dir.write(
            "other-pgpass",
            "localhost:5432:postgres:postgres:from-passfile\n",
            0o600,
        );
        let env = PgEnv {
            password: Some("from-env".into()),
            home: Some(dir.path().into()),
            ..no_env()
        };
        let password = |config: &str, args: &[&str], env: &PgEnv| {
            with_config(&dir, &format!("[alerts.postgres]\n{config}"), args, env)
                .unwrap()
                .password
                .for_host(0)
                .cloned()
                .map(|p| (p.secret.expose().to_owned(), p.origin))
        };
        let flag = ["--password-file", flag_file.to_str().unwrap()];
        let file_ref = format!("password = {{ file = \"{}\" }}", config_file.display());
        assert_eq!(password(&file_ref, &flag, &env).unwrap().0, "from-flag");
        assert_eq!(
            password(&file_ref, &[], &env).unwrap().0,
            "from-config-file"
        );
        assert_eq!(
            password("password = \"inline\"", &[], &env).unwrap().0,
            "inline"
        );
        assert_eq!(password("", &[], &env).unwrap().0, "from-env");
        let no_password = PgEnv {
            password: None,
            ..PgEnv {
                home: Some(dir.path().into()),
                ..no_env()
            }
        };
        let (text, origin) = password("", &[], &no_password).unwrap();
        assert_eq!(text, "from-pgpass");
        assert!(origin.ends_with(".pgpass, line 1"), "{origin}");
        // PGPASSFILE replaces ~/.pgpass.
        let passfile = PgEnv {
            passfile: Some(other_pgpass.to_str().unwrap().into()),
            ..PgEnv {
                home: Some(dir.path().into()),
                ..no_env()
            }
        };
        assert_eq!(password("", &[], &passfile).unwrap().0, "from-passfile");
        assert_eq!(password("", &["--dbname", "other"], &passfile), None);
        assert_eq!(password("", &[], &no_env()), None);
    }

    #[test]
    fn an_empty_password_file_is_no_password() {
        let dir = Dir::new("empty-passwords");
        let empty = dir.write("empty", "\n", 0o600);
        let config_file = dir.write("config-pw", "from-config-file\n", 0o600);
        let env = PgEnv {
            password: Some("from-env".into()),
            ..no_env()
        };
        let password = |config: &str, args: &[&str]| {
            with_config(&dir, &format!("[alerts.postgres]\n{config}"), args, &env)
                .unwrap()
                .password
                .for_host(0)
                .cloned()
                .map(|p| p.secret.expose().to_owned())
        };
        let flag = ["--password-file", empty.to_str().unwrap()];
        let file_ref =
            |file: &std::path::Path| format!("password = {{ file = \"{}\" }}", file.display());
        // The next source: the config file's, then PGPASSWORD.
        assert_eq!(
            password(&file_ref(&config_file), &flag).as_deref(),
            Some("from-config-file")
        );
        assert_eq!(password("", &flag).as_deref(), Some("from-env"));
        assert_eq!(
            password(&file_ref(&empty), &[]).as_deref(),
            Some("from-env")
        );
        assert_eq!(
            password(&file_ref(&empty), &flag).as_deref(),
            Some("from-env")
        );
    }

    #[test]
    fn a_readable_pgpass_is_ignored() {
        let dir = Dir::new("pgpass-mode");
        dir.write(".pgpass", "*:*:*:*:secret\n", 0o644);
        let env = PgEnv {
            home: Some(dir.path().into()),
            ..no_env()
        };
        let has_password = || {
            resolve(&global(&[]), &env)
                .unwrap()
                .password
                .for_host(0)
                .is_some()
        };
        assert!(!has_password());
        dir.write(".pgpass", "*:*:*:*:secret\n", 0o640);
        assert!(!has_password());
        dir.write(".pgpass", "*:*:*:*:secret\n", 0o400);
        assert!(has_password());
    }

    /// As libpq, each host gets its own line of the password file: a host
    /// no line matches is sent no password, not another host's.
    #[test]
    fn each_host_gets_its_own_pgpass_line() {
        let dir = Dir::new("pgpass-hosts");
        dir.write(
            ".pgpass",
            "b:5433:postgres:postgres:for-b\nc:*:*:*:for-c\n",
            0o600,
        );
        let env = PgEnv {
            home: Some(dir.path().into()),
            ..no_env()
        };
        let settings = resolve(
            &global(&["--host", "a,b,c", "--port", "5432,5433,5434"]),
            &env,
        )
        .unwrap();
        let passwords = |settings: &Settings, hosts: usize| -> Vec<Option<String>> {
            (0..hosts)
                .map(|host| {
                    let password = settings.password.for_host(host);
                    password.map(|p| p.secret.expose().to_owned())
                })
                .collect()
        };
        assert_eq!(
            passwords(&settings, 3),
            [None, Some("for-b".into()), Some("for-c".into())]
        );
        let origin = settings.password.origin().unwrap();
        assert!(
            origin.contains(".pgpass, line 1 or ") && origin.ends_with(".pgpass, line 2"),
            "{origin}"
        );
        // A password set otherwise is every host's.
        let env = PgEnv {
            password: Some("everyone".into()),
            ..env
        };
        let settings = resolve(&global(&["--host", "a,b"]), &env).unwrap();
        assert_eq!(
            passwords(&settings, 2),
            [Some("everyone".into()), Some("everyone".into())]
        );
    }
}

mod libpq {
    use super::super::*;
    use clap::Parser;

    fn global(args: &[&str]) -> GlobalArgs {
        let mut argv = vec!["pgsense-pg"];
        argv.extend_from_slice(args);
        argv.push("init");
        crate::cli::Cli::try_parse_from(argv).unwrap().global
    }

    #[test]
    fn several_hosts_with_one_port_or_one_each() {
        let s = resolve(
            &global(&["--host", "a,,c", "--port", "6432"]),
            &PgEnv::default(),
        )
        .unwrap();
        assert_eq!(s.target(), "postgres@a:6432,localhost:6432,c:6432/postgres");
        let env = PgEnv {
            port: Some("5432,5433".into()),
            ..PgEnv::default()
        };
        let s = resolve(&global(&["--host", "a,b"]), &env).unwrap();
        assert_eq!(s.target(), "postgres@a:5432,b:5433/postgres");
        let s = resolve(&global(&["--host", "::1,10.0.0.2"]), &env).unwrap();
        assert_eq!(s.target(), "postgres@[::1]:5432,10.0.0.2:5433/postgres");
        let err = resolve(&global(&["--host", "a,b,c"]), &env).err().unwrap();
        assert!(
            err.to_string()
                .contains("PGPORT gives 2 ports for 3 host(s)"),
            "{err}"
        );
        assert!(crate::cli::Cli::try_parse_from(["pgsense-pg", "--port", "0", "init"]).is_err());
        assert_eq!(s.target_session_attrs.value, TargetSessionAttrs::ReadWrite);
    }

    #[test]
    fn a_conninfo_in_dbname_is_overridden_by_flags() {
        let uri = "postgresql://loader:s3cret@db1,db2:5433/findings?application_name=x";
        let s = resolve(
            &global(&["--dbname", uri, "--username", "admin"]),
            &PgEnv::default(),
        )
        .unwrap();
        assert_eq!(s.target(), "admin@db1:5432,db2:5433/findings");
        assert_eq!(s.password.for_host(0).unwrap().secret.expose(), "s3cret");
        assert_eq!(s.application_name.value, "x");
        assert_eq!(
            s.dbname.origin.to_string(),
            "dbname in the connection string of --dbname"
        );
        let env = PgEnv {
            host: Some("envhost".into()),
            port: Some("7000".into()),
            ..PgEnv::default()
        };
        let s = resolve(&global(&["--dbname", "dbname=f user=u"]), &env).unwrap();
        assert_eq!(s.target(), "u@envhost:7000/f");
    }

    #[test]
    fn connect_timeout_and_attrs_from_the_environment() {
        let env = PgEnv {
            connect_timeout: Some("3".into()),
            target_session_attrs: Some("any".into()),
            appname: Some("mine".into()),
            ..PgEnv::default()
        };
        let s = resolve(&global(&[]), &env).unwrap();
        assert_eq!(s.connect_timeout.value, Duration::from_secs(3));
        assert_eq!(s.target_session_attrs.value, TargetSessionAttrs::Any);
        assert_eq!(s.application_name.value, "mine");
        let s = resolve(&global(&["--connect-timeout", "5"]), &env).unwrap();
        assert_eq!(s.connect_timeout.value, Duration::from_secs(5));
        let s = resolve(&global(&[]), &PgEnv::default()).unwrap();
        assert_eq!(s.connect_timeout.value, Duration::from_secs(10));
        assert_eq!(s.application_name.value, "pgsense-pg");
        for (timeout, attrs) in [("0", "any"), ("x", "any"), ("3", "standby")] {
            let env = PgEnv {
                connect_timeout: Some(timeout.into()),
                target_session_attrs: Some(attrs.into()),
                ..PgEnv::default()
            };
            assert!(resolve(&global(&[]), &env).is_err(), "{timeout} {attrs}");
        }
    }
}
