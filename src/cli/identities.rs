//! `sendgate import`, `sendgate move-scope` and `sendgate fingerprint`.

use std::io::{self, BufRead, IsTerminal, Write};
use std::path::Path;

use super::operator::{
    fleet_store, init_operator_log, open_input, open_store, output_error, progress_bar,
};
use super::{CliError, load_config};
use crate::client;
use crate::config::{Config, Secrets, check_portfolio_name};
use crate::fingerprint::Fingerprinter;
use crate::identity::Source;
use crate::identity::import::{self, Destination, Format};

/// Rejected rows listed one per line; past this many only a count follows,
/// so a file of the wrong shape does not bury the summary.
const REJECTED_SHOWN: usize = 100;

/// The scope a `--number` or `--portfolio` names.
fn named_scope(
    config: &Config,
    number: Option<String>,
    portfolio: Option<String>,
) -> Result<Option<String>, CliError> {
    match (number, portfolio) {
        (Some(number), _) if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) => {
            Err(format!("--number {number:?} is not a phone number id (digits)").into())
        }
        (Some(number), _) => Ok(Some(config.scope_of(&number).key().into_owned())),
        (None, Some(portfolio)) => match check_portfolio_name(&portfolio) {
            Ok(()) => Ok(Some(portfolio)),
            Err(why) => Err(format!("--portfolio {why}").into()),
        },
        (None, None) => Ok(None),
    }
}

/// `sendgate import`'s arguments.
#[derive(Debug)]
pub struct ImportArgs<'a> {
    /// The CSV or JSON-lines file (`-` for standard input).
    pub file: &'a Path,
    pub number: Option<String>,
    pub portfolio: Option<String>,
    /// Exit 0 even when rows were rejected.
    pub allow_rejects: bool,
    /// Make the store file when it does not exist yet.
    pub create: bool,
    pub config_path: Option<&'a Path>,
}

/// `sendgate import`: rows of FILE into the store, a summary on stdout.
pub fn import(args: ImportArgs<'_>) -> Result<(), CliError> {
    let ImportArgs {
        file,
        number,
        portfolio,
        allow_rejects,
        create,
        config_path,
    } = args;
    init_operator_log();
    let config = load_config(config_path)?;
    let default_scope = named_scope(&config, number, portfolio)?;
    // The file is checked before the store is opened, so a typo in FILE
    // never creates an empty store file as a side effect.
    let (mut input, size) = open_input(file)?;
    let head = input
        .fill_buf()
        .map_err(|err| format!("cannot read {}: {err}", file.display()))?;
    let format = Format::detect(head);
    let identities = match config.store.path.as_str() {
        _ if config.fleet.enabled() => fleet_store(&config)?.ok_or("fleet.redis_url is empty")?,
        "" => {
            return Err(
                "store.path is empty (an in-memory store): an import would be lost at exit".into(),
            );
        }
        path if !create && !Path::new(path).exists() => {
            return Err(no_store_to_import_into(Path::new(path)).into());
        }
        path => open_store(Path::new(path))?,
    };
    let bar = progress_bar(size, io::stderr().is_terminal());
    let destination = Destination {
        default_scope: default_scope.as_deref(),
        source: Source::Import,
    };
    let result = import::import(input, format, &config, &identities, destination, |read| {
        bar.set_position(read);
    });
    bar.finish_and_clear();
    let summary = result.map_err(|err| {
        format!(
            "import stopped: {err} (rows committed before it, in batches of {}, are kept)",
            import::BATCH
        )
    })?;
    let mut out = io::BufWriter::new(io::stdout().lock());
    let written = (|| {
        writeln!(
            out,
            "imported {}, updated {}, unchanged {}, rejected {}",
            summary.imported,
            summary.updated,
            summary.unchanged,
            summary.rejected.len()
        )?;
        for rejected in summary.rejected.iter().take(REJECTED_SHOWN) {
            writeln!(out, "line {}: {}", rejected.line, rejected.reason)?;
        }
        if let Some(more) = summary.rejected.len().checked_sub(REJECTED_SHOWN)
            && more > 0
        {
            writeln!(out, "... and {more} more rejected rows")?;
        }
        out.flush()
    })();
    written.or_else(output_error)?;
    match summary.rejected.len() {
        0 => Ok(()),
        _ if allow_rejects => Ok(()),
        n => Err(format!(
            "{n} rows rejected (listed above; the others were imported): --allow-rejects exits 0 anyway"
        )
        .into()),
    }
}

/// Why an import does not make the store it was pointed at: a missing
/// store is most often a relative `store.path` read from another
/// directory than `serve`'s, and an empty store made there would take
/// the pairs away from the one `serve` reads.
fn no_store_to_import_into(path: &Path) -> String {
    let shown = match std::env::current_dir() {
        Ok(dir) if path.is_relative() => format!("{} (in {})", path.display(), dir.display()),
        _ => path.display().to_string(),
    };
    format!(
        "no identity store at {shown}: run import where serve runs, or point store.path \
         (--config, SENDGATE_STORE__PATH) at serve's store; --create starts a new one"
    )
}

/// `sendgate fingerprint`: the fingerprint of the token on standard input.
pub fn fingerprint() -> Result<(), CliError> {
    let mut line = String::new();
    io::stdin()
        .read_line(&mut line)
        .map_err(|err| format!("cannot read the token from standard input: {err}"))?;
    let token = client::token_in(&line).ok_or("no token on standard input")?;
    let secrets = Secrets::from_env(std::env::vars());
    let fingerprint = Fingerprinter::new(secrets.fingerprint_key.as_deref()).of(token);
    println!("{fingerprint}");
    Ok(())
}

/// `sendgate move-scope`: every identity of one scope into another.
pub fn move_scope(
    from: &str,
    to_number: Option<String>,
    to_portfolio: Option<String>,
    config_path: Option<&Path>,
) -> Result<(), CliError> {
    init_operator_log();
    let config = load_config(config_path)?;
    let to = named_scope(&config, to_number, to_portfolio)?
        .ok_or("say where to: --to-number or --to-portfolio")?;
    if to == from {
        return Err(format!("--from and the target are both {from:?}").into());
    }
    let path = match config.store.path.as_str() {
        "" => return Err("store.path is empty (an in-memory store): nothing to move".into()),
        path if !Path::new(path).exists() => {
            return Err(format!("no identity store at {path}").into());
        }
        path => Path::new(path),
    };
    let moved = open_store(path)?
        .move_scope(from, &to)
        .map_err(|err| err.to_string())?;
    println!(
        "moved {} from {from:?} to {to:?}: {} records ({} merged into ones {to:?} had), {} retired BSUIDs, {} claims; {} phones or parents left with the BSUID {to:?} already gives them",
        moved.records + moved.merged + moved.retired + moved.claims,
        moved.records + moved.merged,
        moved.merged,
        moved.retired,
        moved.claims,
        moved.conflicts,
    );
    Ok(())
}
