//! `astrolabe sim`: run the deterministic simulator and print one JSON object.

use clap::Args;

use crate::sim::{run_benchmark, SimConfig, SimOptions};

#[derive(Debug, Args)]
pub struct SimArgs {
    /// Number of simulated agents.
    #[arg(long, default_value_t = 1000)]
    pub agents: usize,
    /// Most children per zone.
    #[arg(long, default_value_t = 16)]
    pub branching: usize,
    /// Probability that a datagram is lost, in [0, 1).
    #[arg(long, default_value_t = 0.0)]
    pub loss: f64,
    /// Seed of every random choice; the same seed gives the same output.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Each agent's clock is off by up to ± this many milliseconds.
    #[arg(long = "skew-ms", default_value_t = 0)]
    pub skew_ms: u64,
    /// Give up (exit 1) if a phase has not converged after this many rounds.
    #[arg(long = "max-rounds", default_value_t = 100)]
    pub max_rounds: u64,
    /// Number of single-attribute changes whose propagation is measured.
    #[arg(long, default_value_t = 5)]
    pub changes: usize,
    /// Smallest and largest one-way link latency, in milliseconds.
    #[arg(long = "latency-min-ms", default_value_t = 1)]
    pub latency_min_ms: u64,
    #[arg(long = "latency-max-ms", default_value_t = 50)]
    pub latency_max_ms: u64,
    /// Print the JSON report (the default; kept for scripts that pass it).
    #[arg(long)]
    pub json: bool,
    /// Instead of the gossip figures: run this many on-demand queries over
    /// the whole tree once gossip has converged, and report their figures.
    #[arg(long, default_value_t = 0)]
    pub queries: usize,
    /// With --queries: the fraction of agents crashed (rows not yet expired).
    #[arg(long, default_value_t = 0.05)]
    pub dead: f64,
    /// With --queries: the query's SQL.
    #[arg(
        long,
        default_value = "SELECT count(*) AS hosts, sum(mem) AS mem, avg(load) AS load FROM host"
    )]
    pub sql: String,
    /// No progress lines on stderr.
    #[arg(long, short)]
    pub quiet: bool,
}

pub fn run(args: SimArgs) -> anyhow::Result<()> {
    if args.changes < 1 {
        anyhow::bail!("--changes must be at least 1");
    }
    if args.latency_min_ms > args.latency_max_ms {
        anyhow::bail!("--latency-min-ms must not exceed --latency-max-ms");
    }
    let mut config = SimConfig::new(args.agents, args.branching, args.seed);
    config.loss = args.loss;
    config.skew_ms = args.skew_ms;
    config.latency_min_ms = args.latency_min_ms;
    config.latency_max_ms = args.latency_max_ms;
    if args.queries > 0 {
        let mut osim = crate::sim::overlay::OverlaySim::new(config, args.dead, args.max_rounds)?;
        let (report, _) =
            crate::sim::overlay::run_queries(&mut osim, args.queries, &args.sql, 2000);
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let opts = SimOptions {
        config,
        max_rounds: args.max_rounds,
        changes: args.changes,
        progress: !args.quiet,
    };
    let report = run_benchmark(&opts)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
