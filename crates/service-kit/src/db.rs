//! SQL helpers over the [`Sql`] port: typed rows, transactions and versioned migrations.

use std::borrow::Cow;
use std::fmt;

use crate::ports::{Dialect, Sql, SqlValue};

/// A database failure (connection, constraint, syntax, or an unexpected column type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbError(pub String);

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "database: {}", self.0)
    }
}

impl std::error::Error for DbError {}

impl DbError {
    /// Whether the database's write lock was not had in time (SQLite's `database is
    /// locked`): the work was not done, and the same work later may succeed.
    pub fn is_busy(&self) -> bool {
        is_busy(&self.0)
    }
}

/// Whether an error's text is SQLite's report of a write lock not had in time.
fn is_busy(message: &str) -> bool {
    message.contains(SQLITE_BUSY)
}

/// How SQLite reports a write lock not had within the connection's busy timeout.
const SQLITE_BUSY: &str = "database is locked";

/// How long a SQLite connection waits for the write lock unless told otherwise: rusqlite's
/// default busy timeout, which Spin 4.0.2 and the test host keep.
pub const DEFAULT_LOCK_WAIT_MS: u32 = 5_000;

impl From<crate::ports::PortError> for DbError {
    fn from(e: crate::ports::PortError) -> Self {
        DbError(e.0)
    }
}

/// One result row, read by column name.
#[derive(Debug, Clone)]
pub struct Row {
    columns: std::rc::Rc<[String]>,
    values: Vec<SqlValue>,
}

impl Row {
    fn value(&self, column: &str) -> Result<&SqlValue, DbError> {
        self.columns
            .iter()
            .position(|c| c == column)
            .and_then(|i| self.values.get(i))
            .ok_or_else(|| DbError(format!("no column {column}")))
    }

    /// An integer column.
    pub fn i64(&self, column: &str) -> Result<i64, DbError> {
        match self.value(column)? {
            SqlValue::Integer(v) => Ok(*v),
            other => Err(DbError(format!(
                "column {column}: expected integer, got {other:?}"
            ))),
        }
    }

    /// A nullable integer column.
    pub fn opt_i64(&self, column: &str) -> Result<Option<i64>, DbError> {
        match self.value(column)? {
            SqlValue::Null => Ok(None),
            _ => self.i64(column).map(Some),
        }
    }

    /// A text column.
    pub fn text(&self, column: &str) -> Result<String, DbError> {
        match self.value(column)? {
            SqlValue::Text(v) => Ok(v.clone()),
            other => Err(DbError(format!(
                "column {column}: expected text, got {other:?}"
            ))),
        }
    }

    /// A nullable text column.
    pub fn opt_text(&self, column: &str) -> Result<Option<String>, DbError> {
        match self.value(column)? {
            SqlValue::Null => Ok(None),
            _ => self.text(column).map(Some),
        }
    }
}

/// A connection with typed helpers.
#[derive(Clone, Copy)]
pub struct Db<'a> {
    sql: &'a dyn Sql,
}

impl<'a> Db<'a> {
    /// Wraps a SQL port.
    pub fn new(sql: &'a dyn Sql) -> Self {
        Db { sql }
    }

    /// Runs a statement and returns its rows.
    pub fn query(&self, statement: &str, params: &[SqlValue]) -> Result<Vec<Row>, DbError> {
        let result = self.sql.execute(statement, params)?;
        let columns: std::rc::Rc<[String]> = result.columns.into();
        Ok(result
            .rows
            .into_iter()
            .map(|values| Row {
                columns: columns.clone(),
                values,
            })
            .collect())
    }

    /// Runs a statement expected to return at most one row.
    pub fn query_opt(&self, statement: &str, params: &[SqlValue]) -> Result<Option<Row>, DbError> {
        Ok(self.query(statement, params)?.into_iter().next())
    }

    /// Runs a statement that returns no rows of interest.
    pub fn execute(&self, statement: &str, params: &[SqlValue]) -> Result<(), DbError> {
        self.sql.execute(statement, params).map(|_| ())?;
        Ok(())
    }

    /// Which database this is.
    pub fn dialect(&self) -> Dialect {
        self.sql.dialect()
    }

