//! Operator imports of known phone ↔ BSUID pairs, as CSV or JSON lines.
//!
//! Both `sendgate import FILE` and `POST /admin/identities` read rows here.
//! Every row is judged on its own: a bad row is reported with its line
//! number and reason and never stops the good ones. Rows are applied in
//! batches, one durable transaction each.

use std::cell::Cell;
use std::io::{BufRead, BufReader, Read};
use std::rc::Rc;

use serde::Deserialize;

use super::{Identities, IdentityEvent, Observation, Source, StoreError};
use crate::config::{Config, check_portfolio_name};
use crate::csv_rows::{Fields, Rows};
use crate::identifier::{IdClass, classify, phone_digits};

/// Rows per store transaction: large enough to amortise the commit's fsync,
/// small enough to report progress and bound memory.
pub const BATCH: usize = 10_000;

/// One row that was not imported.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rejected {
    /// 1-based line number in the input (the CSV header is line 1).
    pub line: u64,
    pub reason: String,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    /// People the store did not know.
    pub imported: u64,
    /// Known people whose record changed.
    pub updated: u64,
    /// Rows that told the store nothing new.
    pub unchanged: u64,
    pub rejected: Vec<Rejected>,
}

/// A row in either format. `number` (a business phone number id) places
/// the row in that number's scope (its portfolio, or the number alone);
/// `portfolio` names a portfolio directly.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Row {
    #[serde(default)]
    bsuid: Option<String>,
    #[serde(default)]
    phone: Option<String>,
    #[serde(default)]
    parent_bsuid: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    portfolio: Option<String>,
    #[serde(default)]
    number: Option<String>,
}

/// The input format, told by the first non-blank character: `{` starts a
/// JSON line, anything else a CSV header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    JsonLines,
    Csv,
}

impl Format {
    pub fn detect(head: &[u8]) -> Format {
        match head.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => Format::JsonLines,
            _ => Format::Csv,
        }
    }
}

/// Where imported rows go and who vouches for them.
#[derive(Debug, Clone, Copy)]
pub struct Destination<'a> {
    /// The scope of rows that name neither a number nor a portfolio; such
    /// rows are rejected when this is `None`.
    pub default_scope: Option<&'a str>,
    /// [`Source::Import`] from the command line, [`Source::Admin`] through
    /// the admin API.
    pub source: Source,
}

/// Reads rows from `input` and applies them to `identities` (blocking).
/// `progress` is called after each batch with the number of input bytes
/// read so far.
pub fn import(
    input: impl Read + 'static,
    format: Format,
    config: &Config,
    identities: &Identities,
    destination: Destination<'_>,
    mut progress: impl FnMut(u64),
) -> Result<Summary, StoreError> {
    let consumed = Rc::new(Cell::new(0));
    let input = BufReader::new(Counting {
        inner: input,
        count: consumed.clone(),
    });
    let mut summary = Summary::default();
    let mut batch: Vec<(String, IdentityEvent)> = Vec::with_capacity(BATCH);
    let flush = |batch: &mut Vec<(String, IdentityEvent)>, summary: &mut Summary| {
        let applied = identities.apply(batch, destination.source)?;
        summary.imported += applied.inserted;
        summary.updated += applied.updated;
        summary.unchanged += applied.unchanged;
        batch.clear();
        Ok::<(), StoreError>(())
    };
    for (line, row) in rows(input, format) {
        match row.and_then(|row| judge(row, config, destination.default_scope)) {
            Ok(event) => batch.push(event),
            Err(reason) => summary.rejected.push(Rejected { line, reason }),
        }
        if batch.len() == BATCH {
            flush(&mut batch, &mut summary)?;
            progress(consumed.get());
        }
    }
    flush(&mut batch, &mut summary)?;
    progress(consumed.get());
    Ok(summary)
}

/// Counts the bytes read through it, for progress reports.
struct Counting<R> {
    inner: R,
    count: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.count.set(self.count.get() + read as u64);
        Ok(read)
    }
}

/// Each input row with its line number, parsed or not.
fn rows(
    input: impl BufRead + 'static,
    format: Format,
) -> Box<dyn Iterator<Item = (u64, Result<Row, String>)>> {
    match format {
        Format::JsonLines => Box::new(json_rows(input)),
        Format::Csv => Box::new(csv_rows(input)),
    }
}

