//! Transactions on a Postgres that only offers single statements and atomic scripts.
//!
//! wasmCloud's `wasmcloud:postgres@0.1.1-draft` runs each `query` on some connection of
//! the provider's pool and has no way to keep a transaction open across calls. What it
//! does have is `query-batch`: a multi-statement script sent as one simple query, which
//! Postgres runs as one implicit transaction (all statements or none).
//!
//! [`OptimisticSql`] turns that into the `BEGIN` ... `COMMIT` that [`crate::db::Db::transaction`]
//! issues, with optimistic concurrency control:
//! - reads inside the transaction run at once and their rows are remembered;
//! - writes are buffered, with their parameters written into the statement as literals;
//! - `COMMIT` sends one script: `SET TRANSACTION ISOLATION LEVEL REPEATABLE READ`, then a
//!   block that checks every read still returns the same rows and runs the writes.
//!
//! The provider reports every database error as the same text ("db error"), so a lost
//! conflict cannot be told from any other failure by its message. The block therefore
//! catches conflicts itself (a changed read, a serialization failure, a deadlock, a unique
//! violation from a concurrent insert, a table or column a concurrent migration created):
//! their writes roll back and the block records the
//! transaction's id in [`CONFLICTS_TABLE`] instead. One more query after the script
//! takes that record out; finding it, `COMMIT` fails with "could not serialize access" and
//! `Db::transaction` runs the work again, as for a conflict on an interactive transaction.
//!
//! The rule this imposes on transaction bodies: do every read before the first write
//! (a read after a write fails loudly instead of missing the buffered write).

use std::cell::RefCell;
use std::fmt::Write as _;

use crate::ports::{Dialect, PortError, Rows, Sql, SqlValue};
use crate::sql_text::{contains_keyword, first_keyword};

/// A Postgres session without interactive transactions: single statements, and scripts
/// that run atomically.
pub trait BatchSql {
    /// Runs one statement with `$n` parameters on any connection, in its own transaction.
    fn query(&self, statement: &str, params: &[SqlValue]) -> Result<Rows, PortError>;

    /// Runs several `;`-separated statements (no parameters) as one transaction.
    fn batch(&self, script: &str) -> Result<(), PortError>;
}

/// A [`Sql`] port on a [`BatchSql`] session, giving it transactions (see the module docs).
pub struct OptimisticSql<B> {
    session: B,
    open: RefCell<Option<PendingTransaction>>,
}

/// What a transaction read and what it will write.
#[derive(Default)]
struct PendingTransaction {
    /// Each read with its parameters inlined, and the text form of the rows it returned.
    reads: Vec<(String, Vec<String>)>,
    /// Each write, parameters inlined, in order.
    writes: Vec<String>,
}

/// The alias under which a read's rows are turned into text (`CAST(alias AS TEXT)`).
const ROW_ALIAS: &str = "shop_read_row";

/// Where a commit script records that it lost a conflict (created by [`crate::db::migrate`]).
pub const CONFLICTS_TABLE: &str = "shop_transaction_conflicts";

/// Creates [`CONFLICTS_TABLE`].
pub const CREATE_CONFLICTS_TABLE: &str = "CREATE TABLE IF NOT EXISTS shop_transaction_conflicts (id TEXT PRIMARY KEY, at BIGINT NOT NULL)";

impl<B: BatchSql> OptimisticSql<B> {
    /// Wraps a session.
    pub fn new(session: B) -> Self {
        OptimisticSql {
            session,
            open: RefCell::new(None),
        }
    }

