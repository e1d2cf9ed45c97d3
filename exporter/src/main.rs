use std::process::ExitCode;

use clap::{Parser, Subcommand};

use astrolabe::cmd;

/// Astrolabe exporter: hierarchical gossip aggregation of host metrics,
/// served to Prometheus from any agent.
#[derive(Debug, Parser)]
#[command(name = "astrolabe", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Simulate N agents on a virtual clock and report convergence as JSON.
    Sim(cmd::sim::SimArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Sim(args) => cmd::sim::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("astrolabe: {e:#}");
            ExitCode::FAILURE
        }
    }
}
