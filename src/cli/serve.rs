//! `sendgate serve` and `sendgate sandbox`: listeners, signals, reloads.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;

use super::CliError;
use crate::admin::Admin;
use crate::app::{App, ConfigSource};
use crate::config::{Config, DEFAULT_STORE_PATH, NumberConfig, Secrets};
use crate::sandbox::{self, Sandbox};
use crate::{logging, server};

/// Runs a command that needs the async runtime; the one-shot operator
/// commands are plain blocking code and do without it. One thread is
/// enough: it accepts, runs the admin API and handles signals, while the
/// proxy's requests run on worker threads of their own (`worker_threads`).
pub fn block_on(future: impl Future<Output = Result<(), CliError>>) -> Result<(), CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| format!("cannot start the runtime: {err}"))?
        .block_on(future)
}

/// What the command line adds to the config of `serve`.
#[derive(Debug, Default)]
pub struct ServeArgs {
    /// The config file, read again on SIGHUP (none: the embedded defaults).
    pub path: Option<PathBuf>,
    /// `--listen`, which wins over `listen`.
    pub listen: Option<String>,
    /// `--upstream`, which wins over `upstream`.
    pub upstream: Option<String>,
    /// `--sandbox`: the simulated Cloud API in-process, as the upstream.
    pub sandbox: bool,
}

/// `sendgate serve`, until Ctrl-C or SIGTERM.
pub async fn serve(args: ServeArgs, config: Config) -> Result<(), CliError> {
    serve_until(args, config, shutdown_signal()).await
}

/// `sendgate serve` with `config` as loaded, until `shutdown` completes:
/// both listeners stop taking connections and the ones open are drained.
pub async fn serve_until(
    args: ServeArgs,
    mut config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), CliError> {
    let ServeArgs {
        path,
        listen,
        upstream,
        sandbox: with_sandbox,
    } = args;
    logging::init(&config.log);
    let listen = match listen {
        Some(listen) => Some(
            listen
                .parse::<std::net::SocketAddr>()
                .map_err(|_| format!("config error: --listen: not an address: {listen}"))?,
        ),
        None => None,
    };
    // First, so that every listener's connection cap (the sandbox's too)
    // is derived from the raised limit.
    raise_fd_limit();
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
        if with_sandbox && config.store.path == DEFAULT_STORE_PATH {
            // Pairs taught while trying the sandbox are not real people:
            // they stay out of the store a plain `serve` keeps (a path set
            // in config or the environment is used as given).
            config.store.path.clear();
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
    let secrets = Secrets::from_env(std::env::vars());
    super::check::before_start(&config, &secrets).map_err(|err| format!("config error: {err}"))?;
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
    let (listen, upstream, mode) = (config.listen, config.upstream.clone(), config.policy.mode);
    let source = ConfigSource {
        path,
        overrides: Box::new(overrides),
    };
    let app = App::new(config, secrets).map_err(|err| err.to_string())?;
    let app = Arc::new(app.with_source(source));
    tokio::spawn(reload_on_hangup(app.clone()));

    // One signal stops both listeners, after the shutdown delay: readiness
    // fails at once, so that the orchestrator stops routing here while
    // this still serves what it is sent.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let delay = app.config().shutdown.delay();
    let draining = app.clone();
    tokio::spawn(async move {
        shutdown.await;
        draining.begin_draining();
        if !delay.is_zero() {
            tracing::info!(
                delay_ms = delay.as_millis() as u64,
                "shutting down: readiness fails, serving on until the delay is over"
            );
            tokio::time::sleep(delay).await;
        }
        tracing::info!("shutting down: closing the listeners, draining requests in flight");
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
        let tls = match &app.tls {
            Some(terminator) if app.config().admin.tls => server::Tls::Admin(terminator.clone()),
            _ => server::Tls::Plain,
        };
        tokio::spawn(server::serve_with(
            admin_listener,
            admin,
            server::ConnectionLimits::from(&*app.config()),
            tls,
            until_stopped(stopped.clone()),
        ));
    }
    // Said once the store is open and the secrets checked, not before.
    tracing::info!(%listen, %upstream, ?mode, "sendgate started");
    crate::run(listener, app, until_stopped(stopped))
        .await
        .map_err(|err| format!("cannot start the worker threads: {err}"))?;
    tracing::info!("sendgate stopped");
    Ok(())
}

/// `sendgate sandbox`: the simulated Cloud API alone, until a signal.
pub async fn sandbox(listen: &str) -> Result<(), CliError> {
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
