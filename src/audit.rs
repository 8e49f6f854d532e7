//! `sendgate audit`: what sendgate would do with each recipient of a
//! campaign list, decided offline against the identity store `serve` uses.
//!
//! The decision is the send path's own table ([`crate::send::policy`]) fed
//! with one recipient at a time, as if the sender had put it in `to`. The
//! only outside fact it needs is the store's answer for a BSUID, so an audit
//! makes no network call and never asks Meta for a template's category: a
//! template counts as AUTHENTICATION only through a `[templates]` override.
//!
//! The list is read as a stream and each row is written out as soon as it is
//! decided, so a list of any length runs in constant memory.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::{self, BufRead, BufWriter, Write};

use crate::config::{Category, Config};
use crate::csv_rows::{Fields, Rows};
use crate::identifier::classify;
use crate::identity::{Identities, Scope};
use crate::send::payload::Target;
use crate::send::policy::{
    Addressing, Decision, Facts, MessageKind, Policy, Recipient, address, decide,
};

/// Everything a verdict depends on besides the recipient itself.
pub(crate) struct AuditContext<'a> {
    pub(crate) identities: &'a Identities,
    /// The scope of the business number the campaign goes out from: BSUIDs
    /// only resolve within it.
    pub(crate) scope: Scope<'a>,
    /// The business number itself, whose own claims count when
    /// `identity.learn_from_sends` is on.
    pub(crate) number: &'a str,
    pub(crate) learn_from_sends: bool,
    pub(crate) kind: MessageKind,
    pub(crate) policy: Policy,
}

impl<'a> AuditContext<'a> {
    /// The context of a campaign from `number_id`, optionally with one template.
    pub(crate) fn new(
        config: &'a Config,
        identities: &'a Identities,
        number_id: &'a str,
        template: Option<&str>,
    ) -> Self {
        AuditContext {
            identities,
            scope: config.scope_of(number_id),
            number: number_id,
            learn_from_sends: config.identity.learn_from_sends,
            kind: campaign_kind(config, template),
            policy: config.policy.policy(),
        }
    }
}

/// A campaign send, authentication when config says the template is one.
/// `serve` would also ask Meta for an unlisted template's category; the
/// audit stays offline, so an unlisted template is only a campaign send.
pub(crate) fn campaign_kind(config: &Config, template: Option<&str>) -> MessageKind {
    let category = template.and_then(|name| config.templates.get(name));
    MessageKind {
        authentication: category == Some(&Category::Authentication),
        bid_spec: false,
        campaign: true,
    }
}

/// What sendgate would do with one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A phone number: the send goes to it.
    SendToPhone,
    /// A BSUID with no known phone that policy lets through: the send goes
    /// to the BSUID (in `recipient`).
    SendToBsuid,
    /// A BSUID whose phone the store knows: the send goes to that phone.
    ResolvedToPhone { phone: String },
    /// Forwarded exactly as written because policy switched the check off
    /// (a username with `block_usernames = false`); Meta will refuse it.
    SendUnchanged,
    /// Refused locally; `reason` is the machine-readable block reason.
    Blocked { reason: &'static str },
}

/// The kind of a [`Verdict`], for counting and for the ACTION column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    SendToPhone,
    SendToBsuid,
    ResolvedToPhone,
    SendUnchanged,
    Blocked,
}

impl Action {
    /// Every action, in the order the summary lists them.
    pub(crate) const ALL: [Action; 5] = [
        Action::SendToPhone,
        Action::SendToBsuid,
        Action::ResolvedToPhone,
        Action::SendUnchanged,
        Action::Blocked,
    ];

    /// The words in the ACTION column and the summary.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Action::SendToPhone => "send to phone",
            Action::SendToBsuid => "send to BSUID",
            Action::ResolvedToPhone => "resolved BSUID to phone",
            Action::SendUnchanged => "send unchanged",
            Action::Blocked => "blocked",
        }
    }
}

