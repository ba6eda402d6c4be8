//! The schema bootstrap: create the findings schema and table when missing,
//! then check that the table can take what the loader writes.
//!
//! It improves on the plain `CREATE ... IF NOT EXISTS` statements in three
//! ways: it looks before it creates (so a role without CREATE can load into
//! an existing table), it serializes creation with an advisory lock (so
//! concurrent first runs do not collide on the catalogs), and it checks the
//! columns and privileges once at startup (so a wrong table is one clear
//! error, not one failure per row).

use anyhow::{Context, Result, bail};
use postgres::types::{ToSql, Type};
use postgres::{Client, Transaction};

use crate::config::Settings;
use crate::pg_error::{INSUFFICIENT_PRIVILEGE, db_error, sqlstate};
use crate::table::{self, Column};

/// What the bootstrap found or did, one line each, for `init` to print.
pub type BootstrapReport = Vec<String>;

/// First key of the advisory lock that serializes bootstraps ("pgsp").
const LOCK_CLASS: i32 = 0x7067_7370;

/// Runs the bootstrap on `client`.
pub fn bootstrap(client: &mut Client, settings: &Settings) -> Result<BootstrapReport> {
    in_transaction(client, settings, Ending::Commit, |tx| {
        bootstrap_in(tx, settings)
    })
}

/// Everything `load` needs, checked without writing anything: for
/// `pgsense-pg check`. `reached`: the `host:port` connected to, said when
/// several were given.
pub fn preflight(
    client: &mut Client,
    settings: &Settings,
    reached: Option<&str>,
) -> Result<Vec<Check>> {
    in_transaction(client, settings, Ending::Rollback, |tx| {
        preflight_in(tx, settings, reached)
    })
}

/// How a transaction of the bootstrap ends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ending {
    Commit,
    Rollback,
}

/// Runs `work` in one transaction: behind a transaction-pooling PgBouncer a
/// statement is prepared and run on the same server connection only inside
/// one, and settings made with SET LOCAL hold only there.
fn in_transaction<T>(
    client: &mut Client,
    settings: &Settings,
    ending: Ending,
    work: impl FnOnce(&mut Transaction<'_>) -> Result<T>,
) -> Result<T> {
    let _deadline = crate::stall::Deadline::start(settings.stall_timeout, "the bootstrap");
    let mut tx = client.transaction().map_err(crate::pg_error::begin_error)?;
    tx.batch_execute(&crate::connect::session_settings(
        None,
        crate::connect::LOCK_TIMEOUT,
    ))
    .map_err(db_error)?;
    let done = work(&mut tx)?;
    match ending {
        Ending::Commit => tx.commit().map_err(db_error)?,
        Ending::Rollback => tx.rollback().map_err(db_error)?,
    }
    Ok(done)
}

fn bootstrap_in(client: &mut Transaction<'_>, settings: &Settings) -> Result<BootstrapReport> {
    let (schema, table) = (&settings.schema.value, &settings.table.value);
    let qualified = format!("{schema}.{table}");
    let mut report = BootstrapReport::new();

    let Found {
        mut schema_exists,
        mut table_exists,
        quoted,
    } = lookup(client, settings)?;
    if !(schema_exists && table_exists) {
        let mut tx = client.transaction().map_err(db_error)?;
        // One lock per schema: loaders of different tables in one new
        // schema would otherwise race on CREATE SCHEMA.
        tx.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))",
            &[&LOCK_CLASS, schema],
        )
        .map_err(db_error)
        .context("cannot take the bootstrap lock")?;
        // Another loader may have created them while this one waited.
        Found {
            schema_exists,
            table_exists,
            ..
        } = lookup(&mut tx, settings)?;
        if !schema_exists {
            tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
                .map_err(|err| {
                    create_failed(err, &format!("cannot create schema {schema}"), || {
                        format!(
                            "connect once as a role with CREATE on database {} \
                             (`pgsense-pg init`), or create the schema as an admin",
                            settings.dbname
                        )
                    })
                })?;
        }
        if !table_exists {
            tx.batch_execute(&create_table_sql(settings))
                .map_err(|err| {
                    create_failed(err, &format!("cannot create table {qualified}"), || {
                        format!(
                            "connect once as a role with CREATE on schema {schema} \
                             (`pgsense-pg init`), or run `GRANT CREATE ON SCHEMA {} \
                             TO {}` as an admin",
                            quoted.schema, quoted.user
                        )
                    })
                })?;
        }
        tx.commit().map_err(db_error)?;
    }
    // The schema first, then the table, whichever was created.
    report.push(match schema_exists {
        true => format!("schema {schema} exists"),
        false => format!("created schema {schema}"),
    });
    report.push(match table_exists {
        true => format!("table {qualified} exists"),
        false => format!("created table {qualified}"),
    });
    check_table(client, settings, &quoted)?;
    Ok(report)
}

