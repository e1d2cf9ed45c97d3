//! `astrolabe demo`: a local cluster on loopback, to see zone aggregates
//! within seconds of the first command.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use crate::agent::{id_from_zone, start, AgentOptions, RunningAgent};
use crate::cmd::agent::parse_duration;
use crate::zone::{Value, ZonePath};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Number of agents.
    #[arg(long, default_value_t = 9)]
    pub agents: usize,
    /// Number of zones they are spread over.
    #[arg(long, default_value_t = 3)]
    pub zones: usize,
    /// First UDP gossip port; agent i uses this + i.
    #[arg(long = "gossip-port", default_value_t = 17946)]
    pub gossip_port: u16,
    /// First HTTP port; agent i serves /metrics on this + i.
    #[arg(long = "web-port", default_value_t = 19464)]
    pub web_port: u16,
    /// Gossip round.
    #[arg(long = "gossip.interval", default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Do not run the cpu, memory and load collectors in every agent.
    #[arg(long = "no-collector.host")]
    pub no_host_collectors: bool,
    /// Agent i reads *.prom files from DIR/agent<i> (created if missing).
    #[arg(long = "textfile-root")]
    pub textfile_root: Option<std::path::PathBuf>,
    /// An aggregate for every agent (repeatable).
    #[arg(long = "aggregate")]
    pub aggregates: Vec<String>,
    /// Print only the scrape URLs, not the live view.
    #[arg(long)]
    pub quiet: bool,
    /// Gossip in the clear (to measure what encryption costs).
    #[arg(long = "no-gossip-encryption")]
    pub no_gossip_encryption: bool,
    /// Stop after this long (default: until Ctrl-C).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
}

/// The zones down to depth 2 as `agent` sees them, one aligned row each.
fn live_view(agent: &RunningAgent) -> String {
    let view = agent.view.get();
    let mut zones: Vec<_> = view
        .zones
        .iter()
        .filter(|z| z.row.zone.depth() <= 2)
        .collect();
    zones.sort_by(|a, b| a.row.zone.cmp(&b.row.zone));
    let columns: Vec<String> = [
        "ZONE",
        "MEMBERS",
        "REPORTING",
        "AGE",
        "CPU_AVG",
        "LOAD1_MAX",
    ]
    .map(String::from)
    .to_vec();
    let cells: Vec<Vec<String>> = zones
        .iter()
        .map(|z| {
            let num = |name: &str| z.row.value(name).and_then(Value::as_f64);
            vec![
                z.row.zone.to_string(),
                z.row.members().to_string(),
                num("reporting").map_or("-".into(), |v| format!("{v}")),
                format!("{:.1}s", z.age_seconds),
                num(crate::agent::column::CPU_UTILIZATION_AVG)
                    .map_or("-".into(), |v| format!("{:.1}%", v * 100.0)),
                num(crate::agent::column::LOAD1_MAX).map_or("-".into(), |v| format!("{v:.2}")),
            ]
        })
        .collect();
    let right = [false, true, true, true, true, true];
    crate::cmd::query::render_cells(&columns, &cells, &right)
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    if args.agents == 0 || args.zones == 0 {
        anyhow::bail!("--agents and --zones must be at least 1");
    }
    // Warnings only: nine agents' start-up lines would bury the table.
    crate::cmd::agent::init_logging("text", "warn")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let mut agents = Vec::new();
        // The demo's gossip is encrypted too, under a key of its own.
        let keyring = crate::transport::keyring::Keyring::new(vec![
            crate::transport::keyring::Key::generate(&mut rand::rng()),
        ])?;
        let security_of_demo = crate::transport::keyring::GossipSecurity::new(
            keyring.clone(),
            None,
            crate::transport::keyring::DEFAULT_REPLAY_WINDOW_MS,
        );
        for i in 0..args.agents {
            let security = Arc::new(crate::transport::keyring::GossipSecurity::new(
                keyring.clone(),
                None,
                crate::transport::keyring::DEFAULT_REPLAY_WINDOW_MS,
            ));
            let zone = ZonePath::parse(&format!("/demo/zone{}/agent{i}", i % args.zones))?;
            let gossip = SocketAddr::new(
                localhost,
                args.gossip_port
                    .checked_add(i as u16)
                    .context("port out of range")?,
            );
            let web = SocketAddr::new(
                localhost,
                args.web_port
                    .checked_add(i as u16)
                    .context("port out of range")?,
            );
            let opts = AgentOptions {
                id: id_from_zone(&zone),
                zone,
                listen: gossip,
                advertise: None,
                seeds: vec![SocketAddr::new(localhost, args.gossip_port)],
                interval: args.interval,
                web_listen: web,
                textfile_directory: match &args.textfile_root {
                    Some(root) => {
                        let dir = root.join(format!("agent{i}"));
                        std::fs::create_dir_all(&dir)
                            .with_context(|| format!("creating {}", dir.display()))?;
                        Some(dir)
                    }
                    None => None,
                },
                aggregates: args.aggregates.clone(),
                attributes: vec![("demo_index".into(), Value::Int(i as i64))],
                collector_timeout: Duration::from_secs(5),
                collector_interval: None,
                host_collectors: !args.no_host_collectors,
                host_paths: Default::default(),
                application: None,
                process_groups: Vec::new(),
                gossip_security: (!args.no_gossip_encryption).then_some(security),
                web_config: None,
                trusted_keys: Default::default(),
                signature_window: Duration::from_secs(60),
                metrics_unauthenticated: false,
                limits: Default::default(),
                actions: Default::default(),
            };
            let agent = start(opts)
                .await
                .with_context(|| format!("agent {i} (ports {gossip}, {web})"))?;
            agents.push(agent);
        }
        // One warning for the whole demo cluster, not one per agent.
        crate::agent::log_security(
            (!args.no_gossip_encryption).then_some(&security_of_demo),
            &Default::default(),
            agents[0].gossip_addr,
        );
        println!(
            "{} agents in {} zones on loopback. Scrape any of them:",
            args.agents, args.zones
        );
        for a in &agents {
            println!("  http://{}/metrics", a.web_addr);
        }
        println!(
            "Landing page: http://{}/   Ctrl-C to stop.\n",
            agents[0].web_addr
        );
        let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
        loop {
            let tick = tokio::time::sleep(Duration::from_secs(2));
            tokio::select! {
                _ = tick => {}
                _ = tokio::signal::ctrl_c() => break,
            }
            if !args.quiet {
                println!("{}", live_view(&agents[0]));
            }
            if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                break;
            }
        }
        for a in agents {
            a.leave().await;
        }
        Ok(())
    })
}
