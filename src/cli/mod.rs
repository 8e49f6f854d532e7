//! The commands of the `sendgate` binary, as library code: `main.rs` parses
//! the command line and calls one of these. Each fails with a [`CliError`],
//! the one line the binary prints before it exits non-zero.
//!
//! - [`serve`]: the proxy (and `sandbox`, the simulated Cloud API alone).
//! - [`check`]: `check-config`, the checks `serve` runs before it starts.
//! - [`identities`]: `import`, `move-scope` and `fingerprint`, offline
//!   work on the identity store and on tokens.
//! - [`audit`]: a campaign list judged offline, row by row.
//! - [`migrate`]: `migrate-store`, a single machine's store into a fleet's.

pub mod audit;
pub mod check;
pub mod identities;
pub mod migrate;
mod operator;
pub mod serve;

use std::fmt;
use std::path::{Path, PathBuf};

use clap::Subcommand;

use crate::config::{Config, LogFormat};
use crate::logging;

/// Why a command failed: one line for the operator.
#[derive(Debug)]
pub struct CliError(String);

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CliError {}

impl From<String> for CliError {
    fn from(message: String) -> Self {
        CliError(message)
    }
}

impl From<&str> for CliError {
    fn from(message: &str) -> Self {
        CliError(message.to_owned())
    }
}