/// A CREATE the server refused: the GRANT that fixes it when the role
/// lacks the privilege, else only the server's words, which name the cause
/// (a timeout, a read-only session) and the next step.
fn create_failed(
    err: postgres::Error,
    what: &str,
    grant: impl FnOnce() -> String,
) -> anyhow::Error {
    let denied = sqlstate(&err) == Some(INSUFFICIENT_PRIVILEGE);
    let err = db_error(err);
    if denied {
        err.context(format!("{what}: {}", grant()))
    } else {
        err.context(what.to_owned())
    }
}

/// The table exactly as the scanner's channel creates it.
pub fn create_table_sql(settings: &Settings) -> String {
    table::create_sql(&settings.qualified_table())
}

/// What [`lookup`] found.
struct Found {
    schema_exists: bool,
    table_exists: bool,
    quoted: Quoted,
}

/// The names a GRANT statement takes, quoted as SQL needs them (upper-case
/// letters, a hyphen or a keyword need double quotes).
struct Quoted {
    schema: String,
    /// schema.table
    table: String,
    user: String,
    database: String,
}

/// Whether the schema and the table exist, and the names quoted.
fn lookup(client: &mut impl postgres::GenericClient, settings: &Settings) -> Result<Found> {
    let [schema, table] = names(settings);
    let row = client
        .query_typed_one(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1),
                    EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                            WHERE n.nspname = $1 AND c.relname = $2),
                    quote_ident($1), format('%I.%I', $1, $2), quote_ident($3),
                    quote_ident(current_database())",
            &[schema, table, (&settings.username.value, Type::TEXT)],
        )
        .map_err(db_error)
        .context("cannot look up the findings schema and table")?;
    Ok(Found {
        schema_exists: row.get(0),
        table_exists: row.get(1),
        quoted: Quoted {
            schema: row.get(2),
            table: row.get(3),
            user: row.get(4),
            database: row.get(5),
        },
    })
}

/// The schema's and the table's names as query parameters, typed so that
/// the query goes in one round trip, unprepared, and the catalogs' indexes
/// on `name` serve it.
fn names(settings: &Settings) -> [(&(dyn ToSql + Sync), Type); 2] {
    [
        (&settings.schema.value, Type::NAME),
        (&settings.table.value, Type::NAME),
    ]
}

/// One thing a load needs, and what is wrong with it.
pub struct Check {
    pub what: String,
    /// None when it is fine; else what is wrong and how to fix it.
    pub problem: Option<String>,
    /// What the problem is: "missing" (a grant, a column), or "wrong" (a
    /// column's type, a server that takes no writes).
    pub label: &'static str,
}

impl Check {
    fn ok(what: impl Into<String>) -> Check {
        Check {
            what: what.into(),
            problem: None,
            label: "ok",
        }
    }

    fn missing(what: impl Into<String>, problem: impl Into<String>) -> Check {
        Check {
            what: what.into(),
            problem: Some(problem.into()),
            label: "missing",
        }
    }

    fn wrong(what: impl Into<String>, problem: impl Into<String>) -> Check {
        Check {
            label: "wrong",
            ..Check::missing(what, problem)
        }
    }
}

/// Checks that the existing table can take every row the loader writes, and
/// that this role may write it: the first problem is the error.
fn check_table(client: &mut Transaction<'_>, settings: &Settings, quoted: &Quoted) -> Result<()> {
    for check in table_checks(client, settings, quoted)? {
        if let Some(problem) = check.problem {
            bail!("{problem}");
        }
    }
    Ok(())
}

/// Whether this connection is over TLS, asked as the session user: a role
/// switched to (`ALTER ROLE ... SET role`) may not see its own backend's
/// row of pg_stat_ssl. The switch is undone for this query only.
fn over_tls_as_session_user(client: &mut Transaction<'_>) -> Result<bool> {
    let mut inner = client.transaction().map_err(db_error)?;
    inner
        .batch_execute("SET LOCAL ROLE NONE")
        .map_err(db_error)?;
    let tls: Option<bool> = inner
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .map_err(db_error)
        .context("cannot inspect the server")?
        .get(0);
    // Rolled back: the role is the switched one again.
    drop(inner);
    Ok(tls.unwrap_or(false))
}