fn json_rows(input: impl BufRead) -> impl Iterator<Item = (u64, Result<Row, String>)> {
    let mut failed = false;
    input
        .split(b'\n')
        .zip(1u64..)
        // An unreadable input ends the import rather than repeating its error.
        .map_while(move |(line, line_no)| {
            if failed {
                return None;
            }
            Some(match line {
                Err(err) => {
                    failed = true;
                    Some((line_no, Err(format!("unreadable: {err}"))))
                }
                Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => None,
                Ok(bytes) => {
                    let row = serde_json::from_slice::<Row>(&bytes)
                        .map_err(|err| format!("not a JSON object of known fields: {err}"));
                    Some((line_no, row))
                }
            })
        })
        .flatten()
}

/// The columns a CSV header may name.
const CSV_COLUMNS: [&str; 6] = [
    "bsuid",
    "phone",
    "parent_bsuid",
    "username",
    "portfolio",
    "number",
];

fn csv_rows(input: impl BufRead + 'static) -> impl Iterator<Item = (u64, Result<Row, String>)> {
    let mut rows = Rows::new(input);
    rows.quoted_rows(true);
    let mut record = Vec::new();
    // The header: which known column each cell is.
    let header = match rows.next_row(&mut record) {
        Ok(Some(_)) => Fields::new(&record)
            .map(|name| {
                let name = String::from_utf8_lossy(&name).to_ascii_lowercase();
                CSV_COLUMNS
                    .iter()
                    .position(|known| *known == name)
                    .ok_or(name)
            })
            .collect::<Vec<_>>(),
        Ok(None) => Vec::new(),
        Err(err) => vec![Err(format!("unreadable header: {err}"))],
    };
    let header_error = header
        .iter()
        .find_map(|column| column.as_ref().err())
        .map(|name| {
            format!(
                "unknown CSV column {name:?} (known: {})",
                CSV_COLUMNS.join(", ")
            )
        });
    // A header that names an unknown column makes no row readable: it is
    // reported once, on its own line (1), and the rows are not read.
    let mut failed = false;
    let mut header_error = header_error;
    std::iter::from_fn(move || {
        if failed {
            return None;
        }
        if let Some(error) = header_error.take() {
            failed = true;
            return Some((1, Err(error)));
        }
        let line = match rows.next_row(&mut record) {
            Ok(Some(line)) => line,
            Ok(None) => return None,
            Err(err) => {
                // An unreadable input ends the import rather than repeating its error.
                failed = true;
                return Some((rows.line() + 1, Err(format!("unreadable: {err}"))));
            }
        };
        let cells: Vec<_> = Fields::new(&record).collect();
        if cells.len() != header.len() {
            let reason = format!(
                "{} cells where the header has {}",
                cells.len(),
                header.len()
            );
            return Some((line, Err(reason)));
        }
        let mut row = Row::default();
        for (column, cell) in header.iter().zip(cells) {
            let value = Some(String::from_utf8_lossy(&cell).into_owned()).filter(|v| !v.is_empty());
            match column {
                Ok(0) => row.bsuid = value,
                Ok(1) => row.phone = value,
                Ok(2) => row.parent_bsuid = value,
                Ok(3) => row.username = value,
                Ok(4) => row.portfolio = value,
                _ => row.number = value,
            }
        }
        Some((line, Ok(row)))
    })
}

