//! Reading a SQL statement's text: its first keyword, keywords outside literals, and
//! whether it returns rows; and writing the `$n` placeholders of lists and multi-row `VALUES`. Hosts that run row statements and commands through different
//! calls (Spin's Postgres `query` and `execute`, wasmCloud's buffered writes) decide with
//! these.

/// The statement's first word, upper-cased.
pub fn first_keyword(statement: &str) -> String {
    statement
        .trim_start()
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or("")
        .to_ascii_uppercase()
}

/// The SQLite statement that makes a connection wait up to `ms` for a lock.
pub fn busy_timeout(ms: u32) -> String {
    format!("PRAGMA busy_timeout = {ms}")
}

/// True when `keyword` occurs as a whole word outside string literals.
pub fn contains_keyword(statement: &str, keyword: &str) -> bool {
    outside_literals(statement)
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .any(|word| word.eq_ignore_ascii_case(keyword))
}

/// True when the statement yields rows: a query (`SELECT`, `WITH`, `VALUES`, `TABLE`,
/// `SHOW`) or a write with `RETURNING`. Everything else (`BEGIN`, `COMMIT`, DDL, writes
/// without `RETURNING`) only reports a row count.
pub fn returns_rows(statement: &str) -> bool {
    matches!(
        first_keyword(statement).as_str(),
        "SELECT" | "WITH" | "VALUES" | "TABLE" | "SHOW"
    ) || contains_keyword(statement, "RETURNING")
}

/// The statement with every string literal and quoted identifier blanked out.
fn outside_literals(statement: &str) -> String {
    let mut out = String::with_capacity(statement.len());
    let mut quote: Option<char> = None;
    for c in statement.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None => out.push(c),
        }
        if quote.is_some() {
            out.push(' ');
        }
    }
    out
}

/// `$from, $from+1, ..., $from+n-1`.
pub fn placeholders_from(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `rows` rows of `width` placeholders each for a multi-row `VALUES`, numbered in order
/// (`($1, $2), ($3, $4)`): SQLite binds `$n` by where it first appears, not by its number.
pub fn value_rows(rows: usize, width: usize) -> String {
    (0..rows)
        .map(|row| format!("({})", placeholders_from(row * width + 1, width)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `rows` rows for a `VALUES` list that stands as a table (`FROM (VALUES ...)`), numbered
/// from `$first`, the first row's placeholders cast to `types` (`CAST($2 AS BIGINT)`):
/// Postgres gives a bare `$n` there no type. SQLite and Postgres both name such a list's
/// columns column1, column2, ...
pub fn typed_value_rows(first: usize, rows: usize, types: &[&str]) -> String {
    (0..rows)
        .map(|row| {
            let from = first + row * types.len();
            let cells: Vec<String> = (from..from + types.len())
                .zip(types)
                .map(|(n, ty)| {
                    if row == 0 {
                        format!("CAST(${n} AS {ty})")
                    } else {
                        format!("${n}")
                    }
                })
                .collect();
            format!("({})", cells.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `$1, $2, ..., $n`.
pub fn placeholders(n: usize) -> String {
    placeholders_from(1, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_are_found_outside_literals_only() {
        assert_eq!(first_keyword("  select 1"), "SELECT");
        assert!(contains_keyword(
            "UPDATE t SET a = 1 RETURNING a",
            "returning"
        ));
        assert!(!contains_keyword(
            "UPDATE t SET a = 'RETURNING'",
            "returning"
        ));
    }

    #[test]
    fn row_statements_are_told_from_commands() {
        for rows in [
            "SELECT 1",
            " with x AS (SELECT 1) SELECT * FROM x",
            "UPDATE t SET a = 1 RETURNING a",
            "DELETE FROM t WHERE id = $1 RETURNING id",
        ] {
            assert!(returns_rows(rows), "{rows}");
        }
        for command in [
            "BEGIN ISOLATION LEVEL REPEATABLE READ",
            "COMMIT",
            "ROLLBACK",
            "CREATE TABLE t (a BIGINT)",
            "INSERT INTO t (a) VALUES ('RETURNING')",
            "DELETE FROM t WHERE a = $1",
        ] {
            assert!(!returns_rows(command), "{command}");
        }
    }

    #[test]
    fn value_rows_are_numbered_in_order_and_a_table_of_values_types_its_first_row() {
        assert_eq!(value_rows(2, 2), "($1, $2), ($3, $4)");
        assert_eq!(
            typed_value_rows(2, 2, &["TEXT", "BIGINT"]),
            "(CAST($2 AS TEXT), CAST($3 AS BIGINT)), ($4, $5)"
        );
    }
}
