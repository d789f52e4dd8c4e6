//! The `meridian` binary's library: command-line parsing, configuration and wiring of the
//! part crates. `main.rs` only calls [`run`].
//!
//! # Layout
//! - `lib.rs`: the command line and [`run`].
//! - [`config`]: the TOML file, flags and their checks.
//! - [`serve`]: `meridian serve`.
//! - [`bootstrap`]: the first account.
//! - [`agent`]: `meridian agent`, on the `ngrok` crate.
//! - [`pop`]: `meridian pop`, the operator's drain commands.
#![warn(missing_docs)]

pub mod agent;
pub mod bootstrap;
pub mod config;
pub mod pop;
pub mod serve;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Meridian: self-hosted, ngrok-compatible ingress with Region & IP resolution.
#[derive(Debug, Parser)]
#[command(name = "meridian", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole platform on this machine.
    Serve(ServeArgs),
    /// Forward a local service through a Meridian edge, as an ngrok agent.
    Agent(agent::AgentArgs),
    /// List, drain and undrain PoPs (operator only).
    Pop(pop::PopArgs),
}

/// `meridian serve` flags; each overrides the config file.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Keep everything (store, secrets) under DIR.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Store URL: sqlite://PATH or postgres://USER:PASS@HOST/DB.
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// API listen address (port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    pub api_listen: Option<SocketAddr>,
    /// URL clients reach the API at, used in every `uri` the API returns.
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
    /// The platform's DNS zone.
    #[arg(long, value_name = "NAME")]
    pub base_domain: Option<String>,
    /// Agent listener port of every PoP (0 picks a free port per PoP).
    #[arg(long, value_name = "PORT")]
    pub agent_port: Option<u16>,
    /// Visitor HTTP port of every PoP.
    #[arg(long, value_name = "PORT")]
    pub http_port: Option<u16>,
    /// Visitor HTTPS port of every PoP.
    #[arg(long, value_name = "PORT")]
    pub https_port: Option<u16>,
    /// DNS server address, UDP and TCP (port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    pub dns_listen: Option<SocketAddr>,
    /// GeoIP database (MaxMind format) instead of the built-in country database.
    #[arg(long, value_name = "FILE")]
    pub geoip: Option<PathBuf>,
    /// Check the configuration, print it and exit.
    #[arg(long)]
    pub check_config: bool,
}

/// Runs a parsed command line to completion.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Agent(args) => agent::run(args).await,
        Command::Pop(args) => pop::run(args).await,
        Command::Serve(args) => {
            let ServeArgs {
                config,
                data_dir,
                store,
                api_listen,
                public_url,
                base_domain,
                agent_port,
                http_port,
                https_port,
                dns_listen,
                geoip,
                check_config,
            } = args;
            let overrides = config::Overrides {
                data_dir,
                store,
                api_listen,
                public_url,
                base_domain,
                agent_port,
                http_port,
                https_port,
                dns_listen,
                geoip,
            };
            let settings = config::Settings::load(config.as_deref(), overrides)?;
            if check_config {
                print!("{}", settings.summary());
                return Ok(());
            }
            serve::run(settings, shutdown_signal()).await
        }
    }
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(error) => {
            tracing::warn!(%error, "cannot watch SIGTERM; only Ctrl-C stops the server");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