/// The commands, as `sendgate --help` lists them.
#[derive(Subcommand)]
pub enum Command {
    /// Run the proxy.
    Serve {
        /// Config file [default: config/sendgate.toml, or the embedded defaults if absent].
        #[arg(long, env = "SENDGATE_CONFIG")]
        config: Option<PathBuf>,
        /// Address to listen on (overrides `listen`).
        #[arg(long)]
        listen: Option<String>,
        /// Upstream base URL (overrides `upstream`).
        #[arg(long)]
        upstream: Option<String>,
        /// Run the simulated Cloud API in-process and use it as the upstream.
        #[arg(long)]
        sandbox: bool,
    },
    /// Validate a config file as `serve` would before starting, and exit.
    ///
    /// Runs every check `serve` runs before it binds a port: the file's
    /// syntax, keys and values, the SENDGATE_* overrides, the secrets the
    /// config needs from the environment (SENDGATE_APP_SECRET and
    /// SENDGATE_VERIFY_TOKEN with a webhook path), the upstream's CA file.
    /// Exits non-zero with one line naming the problem.
    CheckConfig {
        /// Config file [default: config/sendgate.toml, or the embedded defaults if absent].
        #[arg(long, env = "SENDGATE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Run only the simulated Cloud API.
    Sandbox {
        #[arg(long, default_value = "127.0.0.1:9080")]
        listen: String,
    },
    /// Import known phone <-> BSUID pairs into the identity store.
    ///
    /// FILE is CSV whose header names some of bsuid, phone, parent_bsuid,
    /// username, portfolio, number; or JSON lines with the same fields. A
    /// row belongs to its number's scope (its portfolio, or the number
    /// alone), or to the portfolio it names, else to --number's or
    /// --portfolio's. Bad rows are listed and skipped, and make the exit
    /// status non-zero unless --allow-rejects. The store is the one
    /// `serve` uses, which holds it while running: stop it first, or use
    /// POST /admin/identities. A store file that does not exist is an error
    /// (a relative store.path read from the wrong directory) unless --create.
    Import {
        /// The CSV or JSON-lines file ("-" for standard input).
        file: PathBuf,
        /// The business phone number id whose scope rows without a number or portfolio go to.
        #[arg(long, conflicts_with = "portfolio")]
        number: Option<String>,
        /// The portfolio rows without a number or portfolio go to.
        #[arg(long)]
        portfolio: Option<String>,
        /// Exit 0 even when rows were rejected (they are listed either way).
        #[arg(long)]
        allow_rejects: bool,
        /// Start a new identity store when store.path names no file yet.
        #[arg(long)]
        create: bool,
        /// Config file [default: config/sendgate.toml, or the embedded defaults if absent].
        #[arg(long, env = "SENDGATE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print the fingerprint of a sender's token, read from standard input.
    ///
    /// The fingerprint is what `[clients.<name>] tokens` and
    /// `[numbers."<id>"] tokens` list. It is made with SENDGATE_FINGERPRINT_KEY
    /// (as `serve` makes it), and the token never leaves this process.
    Fingerprint,
    /// Move every identity of one scope into another (offline, like import).
    ///
    /// Numbers without a portfolio shared the portfolio "default" before
    /// each became a scope of its own; this moves what they learned then to
    /// the number (or portfolio) it belongs to. What the target already
    /// knows wins a conflict, and every conflict is counted.
    MoveScope {
        /// The portfolio to empty, e.g. default.
        #[arg(long)]
        from: String,
        /// Move into this business number's scope.
        #[arg(
            long,
            conflicts_with = "to_portfolio",
            required_unless_present = "to_portfolio"
        )]
        to_number: Option<String>,
        /// Move into this portfolio.
        #[arg(long)]
        to_portfolio: Option<String>,
        /// Config file [default: config/sendgate.toml, or the embedded defaults if absent].
        #[arg(long, env = "SENDGATE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Copy a single machine's identity store into the fleet's Redis.
    ///
    /// Reads every record, retired BSUID and claim of `store.path` and writes
    /// it to `fleet.redis_url`, then prints the counts. The file is only
    /// read; the fleet may serve meanwhile. A BSUID Redis holds as retired
    /// stays retired.
    MigrateStore {
        /// The store to read.
        #[arg(long, value_enum)]
        from: StoreKind,
        /// The store to write.
        #[arg(long, value_enum)]
        to: StoreKind,
        /// Config file [default: config/sendgate.toml, or the embedded defaults if absent].
        #[arg(long, env = "SENDGATE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Say what sendgate would do with each recipient of a campaign list.
    ///
    /// Offline: decided against the identity store `serve` uses, with no
    /// network call. FILE is a CSV with a recipient, to, phone or bsuid
    /// column (the leftmost wins; other columns are ignored), or one
    /// recipient per line. Prints a table and a summary, or with --csv the
    /// rows as CSV on stdout and the summary on stderr.
    Audit {
        /// The recipient list ("-" for standard input).
        file: PathBuf,
        /// The business phone number id the campaign goes out from (it picks the portfolio).
        #[arg(long)]
        number: String,
        /// The template the campaign sends; an AUTHENTICATION override in [templates] needs phones.
        #[arg(long)]
        template: Option<String>,
        /// Write CSV (line,recipient,action,detail) to stdout and the summary to stderr.
        #[arg(long)]
        csv: bool,
        /// Config file [default: config/sendgate.toml, or the embedded defaults if absent].
        #[arg(long, env = "SENDGATE_CONFIG")]
        config: Option<PathBuf>,
    },
}

impl Command {
    /// The `--config` the command was given, if it takes one.
    pub fn config(&self) -> Option<&Path> {
        match self {
            Command::Serve { config, .. }
            | Command::CheckConfig { config }
            | Command::Import { config, .. }
            | Command::MoveScope { config, .. }
            | Command::MigrateStore { config, .. }
            | Command::Audit { config, .. } => config.as_deref(),
            Command::Sandbox { .. } | Command::Fingerprint => None,
        }
    }
}

/// Prints a command's fatal error on stderr in the config's log format:
/// one JSON log line with `log.format = "json"` (from the file or
/// `SENDGATE_LOG__FORMAT`, even when the config is what failed), else
/// `sendgate: <error>`.
pub fn report_fatal(error: &CliError, config: Option<&Path>) {
    let text = config_file(config)
        .and_then(|path| std::fs::read_to_string(path).ok())
        .unwrap_or_default();
    match Config::log_format_of(&text, std::env::vars()) {
        LogFormat::Json => eprintln!("{}", logging::json_line("ERROR", &error.0, "sendgate")),
        LogFormat::Text => eprintln!("sendgate: {error}"),
    }
}

/// Which store a migration reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// The embedded file named by `store.path`.
    Redb,
    /// The fleet's Redis named by `fleet.redis_url`.
    Redis,
}

/// The documented config path; when it does not exist the embedded defaults apply.
pub const DEFAULT_CONFIG: &str = "config/sendgate.toml";

/// Loads the named config, or `config/sendgate.toml` if it exists, or the
/// embedded defaults.
pub fn load_config(path: Option<&Path>) -> Result<Config, CliError> {
    Config::load(config_file(path).as_deref())
        .map_err(|err| CliError(format!("config error: {err}")))
}

/// The config file in use: the one named, else `config/sendgate.toml` if it
/// exists, else none (the embedded defaults).
pub fn config_file(path: Option<&Path>) -> Option<PathBuf> {
    let default = Path::new(DEFAULT_CONFIG);
    path.or(default.exists().then_some(default))
        .map(Path::to_path_buf)
}
