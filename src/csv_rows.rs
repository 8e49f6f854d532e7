//! CSV rows with true line numbers, for reports that must name the line of
//! each bad row (`sendgate import`, `sendgate audit`).
//!
//! The `csv` crate reports the line a record started on wrongly after a CRLF
//! or a blank line, so rows are split here: RFC 4180 cells (`,` separates,
//! `"` quotes, `""` is a quote inside quotes), a quoted cell may span lines,
//! blank lines are skipped, and nothing is allocated per row.

use std::borrow::Cow;
use std::io::{self, BufRead};

/// Reads the non-blank rows of a text input, counting lines.
pub(crate) struct Rows<R> {
    input: R,
    /// Lines read so far.
    line: u64,
    /// Bytes read so far.
    offset: u64,
    /// Whether an open quote carries a row onto the next line (CSV), or
    /// every line is a row (a plain list).
    quoted: bool,
}

impl<R: BufRead> Rows<R> {
    /// Rows of one line each until [`Rows::quoted_rows`] says otherwise.
    pub(crate) fn new(input: R) -> Self {
        Rows {
            input,
            line: 0,
            offset: 0,
            quoted: false,
        }
    }

    /// From now on, a row with an open quote continues on the next line.
    pub(crate) fn quoted_rows(&mut self, quoted: bool) {
        self.quoted = quoted;
    }

    /// Lines read so far.
    pub(crate) fn line(&self) -> u64 {
        self.line
    }

    /// Bytes read so far, for progress.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// Reads the next non-blank row into `record`, trimmed of surrounding
    /// white space (and of a UTF-8 byte order mark on the first line), and
    /// returns the line it starts on; `None` at the end of the input.
    pub(crate) fn next_row(&mut self, record: &mut Vec<u8>) -> io::Result<Option<u64>> {
        loop {
            record.clear();
            let start = self.line + 1;
            let mut quotes = 0;
            loop {
                let before = record.len();
                let read = self.input.read_until(b'\n', record)?;
                if read == 0 {
                    break;
                }
                self.line += 1;
                self.offset += read as u64;
                if !self.quoted {
                    break;
                }
                // An odd count of quotes leaves one open (`""` escapes one).
                quotes += record[before..].iter().filter(|&&b| b == b'"').count();
                if quotes % 2 == 0 {
                    break;
                }
            }
            if record.is_empty() {
                return Ok(None);
            }
            if start == 1 && record.starts_with(b"\xEF\xBB\xBF") {
                // A spreadsheet's byte order mark would hide a header name.
                record.drain(..3);
            }
            let end = record.len()
                - record
                    .iter()
                    .rev()
                    .take_while(|b| b.is_ascii_whitespace())
                    .count();
            record.truncate(end);
            let leading = record
                .iter()
                .take_while(|b| b.is_ascii_whitespace())
                .count();
            record.drain(..leading);
            if !record.is_empty() {
                return Ok(Some(start));
            }
        }
    }
}

/// The cells of one CSV row (RFC 4180: `,` separates, `"` quotes, `""` is a
/// quote inside quotes), each trimmed of surrounding whitespace. A cell is
/// borrowed from the row unless it has an escaped quote to undo.
pub(crate) struct Fields<'a> {
    /// What is left of the row; `None` after the last cell.
    rest: Option<&'a [u8]>,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(row: &'a [u8]) -> Self {
        Fields { rest: Some(row) }
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Cow<'a, [u8]>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.rest?;
        let Some(quoted) = rest.trim_ascii_start().strip_prefix(b"\"") else {
            let (cell, after) = match rest.iter().position(|&b| b == b',') {
                Some(comma) => (&rest[..comma], Some(&rest[comma + 1..])),
                None => (rest, None),
            };
            self.rest = after;
            return Some(Cow::Borrowed(cell.trim_ascii()));
        };
        let mut cell = Cow::Borrowed(&quoted[..0]);
        // `from` starts the run of plain bytes not yet copied into `cell`.
        let mut from = 0;
        let after_quote = loop {
            match quoted[from..].iter().position(|&b| b == b'"') {
                // An unterminated quote runs to the end of the row.
                None => {
                    append(&mut cell, &quoted[from..]);
                    break &quoted[quoted.len()..];
                }
                Some(at) if quoted.get(from + at + 1) == Some(&b'"') => {
                    append(&mut cell, &quoted[from..=from + at]);
                    from += at + 2;
                }
                Some(at) => {
                    append(&mut cell, &quoted[from..from + at]);
                    break &quoted[from + at + 1..];
                }
            }
        };
        // Stray bytes between a closing quote and the next comma belong to
        // no cell in RFC 4180; they are dropped.
        self.rest = after_quote
            .iter()
            .position(|&b| b == b',')
            .map(|comma| &after_quote[comma + 1..]);
        Some(match cell {
            Cow::Borrowed(cell) => Cow::Borrowed(cell.trim_ascii()),
            Cow::Owned(cell) => Cow::Owned(cell.trim_ascii().to_vec()),
        })
    }
}

/// Appends `part` to `cell`, copying only when both are non-empty.
fn append<'a>(cell: &mut Cow<'a, [u8]>, part: &'a [u8]) {
    if cell.is_empty() {
        *cell = Cow::Borrowed(part);
    } else if !part.is_empty() {
        cell.to_mut().extend_from_slice(part);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(text: &str, quoted: bool) -> Vec<(u64, String)> {
        let mut rows = Rows::new(text.as_bytes());
        rows.quoted_rows(quoted);
        let mut record = Vec::new();
        let mut out = Vec::new();
        while let Some(line) = rows.next_row(&mut record).unwrap() {
            out.push((line, String::from_utf8(record.clone()).unwrap()));
        }
        out
    }

    #[test]
    fn line_numbers_survive_crlf_blank_lines_and_quoted_breaks() {
        let text = "\u{feff}phone,bsuid\r\n1,US.1\r\n\r\n  \r\n2,\"US\n.2\"\r\n3,US.3";
        assert_eq!(
            rows(text, true),
            [
                (1, "phone,bsuid".to_owned()),
                (2, "1,US.1".to_owned()),
                (5, "2,\"US\n.2\"".to_owned()),
                (7, "3,US.3".to_owned()),
            ]
        );
        assert_eq!(
            rows("a\"\nb\n", false),
            [(1, "a\"".to_owned()), (2, "b".to_owned())]
        );
    }

    #[test]
    fn cells_follow_rfc_4180() {
        let cells: Vec<_> = Fields::new(b" a , \"b,\"\"c\"\"\" ,,\"d")
            .map(|c| c.into_owned())
            .collect();
        assert_eq!(
            cells,
            [
                b"a".to_vec(),
                b"b,\"c\"".to_vec(),
                Vec::new(),
                b"d".to_vec()
            ]
        );
    }
}