/// The widest [`Action::as_str`], to align the table.
const ACTION_WIDTH: usize = 23;

impl Verdict {
    pub(crate) fn action(&self) -> Action {
        match self {
            Verdict::SendToPhone => Action::SendToPhone,
            Verdict::SendToBsuid => Action::SendToBsuid,
            Verdict::ResolvedToPhone { .. } => Action::ResolvedToPhone,
            Verdict::SendUnchanged => Action::SendUnchanged,
            Verdict::Blocked { .. } => Action::Blocked,
        }
    }

    /// The DETAIL column: the resolved phone, the block reason, or nothing.
    pub(crate) fn detail(&self) -> &str {
        match self {
            Verdict::ResolvedToPhone { phone } => phone,
            Verdict::Blocked { reason } => reason,
            Verdict::SendUnchanged => "username_target not enforced",
            Verdict::SendToPhone | Verdict::SendToBsuid => "",
        }
    }
}

/// Decides one recipient as a send with the value in `to` would be decided.
/// The identity store behind `ctx.identities` is the only thing consulted,
/// and only for a BSUID.
pub(crate) fn audit_one(value: &str, ctx: &AuditContext<'_>) -> Verdict {
    let facts = Facts {
        group: false,
        to: Some(Recipient {
            value,
            class: classify(value),
        }),
        recipient: None,
    };
    let person = match address(&facts, &ctx.policy) {
        Addressing::Untouched => return Verdict::SendUnchanged,
        Addressing::Blocked(reason) => {
            return Verdict::Blocked {
                reason: reason.as_str(),
            };
        }
        Addressing::Person(person) => person,
    };
    let known_phone = match person.bsuid {
        Some(bsuid) if person.is_bsuid_only() => ctx.identities.phone_for_blocking(
            ctx.scope,
            ctx.number,
            bsuid.value,
            ctx.learn_from_sends,
        ),
        _ => None,
    };
    match decide(&person, ctx.kind, known_phone.as_deref(), &ctx.policy) {
        Decision::Block(reason) => Verdict::Blocked {
            reason: reason.as_str(),
        },
        Decision::Rewrite {
            to: Target::Value(phone),
            ..
        } => Verdict::ResolvedToPhone { phone },
        // Anything else keeps the sender's identifier, possibly moved to the
        // field it belongs in.
        Decision::Rewrite { .. } | Decision::Forward if person.phone.is_some() => {
            Verdict::SendToPhone
        }
        Decision::Rewrite { .. } | Decision::Forward => Verdict::SendToBsuid,
    }
}

/// Header names of the recipient column of a CSV list.
pub(crate) const RECIPIENT_COLUMNS: [&str; 4] = ["recipient", "to", "phone", "bsuid"];

/// One recipient read from a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry<'a> {
    /// 1-based line number in the file (of the row's first line).
    pub(crate) line: u64,
    pub(crate) value: &'a str,
    /// Bytes of the input read so far, for progress.
    pub(crate) offset: u64,
}

/// Why reading a list stopped.
#[derive(Debug)]
pub(crate) enum ListError {
    /// The input could not be read.
    Read(String),
    /// The callback failed (writing the output).
    Write(io::Error),
}

/// How a list was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ListShape {
    /// A CSV whose header names this recipient column.
    Csv { column: String },
    /// One recipient per line.
    Plain,
    /// No non-blank line at all.
    Empty,
}

