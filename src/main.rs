//! The sendgate command line: parse, load config, set up logs, run.

use std::fs::File;
use std::future::Future;
use std::io::{self, BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::net::TcpListener;

use sendgate::admin::Admin;
use sendgate::audit::{self, AuditContext, ListError, ListShape, Report};
use sendgate::client::{self, Fingerprinter};
use sendgate::config::{Category, Config, Mode, NumberConfig, Secrets, check_portfolio_name};
use sendgate::identity::import::{self, Destination, Format};
use sendgate::identity::{Identities, RedbStore, Source};
use sendgate::proxy::ConfigSource;
use sendgate::sandbox::{self, Sandbox};
use sendgate::{App, logging, server};

#[derive(Parser)]
#[command(
    name = "sendgate",
    version,
    about = "A BSUID-aware proxy in front of the WhatsApp Cloud API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The documented config path; when it does not exist the embedded defaults apply.
const DEFAULT_CONFIG: &str = "config/sendgate.toml";

#[derive(Subcommand)]
enum Command {
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
    /// Validate a config file and exit (non-zero, naming the bad key, if invalid).
    CheckConfig {
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
    /// --portfolio's. Bad rows are listed and skipped. The store is the one
    /// `serve` uses, which holds it while running: stop it first, or use
    /// POST /admin/identities.
    Import {
        /// The CSV or JSON-lines file.
        file: PathBuf,
        /// The business phone number id whose scope rows without a number or portfolio go to.
        #[arg(long, conflicts_with = "portfolio")]
        number: Option<String>,
        /// The portfolio rows without a number or portfolio go to.
        #[arg(long)]
        portfolio: Option<String>,
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
    /// Say what sendgate would do with each recipient of a campaign list.
    ///
    /// Offline: decided against the identity store `serve` uses, with no
    /// network call. FILE is a CSV with a recipient, to, phone or bsuid
    /// column (the leftmost wins; other columns are ignored), or one
    /// recipient per line. Prints a table and a summary, or with --csv the
    /// rows as CSV on stdout and the summary on stderr.
    Audit {
        /// The recipient list.
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

/// The arguments of `sendgate audit`.
struct AuditArgs {
    file: PathBuf,
    number: String,
    template: Option<String>,
    csv: bool,
    config: Option<PathBuf>,
}

/// mimalloc: the proxy allocates and frees small buffers on every request,
/// and glibc's malloc showed up as ~5% of its CPU under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve {
            config,
            listen,
            upstream,
            sandbox,
        } => {
            let path = config_file(config.as_deref());
            load_config(path.as_deref())
                .and_then(|loaded| block_on(serve(path, loaded, listen, upstream, sandbox)))
        }
        Command::CheckConfig { config } => load_config(config.as_deref()).map(|config| {
            println!(
                "config OK (listen {}, upstream {})",
                config.listen, config.upstream
            );
        }),
        Command::Sandbox { listen } => block_on(run_sandbox(&listen)),
        Command::Import {
            file,
            number,
            portfolio,
            config,
        } => run_import(&file, number, portfolio, config.as_deref()),
        Command::Fingerprint => run_fingerprint(),
        Command::MoveScope {
            from,
            to_number,
            to_portfolio,
            config,
        } => run_move_scope(&from, to_number, to_portfolio, config.as_deref()),
        Command::Audit {
            file,
            number,
            template,
            csv,
            config,
        } => run_audit(&AuditArgs {
            file,
            number,
            template,
            csv,
            config,
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("sendgate: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Loads the named config, or `config/sendgate.toml` if it exists, or the
/// embedded defaults.
fn load_config(path: Option<&Path>) -> Result<Config, String> {
    Config::load(config_file(path).as_deref()).map_err(|err| format!("config error: {err}"))
}

/// The config file in use: the one named, else `config/sendgate.toml` if it
/// exists, else none (the embedded defaults).
fn config_file(path: Option<&Path>) -> Option<PathBuf> {
    let default = Path::new(DEFAULT_CONFIG);
    path.or(default.exists().then_some(default))
        .map(Path::to_path_buf)
}

/// Runs a command that needs the async runtime; the one-shot operator
/// commands are plain blocking code and do without it. One thread is
/// enough: it accepts, runs the admin API and handles signals, while the
/// proxy's requests run on worker threads of their own (`worker_threads`).
fn block_on(future: impl Future<Output = Result<(), String>>) -> Result<(), String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| format!("cannot start the runtime: {err}"))?
        .block_on(future)
}

async fn serve(
    path: Option<PathBuf>,
    mut config: Config,
    listen: Option<String>,
    upstream: Option<String>,
    with_sandbox: bool,
) -> Result<(), String> {
    logging::init(&config.log);
    let listen = match listen {
        Some(listen) => Some(
            listen
                .parse::<std::net::SocketAddr>()
                .map_err(|_| format!("config error: --listen: not an address: {listen}"))?,
        ),
        None => None,
    };
    let mut upstream = upstream;
    if with_sandbox {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|err| err.to_string())?;
        let address = listener.local_addr().map_err(|err| err.to_string())?;
        tokio::spawn(server::serve(
            listener,
            Sandbox::new(),
            std::future::pending(),
        ));
        upstream = Some(format!("http://{address}"));
        tracing::info!(%address, phone_number_id = sandbox::PHONE_NUMBER_ID, "sandbox upstream started");
    }
    // What the command line says wins over the file, now and at every reload.
    let overrides = move |config: &mut Config| {
        if let Some(listen) = listen {
            config.listen = listen;
        }
        if let Some(upstream) = &upstream {
            config.upstream.clone_from(upstream);
        }
        if with_sandbox {
            // The sandbox's number, so template categories are looked up from its WABA.
            config
                .numbers
                .entry(sandbox::PHONE_NUMBER_ID.to_owned())
                .or_insert_with(|| NumberConfig {
                    waba_id: Some(sandbox::WABA_ID.to_owned()),
                    ..NumberConfig::default()
                });
        }
    };
    overrides(&mut config);
    config
        .validate()
        .map_err(|err| format!("config error: {err}"))?;
    raise_fd_limit();
    let listener = server::bind(config.listen, config.connections.backlog)
        .map_err(|err| format!("cannot listen on {}: {err}", config.listen))?;
    let admin_listen = config
        .admin_listen()
        .map_err(|err| format!("config error: {err}"))?;
    let admin_listener = match admin_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|err| format!("cannot listen on {addr} (admin): {err}"))?,
        ),
        None => None,
    };
    tracing::info!(listen = %config.listen, upstream = %config.upstream, mode = ?config.policy.mode, "sendgate started");
    let secrets = Secrets::from_env(std::env::vars());
    let source = ConfigSource {
        path,
        overrides: Box::new(overrides),
    };
    let app = App::new(config, secrets).map_err(|err| err.to_string())?;
    let app = Arc::new(app.with_source(source));
    tokio::spawn(reload_on_hangup(app.clone()));

    // One signal stops both listeners.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    });
    let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    if let Some(admin_listener) = admin_listener {
        if let Ok(addr) = admin_listener.local_addr() {
            tracing::info!(listen = %addr, "admin API started");
        }
        let admin = Admin::new(app.clone());
        tokio::spawn(server::serve(
            admin_listener,
            admin,
            until_stopped(stopped.clone()),
        ));
    }
    sendgate::run(listener, app, until_stopped(stopped))
        .await
        .map_err(|err| format!("cannot start the worker threads: {err}"))?;
    tracing::info!("sendgate stopped");
    Ok(())
}

async fn run_sandbox(listen: &str) -> Result<(), String> {
    logging::init(
        &Config::from_sources("", std::iter::empty())
            .map_err(|e| e.to_string())?
            .log,
    );
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|err| format!("cannot listen on {listen}: {err}"))?;
    tracing::info!(
        listen,
        phone_number_id = sandbox::PHONE_NUMBER_ID,
        waba_id = sandbox::WABA_ID,
        "sandbox started"
    );
    server::serve(listener, Sandbox::new(), shutdown_signal()).await;
    Ok(())
}

