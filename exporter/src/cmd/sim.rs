//! `astrolabe sim`: run the deterministic simulator and print one JSON
//! object, or, over a sweep of seeds, a row per seed and the min / median
//! / max of every figure.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use serde_json::Value as Json;

use crate::sim::churn::RestartKind;
use crate::sim::overlay::{run_queries, OverlaySim, QueryRun};
use crate::sim::{run_benchmark, Observer, SimConfig, SimOptions, SimReport};

/// `--wire`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum WireArg {
    Bytes,
    Shared,
}

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
    /// How simulated agents exchange gossip: `bytes` encodes, carries and
    /// decodes every message as the agent does; `shared` hands the message
    /// itself over, so rows stay shared between agents instead of one
    /// decoded copy each (the memory a 10^5-agent run needs; it skips the
    /// codec, and screens a shared row against the limits once, not once
    /// per receiver).
    #[arg(long, value_enum, default_value_t = WireArg::Bytes)]
    pub wire: WireArg,
    /// Run these seeds one after another instead of --seed: `1..20` (both
    /// ends included) or `1,5,9`. Prints a row per seed and the min /
    /// median / max of each figure (a table, or JSON with --json).
    #[arg(long, value_parser = parse_seeds)]
    pub seeds: Option<Seeds>,
    /// After the value changes: this many crashes of random agents, each
    /// followed by a new agent joining; reports how long each takes to
    /// show in every root and any live agent missing from a root.
    #[arg(long, default_value_t = 0)]
    pub churn: usize,
    /// Then this many rolling restarts; reports the worst undercount any
    /// live agent's root showed against the live agents not restarting.
    #[arg(long, default_value_t = 0)]
    pub restarts: usize,
    /// How a restarting agent stops: a clean leave (SIGTERM) or a crash.
    #[arg(long = "restart-kind", value_enum, default_value = "leave")]
    pub restart_kind: RestartArg,
    /// Milliseconds from one restart to the next.
    #[arg(long = "restart-gap-ms", default_value_t = 3000)]
    pub restart_gap_ms: u64,
    /// Milliseconds a restarting agent is down.
    #[arg(long = "restart-down-ms", default_value_t = 200)]
    pub restart_down_ms: u64,
    /// Then this many rounds in which a fraction (--busy) of the agents
    /// change a value every round while the others stand still; reports
    /// the oldest row any agent held and rows expired.
    #[arg(long = "busy-rounds", default_value_t = 0)]
    pub busy_rounds: u64,
    /// With --busy-rounds: the fraction of agents that change, in [0, 1].
    #[arg(long, default_value_t = 0.5)]
    pub busy: f64,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RestartArg {
    Leave,
    Kill,
}

/// The seeds of a sweep.
#[derive(Debug, Clone)]
pub struct Seeds(pub Vec<u64>);

fn parse_seeds(text: &str) -> Result<Seeds, String> {
    let bad = || format!("{text:?} is not a seed range like 1..20 or a list like 1,5,9");
    let seeds: Vec<u64> = if let Some((a, b)) = text.split_once("..") {
        let b = b.strip_prefix('=').unwrap_or(b);
        let (a, b): (u64, u64) = (
            a.trim().parse().map_err(|_| bad())?,
            b.trim().parse().map_err(|_| bad())?,
        );
        if a > b {
            return Err(format!("seed range {text:?} is empty: {a} is above {b}"));
        }
        (a..=b).collect()
    } else {
        text.split(',')
            .map(|s| s.trim().parse().map_err(|_| bad()))
            .collect::<Result<_, _>>()?
    };
    if seeds.is_empty() {
        return Err(bad());
    }
    Ok(Seeds(seeds))
}

