//! `idmesh`: the node and its command-line client in one binary. See `idmesh --help`.

mod audit_cmd;
mod cli;
mod client;
mod delegation_cmd;
mod exit;
mod kek;
mod keyfile;
mod node_cmd;
mod node_tls;
mod output;
mod pki_cmd;
mod policy_cmd;
mod sync_cmd;
mod token_cmd;

use clap::Parser;
use cli::{Cli, Command};
use std::process::ExitCode;

/// jemalloc: under load a node allocates many small objects (messages, entries, strings); with
/// glibc's allocator ~13% of its CPU went to malloc/free. jemalloc spends far less and keeps
/// the idle footprint small.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    idmesh_tls::install_crypto_provider();
    let serving = matches!(cli.command, Command::Node(_) | Command::Dev(_));
    init_logging(serving);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Node(args) => {
                let (config, tls_dir) = (*args).into_config().await?;
                node_cmd::run_node(config, tls_dir).await
            }
            Command::Dev(args) => node_cmd::run_dev(args).await,
            Command::Agent { client, command } => client::agent(client, command).await,
            Command::Site { client, command } => client::site(client, command).await,
            Command::Token { client, command } => token_cmd::token(client, command).await,
            Command::Keys { client, command } => token_cmd::keys(client, command).await,
            Command::Mesh { client, command } => client::mesh(client, command).await,
            Command::Sync { client, command } => sync_cmd::sync(client, command).await,
            Command::Policy { client, command } => policy_cmd::policy(client, command).await,
            Command::Authorize { client, args } => policy_cmd::authorize(client, args).await,
            Command::Delegation { client, command } => delegation_cmd::delegation(client, command).await,
            Command::Issuer { client, command } => delegation_cmd::issuer(client, command).await,
            Command::Audit { client, command } => audit_cmd::audit(client, command).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {}", failure.message());
            failure.exit_code()
        }
    }
}

/// Logs go to stderr. A node logs at info by default; a client only warnings. `RUST_LOG`
/// overrides both.
fn init_logging(serving: bool) {
    let default = if serving { "info,openraft=warn" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}