    /// Runs `select`, which ends in `IN`, for `keys` (`... IN ($1, $2, ...)`): the rows of
    /// many keys in one statement. No keys, no statement and no rows.
    pub fn query_in(&self, select: &str, keys: &[&str]) -> Result<Vec<Row>, DbError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.query(
            &format!("{select} ({})", crate::sql_text::placeholders(keys.len())),
            &keys.iter().map(|key| (*key).into()).collect::<Vec<_>>(),
        )
    }

    /// Lets go of a pooled connection while the request waits on something else
    /// ([`Sql::release`]). Outside transactions only.
    pub fn release(&self) {
        self.sql.release();
    }

    /// Whether a transaction may read after it wrote ([`Sql::reads_after_writes`]).
    pub fn reads_after_writes(&self) -> bool {
        self.sql.reads_after_writes()
    }

    /// As [`Db::transaction`], for a client waiting on the answer: on SQLite, the
    /// transaction waits at most `max_wait_ms` for the write lock and is not tried again
    /// when it did not get it ([`Db::with_lock_wait`]). On Postgres, as [`Db::transaction`].
    pub fn client_transaction<T, E: From<DbError> + fmt::Display>(
        &self,
        max_wait_ms: u32,
        work: impl FnMut(&Db<'a>) -> Result<T, E>,
    ) -> Result<T, E> {
        self.with_lock_wait(max_wait_ms, || self.run_transaction(work, false))
    }

    /// Runs `work` (this connection's statements) for a client waiting on the answer: on
    /// SQLite, a write waits at most `max_wait_ms` for the write lock and fails
    /// ([`DbError::is_busy`]; the caller answers 503) when it did not get it, so that load
    /// beyond what the lock can serve is shed rather than queued for seconds. The
    /// connection's usual wait applies again afterwards. On Postgres, `work` runs as is.
    pub fn with_lock_wait<T, E: From<DbError>>(
        &self,
        max_wait_ms: u32,
        work: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        if self.dialect() != Dialect::Sqlite {
            return work();
        }
        self.set_lock_wait(max_wait_ms)?;
        let outcome = work();
        self.set_lock_wait(DEFAULT_LOCK_WAIT_MS)?;
        outcome
    }

    /// Runs `statement` only if it gets SQLite's write lock at once: `None` when another
    /// writer holds it (nothing was done). On Postgres, as [`Db::query`].
    pub fn query_if_unlocked(
        &self,
        statement: &str,
        params: &[SqlValue],
    ) -> Result<Option<Vec<Row>>, DbError> {
        if self.dialect() != Dialect::Sqlite {
            return self.query(statement, params).map(Some);
        }
        self.set_lock_wait(0)?;
        let outcome = self.query(statement, params);
        self.set_lock_wait(DEFAULT_LOCK_WAIT_MS)?;
        match outcome {
            Ok(rows) => Ok(Some(rows)),
            Err(e) if e.is_busy() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sets how long this SQLite connection waits for a lock.
    fn set_lock_wait(&self, ms: u32) -> Result<(), DbError> {
        Ok(self.sql.set_lock_wait(ms)?)
    }

    /// Runs `work` inside a write transaction: committed when it returns `Ok`, rolled
    /// back when it returns `Err` (and, by the database, when the instance dies). SQLite
    /// serializes writers (`BEGIN IMMEDIATE`); Postgres runs `REPEATABLE READ`, where two
    /// transactions updating the same row conflict (every write here is a read-modify-write
    /// of the rows read). A transaction that lost a conflict is run again, up to
    /// [`TRANSACTION_TRIES`] times, after a random pause that grows with each try (so that
    /// writers of the same rows, which all retried at once, spread out instead of
    /// conflicting again).
    ///
    /// `work` must do all its reads before its first write: on wasmCloud the writes are
    /// buffered until commit (see [`crate::optimistic`]), and a read after a write fails.
    pub fn transaction<T, E: From<DbError> + fmt::Display>(
        &self,
        work: impl FnMut(&Db<'a>) -> Result<T, E>,
    ) -> Result<T, E> {
        self.run_transaction(work, true)
    }

    /// [`Db::transaction`]'s loop: a lost conflict is run again, a lock not had in time
    /// only when `retry_busy`.
    fn run_transaction<T, E: From<DbError> + fmt::Display>(
        &self,
        mut work: impl FnMut(&Db<'a>) -> Result<T, E>,
        retry_busy: bool,
    ) -> Result<T, E> {
        let begin = match self.dialect() {
            Dialect::Sqlite => "BEGIN IMMEDIATE",
            Dialect::Postgres => "BEGIN ISOLATION LEVEL REPEATABLE READ",
        };
        let mut tries = 1;
        loop {
            let outcome = self.execute(begin, &[]).map_err(E::from).and_then(|()| {
                let value = work(self)?;
                self.execute("COMMIT", &[])?;
                Ok(value)
            });
            match outcome {
                Ok(value) => return Ok(value),
                Err(e) => {
                    let _ = self.execute("ROLLBACK", &[]);
                    let error = e.to_string();
                    let again = is_conflict(&error) && (retry_busy || !is_busy(&error));
                    if tries >= TRANSACTION_TRIES || !again {
                        return Err(e);
                    }
                    std::thread::sleep(conflict_pause(tries));
                    tries += 1;
                }
            }
        }
    }
}

/// How often a transaction that lost a serialization conflict is tried in all.
pub const TRANSACTION_TRIES: u32 = 10;

/// The pause before try `tries + 1` of a transaction that lost a conflict: random, up to
/// 2^`tries` ms, at most 64 ms (about 250 ms over all tries at worst).
fn conflict_pause(tries: u32) -> std::time::Duration {
    let ceiling_ms = 1u64 << tries.min(6);
    std::time::Duration::from_millis(crate::ids::random_u64() % (ceiling_ms + 1))
}

/// True for errors that mean "another transaction won; run again": a serialization
/// failure, a deadlock, a unique violation from a concurrent insert (every insert is
/// preceded by a read, so the retry sees the winner's row), or a table or column that a
/// concurrent migration created (the retry sees the migration recorded). Errors raised
/// while a Postgres query runs reach Spin guests as text without their SQLSTATE code.
fn is_conflict(message: &str) -> bool {
    [
        "40001",
        "40P01",
        "23505",
        "42701",
        "42P07",
        "could not serialize access",
        "deadlock detected",
        "duplicate key value violates unique constraint",
        "already exists",
        SQLITE_BUSY,
    ]
    .iter()
    .any(|marker| message.contains(marker))
}

/// One versioned schema change, usually loaded from a numbered `.sql` file.
#[derive(Debug, Clone)]
pub struct Migration {
    /// Version, increasing from 1.
    pub version: i64,
    /// Short name, e.g. "init".
    pub name: &'static str,
    /// Statements separated by `;` at line ends (a trigger's `BEGIN ... END` and a
    /// `$$`-quoted function body stay whole).
    pub sql: Cow<'static, str>,
    /// The Postgres text where it differs from `sql` (e.g. triggers, which the two
    /// databases write differently).
    pub postgres_sql: Option<Cow<'static, str>>,
}

impl Migration {
    /// A migration from an embedded `.sql` file.
    pub const fn new(version: i64, name: &'static str, sql: &'static str) -> Migration {
        Migration {
            version,
            name,
            sql: Cow::Borrowed(sql),
            postgres_sql: None,
        }
    }

    /// A migration written once for SQLite and once for Postgres.
    pub const fn per_dialect(
        version: i64,
        name: &'static str,
        sqlite: &'static str,
        postgres: &'static str,
    ) -> Migration {
        Migration {
            version,
            name,
            sql: Cow::Borrowed(sqlite),
            postgres_sql: Some(Cow::Borrowed(postgres)),
        }
    }

    /// The text to run on `dialect`.
    fn sql_for(&self, dialect: Dialect) -> &str {
        match (&self.postgres_sql, dialect) {
            (Some(postgres), Dialect::Postgres) => postgres,
            _ => &self.sql,
        }
    }
}

/// Applies the migrations of `scope` that are not applied yet, each in its own
/// transaction together with its `schema_migrations` row. Safe to call on every request
/// and from concurrent instances.
pub fn migrate(db: &Db, scope: &str, migrations: &[Migration]) -> Result<(), DbError> {
    let latest = migrations.iter().map(|m| m.version).max().unwrap_or(0);
    let applied = match applied_version(db, scope) {
        Ok(v) => v,
        Err(_) => {
            if db.dialect() == Dialect::Postgres {
                check_own_schema(db)?;
            }
            db.transaction(|tx| {
                tx.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (scope TEXT NOT NULL, version BIGINT NOT NULL, name TEXT NOT NULL, applied_at BIGINT NOT NULL, PRIMARY KEY (scope, version))",
                    &[],
                )?;
                if db.dialect() == Dialect::Postgres {
                    tx.execute(crate::optimistic::CREATE_CONFLICTS_TABLE, &[])?;
                }
                Ok::<_, DbError>(())
            })?;
            applied_version(db, scope)?
        }
    };
    if applied >= latest {
        return Ok(());
    }
    if db.dialect() == Dialect::Sqlite {
        // Readers never block the writer with a write-ahead log.
        let _ = db.query("PRAGMA journal_mode=WAL", &[]);
    }
    for migration in migrations {
        db.transaction(|tx| {
            if applied_version(tx, scope)? >= migration.version {
                return Ok::<_, DbError>(());
            }
            for statement in split_statements(migration.sql_for(tx.dialect())) {
                tx.execute(statement, &[]).map_err(|e| {
                    DbError(format!("migration {scope} {} ({}): {}", migration.version, migration.name, e.0))
                })?;
            }
            tx.execute(
                "INSERT INTO schema_migrations (scope, version, name, applied_at) VALUES ($1, $2, $3, $4)",
                &[scope.into(), migration.version.into(), migration.name.into(), crate::ids::now_ms().into()],
            )
        })?;
    }
    Ok(())
}

/// True when every scope in `sets` has its latest migration applied, read in one statement:
/// the cheap path that every request takes once the schema is up to date. False when the
/// database cannot tell (no `schema_migrations` table yet).
pub fn schema_is_current(db: &Db, sets: &[(&str, &[Migration])]) -> bool {
    let Ok(rows) = db.query(
        "SELECT scope, MAX(version) AS version FROM schema_migrations GROUP BY scope",
        &[],
    ) else {
        return false;
    };
    sets.iter().all(|(scope, migrations)| {
        let latest = migrations.iter().map(|m| m.version).max().unwrap_or(0);
        rows.iter().any(|row| {
            row.text("scope").is_ok_and(|s| s == *scope)
                && row.i64("version").is_ok_and(|v| v >= latest)
        })
    })
}

/// On Postgres a service keeps its tables in a schema named after the role it connects as
/// (`infra/postgres/service-schemas.sql`): refuses to create any table elsewhere, e.g. in
/// `public` beside another service's.
fn check_own_schema(db: &Db) -> Result<(), DbError> {
    let row = db.query_opt(
        "SELECT current_user::TEXT AS role, COALESCE(current_schema()::TEXT, '') AS schema",
        &[],
    )?;
    let (role, schema) = match row {
        Some(row) => (row.text("role")?, row.text("schema")?),
        None => return Err(DbError("postgres: no current role".into())),
    };
    if role == schema {
        return Ok(());
    }
    Err(DbError(format!(
        "postgres: role {role} has no schema of its own (tables would go to {:?}); \
         run infra/postgres/service-schemas.sql on this database and connect as the service's role",
        if schema.is_empty() {
            "nowhere"
        } else {
            &schema
        }
    )))
}

fn applied_version(db: &Db, scope: &str) -> Result<i64, DbError> {
    let row = db.query_opt(
        "SELECT COALESCE(MAX(version), 0) AS version FROM schema_migrations WHERE scope = $1",
        &[scope.into()],
    )?;
    row.map_or(Ok(0), |r| r.i64("version"))
}

/// Splits a migration file into statements: `;` at the end of a line ends one, except
/// inside a `$$`-quoted body (a Postgres function) or a SQLite trigger's `BEGIN ... END`.
fn split_statements(sql: &str) -> Vec<&str> {
    let mut statements = Vec::new();
    let mut start = 0;
    let mut searched = 0;
    while let Some(found) = sql[searched..].find(";\n") {
        let end = searched + found;
        searched = end + 2;
        if statement_is_whole(&sql[start..end]) {
            statements.push(&sql[start..end]);
            start = searched;
        }
    }
    statements.push(&sql[start..]);
    statements
        .into_iter()
        .map(|s| s.trim().trim_end_matches(';').trim())
        .filter(|s| {
            !s.is_empty()
                && !s
                    .lines()
                    .all(|l| l.trim().is_empty() || l.trim().starts_with("--"))
        })
        .collect()
}

/// Whether `text`, ended by a `;` at a line end, is a whole statement: not inside a
/// `$$`-quoted body, nor inside a trigger's `BEGIN ... END`.
fn statement_is_whole(text: &str) -> bool {
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    let open_body = code.matches("$$").count() % 2 == 1;
    let words: Vec<String> = code
        .split_whitespace()
        .take(2)
        .map(str::to_ascii_uppercase)
        .collect();
    let open_trigger = words == ["CREATE", "TRIGGER"]
        && crate::sql_text::contains_keyword(&code, "BEGIN")
        && !code.trim_end().to_ascii_uppercase().ends_with("END");
    !open_body && !open_trigger
}

#[cfg(test)]
mod tests {
    use super::split_statements;

    #[test]
    fn keeps_trigger_and_function_bodies_whole() {
        let sql = "CREATE TRIGGER t AFTER INSERT ON a FOR EACH ROW BEGIN\n    INSERT INTO b VALUES (1);\n    INSERT INTO c VALUES (2);\nEND;\nCREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n    INSERT INTO b VALUES (1);\n    RETURN NULL;\nEND\n$$;\nCREATE TRIGGER u AFTER INSERT ON a FOR EACH ROW EXECUTE FUNCTION f();\n";
        let statements = split_statements(sql);
        assert_eq!(statements.len(), 3, "{statements:#?}");
        assert!(statements[0].ends_with("INSERT INTO c VALUES (2);\nEND"));
        assert!(statements[1].ends_with("RETURN NULL;\nEND\n$$"));
        assert!(statements[2].starts_with("CREATE TRIGGER u"));
    }

    #[test]
    fn splits_on_line_end_semicolons_and_skips_comments() {
        let sql = "-- first\nCREATE TABLE a (x INTEGER);\n\nCREATE INDEX i ON a (x);\n-- only a comment\n";
        assert_eq!(
            split_statements(sql),
            vec![
                "-- first\nCREATE TABLE a (x INTEGER)",
                "CREATE INDEX i ON a (x)"
            ]
        );
    }
}