pub fn run(args: SimArgs) -> anyhow::Result<()> {
    if args.changes < 1 {
        anyhow::bail!("--changes must be at least 1");
    }
    if args.latency_min_ms > args.latency_max_ms {
        anyhow::bail!("--latency-min-ms must not exceed --latency-max-ms");
    }
    if !(0.0..=1.0).contains(&args.busy) {
        anyhow::bail!("--busy must be in [0, 1], got {}", args.busy);
    }
    let seeds = args.seeds.clone().map(|s| s.0);
    match (args.queries > 0, seeds) {
        (true, None) => {
            let (report, _) = queries(&args, args.seed)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        (true, Some(seeds)) => query_sweep(&args, &seeds),
        (false, None) => {
            let report = run_benchmark(&options(&args, args.seed), &mut Stderr::new(!args.quiet))?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            match &report.root_mismatch {
                Some(m) => anyhow::bail!("wrong root: {m}"),
                None => Ok(()),
            }
        }
        (false, Some(seeds)) => gossip_sweep(&args, &seeds),
    }
}

fn config(args: &SimArgs, seed: u64) -> SimConfig {
    let mut config = SimConfig::new(args.agents, args.branching, seed);
    config.loss = args.loss;
    config.skew_ms = args.skew_ms;
    config.latency_min_ms = args.latency_min_ms;
    config.latency_max_ms = args.latency_max_ms;
    config.wire = match args.wire {
        WireArg::Bytes => crate::node::Wire::Bytes,
        WireArg::Shared => crate::node::Wire::Shared,
    };
    config
}

fn options(args: &SimArgs, seed: u64) -> SimOptions {
    let mut opts = SimOptions::new(config(args, seed), args.max_rounds, args.changes);
    // ASTROLABE_SIM_TRACE=1: one stderr line per virtual round of the cold
    // start with what all agents sent in it.
    opts.trace_rounds = std::env::var_os("ASTROLABE_SIM_TRACE").is_some();
    opts.churn = args.churn;
    opts.restarts = args.restarts;
    opts.restart_kind = match args.restart_kind {
        RestartArg::Leave => RestartKind::Leave,
        RestartArg::Kill => RestartKind::Kill,
    };
    opts.restart_gap_ms = args.restart_gap_ms;
    opts.restart_down_ms = args.restart_down_ms;
    opts.busy_rounds = args.busy_rounds;
    opts.busy_fraction = args.busy;
    opts
}

fn queries(
    args: &SimArgs,
    seed: u64,
) -> anyhow::Result<(crate::sim::overlay::OverlayReport, Vec<QueryRun>)> {
    let mut osim = OverlaySim::new(config(args, seed), args.dead, args.max_rounds)?;
    Ok(run_queries(&mut osim, args.queries, &args.sql, 2000))
}

/// Every number in a JSON object, by its dotted path.
fn figures(value: &Json, prefix: &str, out: &mut BTreeMap<String, f64>) {
    match value {
        Json::Object(map) => {
            for (k, v) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                figures(v, &path, out);
            }
        }
        Json::Number(n) => {
            if let Some(x) = n.as_f64() {
                out.insert(prefix.to_string(), x);
            }
        }
        Json::Bool(b) => {
            out.insert(prefix.to_string(), if *b { 1.0 } else { 0.0 });
        }
        _ => {}
    }
}

/// Min, median and max of each figure over the runs.
fn summary(runs: &[BTreeMap<String, f64>], skip: &[&str]) -> BTreeMap<String, [f64; 3]> {
    let mut by_key: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for run in runs {
        for (k, v) in run {
            if !skip.contains(&k.as_str()) {
                by_key.entry(k.clone()).or_default().push(*v);
            }
        }
    }
    by_key
        .into_iter()
        .map(|(k, mut v)| {
            v.sort_by(f64::total_cmp);
            let mid = v.len() / 2;
            let median = if v.len() % 2 == 0 {
                (v[mid - 1] + v[mid]) / 2.0
            } else {
                v[mid]
            };
            (k, [v[0], median, v[v.len() - 1]])
        })
        .collect()
}