fn preflight_in(
    client: &mut Transaction<'_>,
    settings: &Settings,
    reached: Option<&str>,
) -> Result<Vec<Check>> {
    let schema = &settings.schema.value;
    let qualified = format!("{schema}.{}", settings.table);
    let row = client
        .query_typed_one(
            "SELECT current_setting('server_version'),
                    (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()),
                    has_database_privilege(current_database(), 'CREATE'),
                    (SELECT has_schema_privilege(oid, 'CREATE') FROM pg_namespace WHERE nspname = $1),
                    (SELECT has_schema_privilege(oid, 'USAGE') FROM pg_namespace WHERE nspname = $1),
                    current_setting('transaction_read_only') = 'on'",
            &names(settings)[..1],
        )
        .map_err(db_error)
        .context("cannot inspect the server")?;
    let (version, tls): (String, Option<bool>) = (row.get(0), row.get(1));
    let tls = match tls {
        Some(tls) => tls,
        None => over_tls_as_session_user(client)?,
    };
    let (create_in_db, create_in_schema, usage): (bool, Option<bool>, Option<bool>) =
        (row.get(2), row.get(3), row.get(4));
    let read_only: bool = row.get(5);
    let at = reached
        .map(|host| format!(" at {host}"))
        .unwrap_or_default();
    let mut checks = vec![Check::ok(format!(
        "connected to {}{at} (PostgreSQL {version}, {})",
        settings.target(),
        if tls { "TLS" } else { "no TLS" }
    ))];
    let Found {
        schema_exists,
        table_exists,
        quoted,
    } = lookup(client, settings)?;
    if table_exists {
        checks.push(Check::ok(format!("{qualified} exists")));
        checks.extend(table_checks(client, settings, &quoted)?);
        return Ok(checks);
    }
    // table_checks says so when the table exists; a missing one cannot be
    // created on a read-only server either.
    if read_only {
        checks.push(read_only_check());
    }
    checks.extend(creation_checks(
        settings,
        schema_exists,
        &Creation {
            in_db: create_in_db,
            in_schema: create_in_schema,
            usage,
        },
        &quoted,
    ));
    Ok(checks)
}

/// What this role may do towards a missing table: CREATE on the database
/// and on the schema, USAGE on the schema (None when the schema is missing).
struct Creation {
    in_db: bool,
    in_schema: Option<bool>,
    usage: Option<bool>,
}

/// The checks of a missing table: that this role may create it, and the
/// schema when that is missing too.
fn creation_checks(
    settings: &Settings,
    schema_exists: bool,
    may: &Creation,
    quoted: &Quoted,
) -> Vec<Check> {
    let (schema, user) = (&settings.schema.value, &settings.username.value);
    let qualified = format!("{schema}.{}", settings.table);
    let mut checks = Vec::new();
    if schema_exists {
        checks.push(Check::ok(format!("schema {schema} exists")));
        if may.usage != Some(true) {
            checks.push(Check::missing(
                format!("USAGE on schema {schema}"),
                format!(
                    "role {user} lacks USAGE on schema {schema}: run \
                     `GRANT USAGE ON SCHEMA {} TO {}` as an admin",
                    quoted.schema, quoted.user
                ),
            ));
        }
        checks.push(match may.in_schema {
            Some(true) => Check::ok(format!(
                "table {qualified} is missing; {user} may create it"
            )),
            _ => Check::missing(
                format!("CREATE on schema {schema}"),
                format!(
                    "table {qualified} is missing and {user} may not create it: run \
                     `GRANT CREATE ON SCHEMA {} TO {}` as an admin, or `pgsense-pg init` as one",
                    quoted.schema, quoted.user
                ),
            ),
        });
    } else {
        checks.push(if may.in_db {
            Check::ok(format!(
                "schema {schema} and table {qualified} are missing; {user} may create them"
            ))
        } else {
            Check::missing(
                format!("CREATE on database {}", settings.dbname),
                format!(
                    "schema {schema} is missing and {user} may not create it: run \
                     `GRANT CREATE ON DATABASE {} TO {}` as an admin, or `pgsense-pg init` as one",
                    quoted.database, quoted.user
                ),
            )
        });
    }
    checks
}

