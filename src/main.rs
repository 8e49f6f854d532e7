//! The `sendgate` binary: the command line, and a call into the library's
//! commands (`sendgate::cli`).

use std::process::ExitCode;

use clap::Parser;

use sendgate::cli::audit::{self, AuditArgs};
use sendgate::cli::identities::{self, ImportArgs};
use sendgate::cli::serve::{self, ServeArgs};
use sendgate::cli::{self, CliError, Command};

/// mimalloc (its v2, see Cargo.toml): the proxy allocates and frees small
/// buffers on every request; BENCHMARKS.md ("Design choices") has the figures.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

fn main() -> ExitCode {
    let command = Cli::parse().command;
    let config = command.config().map(std::path::Path::to_path_buf);
    match run(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            cli::report_fatal(&error, config.as_deref());
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<(), CliError> {
    match command {
        Command::Serve {
            config,
            listen,
            upstream,
            sandbox,
        } => {
            let path = cli::config_file(config.as_deref());
            let loaded = cli::load_config(path.as_deref())?;
            let args = ServeArgs {
                path,
                listen,
                upstream,
                sandbox,
            };
            serve::block_on(serve::serve(args, loaded))
        }
        Command::CheckConfig { config } => cli::check::check_config(config.as_deref()),
        Command::Sandbox { listen } => serve::block_on(serve::sandbox(&listen)),
        Command::Import {
            file,
            number,
            portfolio,
            allow_rejects,
            create,
            config,
        } => identities::import(ImportArgs {
            file: &file,
            number,
            portfolio,
            allow_rejects,
            create,
            config_path: config.as_deref(),
        }),
        Command::Fingerprint => identities::fingerprint(),
        Command::MoveScope {
            from,
            to_number,
            to_portfolio,
            config,
        } => identities::move_scope(&from, to_number, to_portfolio, config.as_deref()),
        Command::MigrateStore { from, to, config } => {
            cli::migrate::migrate_store(from, to, config.as_deref())
        }
        Command::Audit {
            file,
            number,
            template,
            csv,
            config,
        } => audit::run(&AuditArgs {
            file,
            number,
            template,
            csv,
            config,
        }),
    }
}