    fn read_in_transaction(&self, statement: &str, params: &[SqlValue]) -> Result<Rows, PortError> {
        if self
            .open
            .borrow()
            .as_ref()
            .is_some_and(|tx| !tx.writes.is_empty())
        {
            return Err(PortError(format!(
                "a read after a write in one transaction cannot see the buffered write on this host; read first: {statement}"
            )));
        }
        let wrapped = format!(
            "SELECT CAST({ROW_ALIAS} AS TEXT) AS {ROW_ALIAS}_text, {ROW_ALIAS}.* FROM ({statement}) AS {ROW_ALIAS}"
        );
        let mut rows = self.session.query(&wrapped, params)?;
        let mut texts = Vec::with_capacity(rows.rows.len());
        for row in &mut rows.rows {
            match row.first() {
                Some(SqlValue::Text(text)) => texts.push(text.clone()),
                Some(SqlValue::Null) | None => texts.push(String::new()),
                Some(other) => {
                    return Err(PortError(format!("row text came back as {other:?}")));
                }
            }
            row.remove(0);
        }
        if !rows.columns.is_empty() {
            rows.columns.remove(0);
        }
        let inlined = inline_params(statement, params)?;
        if let Some(tx) = self.open.borrow_mut().as_mut() {
            tx.reads.push((inlined, texts));
        }
        Ok(rows)
    }

    fn commit(&self) -> Result<(), PortError> {
        let Some(tx) = self.open.borrow_mut().take() else {
            return Ok(());
        };
        if tx.writes.is_empty() && tx.reads.len() <= 1 {
            return Ok(());
        }
        let id = crate::ids::new_id("tx");
        self.session.batch(&commit_script(&tx, &id))?;
        let conflict = self.session.query(
            &format!("DELETE FROM {CONFLICTS_TABLE} WHERE id = $1 RETURNING id"),
            &[SqlValue::Text(id)],
        )?;
        if conflict.rows.is_empty() {
            Ok(())
        } else {
            Err(PortError(
                "could not serialize access: another transaction changed what this one read or wrote".into(),
            ))
        }
    }
}

impl<B: BatchSql> Sql for OptimisticSql<B> {
    fn execute(&self, statement: &str, params: &[SqlValue]) -> Result<Rows, PortError> {
        let keyword = first_keyword(statement);
        match keyword.as_str() {
            "BEGIN" | "START" => {
                *self.open.borrow_mut() = Some(PendingTransaction::default());
                Ok(Rows::default())
            }
            "COMMIT" | "END" => self.commit().map(|()| Rows::default()),
            "ROLLBACK" | "ABORT" => {
                self.open.borrow_mut().take();
                Ok(Rows::default())
            }
            _ if self.open.borrow().is_none() => self.session.query(statement, params),
            "SELECT" | "WITH" | "VALUES" | "TABLE" => self.read_in_transaction(statement, params),
            _ => {
                if contains_keyword(statement, "RETURNING") {
                    return Err(PortError(format!(
                        "a write inside a transaction cannot return rows on this host: {statement}"
                    )));
                }
                let inlined = inline_params(statement, params)?;
                if let Some(tx) = self.open.borrow_mut().as_mut() {
                    tx.writes.push(inlined);
                }
                Ok(Rows::default())
            }
        }
    }

    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn reads_after_writes(&self) -> bool {
        false
    }
}

/// The script `COMMIT` sends: isolation first (it must precede every query), then one
/// block with the checks of all reads and the writes, which records a lost conflict in
/// [`CONFLICTS_TABLE`] under `id` instead of applying anything.
fn commit_script(tx: &PendingTransaction, id: &str) -> String {
    let mut body = String::new();
    for (statement, rows) in &tx.reads {
        let mut expected = rows.clone();
        expected.sort();
        let _ = write!(
            body,
            "    IF (SELECT COALESCE(string_agg(r, E'\\n' ORDER BY r COLLATE \"C\"), '') FROM (SELECT CAST({ROW_ALIAS} AS TEXT) AS r FROM ({statement}) AS {ROW_ALIAS}) AS shop_rows) IS DISTINCT FROM {} THEN\n      RAISE EXCEPTION USING ERRCODE = 'serialization_failure', MESSAGE = 'a row this transaction read changed before it committed';\n    END IF;\n",
            text_literal(&expected.join("\n"))
        );
    }
    for write in &tx.writes {
        let _ = writeln!(body, "    {write};");
    }
    let _ = write!(
        body,
        "  EXCEPTION WHEN serialization_failure OR deadlock_detected OR unique_violation OR duplicate_table OR duplicate_column OR duplicate_object THEN\n    INSERT INTO {CONFLICTS_TABLE} (id, at) VALUES ({}, {});\n",
        text_literal(id),
        crate::ids::now_ms()
    );
    let tag = dollar_tag(&body);
    format!(
        "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ;\nDO {tag}\nBEGIN\n  BEGIN\n{body}  END;\nEND\n{tag};\n"
    )
}