/// The checks of an existing table: kind, grants, columns.
fn table_checks(
    client: &mut Transaction<'_>,
    settings: &Settings,
    quoted: &Quoted,
) -> Result<Vec<Check>> {
    let relation = Relation::inspect(client, settings)?;
    let mut checks = Vec::new();
    if relation.read_only {
        checks.push(read_only_check());
    }
    let qualified = format!("{}.{}", settings.schema, settings.table);
    if relation.kind != "r" && relation.kind != "p" {
        checks.push(Check::missing(
            format!("{qualified} is a table"),
            format!(
                "{qualified} exists but is not a table (relkind {}): choose another --table",
                relation.kind
            ),
        ));
        return Ok(checks);
    }
    checks.extend(relation.grant_checks(settings, quoted));
    let columns = TableColumn::read(client, relation.oid, &qualified)?;
    checks.extend(column_checks(&columns, &qualified));
    checks.extend(unfilled_column_checks(&columns, &qualified));
    let type_of = |name| {
        columns
            .iter()
            .find(|column| column.name == name)
            .map_or("", |column| column.type_name.as_str())
    };
    table::set_wire(table::Wire::of(type_of("primary_key"), type_of("lsn")));
    Ok(checks)
}

/// The server takes no writes: nothing can be created or inserted.
fn read_only_check() -> Check {
    Check::wrong(
        "the server accepts writes",
        "the server is read-only (a standby, or default_transaction_read_only is on): \
         point --host at the primary",
    )
}

/// The findings table as the catalogs describe it, and what this role may
/// do with it.
struct Relation {
    oid: u32,
    /// `pg_class.relkind`: `r` and `p` are tables.
    kind: String,
    schema_usage: bool,
    /// The loaded columns this role may not insert into (quoted), in the
    /// table's order; none when it may insert into the table.
    insert_missing: Vec<String>,
    /// The sequence behind a serial `id`, when there is one, and whether
    /// this role may use it. An identity column's needs no privilege.
    sequence: Option<(String, bool)>,
    read_only: bool,
}

impl Relation {
    /// Catalog lookups by oid only: they need no privilege on the schema,
    /// so a missing USAGE is reported rather than failing.
    const SQL: &str = "SELECT c.oid, c.relkind::text,
                has_schema_privilege(c.relnamespace, 'USAGE'),
                CASE WHEN has_table_privilege(c.oid, 'INSERT') THEN '{}'::text[]
                ELSE ARRAY(
                    SELECT quote_ident(w.attname) FROM pg_attribute w
                    WHERE w.attrelid = c.oid AND w.attname = ANY($3) AND NOT w.attisdropped
                      AND NOT has_column_privilege(c.oid, w.attnum, 'INSERT')
                    ORDER BY w.attnum) END,
                CASE WHEN s.oid IS NOT NULL THEN format('%I.%I', sn.nspname, s.relname) END,
                has_sequence_privilege(s.oid, 'USAGE'),
                current_setting('transaction_read_only') = 'on'
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'id'
         LEFT JOIN pg_depend d ON d.classid = 'pg_class'::regclass
                              AND d.refobjid = c.oid AND d.refobjsubid = a.attnum
                              AND d.deptype = 'a'
         LEFT JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
         LEFT JOIN pg_namespace sn ON sn.oid = s.relnamespace
         WHERE n.nspname = $1 AND c.relname = $2
         ORDER BY s.oid NULLS LAST LIMIT 1";

    fn inspect(client: &mut Transaction<'_>, settings: &Settings) -> Result<Relation> {
        let (schema, table) = (&settings.schema.value, &settings.table.value);
        let written: Vec<&str> = table::COLUMNS.iter().map(|c| c.name).collect();
        let [schema_name, table_name] = names(settings);
        let row = client
            .query_typed_one(
                Relation::SQL,
                &[schema_name, table_name, (&written, Type::NAME_ARRAY)],
            )
            .map_err(db_error)
            .with_context(|| format!("cannot inspect table {schema}.{table}"))?;
        let sequence = row.get::<_, Option<String>>(4).map(|name| {
            let usage = row.get::<_, Option<bool>>(5).unwrap_or(false);
            (name, usage)
        });
        Ok(Relation {
            oid: row.get(0),
            kind: row.get(1),
            schema_usage: row.get(2),
            insert_missing: row.get(3),
            sequence,
            read_only: row.get(6),
        })
    }

