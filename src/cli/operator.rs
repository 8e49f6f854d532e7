//! What the offline commands share: their log, progress bar, input and
//! output handling, and the identity store they open.

use std::fs::File;
use std::io::{self, BufRead, BufReader, IsTerminal};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use super::CliError;
use crate::config::Config;
use crate::fleet::Fleet;
use crate::identity::{Identities, RedbStore, RedisStore};

/// Sends store errors and the like to stderr. The proxy's own log setup
/// writes to stdout, which these commands keep for their report.
pub(super) fn init_operator_log() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(crate::logging::colour(io::stderr().is_terminal()))
        .with_writer(io::stderr)
        .try_init();
}

/// A progress bar on stderr over `len` input bytes, or a hidden one when
/// `show` is false (not a terminal: a bar would only litter a log).
pub(super) fn progress_bar(len: u64, show: bool) -> ProgressBar {
    if !show || len == 0 {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {elapsed} (eta {eta})")
    {
        bar.set_style(style);
    }
    // Keeps the bar moving on a slow store commit, between two updates.
    bar.enable_steady_tick(Duration::from_millis(250));
    bar
}

/// Opens a file to read, with the one line of error an operator needs.
/// `-` is standard input, whose size is unknown (0: no progress bar).
pub(super) fn open_input(file: &Path) -> Result<(Box<dyn BufRead>, u64), CliError> {
    if file == Path::new("-") {
        return Ok((
            Box::new(BufReader::with_capacity(64 * 1024, io::stdin())),
            0,
        ));
    }
    let cannot = |err: io::Error| format!("cannot read {}: {err}", file.display());
    let input = File::open(file).map_err(cannot)?;
    let size = input.metadata().map_err(cannot)?.len();
    Ok((Box::new(BufReader::with_capacity(64 * 1024, input)), size))
}

/// Maps a failure to write the report; a closed pipe (`| head`) is not one.
pub(super) fn output_error(err: io::Error) -> Result<(), CliError> {
    if err.kind() == io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(format!("cannot write the output: {err}").into())
    }
}

/// The fleet's shared store, when config names a Redis: operators import
/// and audit against it while the fleet serves.
pub(super) fn fleet_store(config: &Config) -> Result<Option<Arc<Identities>>, CliError> {
    if !config.fleet.enabled() {
        return Ok(None);
    }
    let fleet = Fleet::start(&config.fleet).map_err(|err| err.to_string())?;
    let identities = Identities::shared(RedisStore::new(fleet), 1 << 20, Duration::from_secs(3600));
    // One round trip first, so that an unreachable Redis is one clear line.
    identities.len().map_err(|err| err.to_string())?;
    Ok(Some(identities))
}

/// Opens the identity store file (failing in one line if `serve` holds it).
pub(super) fn open_store(path: &Path) -> Result<Arc<Identities>, CliError> {
    let (store, _) = RedbStore::open(path).map_err(|err| err.to_string())?;
    Ok(Arc::new(identities_over(store)))
}

/// The store behind a cache sized for one run over a list.
pub(super) fn identities_over(store: RedbStore) -> Identities {
    // One cache for the whole run: a BSUID repeated in a list is looked up
    // in the store once. Sized for a list, not for a long-running proxy.
    Identities::new(store, 1 << 20, Duration::from_secs(3600))
}