/// Raises the descriptor limit as far as the operator allows, and says so
/// once: the connection cap is derived from it.
fn raise_fd_limit() {
    match server::raise_fd_limit() {
        Ok(server::Raised { before, now }) if before != now => {
            tracing::info!(before, now, "raised the open-file limit to its hard limit");
        }
        Ok(server::Raised { now, .. }) => {
            tracing::info!(limit = now, "open-file limit");
        }
        Err(err) => tracing::warn!(error = %err, "cannot raise the open-file limit"),
    }
}

/// Re-reads the config on every SIGHUP; a refused reload is logged and the
/// old config stays.
async fn reload_on_hangup(app: Arc<App>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            return;
        };
        while hangups.recv().await.is_some() {
            let app = app.clone();
            // Reading and validating the file is blocking work.
            let _ = tokio::task::spawn_blocking(move || app.reload()).await;
        }
    }
    #[cfg(not(unix))]
    drop(app);
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// Sends store errors and the like to stderr. The proxy's own log setup
/// writes to stdout, which these commands keep for their report.
fn init_operator_log() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .try_init();
}

/// A progress bar on stderr over `len` input bytes, or a hidden one when
/// `show` is false (not a terminal: a bar would only litter a log).
fn progress_bar(len: u64, show: bool) -> ProgressBar {
    if !show {
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
fn open_input(file: &Path) -> Result<(BufReader<File>, u64), String> {
    let cannot = |err: io::Error| format!("cannot read {}: {err}", file.display());
    let input = File::open(file).map_err(cannot)?;
    let size = input.metadata().map_err(cannot)?.len();
    Ok((BufReader::with_capacity(64 * 1024, input), size))
}

/// Maps a failure to write the report; a closed pipe (`| head`) is not one.
fn output_error(err: io::Error) -> Result<(), String> {
    if err.kind() == io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(format!("cannot write the output: {err}"))
    }
}

/// Rejected rows listed one per line; past this many only a count follows,
/// so a file of the wrong shape does not bury the summary.
const REJECTED_SHOWN: usize = 100;

/// The scope a `--number` or `--portfolio` names.
fn named_scope(
    config: &Config,
    number: Option<String>,
    portfolio: Option<String>,
) -> Result<Option<String>, String> {
    match (number, portfolio) {
        (Some(number), _) if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) => {
            Err(format!(
                "--number {number:?} is not a phone number id (digits)"
            ))
        }
        (Some(number), _) => Ok(Some(config.scope_of(&number).key().into_owned())),
        (None, Some(portfolio)) => match check_portfolio_name(&portfolio) {
            Ok(()) => Ok(Some(portfolio)),
            Err(why) => Err(format!("--portfolio {why}")),
        },
        (None, None) => Ok(None),
    }
}