/// Checks one row and turns it into a `Seen` event for its scope.
fn judge(
    row: Row,
    config: &Config,
    default_scope: Option<&str>,
) -> Result<(String, IdentityEvent), String> {
    let bsuid = row.bsuid.ok_or("no bsuid")?;
    let is_parent = match classify(&bsuid) {
        IdClass::Bsuid => false,
        IdClass::ParentBsuid => true,
        _ => {
            return Err(format!(
                "bsuid {bsuid:?} is not a BSUID (e.g. US.13491208655302741918)"
            ));
        }
    };
    let phone = match row.phone {
        Some(phone) if classify(&phone) == IdClass::Phone => Some(phone_digits(&phone)),
        Some(phone) => return Err(format!("phone {phone:?} is not a phone number")),
        None => None,
    };
    let parent_bsuid = match row.parent_bsuid {
        Some(parent) if is_parent && parent != bsuid => {
            return Err(format!(
                "bsuid {bsuid:?} is a parent BSUID and parent_bsuid {parent:?} another one"
            ));
        }
        Some(parent) if classify(&parent) == IdClass::ParentBsuid => Some(parent),
        Some(parent) => return Err(format!("parent_bsuid {parent:?} is not a parent BSUID")),
        None => None,
    };
    let username = row
        .username
        .map(|name| name.trim_start_matches('@').to_owned());
    if phone.is_none() && (parent_bsuid.is_none() || is_parent) && username.is_none() {
        return Err("nothing to learn: give a phone, a parent_bsuid or a username".into());
    }
    // A parent BSUID alone (an export that knows a person only by the id
    // valid across linked portfolios) is kept as a record of its own that
    // is its own parent: the parent index, which a send to a parent BSUID
    // and a lookup read, finds it as it finds a webhook's parent.
    let parent_bsuid = if is_parent {
        Some(bsuid.clone())
    } else {
        parent_bsuid
    };
    let scope = match (row.portfolio, row.number) {
        (Some(portfolio), _) => {
            check_portfolio_name(&portfolio).map_err(|why| format!("portfolio {why}"))?;
            portfolio
        }
        (None, Some(number))
            if !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()) =>
        {
            config.scope_of(&number).key().into_owned()
        }
        (None, Some(number)) => {
            return Err(format!(
                "number {number:?} is not a phone number id (digits)"
            ));
        }
        (None, None) => default_scope
            .ok_or("no number or portfolio: say which business number the pair belongs to")?
            .to_owned(),
    };
    let observation = Observation {
        bsuid,
        parent_bsuid,
        phone,
        username,
    };
    Ok((scope, IdentityEvent::Seen(observation)))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::identity::{RedbStore, Scope};

    fn run(text: &'static str) -> (Summary, Identities) {
        let config = Config::from_sources(
            "[numbers.\"555\"]\nportfolio = \"acme\"\n",
            std::iter::empty(),
        )
        .unwrap();
        let identities = Identities::new(
            RedbStore::in_memory().unwrap(),
            100,
            Duration::from_secs(60),
        );
        let format = Format::detect(text.as_bytes());
        let mut reports = Vec::new();
        let destination = Destination {
            default_scope: Some("number:1"),
            source: Source::Import,
        };
        let summary = import(
            text.as_bytes(),
            format,
            &config,
            &identities,
            destination,
            |n| reports.push(n),
        )
        .unwrap();
        assert_eq!(
            reports.last().copied(),
            Some(text.len() as u64),
            "progress reaches the end"
        );
        (summary, identities)
    }

    fn lines(summary: &Summary) -> Vec<u64> {
        summary.rejected.iter().map(|r| r.line).collect()
    }

    #[test]
    fn csv_rows_are_judged_one_by_one() {
        let (summary, identities) = run(concat!(
            "phone,bsuid,username,number\n",
            "+1 (631) 555-1234,US.1,,\n",
            "16505550000,US.2,@lucia,555\n",
            "not a phone,US.3,,\n",
            "16505550001,us.4,,\n",
            "16505550002,US.5\n",
            ",US.6,,\n",
            "16315551234,US.1,,\n",
        ));
        assert_eq!(
            (summary.imported, summary.updated, summary.unchanged),
            (2, 0, 1)
        );
        assert_eq!(lines(&summary), [4, 5, 6, 7]);
        assert!(summary.rejected[0].reason.contains("not a phone number"));
        assert!(summary.rejected[1].reason.contains("not a BSUID"));
        assert!(summary.rejected[3].reason.starts_with("nothing to learn"));
        assert_eq!(
            identities
                .phone_for_blocking(Scope::Number("1"), "", "US.1", false)
                .as_deref(),
            Some("16315551234"),
            "a row without a scope takes the default one"
        );
        let acme = identities.find("US.2", Some("acme")).unwrap();
        assert_eq!(
            acme[0].username.as_deref(),
            Some("lucia"),
            "number places the row"
        );
    }

    #[test]
    fn every_row_lands_in_a_named_scope_or_is_rejected() {
        let config = Config::from_sources("", std::iter::empty()).unwrap();
        let identities = Identities::new(
            RedbStore::in_memory().unwrap(),
            100,
            Duration::from_secs(60),
        );
        let text = concat!(
            "bsuid,phone,number,portfolio\n",
            "US.1,16315551231,777,\n",
            "US.2,16315551232,,\n",
            "US.3,16315551233,,number:777\n",
            "US.4,16315551234,7a,\n",
        );
        let destination = Destination {
            default_scope: None,
            source: Source::Admin,
        };
        let summary = import(
            text.as_bytes(),
            Format::Csv,
            &config,
            &identities,
            destination,
            |_| {},
        )
        .unwrap();
        assert_eq!(summary.imported, 1);
        assert_eq!(lines(&summary), [3, 4, 5]);
        assert!(
            summary.rejected[0]
                .reason
                .starts_with("no number or portfolio")
        );
        let record = &identities.find("US.1", None).unwrap()[0];
        assert_eq!(
            (record.scope.as_str(), record.source),
            ("number:777", Source::Admin)
        );
    }

    #[test]
    fn json_lines_skip_blanks_and_report_bad_lines() {
        let (summary, identities) = run(concat!(
            "{\"bsuid\":\"US.1\",\"phone\":\"16315551234\",\"portfolio\":\"p\"}\n",
            "\n",
            "{\"bsuid\":\"US.2\",\"phone\":\"16505550000\",\"colour\":\"blue\"}\n",
            "{\"bsuid\":\"US.3\",\n",
            "[1,2]\n",
            "{\"bsuid\":\"us.ENT.4\",\"phone\":\"16505550001\"}\n",
            "{\"bsuid\":\"US.5\",\"parent_bsuid\":\"US.ENT.5\"}\n",
        ));
        assert_eq!(summary.imported, 2);
        assert_eq!(lines(&summary), [3, 4, 5, 6]);
        assert_eq!(
            identities
                .phone_for_blocking(Scope::Portfolio("p"), "", "US.1", false)
                .as_deref(),
            Some("16315551234")
        );
        assert_eq!(identities.find("US.ENT.5", None).unwrap()[0].bsuid, "US.5");
    }

    #[test]
    fn a_parent_bsuid_in_the_bsuid_column_is_found_through_the_parent_index() {
        let (summary, identities) = run(concat!(
            "bsuid,parent_bsuid,phone,username\n",
            "US.ENT.1,,16505550001,\n",
            "US.ENT.2,US.ENT.2,,lucia\n",
            "US.ENT.3,US.ENT.9,16505550003,\n",
            "US.ENT.4,,,\n",
        ));
        assert_eq!(summary.imported, 2);
        assert_eq!(lines(&summary), [4, 5]);
        assert!(summary.rejected[0].reason.contains("is a parent BSUID"));
        assert!(summary.rejected[1].reason.starts_with("nothing to learn"));
        assert_eq!(
            identities
                .phone_for_blocking(Scope::Number("1"), "", "US.ENT.1", false)
                .as_deref(),
            Some("16505550001")
        );
        let found = identities.find("US.ENT.2", None).unwrap();
        assert_eq!(found[0].username.as_deref(), Some("lucia"));
        assert_eq!(found[0].parent_bsuid.as_deref(), Some("US.ENT.2"));
    }

    #[test]
    fn csv_line_numbers_count_crlf_and_blank_lines() {
        let (summary, _) =
            run("phone,bsuid\r\n16315551234,US.1\r\n16315551235,bad\r\n\r\n16315551236,bad2\r\n");
        assert_eq!(summary.imported, 1);
        assert_eq!(lines(&summary), [3, 5]);
    }

    #[test]
    fn an_unknown_csv_column_is_reported_on_the_header_line_and_nothing_imported() {
        let (summary, _) = run("phone,bsuid,email\n16315551234,US.1,a@b.c\n16315551235,US.2,\n");
        assert_eq!(summary.imported, 0);
        assert_eq!(lines(&summary), [1]);
        assert!(
            summary.rejected[0]
                .reason
                .contains("unknown CSV column \"email\"")
        );
    }
}