/// Reads a recipient list and calls `each` once per recipient, in order.
///
/// The first non-blank line is a CSV header if one of its cells is one of
/// [`RECIPIENT_COLUMNS`] (case-insensitive; the leftmost such cell wins and
/// the other columns are ignored); otherwise every line is one recipient.
/// Blank lines (and CSV rows of empty cells) are skipped. Values are
/// trimmed of surrounding whitespace, which a spreadsheet export or a CRLF
/// file adds and no identifier has.
pub(crate) fn read_list<R: BufRead>(
    input: R,
    mut each: impl FnMut(Entry<'_>) -> io::Result<()>,
) -> Result<ListShape, ListError> {
    // One buffer for every row: no allocation per row.
    let mut record = Vec::new();
    let mut rows = Rows::new(input);
    let mut shape = ListShape::Empty;
    let mut column = 0;
    loop {
        let line = match rows.next_row(&mut record) {
            Ok(Some(line)) => line,
            Ok(None) => return Ok(shape),
            Err(err) => return Err(ListError::Read(format!("line {}: {err}", rows.line() + 1))),
        };
        let value = match shape {
            ListShape::Empty => match header_column(&record) {
                Some((index, name)) => {
                    column = index;
                    shape = ListShape::Csv { column: name };
                    rows.quoted_rows(true);
                    continue;
                }
                None => {
                    shape = ListShape::Plain;
                    Cow::Borrowed(&record[..])
                }
            },
            ListShape::Plain => Cow::Borrowed(&record[..]),
            ListShape::Csv { .. } => {
                if record.iter().all(|&b| b == b',' || b.is_ascii_whitespace()) {
                    continue;
                }
                // A row too short to have the column has an empty recipient,
                // which is reported (a campaign row with nobody to send to),
                // not skipped.
                Fields::new(&record).nth(column).unwrap_or_default()
            }
        };
        each(Entry {
            line,
            value: &utf8(&value),
            offset: rows.offset(),
        })
        .map_err(ListError::Write)?;
    }
}

/// The index and name of the recipient column, if `line` is such a header.
fn header_column(line: &[u8]) -> Option<(usize, String)> {
    Fields::new(line).enumerate().find_map(|(index, cell)| {
        RECIPIENT_COLUMNS
            .iter()
            .find(|name| cell.eq_ignore_ascii_case(name.as_bytes()))
            .map(|name| (index, (*name).to_owned()))
    })
}

/// Text of a value; bytes that are not UTF-8 become U+FFFD, which no
/// identifier contains, so such a value is judged invalid as it should be.
fn utf8(bytes: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

/// Counts of what an audit decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    pub(crate) recipients: u64,
    actions: [u64; Action::ALL.len()],
    /// Block reason → count, in the order first seen (there are only a few).
    reasons: Vec<(&'static str, u64)>,
}

impl Tally {
    pub(crate) fn add(&mut self, verdict: &Verdict) {
        self.recipients += 1;
        self.actions[verdict.action() as usize] += 1;
        if let Verdict::Blocked { reason } = verdict {
            match self.reasons.iter_mut().find(|(seen, _)| seen == reason) {
                Some((_, count)) => *count += 1,
                None => self.reasons.push((reason, 1)),
            }
        }
    }

    pub(crate) fn count(&self, action: Action) -> u64 {
        self.actions[action as usize]
    }

    #[cfg(test)]
    fn blocked_for(&self, reason: &str) -> u64 {
        self.reasons
            .iter()
            .find(|(seen, _)| *seen == reason)
            .map_or(0, |(_, count)| *count)
    }

    /// The summary block: every action (`send unchanged` only when it
    /// happened: it needs a policy switched off), then each block reason,
    /// most frequent first.
    pub(crate) fn write_summary(&self, out: &mut impl Write) -> io::Result<()> {
        writeln!(out, "{:<28}{:>9}", "recipients", self.recipients)?;
        for action in Action::ALL {
            let count = self.count(action);
            if action == Action::SendUnchanged && count == 0 {
                continue;
            }
            writeln!(out, "  {:<26}{count:>9}", action.as_str())?;
        }
        let mut reasons = self.reasons.clone();
        reasons.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        for (reason, count) in reasons {
            writeln!(out, "    {reason:<24}{count:>9}")?;
        }
        Ok(())
    }
}

/// Where the rows go.
enum Sink<W: Write> {
    Table(BufWriter<W>),
    // Boxed: the CSV writer carries its parser state inline, ten times the
    // size of a BufWriter, and the enum is moved around by value.
    Csv(Box<csv::Writer<W>>),
}

/// Writes one row per recipient, as an aligned table or as CSV, and counts.
pub(crate) struct Report<W: Write> {
    sink: Sink<W>,
    tally: Tally,
    /// Reused to format line numbers for the CSV writer.
    scratch: String,
}

/// Width of the RECIPIENT column: a formatted phone or a typical BSUID
/// fits. The table is streamed, so a longer value cannot widen the column;
/// it pushes the rest of its own row right instead.
const RECIPIENT_WIDTH: usize = 24;
/// Width of the LINE column; a longer number widens its row the same way.
const LINE_WIDTH: usize = 6;

impl<W: Write> Report<W> {
    /// An aligned table for people, with its header line.
    pub(crate) fn table(out: W) -> io::Result<Self> {
        let mut out = BufWriter::with_capacity(64 * 1024, out);
        writeln!(
            out,
            "{:>LINE_WIDTH$}  {:<RECIPIENT_WIDTH$}  {:<ACTION_WIDTH$}  DETAIL",
            "LINE", "RECIPIENT", "ACTION"
        )?;
        Ok(Self::with(Sink::Table(out)))
    }

    /// CSV (`line,recipient,action,detail`) for programs.
    pub(crate) fn csv(out: W) -> io::Result<Self> {
        let mut out = csv::WriterBuilder::new()
            .buffer_capacity(64 * 1024)
            .from_writer(out);
        out.write_record(["line", "recipient", "action", "detail"])
            .map_err(csv_io)?;
        Ok(Self::with(Sink::Csv(Box::new(out))))
    }

    fn with(sink: Sink<W>) -> Self {
        Report {
            sink,
            tally: Tally::default(),
            scratch: String::new(),
        }
    }

    pub(crate) fn row(&mut self, line: u64, recipient: &str, verdict: &Verdict) -> io::Result<()> {
        self.tally.add(verdict);
        let action = verdict.action().as_str();
        let detail = verdict.detail();
        match &mut self.sink {
            Sink::Csv(out) => {
                self.scratch.clear();
                let _ = write!(self.scratch, "{line}");
                out.write_record([self.scratch.as_str(), recipient, action, detail])
                    .map_err(csv_io)?;
            }
            Sink::Table(out) => {
                // A quoted CSV cell can hold a newline or a tab, which would
                // break the table: such a value is shown escaped.
                let shown = if recipient.contains(char::is_control) {
                    Cow::Owned(recipient.escape_debug().to_string())
                } else {
                    Cow::Borrowed(recipient)
                };
                write!(out, "{line:>LINE_WIDTH$}  {shown:<RECIPIENT_WIDTH$}  ")?;
                if detail.is_empty() {
                    writeln!(out, "{action}")?;
                } else {
                    writeln!(out, "{action:<ACTION_WIDTH$}  {detail}")?;
                }
            }
        }
        Ok(())
    }

    /// Flushes the rows and returns the counts.
    pub(crate) fn finish(self) -> io::Result<Tally> {
        match self.sink {
            Sink::Table(mut out) => out.flush()?,
            Sink::Csv(mut out) => out.flush()?,
        }
        Ok(self.tally)
    }
}

/// The I/O error inside a CSV writer's error, so the caller can still tell
/// a closed pipe (`| head`) from a real failure; csv's own conversion
/// would wrap it as `ErrorKind::Other`.
fn csv_io(err: csv::Error) -> io::Error {
    let message = err.to_string();
    match err.into_kind() {
        csv::ErrorKind::Io(err) => err,
        _ => io::Error::other(message),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::identity::{IdentityEvent, Observation, RedbStore, Source};

    const PHONE: &str = "+1 (631) 555-1234";
    const KNOWN: &str = "US.13491208655302741918";
    const KNOWN_PHONE: &str = "16315551234";
    const UNKNOWN: &str = "US.99999999999999999999";

    fn identities() -> Identities {
        let identities = Identities::new(
            RedbStore::in_memory().unwrap(),
            100,
            Duration::from_secs(60),
        );
        let seen = |bsuid: &str, parent: Option<&str>, phone: &str| {
            let observation = Observation {
                bsuid: bsuid.into(),
                parent_bsuid: parent.map(str::to_owned),
                phone: Some(phone.into()),
                ..Observation::default()
            };
            ("acme".to_owned(), IdentityEvent::Seen(observation))
        };
        identities
            .apply(
                &[
                    seen(KNOWN, None, KNOWN_PHONE),
                    seen("US.2", Some("US.ENT.2"), "16505550000"),
                ],
                Source::Import,
            )
            .unwrap();
        identities
    }

    fn config_with(text: &str) -> Config {
        let text = format!("[numbers.\"555\"]\nportfolio = \"acme\"\n{text}");
        Config::from_sources(&text, std::iter::empty()).unwrap()
    }

    fn blocked(reason: &'static str) -> Verdict {
        Verdict::Blocked { reason }
    }

    #[test]
    fn every_kind_of_recipient_in_a_campaign() {
        let identities = identities();
        let config = config_with("");
        let ctx = AuditContext::new(&config, &identities, "555", None);
        assert_eq!(audit_one(PHONE, &ctx), Verdict::SendToPhone);
        assert_eq!(audit_one(KNOWN_PHONE, &ctx), Verdict::SendToPhone);
        assert_eq!(
            audit_one(KNOWN, &ctx),
            Verdict::ResolvedToPhone {
                phone: KNOWN_PHONE.into()
            }
        );
        assert_eq!(
            audit_one("US.ENT.2", &ctx),
            Verdict::ResolvedToPhone {
                phone: "16505550000".into()
            },
            "a parent BSUID resolves too"
        );
        assert_eq!(audit_one(UNKNOWN, &ctx), blocked("campaign_needs_phone"));
        assert_eq!(audit_one("@lucia", &ctx), blocked("username_target"));
        assert_eq!(
            audit_one("us.13491208655302741918", &ctx),
            blocked("username_target"),
            "a re-cased BSUID is a username"
        );
        assert_eq!(audit_one("call me", &ctx), blocked("invalid_recipient"));
        assert_eq!(audit_one("", &ctx), blocked("invalid_recipient"));
        assert_eq!(audit_one(" US.1", &ctx), blocked("invalid_recipient"));
    }

    #[test]
    fn mappings_answer_only_in_their_scope() {
        let identities = identities();
        let config = config_with("");
        let ctx = AuditContext::new(&config, &identities, "777", None);
        assert_eq!(ctx.scope.key(), "number:777");
        assert_eq!(audit_one(KNOWN, &ctx), blocked("campaign_needs_phone"));
    }

    #[test]
    fn policy_switches_shape_the_verdict() {
        let identities = identities();
        let config =
            config_with("[policy]\ncampaign_requires_phone = false\nprefer_phone = false\n");
        let ctx = AuditContext::new(&config, &identities, "555", None);
        assert_eq!(audit_one(UNKNOWN, &ctx), Verdict::SendToBsuid);
        assert_eq!(
            audit_one(KNOWN, &ctx),
            Verdict::SendToBsuid,
            "nothing asks for the known phone"
        );

        let config = config_with("[policy]\ncampaign_requires_phone = false\n");
        let ctx = AuditContext::new(&config, &identities, "555", None);
        assert_eq!(audit_one(UNKNOWN, &ctx), Verdict::SendToBsuid);
        assert_eq!(
            audit_one(KNOWN, &ctx),
            Verdict::ResolvedToPhone {
                phone: KNOWN_PHONE.into()
            },
            "prefer_phone still resolves"
        );

        let config = config_with("[policy]\nblock_usernames = false\n");
        let ctx = AuditContext::new(&config, &identities, "555", None);
        assert_eq!(audit_one("@lucia", &ctx), Verdict::SendUnchanged);
    }

    #[test]
    fn an_authentication_override_needs_a_phone() {
        let identities = identities();
        let config =
            config_with("[templates]\notp_login = \"AUTHENTICATION\"\npromo = \"MARKETING\"\n");
        let ctx = AuditContext::new(&config, &identities, "555", Some("otp_login"));
        assert!(ctx.kind.authentication && ctx.kind.campaign);
        assert_eq!(
            audit_one(UNKNOWN, &ctx),
            blocked("auth_template_needs_phone")
        );
        assert_eq!(
            audit_one(KNOWN, &ctx),
            Verdict::ResolvedToPhone {
                phone: KNOWN_PHONE.into()
            }
        );
        assert_eq!(audit_one(PHONE, &ctx), Verdict::SendToPhone);

        let ctx = AuditContext::new(&config, &identities, "555", Some("promo"));
        assert!(!ctx.kind.authentication);
        assert_eq!(audit_one(UNKNOWN, &ctx), blocked("campaign_needs_phone"));
        let ctx = AuditContext::new(&config, &identities, "555", Some("unlisted"));
        assert!(!ctx.kind.authentication, "offline: no category from Meta");
    }

    fn read(text: &str) -> (ListShape, Vec<(u64, String)>) {
        let mut seen = Vec::new();
        let mut offsets = Vec::new();
        let shape = read_list(text.as_bytes(), |entry| {
            seen.push((entry.line, entry.value.to_owned()));
            offsets.push(entry.offset);
            Ok(())
        })
        .unwrap();
        assert!(offsets.windows(2).all(|w| w[0] <= w[1]), "{offsets:?}");
        assert!(offsets.last().is_none_or(|&last| last <= text.len() as u64));
        (shape, seen)
    }

    fn entries(list: &[(u64, &str)]) -> Vec<(u64, String)> {
        list.iter().map(|(l, v)| (*l, (*v).to_owned())).collect()
    }

    #[test]
    fn a_csv_list_uses_its_recipient_column() {
        let (shape, seen) = read(concat!(
            "\u{feff}Name, Phone ,bsuid\r\n",
            "Ana,+1 631 555 1234,US.1\r\n",
            "\r\n",
            "\"Lee, B\",  US.2  ,\r\n",
            "Short\n",
            ",,\n",
            "\"multi\nline\",@x,\n",
            "z,\"US.\"\"3\",\n",
        ));
        assert_eq!(
            shape,
            ListShape::Csv {
                column: "phone".into()
            },
            "the leftmost recipient column wins"
        );
        assert_eq!(
            seen,
            entries(&[
                (2, "+1 631 555 1234"),
                (4, "US.2"),
                (5, ""),
                (7, "@x"),
                (9, "US.\"3"),
            ])
        );
    }

    #[test]
    fn csv_cells_follow_rfc_4180() {
        let cells = |row: &str| -> Vec<String> {
            Fields::new(row.as_bytes())
                .map(|cell| String::from_utf8(cell.into_owned()).unwrap())
                .collect()
        };
        assert_eq!(cells("a, b ,,\" c \""), ["a", "b", "", "c"]);
        assert_eq!(cells(r#"x,"say ""hi""",y"#), ["x", "say \"hi\"", "y"]);
        assert_eq!(cells(r#""""""#), ["\""]);
        assert_eq!(cells(r#""a"junk,b"#), ["a", "b"]);
        assert_eq!(cells(r#""open, never closed"#), ["open, never closed"]);
        assert_eq!(cells(""), [""]);
        assert_eq!(cells("a,"), ["a", ""]);
    }

    #[test]
    fn a_plain_list_has_one_recipient_per_line() {
        let (shape, seen) = read("\n  16315551234 \r\nUS.1\n\n@lucia\na,b");
        assert_eq!(shape, ListShape::Plain);
        assert_eq!(
            seen,
            entries(&[(2, "16315551234"), (3, "US.1"), (5, "@lucia"), (6, "a,b")])
        );
        assert_eq!(read("\n \n").0, ListShape::Empty);
    }

    #[test]
    fn non_utf8_bytes_are_invalid_recipients() {
        let mut seen = Vec::new();
        read_list(&b"US.1\xff\n"[..], |entry| {
            seen.push(entry.value.to_owned());
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, ["US.1\u{fffd}"]);
        assert_eq!(classify(&seen[0]), crate::identifier::IdClass::Invalid);
    }

    #[test]
    fn reports_align_rows_and_count_them() {
        let verdicts = [
            (2, PHONE, Verdict::SendToPhone),
            (
                3,
                KNOWN,
                Verdict::ResolvedToPhone {
                    phone: KNOWN_PHONE.into(),
                },
            ),
            (4, "a,\"b\"", blocked("invalid_recipient")),
            (5, "x\ty", blocked("invalid_recipient")),
        ];
        let mut table = Report::table(Vec::new()).unwrap();
        let mut csv = Report::csv(Vec::new()).unwrap();
        for (line, value, verdict) in &verdicts {
            table.row(*line, value, verdict).unwrap();
            csv.row(*line, value, verdict).unwrap();
        }
        let Sink::Csv(writer) = &mut csv.sink else {
            unreachable!()
        };
        writer.flush().unwrap();
        let text = String::from_utf8(writer.get_ref().clone()).unwrap();
        assert_eq!(
            text,
            concat!(
                "line,recipient,action,detail\n",
                "2,+1 (631) 555-1234,send to phone,\n",
                "3,US.13491208655302741918,resolved BSUID to phone,16315551234\n",
                "4,\"a,\"\"b\"\"\",blocked,invalid_recipient\n",
                "5,x\ty,blocked,invalid_recipient\n",
            )
        );
        let tally = table.finish().unwrap();
        assert_eq!(tally, csv.finish().unwrap());
        assert_eq!(tally.recipients, 4);
        assert_eq!(tally.count(Action::Blocked), 2);
        assert_eq!(tally.blocked_for("invalid_recipient"), 2);
        assert_eq!(tally.count(Action::SendToBsuid), 0);

        let mut summary = Vec::new();
        tally.write_summary(&mut summary).unwrap();
        let summary = String::from_utf8(summary).unwrap();
        assert!(summary.contains("\n  blocked "), "{summary}");
        assert!(!summary.contains("send unchanged"), "{summary}");
    }

    #[test]
    fn table_rows_line_up() {
        let mut table = Report::table(Vec::new()).unwrap();
        table.row(2, PHONE, &Verdict::SendToPhone).unwrap();
        table
            .row(
                10,
                KNOWN,
                &Verdict::ResolvedToPhone {
                    phone: KNOWN_PHONE.into(),
                },
            )
            .unwrap();
        table
            .row(11, "x\ny", &blocked("invalid_recipient"))
            .unwrap();
        let Sink::Table(out) = &mut table.sink else {
            unreachable!()
        };
        out.flush().unwrap();
        let text = String::from_utf8(out.get_ref().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        let column = |line: &str, word: &str| line.find(word).unwrap();
        assert_eq!(column(lines[0], "ACTION"), column(lines[1], "send"));
        assert_eq!(column(lines[0], "DETAIL"), column(lines[2], KNOWN_PHONE));
        assert_eq!(column(lines[0], "DETAIL"), column(lines[3], "invalid"));
        assert!(lines[3].contains("x\\ny"), "escaped: {}", lines[3]);
        assert!(lines.iter().all(|line| !line.ends_with(' ')));
    }
}
