//! `sendgate check-config`, and the checks it shares with `serve`: one
//! function both call before anything starts, so that a config
//! `check-config` passes is one `serve` starts with.

use std::path::Path;

use super::{CliError, load_config};
use crate::config::{Config, ConfigError, Secrets};
use crate::tls::Terminator;
use crate::upstream;

/// What `serve` checks before it binds a listener or opens the store: the
/// config's own rules (keys, values, addresses, the fleet's settings, files
/// that must exist), the secrets its features need from the environment,
/// the upstream's TLS settings and the listeners' certificates. What only starting can tell (a port in
/// use, a store held by another process, Redis unreachable) is not here.
pub fn before_start(config: &Config, secrets: &Secrets) -> Result<(), ConfigError> {
    config.validate()?;
    secrets.check(config)?;
    upstream::check_tls(config)?;
    // The listeners' certificate, key and client CA, parsed as serve does.
    Terminator::new(&config.tls)?;
    Ok(())
}

/// `sendgate check-config`: the config at `path` (or the default) passes
/// every check `serve` runs before it starts.
pub fn check_config(path: Option<&Path>) -> Result<(), CliError> {
    let config = load_config(path)?;
    before_start(&config, &Secrets::from_env(std::env::vars()))
        .map_err(|err| format!("config error: {err}"))?;
    println!(
        "config OK (listen {}, upstream {})",
        config.listen, config.upstream
    );
    Ok(())
}