fn run_import(
    file: &Path,
    number: Option<String>,
    portfolio: Option<String>,
    config_path: Option<&Path>,
) -> Result<(), String> {
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
        "" => {
            return Err(
                "store.path is empty (an in-memory store): an import would be lost at exit".into(),
            );
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
    written.or_else(output_error)
}

/// Opens the identity store file (failing in one line if `serve` holds it).
fn open_store(path: &Path) -> Result<Identities, String> {
    let (store, _) = RedbStore::open(path).map_err(|err| err.to_string())?;
    Ok(identities_over(store))
}

fn run_fingerprint() -> Result<(), String> {
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

fn run_move_scope(
    from: &str,
    to_number: Option<String>,
    to_portfolio: Option<String>,
    config_path: Option<&Path>,
) -> Result<(), String> {
    init_operator_log();
    let config = load_config(config_path)?;
    let to = named_scope(&config, to_number, to_portfolio)?
        .ok_or("say where to: --to-number or --to-portfolio")?;
    if to == from {
        return Err(format!("--from and the target are both {from:?}"));
    }
    let path = match config.store.path.as_str() {
        "" => return Err("store.path is empty (an in-memory store): nothing to move".into()),
        path if !Path::new(path).exists() => return Err(format!("no identity store at {path}")),
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

fn identities_over(store: RedbStore) -> Identities {
    // One cache for the whole run: a BSUID repeated in a list is looked up
    // in the store once. Sized for a list, not for a long-running proxy.
    Identities::new(store, 1 << 20, Duration::from_secs(3600))
}

/// The store an audit reads, and a note when it cannot hold any mapping.
/// A missing store file is not created: an audit only reads.
fn audit_store(config: &Config) -> Result<(Identities, Option<String>), String> {
    let in_memory = |note: String| {
        let store = RedbStore::in_memory().map_err(|err| err.to_string())?;
        Ok((identities_over(store), Some(note)))
    };
    match config.store.path.as_str() {
        "" => in_memory("store.path is empty (in-memory store): no BSUID resolves".into()),
        path if !Path::new(path).exists() => in_memory(format!(
            "no identity store at {path} yet: no BSUID resolves"
        )),
        path => Ok((open_store(Path::new(path))?, None)),
    }
}

fn category_name(category: Category) -> &'static str {
    match category {
        Category::Marketing => "MARKETING",
        Category::Utility => "UTILITY",
        Category::Authentication => "AUTHENTICATION",
    }
}

/// Progress is updated once per this many rows: often enough for a bar
/// redrawn at most 20 times a second, rarely enough to cost nothing.
const PROGRESS_EVERY: u64 = 1024;

fn run_audit(args: &AuditArgs) -> Result<(), String> {
    init_operator_log();
    let config = load_config(args.config.as_deref())?;
    if args.number.is_empty() || !args.number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "--number {:?}: a phone number id is digits only",
            args.number
        ));
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
            return Err(format!("cannot read {}: {reason}", args.file.display()));
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
            Some(&category) => format!("{name} ({})", category_name(category)),
            None => format!("{name} (not in [templates])"),
        },
    };
    let store = match config.store.path.as_str() {
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
