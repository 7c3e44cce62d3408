//! Aligned plain-text tables for people.

/// How a column's cells line up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Text: padded on the right.
    Left,
    /// Numbers: padded on the left.
    Right,
}

/// A table: optional headers, rows of cells, two spaces between columns.
#[derive(Debug, Clone)]
pub struct Table {
    /// Column headers; empty for a table without a header line.
    headers: Vec<String>,
    /// How each column lines up (its length is the number of columns).
    aligns: Vec<Align>,
    /// The cells, one vector per row, as many as there are columns.
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers and alignments.
    pub fn new(columns: &[(&str, Align)]) -> Table {
        Table {
            headers: columns.iter().map(|(name, _)| (*name).to_owned()).collect(),
            aligns: columns.iter().map(|(_, align)| *align).collect(),
            rows: Vec::new(),
        }
    }

    /// A two-column table of `label  value` lines, without headers.
    pub fn fields() -> Table {
        Table {
            headers: Vec::new(),
            aligns: vec![Align::Left, Align::Left],
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are blank, extra cells are dropped. Control characters
    /// become spaces so that no cell can break the layout or drive the terminal.
    pub fn row<S: AsRef<str>>(&mut self, cells: impl IntoIterator<Item = S>) {
        let mut row: Vec<String> = cells
            .into_iter()
            .take(self.aligns.len())
            .map(|cell| {
                cell.as_ref()
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect()
            })
            .collect();
        row.resize(self.aligns.len(), String::new());
        self.rows.push(row);
    }

    /// The table as text, one line per row (headers first), each ending in a newline.
    pub fn render(&self) -> String {
        let mut widths = vec![0; self.aligns.len()];
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let header = (!self.headers.is_empty()).then_some(&self.headers);
        for row in header.into_iter().chain(&self.rows) {
            let mut line = String::new();
            for (i, ((cell, width), align)) in row.iter().zip(&widths).zip(&self.aligns).enumerate()
            {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = " ".repeat(width - cell.chars().count());
                match align {
                    Align::Left => {
                        line.push_str(cell);
                        line.push_str(&pad);
                    }
                    Align::Right => {
                        line.push_str(&pad);
                        line.push_str(cell);
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Cents as a decimal amount, e.g. `-1205` → `-12.05`.
pub fn money(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up() {
        let mut table = Table::new(&[
            ("SKU", Align::Left),
            ("PRICE", Align::Right),
            ("NAME", Align::Left),
        ]);
        table.row(["LAMP-1", "50.00", "Lamp"]);
        table.row(["W", "1234.00", "Wide\nwidget"]);
        table.row(["short"]);
        assert_eq!(
            table.render(),
            "SKU       PRICE  NAME\n\
             LAMP-1    50.00  Lamp\n\
             W       1234.00  Wide widget\n\
             short\n"
        );
    }

    #[test]
    fn empty_tables_and_fields() {
        let table = Table::new(&[("ID", Align::Left), ("REASON", Align::Left)]);
        assert_eq!(table.render(), "ID  REASON\n");
        let mut fields = Table::fields();
        fields.row(["id", "ord_1"]);
        fields.row(["customer", "ada@example.com"]);
        assert_eq!(
            fields.render(),
            "id        ord_1\ncustomer  ada@example.com\n"
        );
    }

    #[test]
    fn amounts() {
        assert_eq!(money(0), "0.00");
        assert_eq!(money(5), "0.05");
        assert_eq!(money(15000), "150.00");
        assert_eq!(money(-1205), "-12.05");
        assert_eq!(money(i64::MIN), "-92233720368547758.08");
    }
}
