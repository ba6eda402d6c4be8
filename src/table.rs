//! The findings table: its one column list, from which CREATE TABLE, the
//! COPY column lists and the accepted column types are all derived.

/// One column the loader writes.
pub struct Column {
    pub name: &'static str,
    /// The type CREATE TABLE gives it, with its constraints.
    pub create: &'static str,
    /// The `format_type` names of the types the loader can write into; the
    /// first is the one CREATE TABLE makes.
    pub accepts: &'static [&'static str],
}

const TEXT: &[&str] = &["text", "character varying"];

const fn text(name: &'static str) -> Column {
    Column {
        name,
        create: "TEXT NOT NULL",
        accepts: TEXT,
    }
}

/// The columns in COPY order. `detected_at` comes last: it is sent only for
/// rows that carry a timestamp, so the column default applies to the others.
pub const COLUMNS: [Column; 12] = [
    text("database"),
    text("rule_id"),
    text("description"),
    text("category"),
    text("severity"),
    text("schema_name"),
    text("table_name"),
    text("column_name"),
    text("masked_sample"),
    Column {
        name: "primary_key",
        create: "JSONB NOT NULL DEFAULT '{}'",
        accepts: &["jsonb", "json"],
    },
    Column {
        name: "lsn",
        create: "BIGINT NOT NULL",
        accepts: &["bigint", "numeric"],
    },
    Column {
        name: "detected_at",
        create: "TIMESTAMPTZ NOT NULL DEFAULT now()",
        accepts: &["timestamp with time zone"],
    },
];

/// The text columns, which lead the list: a finding's text fields by the
/// same names, in this order.
pub const TEXT_COLUMNS: [&str; 9] = {
    let mut names = [""; 9];
    let mut index = 0;
    while index < names.len() {
        names[index] = COLUMNS[index].name;
        index += 1;
    }
    names
};

/// The column that only rows with a timestamp fill.
pub const TIMED: &str = "detected_at";

/// How `primary_key` is written: jsonb's binary form has a version byte
/// before the text, json's is the text alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrimaryKeyType {
    Jsonb,
    Json,
}

/// How `lsn` is written: an 8-byte integer, or numeric's base-10000 digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LsnType {
    Bigint,
    Numeric,
}

/// The binary forms of the columns whose type may vary among those
/// `Column::accepts` (text and character varying share theirs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wire {
    pub primary_key: PrimaryKeyType,
    pub lsn: LsnType,
}

impl Wire {
    /// The forms of the types CREATE TABLE makes.
    pub const CREATED: Wire = Wire {
        primary_key: PrimaryKeyType::Jsonb,
        lsn: LsnType::Bigint,
    };

    /// The forms for a table whose `primary_key` and `lsn` columns have
    /// these `format_type` names.
    pub fn of(primary_key: &str, lsn: &str) -> Wire {
        Wire {
            primary_key: match primary_key {
                "json" => PrimaryKeyType::Json,
                _ => PrimaryKeyType::Jsonb,
            },
            lsn: match lsn {
                "numeric" => LsnType::Numeric,
                _ => LsnType::Bigint,
            },
        }
    }
}

/// The table's forms, learnt once by the bootstrap before any row is
/// encoded (a dry run, which has no table, encodes for the created one).
static WIRE: std::sync::OnceLock<Wire> = std::sync::OnceLock::new();

/// Records the table's forms; the first call wins (one table per run).
pub fn set_wire(wire: Wire) {
    // A second bootstrap in one process sees the same table.
    let _ = WIRE.set(wire);
}

/// The forms rows are encoded in.
pub fn wire() -> Wire {
    WIRE.get().copied().unwrap_or(Wire::CREATED)
}

/// `CREATE TABLE IF NOT EXISTS` for `qualified` (schema.table, quoted as
/// needed), exactly as the scanner's channel creates it.
pub fn create_sql(qualified: &str) -> String {
    let mut sql = format!(
        "CREATE TABLE IF NOT EXISTS {qualified} (\n    {:<14}BIGSERIAL PRIMARY KEY",
        "id"
    );
    for column in &COLUMNS {
        sql.push_str(&format!(",\n    {:<14}{}", column.name, column.create));
    }
    sql.push_str("\n)");
    sql
}

/// `COPY qualified (columns) FROM STDIN` in binary format, with
/// `detected_at` or without.
pub fn copy_sql(qualified: &str, timed: bool) -> String {
    let names: Vec<&str> = COLUMNS
        .iter()
        .map(|c| c.name)
        .filter(|name| timed || *name != TIMED)
        .collect();
    format!(
        "COPY {qualified} ({}) FROM STDIN (FORMAT binary)",
        names.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_sql_is_the_channel_table() {
        let sql = create_sql("pgsense.findings");
        assert!(sql.starts_with("CREATE TABLE IF NOT EXISTS pgsense.findings (\n"));
        assert!(sql.contains("\n    id            BIGSERIAL PRIMARY KEY,\n"));
        assert!(sql.contains("\n    masked_sample TEXT NOT NULL,\n"));
        assert!(sql.ends_with("\n    detected_at   TIMESTAMPTZ NOT NULL DEFAULT now()\n)"));
        assert_eq!(sql.lines().count(), 15);
    }

    #[test]
    fn text_columns_are_the_leading_text_ones() {
        for (index, name) in TEXT_COLUMNS.iter().enumerate() {
            assert_eq!(COLUMNS[index].name, *name);
            assert_eq!(COLUMNS[index].accepts, TEXT, "{name}");
        }
        assert!(
            COLUMNS[TEXT_COLUMNS.len()..]
                .iter()
                .all(|c| c.accepts != TEXT)
        );
    }

    #[test]
    fn copy_sql_leaves_detected_at_to_the_default_when_untimed() {
        let timed = copy_sql("s.t", true);
        let untimed = copy_sql("s.t", false);
        assert!(
            timed.ends_with(", lsn, detected_at) FROM STDIN (FORMAT binary)"),
            "{timed}"
        );
        assert!(
            untimed.ends_with(", lsn) FROM STDIN (FORMAT binary)"),
            "{untimed}"
        );
        assert!(untimed.starts_with("COPY s.t (database, rule_id, "));
    }
}