fn stat_json(summary: &BTreeMap<String, [f64; 3]>) -> Json {
    summary
        .iter()
        .map(|(k, [min, median, max])| {
            (
                k.clone(),
                serde_json::json!({"min": min, "median": median, "max": max}),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// A plain table: a header and rows, columns padded to line up.
fn print_table(header: &[String], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(String::len).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:>w$}"))
            .collect::<Vec<_>>()
            .join("  ")
    };
    println!("{}", line(header));
    for row in rows {
        println!("{}", line(row));
    }
}

fn cell(x: Option<f64>) -> String {
    match x {
        None => "-".into(),
        Some(x) if x.fract() == 0.0 && x.abs() < 1e15 => format!("{x:.0}"),
        Some(x) => format!("{x:.3}"),
    }
}

/// Columns of the gossip sweep's table (all figures are in the JSON).
const GOSSIP_COLUMNS: &[(&str, &str)] = &[
    ("membership", "rounds_to_membership"),
    ("value_mean", "rounds_to_value.mean"),
    ("value_max", "rounds_to_value.max"),
    ("bytes_mean", "bytes_per_agent_per_round.mean"),
    ("expired", "rows_expired"),
    ("crash_max", "churn.crash_rounds.max"),
    ("join_max", "churn.join_rounds.max"),
    ("excluded", "churn.false_exclusions"),
    ("undercount", "restarts.undercount_max"),
    ("rejoin_max", "restarts.rounds_to_rejoin.max"),
    ("oldest_row", "busy.oldest_row_rounds"),
    ("wall_s", "wall_seconds"),
];

fn gossip_sweep(args: &SimArgs, seeds: &[u64]) -> anyhow::Result<()> {
    let mut reports: Vec<SimReport> = Vec::new();
    let mut failures = Vec::new();
    for (n, seed) in seeds.iter().enumerate() {
        if !args.quiet {
            eprintln!("sim: seed {seed} ({} of {})", n + 1, seeds.len());
        }
        match run_benchmark(&options(args, *seed), &mut Stderr::new(false)) {
            Ok(report) => {
                if let Some(m) = &report.root_mismatch {
                    eprintln!("sim: seed {seed}: wrong root: {m}");
                    failures.push(format!("seed {seed}: wrong root"));
                }
                reports.push(report);
            }
            Err(e) => {
                eprintln!("sim: seed {seed}: {e}");
                failures.push(format!("seed {seed}: {e}"));
            }
        }
    }
    let flat: Vec<BTreeMap<String, f64>> = reports
        .iter()
        .map(|r| {
            let mut f = BTreeMap::new();
            figures(&serde_json::to_value(r).unwrap_or(Json::Null), "", &mut f);
            f
        })
        .collect();
    let fixed = ["agents", "branching", "levels", "seed", "loss", "skew_ms"];
    let stats = summary(&flat, &fixed);
    if args.json {
        let out = serde_json::json!({
            "seeds": seeds,
            "runs": reports,
            "summary": stat_json(&stats),
            "failures": failures,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let columns: Vec<&(&str, &str)> = GOSSIP_COLUMNS
            .iter()
            .filter(|(_, key)| flat.iter().any(|f| f.contains_key(*key)))
            .collect();
        let mut header = vec!["seed".to_string()];
        header.extend(columns.iter().map(|(name, _)| name.to_string()));
        header.push("root_correct".into());
        let mut rows: Vec<Vec<String>> = reports
            .iter()
            .zip(&flat)
            .map(|(r, f)| {
                let mut row = vec![r.seed.to_string()];
                row.extend(columns.iter().map(|(_, key)| cell(f.get(*key).copied())));
                row.push(r.root_correct.to_string());
                row
            })
            .collect();
        for (label, i) in [("min", 0), ("median", 1), ("max", 2)] {
            let mut row = vec![label.to_string()];
            row.extend(
                columns
                    .iter()
                    .map(|(_, key)| cell(stats.get(*key).map(|s| s[i]))),
            );
            row.push(String::new());
            rows.push(row);
        }
        println!(
            "{} agents, B={}, loss {}, skew ±{} ms, {} seeds",
            args.agents,
            args.branching,
            args.loss,
            args.skew_ms,
            seeds.len()
        );
        print_table(&header, &rows);
    }
    if failures.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(
            "{} of {} seeds failed: {}",
            failures.len(),
            seeds.len(),
            failures.join("; ")
        )
    }
}

fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    sorted
        .get(((sorted.len() as f64 - 1.0) * p).round() as usize)
        .copied()
}

fn query_sweep(args: &SimArgs, seeds: &[u64]) -> anyhow::Result<()> {
    let mut reports = Vec::new();
    let mut pooled: Vec<u64> = Vec::new();
    let (mut complete, mut equal, mut total) = (0usize, 0usize, 0usize);
    for (n, seed) in seeds.iter().enumerate() {
        if !args.quiet {
            eprintln!("sim: queries, seed {seed} ({} of {})", n + 1, seeds.len());
        }
        let (report, runs) = queries(args, *seed)?;
        pooled.extend(runs.iter().filter_map(|r| r.full_live_ms));
        complete += report.full_live_coverage;
        equal += report.answers_equal_direct;
        total += report.queries;
        reports.push((*seed, report));
    }
    pooled.sort_unstable();
    let overall = serde_json::json!({
        "queries": total,
        "full_live_coverage": complete,
        "answers_equal_direct": equal,
        "full_live_ms_p50": percentile(&pooled, 0.5),
        "full_live_ms_p99": percentile(&pooled, 0.99),
    });
    if args.json {
        let runs: Vec<Json> = reports
            .iter()
            .map(|(seed, r)| {
                let mut v = serde_json::to_value(r).unwrap_or(Json::Null);
                if let Some(o) = v.as_object_mut() {
                    o.insert("seed".into(), (*seed).into());
                }
                v
            })
            .collect();
        let out = serde_json::json!({"seeds": seeds, "runs": runs, "overall": overall});
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let header: Vec<String> = [
            "seed",
            "complete",
            "exact",
            "full_p50_ms",
            "full_p99_ms",
            "final_p50_ms",
            "bytes/host",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut rows: Vec<Vec<String>> = reports
            .iter()
            .map(|(seed, r)| {
                vec![
                    seed.to_string(),
                    format!("{}/{}", r.full_live_coverage, r.queries),
                    format!("{}/{}", r.answers_equal_direct, r.queries),
                    cell(r.full_live_ms_p50.map(|x| x as f64)),
                    cell(r.full_live_ms_p99.map(|x| x as f64)),
                    r.final_answer_ms_p50.to_string(),
                    format!("{:.0}", r.bytes_per_query_per_host),
                ]
            })
            .collect();
        rows.push(vec![
            "all".into(),
            format!("{complete}/{total}"),
            format!("{equal}/{total}"),
            cell(percentile(&pooled, 0.5).map(|x| x as f64)),
            cell(percentile(&pooled, 0.99).map(|x| x as f64)),
            String::new(),
            String::new(),
        ]);
        println!(
            "{} agents, B={}, {:.0}% dead, loss {}, {} queries per seed, {} seeds",
            args.agents,
            args.branching,
            args.dead * 100.0,
            args.loss,
            args.queries,
            seeds.len()
        );
        print_table(&header, &rows);
    }
    Ok(())
}

/// Progress on stderr (one updating line on a terminal, a line every two
/// seconds otherwise), the run's wall time and this process's peak RSS.
struct Stderr {
    enabled: bool,
    tty: bool,
    last: Option<Instant>,
    started: Instant,
}

impl Stderr {
    fn new(enabled: bool) -> Stderr {
        Stderr {
            enabled,
            tty: std::io::stderr().is_terminal(),
            last: None,
            started: Instant::now(),
        }
    }
}

impl Observer for Stderr {
    fn progress(&mut self, force: bool, line: &dyn Fn() -> String) {
        let due = self
            .last
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(2));
        if !self.enabled || !(force || due) {
            return;
        }
        self.last = Some(Instant::now());
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{}", line());
        } else {
            let _ = writeln!(err, "{}", line());
        }
        let _ = err.flush();
    }

    fn done(&mut self) {
        if self.enabled && self.tty {
            eprintln!();
        }
    }

    fn trace(&mut self, line: String) {
        eprintln!("{line}");
    }

    fn wall_seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn peak_rss_bytes(&self) -> u64 {
        peak_rss_bytes()
    }
}

/// Peak resident set of this process (VmHWM), in bytes; 0 if unknown.
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}
