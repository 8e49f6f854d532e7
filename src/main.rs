//! The sendgate command line: parse, load config, set up logs, run.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tokio::net::TcpListener;

use sendgate::admin::Admin;
use sendgate::config::{Config, NumberConfig, Secrets};
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("sendgate: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve {
            config,
            listen,
            upstream,
            sandbox,
        } => runtime.block_on(serve(config, listen, upstream, sandbox)),
        Command::CheckConfig { config } => load_config(config.as_deref()).map(|config| {
            println!(
                "config OK (listen {}, upstream {})",
                config.listen, config.upstream
            );
        }),
        Command::Sandbox { listen } => runtime.block_on(run_sandbox(&listen)),
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
    let default = Path::new(DEFAULT_CONFIG);
    let path = path.or(default.exists().then_some(default));
    Config::load(path).map_err(|err| format!("config error: {err}"))
}

async fn serve(
    config_path: Option<PathBuf>,
    listen: Option<String>,
    upstream: Option<String>,
    with_sandbox: bool,
) -> Result<(), String> {
    let mut config = load_config(config_path.as_deref())?;
    if let Some(listen) = listen {
        config.listen = listen
            .parse()
            .map_err(|_| format!("config error: --listen: not an address: {listen}"))?;
    }
    if let Some(upstream) = upstream {
        config.upstream = upstream;
    }
    logging::init(&config.log);
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
        config.upstream = format!("http://{address}");
        // The sandbox's number, so template categories are looked up from its WABA.
        config
            .numbers
            .entry(sandbox::PHONE_NUMBER_ID.to_owned())
            .or_insert_with(|| NumberConfig {
                waba_id: Some(sandbox::WABA_ID.to_owned()),
                ..NumberConfig::default()
            });
        tracing::info!(%address, phone_number_id = sandbox::PHONE_NUMBER_ID, "sandbox upstream started");
    }
    config
        .validate()
        .map_err(|err| format!("config error: {err}"))?;
    let listener = TcpListener::bind(config.listen)
        .await
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
    let app = Arc::new(App::new(config, secrets).map_err(|err| err.to_string())?);

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
    sendgate::run(listener, app, until_stopped(stopped)).await;
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
