//! `sendgate audit`: what sendgate would do with each recipient of a
//! campaign list, decided offline against the identity store.

use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::operator::{
    fleet_store, identities_over, init_operator_log, open_input, open_store, output_error,
    progress_bar,
};
use super::{CliError, load_config};
use crate::audit::{self, AuditContext, ListError, ListShape, Report};
use crate::config::{Config, Mode};
use crate::identity::{Identities, RedbStore};

/// The arguments of `sendgate audit`.
pub struct AuditArgs {
    pub file: PathBuf,
    pub number: String,
    pub template: Option<String>,
    pub csv: bool,
    pub config: Option<PathBuf>,
}

/// The store an audit reads, and a note when it cannot hold any mapping.
/// A missing store file is not created: an audit only reads.
fn audit_store(config: &Config) -> Result<(Arc<Identities>, Option<String>), CliError> {
    if let Some(shared) = fleet_store(config)? {
        return Ok((shared, None));
    }
    let in_memory = |note: String| {
        let store = RedbStore::in_memory().map_err(|err| err.to_string())?;
        Ok((Arc::new(identities_over(store)), Some(note)))
    };
    match config.store.path.as_str() {
        "" => in_memory("store.path is empty (in-memory store): no BSUID resolves".into()),
        path if !Path::new(path).exists() => in_memory(format!(
            "no identity store at {path} yet: no BSUID resolves"
        )),
        path => Ok((open_store(Path::new(path))?, None)),
    }
}

/// Progress is updated once per this many rows: often enough for a bar
/// redrawn at most 20 times a second, rarely enough to cost nothing.
const PROGRESS_EVERY: u64 = 1024;

/// `sendgate audit`: a table (or CSV) of verdicts and a summary.
pub fn run(args: &AuditArgs) -> Result<(), CliError> {
    init_operator_log();
    let config = load_config(args.config.as_deref())?;
    if args.number.is_empty() || !args.number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "--number {:?}: a phone number id is digits only",
            args.number
        )
        .into());
    }
    let (input, size) = open_input(&args.file)?;
    let (identities, store_note) = audit_store(&config)?;
    let known = identities.len().map_err(|err| err.to_string())?;
    let ctx = AuditContext::new(&config, &identities, &args.number, args.template.as_deref());

    let stdout = io::stdout();
    // With the table on the same terminal, the rows themselves show
    // progress and a bar would be torn by them.
    let bar = progress_bar(size, io::stderr().is_terminal() && !stdout.is_terminal());
    let out = stdout.lock();
    let report = if args.csv {
        Report::csv(out)
    } else {
        Report::table(out)
    };
    let mut report = match report {
        Ok(report) => report,
        Err(err) => return output_error(err),
    };
    let mut rows = 0u64;
    let read = audit::read_list(input, |entry| {
        let verdict = audit::audit_one(entry.value, &ctx);
        report.row(entry.line, entry.value, &verdict)?;
        rows += 1;
        if rows.is_multiple_of(PROGRESS_EVERY) {
            bar.set_position(entry.offset);
        }
        Ok(())
    });
    bar.finish_and_clear();
    let shape = match read {
        Ok(shape) => shape,
        Err(ListError::Read(reason)) => {
            return Err(format!("cannot read {}: {reason}", args.file.display()).into());
        }
        Err(ListError::Write(err)) => return output_error(err),
    };
    let tally = match report.finish() {
        Ok(tally) => tally,
        Err(err) => return output_error(err),
    };

    let mut summary = Vec::new();
    let shape = match shape {
        ListShape::Csv { column } => format!("CSV, column {column:?}"),
        ListShape::Plain => "one recipient per line".to_owned(),
        ListShape::Empty => "empty".to_owned(),
    };
    let template = match args.template.as_deref() {
        None => "none".to_owned(),
        Some(name) => match config.templates.get(name) {
            Some(&category) => format!("{name} ({})", category.as_word()),
            None => format!("{name} (not in [templates])"),
        },
    };
    let store = match config.store.path.as_str() {
        _ if config.fleet.enabled() => "the fleet's Redis".to_owned(),
        "" => "in memory".to_owned(),
        path => path.to_owned(),
    };
    let mut notes = Vec::new();
    notes.extend(store_note);
    if let Some(name) = args.template.as_deref()
        && !config.templates.contains_key(name)
    {
        notes.push(format!(
            "template {name} has no [templates] override: audited as a campaign send; serve would \
             also ask Meta for its category, and an AUTHENTICATION one needs phones"
        ));
    }
    if !config.numbers.contains_key(&args.number) {
        notes.push(format!(
            "number {} is not in [numbers]: audited in a scope of its own ({}), with no \
             portfolio's identities; check the number if this was not meant",
            args.number, ctx.scope
        ));
    }
    if config.policy.mode == Mode::Report {
        notes.push(
            "policy.mode = report: serve forwards every send unchanged; these are the actions \
             enforce mode would take"
                .to_owned(),
        );
    }
    let written = (|| {
        writeln!(summary, "list:      {} ({shape})", args.file.display())?;
        writeln!(summary, "number:    {} (scope {})", args.number, ctx.scope)?;
        writeln!(summary, "template:  {template}")?;
        let people = if known == 1 { "person" } else { "people" };
        writeln!(summary, "store:     {store} ({known} {people})")?;
        tally.write_summary(&mut summary)?;
        for note in &notes {
            writeln!(summary, "note: {note}")?;
        }
        if args.csv {
            io::stderr().lock().write_all(&summary)
        } else {
            let mut out = io::stdout().lock();
            out.write_all(b"\n")?;
            out.write_all(&summary)?;
            out.flush()
        }
    })();
    written.or_else(output_error)
}