    /// INSERT on the table, or on the loaded columns: when some of them
    /// have it (granted by column), the others are named.
    fn insert_grant(&self, qualified: &str, quoted: &Quoted) -> Grant {
        let missing = &self.insert_missing;
        let on_table = Grant {
            held: missing.is_empty(),
            what: format!("INSERT on table {qualified}"),
            statement: format!("GRANT INSERT ON {} TO {}", quoted.table, quoted.user),
        };
        if missing.is_empty() || missing.len() == table::COLUMNS.len() {
            return on_table;
        }
        let columns = missing.join(", ");
        Grant {
            held: false,
            what: format!("INSERT on column(s) {columns} of table {qualified}"),
            statement: format!(
                "GRANT INSERT ({columns}) ON {} TO {}",
                quoted.table, quoted.user
            ),
        }
    }

    /// USAGE on the schema, INSERT on the table, USAGE on the sequence.
    fn grant_checks(&self, settings: &Settings, quoted: &Quoted) -> Vec<Check> {
        let (schema, user) = (&settings.schema, &settings.username);
        let qualified = format!("{schema}.{}", settings.table);
        let to = &quoted.user;
        let mut grants = vec![
            Grant {
                held: self.schema_usage,
                what: format!("USAGE on schema {schema}"),
                statement: format!("GRANT USAGE ON SCHEMA {} TO {to}", quoted.schema),
            },
            self.insert_grant(&qualified, quoted),
        ];
        if let Some((sequence, usage)) = &self.sequence {
            grants.push(Grant {
                held: *usage,
                what: format!("USAGE on sequence {sequence}"),
                statement: format!("GRANT USAGE ON SEQUENCE {sequence} TO {to}"),
            });
        }
        grants
            .into_iter()
            .map(|grant| grant.check(&user.value))
            .collect()
    }
}

/// A privilege the load needs, and the statement that grants it.
struct Grant {
    held: bool,
    what: String,
    statement: String,
}

impl Grant {
    fn check(self, user: &str) -> Check {
        if self.held {
            Check::ok(self.what)
        } else {
            let problem = format!(
                "role {user} lacks {}: run `{}` as an admin",
                self.what, self.statement
            );
            Check::missing(self.what, problem)
        }
    }
}

/// One column of the existing table.
struct TableColumn {
    name: String,
    /// `format_type` of its type.
    type_name: String,
    not_null: bool,
    /// A default, an identity or a generated value: it fills itself.
    has_default: bool,
}

impl TableColumn {
    fn read(client: &mut Transaction<'_>, oid: u32, qualified: &str) -> Result<Vec<TableColumn>> {
        let rows = client
            .query_typed(
                "SELECT a.attname::text, format_type(a.atttypid, NULL), a.attnotnull,
                        a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> ''
                 FROM pg_attribute a
                 WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped",
                &[(&oid, Type::OID)],
            )
            .map_err(db_error)
            .with_context(|| format!("cannot read the columns of {qualified}"))?;
        Ok(rows
            .iter()
            .map(|row| TableColumn {
                name: row.get(0),
                type_name: row.get(1),
                not_null: row.get(2),
                has_default: row.get(3),
            })
            .collect())
    }
}

/// Each column the loader writes is there, with a type it can write.
fn column_checks(columns: &[TableColumn], qualified: &str) -> Vec<Check> {
    table::COLUMNS
        .iter()
        .map(|Column { name, accepts, .. }| {
            let what = format!("column {name}");
            match columns.iter().find(|column| column.name == *name) {
                None => Check::missing(
                    what,
                    format!(
                        "table {qualified} has no column {name}: it was not created by this \
                         tool; add the column or choose another --table"
                    ),
                ),
                Some(column) if !accepts.contains(&column.type_name.as_str()) => Check::wrong(
                    what,
                    format!(
                        "column {name} of {qualified} is {}, but the loader writes {}: alter \
                         the column or choose another --table",
                        column.type_name, accepts[0]
                    ),
                ),
                Some(_) => Check::ok(what),
            }
        })
        .collect()
}

/// Other columns must fill themselves: the loader has no value for them.
fn unfilled_column_checks(columns: &[TableColumn], qualified: &str) -> Vec<Check> {
    columns
        .iter()
        .filter(|column| {
            column.name != "id"
                && column.not_null
                && !column.has_default
                && !table::COLUMNS.iter().any(|c| c.name == column.name)
        })
        .map(|TableColumn { name, .. }| {
            Check::wrong(
                format!("column {name}"),
                format!(
                    "column {name} of {qualified} is NOT NULL without a default, and the \
                     loader has no value for it: give it a default or drop NOT NULL"
                ),
            )
        })
        .collect()
}