/// A dollar-quote tag that does not occur in `body`.
fn dollar_tag(body: &str) -> String {
    (0..)
        .map(|n| format!("$shop_check{n}$"))
        .find(|tag| !body.contains(tag.as_str()))
        .unwrap_or_else(|| "$shop_check$".into())
}

/// Writes each `$n` parameter into `statement` as a SQL literal (outside quotes only).
pub fn inline_params(statement: &str, params: &[SqlValue]) -> Result<String, PortError> {
    let mut out = String::with_capacity(statement.len() + 16 * params.len());
    let mut chars = statement.char_indices().peekable();
    let mut quote: Option<char> = None;
    while let Some((_, c)) = chars.next() {
        if let Some(q) = quote {
            out.push(c);
            if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '\'' | '"' => {
                quote = Some(c);
                out.push(c);
            }
            '$' if chars.peek().is_some_and(|(_, d)| d.is_ascii_digit()) => {
                let mut digits = String::new();
                while let Some((_, d)) = chars.peek().filter(|(_, d)| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                let index: usize = digits
                    .parse()
                    .map_err(|_| PortError(format!("bad parameter ${digits}")))?;
                let value = index
                    .checked_sub(1)
                    .and_then(|i| params.get(i))
                    .ok_or_else(|| PortError(format!("no value for parameter ${index}")))?;
                out.push_str(&literal(value));
            }
            _ => out.push(c),
        }
    }
    Ok(out)
}

/// A Postgres literal for `value`.
fn literal(value: &SqlValue) -> String {
    match value {
        SqlValue::Integer(v) if *v < 0 => format!("({v})"),
        SqlValue::Integer(v) => v.to_string(),
        SqlValue::Real(v) => format!("CAST('{v:?}' AS DOUBLE PRECISION)"),
        SqlValue::Text(v) => text_literal(v),
        SqlValue::Blob(bytes) => {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            format!("decode('{hex}', 'hex')")
        }
        SqlValue::Null => "NULL".into(),
    }
}

/// An escape-string literal (`E'...'`), correct whatever `standard_conforming_strings` is.
fn text_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 3);
    out.push_str("E'");
    for c in text.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            _ => out.push(c),
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inlines_parameters_outside_quotes_only() {
        let sql = "UPDATE t SET a = $1, b = '$2' WHERE c = $2 AND d = $10";
        let mut params: Vec<SqlValue> = (1..=10).map(|i| SqlValue::Integer(-i)).collect();
        params[1] = SqlValue::Text("it's \\ $1".into());
        assert_eq!(
            inline_params(sql, &params).unwrap(),
            "UPDATE t SET a = (-1), b = '$2' WHERE c = E'it''s \\\\ $1' AND d = (-10)"
        );
    }

    #[test]
    fn a_missing_parameter_is_an_error() {
        assert!(inline_params("SELECT $2", &[SqlValue::Null]).is_err());
        assert!(inline_params("SELECT $0", &[SqlValue::Null]).is_err());
    }

    #[test]
    fn the_dollar_tag_avoids_the_body() {
        assert_eq!(dollar_tag("x"), "$shop_check0$");
        assert_eq!(dollar_tag("$shop_check0$"), "$shop_check1$");
    }
}
