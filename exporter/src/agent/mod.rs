//! The agent: the engine under tokio, fed by the UDP socket, a timer and
//! the collectors, publishing a snapshot for the HTTP endpoint.

mod absent;
mod leaf;
pub mod resident;

use crate::wall_clock::wall_ms;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use astrolabe_collectors::{Collector, MetricFamily, TextfileCollector};
use tokio::sync::mpsc;

pub use leaf::{attr, leaf_attributes};

use crate::aggregate::AggregateSet;
use crate::engine::{Effect, Engine, EngineConfig, Now};
use crate::transport::keyring::GossipSecurity;
use crate::transport::{self, DropReason};
use crate::view::{View, ViewCell};
use crate::zone::{AgentId, Attributes, Value, ZonePath};

#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub zone: ZonePath,
    pub id: AgentId,
    pub listen: SocketAddr,
    pub advertise: Option<SocketAddr>,
    pub seeds: Vec<SocketAddr>,
    pub interval: Duration,
    pub web_listen: SocketAddr,
    pub textfile_directory: Option<PathBuf>,
    pub aggregates: Vec<String>,
    pub attributes: Vec<(String, Value)>,
    pub collector_timeout: Duration,
    /// How often the collectors sample; None: every gossip round.
    pub collector_interval: Option<Duration>,
    pub host_collectors: bool,
    /// Where the host collectors read the host (`--path.procfs`, ...).
    pub host_paths: astrolabe_collectors::HostPaths,
    /// A local Prometheus endpoint and the metrics to import from it.
    pub application: Option<(String, Vec<String>)>,
    /// `name=regex` process groups.
    pub process_groups: Vec<String>,
    /// The gossip keyring; None runs unauthenticated (and says so).
    pub gossip_security: Option<Arc<GossipSecurity>>,
    /// exporter-toolkit web configuration: TLS and basic auth.
    pub web_config: Option<PathBuf>,
    /// `/metrics` and the health checks answer without basic auth.
    pub metrics_unauthenticated: bool,
    /// What peers and clients can make this agent hold (`engine::limits`).
    pub limits: crate::engine::Limits,
    /// Actions the overlay may run here (`crate::overlay::actions`).
    pub actions: crate::overlay::actions::Actions,
    /// Operator keys whose signatures commands and certificates need.
    pub trusted_keys: crate::security::TrustedKeys,
    /// How far a signed command's issue time may be from our clock.
    pub signature_window: Duration,
}

/// A stable id from the zone path, so a restarted agent is the same agent.
pub fn id_from_zone(zone: &ZonePath) -> AgentId {
    // Kept below 2^62: ids are also attribute values (i64).
    crate::zone::fnv1a64(zone.as_str().as_bytes()) >> 2
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    // Transparent: `{0}` with a source would print the message twice.
    #[error(transparent)]
    Bind(#[from] transport::BindError),
    #[error("cannot listen for HTTP on {addr}: {reason}")]
    Web {
        addr: SocketAddr,
        reason: String,
        /// Kept out of the error chain: `reason` already says it, once.
        error: std::io::Error,
    },
    #[error("{0}")]
    WebConfig(String),
    #[error(transparent)]
    Aggregate(#[from] crate::aggregate::AggregateError),
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    #[error("the gossip socket listens on {0}, which peers cannot reach; set --gossip.advertise-address")]
    Unadvertisable(SocketAddr),
}

/// Drop counters of the transport, shared with the snapshot.
#[derive(Default)]
struct Drops([AtomicU64; DropReason::ALL.len()]);

impl Drops {
    fn count(&self, r: DropReason) {
        self.0[r as usize].fetch_add(1, Ordering::Relaxed);
    }
    fn snapshot(&self) -> Vec<(DropReason, u64)> {
        DropReason::ALL
            .iter()
            .map(|r| (*r, self.0[*r as usize].load(Ordering::Relaxed)))
            .collect()
    }
}

/// A running agent: where it listens, and how to stop it.
pub struct RunningAgent {
    pub gossip_addr: SocketAddr,
    pub web_addr: SocketAddr,
    pub view: Arc<ViewCell>,
    /// What an OTLP exporter of this agent sent and left out, served on
    /// its `/metrics` (`crate::otel::spawn` counts into it).
    pub otlp: Arc<crate::otel::OtlpCounters>,
    stop: mpsc::Sender<Stop>,
    task: tokio::task::JoinHandle<()>,
    static_attrs: Arc<std::sync::RwLock<Attributes>>,
    host_collectors: bool,
}

#[derive(Debug, Clone)]
enum Stop {
    /// Leave with a tombstone (SIGTERM).
    Leave,
    /// New aggregates and trusted operator keys (SIGHUP); static
    /// attributes go to the collector loop.
    Reload {
        aggregates: Arc<AggregateSet>,
        trusted: crate::security::TrustedKeys,
    },
}

impl RunningAgent {
    /// Applies a reloaded configuration: aggregates, static attributes and
    /// the trusted operator keys. Everything else (zone, addresses, gossip
    /// keys) needs a restart.
    pub async fn reload(
        &self,
        aggregates: &[String],
        attributes: &[(String, Value)],
        trusted: &crate::security::TrustedKeys,
    ) -> Result<(), AgentError> {
        let system: &[&str] = if self.host_collectors {
            &[host_aggregates()]
        } else {
            &[]
        };
        let set = Arc::new(AggregateSet::with_system(system, aggregates)?);
        if let Ok(mut base) = self.static_attrs.write() {
            *base = attributes
                .iter()
                .map(|(k, v)| (k.as_str().into(), v.clone()))
                .collect();
        }
        let _ = self
            .stop
            .send(Stop::Reload {
                aggregates: set,
                trusted: trusted.clone(),
            })
            .await;
        Ok(())
    }

    /// Leaves the cluster cleanly and waits for the tombstone to be sent.
    pub async fn leave(self) {
        let _ = self.stop.send(Stop::Leave).await;
        let _ = self.task.await;
    }
}

/// The address peers can reach a wildcard-bound agent at: the local address
/// the kernel would use towards the first seed (a connected UDP socket sends
/// nothing), or loopback for an agent alone on its host.
fn guess_advertise(bound: SocketAddr, seeds: &[SocketAddr]) -> Option<SocketAddr> {
    let Some(seed) = seeds.first() else {
        let ip = if bound.is_ipv4() {
            std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
        } else {
            std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
        };
        return Some(SocketAddr::new(ip, bound.port()));
    };
    let any: SocketAddr = if seed.is_ipv4() {
        "0.0.0.0:0".parse().ok()?
    } else {
        "[::]:0".parse().ok()?
    };
    let probe = std::net::UdpSocket::bind(any).ok()?;
    probe.connect(seed).ok()?;
    let local = probe.local_addr().ok()?;
    Some(SocketAddr::new(local.ip(), bound.port()))
}

/// Columns of the default aggregates that the landing page and the demo
/// show, named once with the aggregates that compute them.
pub mod column {
    pub const CPU_UTILIZATION_AVG: &str = "cpu_utilization_avg";
    pub const MEMORY_USED_RATIO_AVG: &str = "memory_used_ratio_avg";
    pub const LOAD1_MAX: &str = "load1_max";
}

/// Zone summaries every agent computes from the host collectors'
/// attributes: the function applied (up to its argument), the attribute
/// and the column.
const HOST_SUMMARIES: [(&str, &str, &str); 13] = [
    ("avg(", attr::CPU_UTILIZATION, column::CPU_UTILIZATION_AVG),
    ("max(", attr::CPU_UTILIZATION, "cpu_utilization_max"),
    (
        "quantile(0.95, ",
        attr::CPU_UTILIZATION,
        "cpu_utilization_p95",
    ),
    (
        "avg(",
        attr::MEMORY_USED_RATIO,
        column::MEMORY_USED_RATIO_AVG,
    ),
    ("max(", attr::MEMORY_USED_RATIO, "memory_used_ratio_max"),
    (
        "quantile(0.95, ",
        attr::MEMORY_USED_RATIO,
        "memory_used_ratio_p95",
    ),
    ("max(", attr::LOAD1, column::LOAD1_MAX),
    ("avg(", attr::LOAD1, "load1_avg"),
    (
        "sum(",
        attr::MEMORY_AVAILABLE_BYTES,
        "memory_available_bytes_all",
    ),
    ("sum(", attr::PROCESSES_RUNNING, "processes_running_all"),
    (
        "min(",
        attr::FILESYSTEM_ROOT_FREE_RATIO,
        "filesystem_root_free_ratio_min",
    ),
    (
        "sum(",
        attr::NETWORK_RECEIVE_BYTES_PER_SECOND,
        "network_receive_bytes_per_second_all",
    ),
    (
        "sum(",
        attr::NETWORK_TRANSMIT_BYTES_PER_SECOND,
        "network_transmit_bytes_per_second_all",
    ),
];

/// The default aggregates as one SQL statement, built from `HOST_SUMMARIES`.
pub fn host_aggregates() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        let columns: Vec<String> = HOST_SUMMARIES
            .iter()
            .map(|(function, attribute, column)| format!("{function}{attribute}) AS {column}"))
            .collect();
        format!("SELECT {}", columns.join(", "))
    })
}

/// Says at start-up what the agent's security leaves open: unauthenticated
/// gossip, unsigned commands. The caller says it, once per process: the
/// demo's nine agents share one warning.
pub fn log_security(
    gossip_security: Option<&GossipSecurity>,
    trusted_keys: &crate::security::TrustedKeys,
    gossip_addr: SocketAddr,
) {
    match gossip_security {
    Some(sec) => {
        tracing::info!(keys = ?sec.fingerprints(), "gossip is encrypted and authenticated")
    }
    None => tracing::warn!(
        "GOSSIP IS UNAUTHENTICATED AND UNENCRYPTED: anyone who can reach {gossip_addr} can read and forge this cluster's state; set --gossip.key or --gossip.keyring-file (astrolabe keys generate)"
    ),
}

    if trusted_keys.is_empty() {
        tracing::warn!(
        "COMMANDS ARE UNSIGNED: any client of the command API, and any holder of the gossip key, can make this agent run its configured actions, collect or set-log-level (and no aggregate certificate can be applied); set --security.trusted-key (astrolabe operator-key generate)"
    );
    } else {
        tracing::info!(keys = ?trusted_keys.describe(), "commands need an operator signature by one of these keys");
    }
}

pub async fn start(opts: AgentOptions) -> Result<RunningAgent, AgentError> {
    let system: &[&str] = if opts.host_collectors {
        &[host_aggregates()]
    } else {
        &[]
    };
    let aggregates = Arc::new(AggregateSet::with_system(system, &opts.aggregates)?);
    let socket = transport::bind(opts.listen)?;
    let gossip_addr = socket.local_addr().map_err(|error| transport::BindError {
        addr: opts.listen,
        reason: transport::os_reason(&error),
        error,
    })?;
    let advertise = match opts.advertise {
        Some(a) => a,
        None if gossip_addr.ip().is_unspecified() => guess_advertise(gossip_addr, &opts.seeds)
            .ok_or(AgentError::Unadvertisable(gossip_addr))?,
        None => gossip_addr,
    };
    if advertise.ip().is_unspecified() {
        return Err(AgentError::Unadvertisable(advertise));
    }
    let view = Arc::new(ViewCell::default());
    let signatures = Arc::new(crate::security::SignatureRefusals::default());
    let (cert_tx, mut cert_rx) = mpsc::channel::<crate::security::api::CertCall>(16);
    let (calls_tx, mut calls_rx) = mpsc::channel::<crate::overlay::runtime::Call>(64);
    // The overlay's APIs go through the same TLS and authentication as the rest.
    let query_metrics = Arc::new(crate::overlay::metrics::QueryMetrics::default());
    let otlp_counters = Arc::new(crate::otel::OtlpCounters::default());
    let mut app = crate::http::router(view.clone()).merge(crate::overlay::http::router(
        crate::overlay::runtime::OverlayHandle {
            calls: calls_tx,
            metrics: query_metrics.clone(),
        },
    ));
    app = app.merge(crate::security::api::router(
        crate::security::api::AggregatesHandle {
            calls: cert_tx,
            view: view.clone(),
            refusals: signatures.clone(),
        },
    ));
    app = app.merge(match &opts.gossip_security {
        Some(sec) => crate::http::keys::router(sec.clone()),
        None => crate::http::keys::no_keyring_router(),
    });
    let limit_counters = Arc::new(crate::engine::LimitCounters::default());
    let http_limits = crate::http::limit::HttpLimits {
        max_requests: opts.limits.http_requests,
        max_scrapes: opts.limits.http_scrapes,
        read_timeout: opts.limits.http_read_timeout,
    };
    let shed = {
        let counters = limit_counters.clone();
        move |app| crate::http::limit::layer(app, http_limits, counters)
    };
    let (web_addr, _web) = match &opts.web_config {
        Some(path) => crate::http::secure::serve(
            opts.web_listen,
            app,
            path,
            opts.metrics_unauthenticated,
            shed,
            opts.limits.http_read_timeout,
            limit_counters.clone(),
        )
        .await
        .map_err(|e| AgentError::WebConfig(e.to_string()))?,
        None => crate::http::serve_router(
            opts.web_listen,
            shed(app),
            opts.limits.http_read_timeout,
            limit_counters.clone(),
        )
        .await
        .map_err(|error| AgentError::Web {
            addr: opts.web_listen,
            reason: transport::os_reason(&error),
            error,
        })?,
    };

    let mut cfg = EngineConfig::new(opts.id, opts.zone.clone(), advertise);
    cfg.seeds = opts
        .seeds
        .iter()
        .copied()
        .filter(|s| *s != advertise)
        .collect();
    cfg.interval_ms = opts.interval.as_millis().max(1) as u64;
    cfg.rng_seed = opts.id ^ wall_ms();
    cfg.certificates = crate::engine::certs::CertConfig {
        trusted: opts.trusted_keys.clone(),
        refusals: signatures.clone(),
    };
    cfg.limits = opts.limits;
    let started = Instant::now();
    let now = move || Now {
        mono_ms: started.elapsed().as_millis() as u64,
        wall_ms: wall_ms(),
    };
    let static_attrs: Attributes = opts
        .attributes
        .iter()
        .map(|(k, v)| (k.as_str().into(), v.clone()))
        .collect();
    let mut engine = Engine::new(cfg, aggregates, static_attrs.clone(), now())?;
    tracing::info!(zone = %opts.zone, id = opts.id, gossip = %gossip_addr, advertise = %advertise, web = %web_addr, seeds = ?opts.seeds, "agent started");
    let command_guard = crate::security::command::CommandGuard::new(
        opts.trusted_keys.clone(),
        opts.signature_window.as_millis() as u64,
        signatures.clone(),
    );

    // Collectors run on blocking threads and send fresh leaf attributes.
    // With each sample go the `collect` commands it answers.
    type CollectDone = tokio::sync::oneshot::Sender<()>;
    let (attrs_tx, mut attrs_rx) =
        mpsc::channel::<(Attributes, Arc<Vec<MetricFamily>>, Vec<CollectDone>)>(4);
    let host = astrolabe_collectors::Host::new(opts.host_paths.clone());
    let mut collectors: Vec<Arc<dyn Collector>> = if opts.host_collectors {
        astrolabe_collectors::default_collectors(&host)
    } else {
        Vec::new()
    };
    if let Some(dir) = &opts.textfile_directory {
        collectors.push(Arc::new(TextfileCollector::new(dir.clone())));
    }
    let groups: Vec<_> = opts
        .process_groups
        .iter()
        .filter_map(|g| astrolabe_collectors::ProcessGroup::parse(g).ok())
        .collect();
    if opts.host_collectors || !groups.is_empty() {
        collectors.push(Arc::new(astrolabe_collectors::ProcessCollector::new(
            groups, host,
        )));
    }
    if let Some((url, import)) = &opts.application {
        collectors.push(Arc::new(astrolabe_collectors::ApplicationCollector {
            url: url.clone(),
            import: import.clone(),
            timeout: opts.collector_timeout,
        }));
    }
    let interval = opts.collector_interval.unwrap_or(opts.interval);
    let timeout = opts.collector_timeout;
    // `collect` over the overlay wakes the collector thread early.
    let (collect_now_tx, collect_now_rx) = std::sync::mpsc::channel::<CollectDone>();
    let shared_attrs = Arc::new(std::sync::RwLock::new(static_attrs.clone()));
    let base = shared_attrs.clone();
    let collisions = Arc::new(crate::http::names::NameCollisions::default());
    let leaf_collisions = collisions.clone();
    std::thread::spawn(move || {
        let mut previous: Option<(Vec<MetricFamily>, Instant)> = None;
        let mut waiting: Vec<CollectDone> = Vec::new();
        loop {
            let sampled = Instant::now();
            let (families, _) = astrolabe_collectors::run_all(&collectors, timeout);
            let static_now = base.read().map(|b| b.clone()).unwrap_or_default();
            let attrs = leaf_attributes(
                &static_now,
                previous.as_ref().map(|(f, _)| f.as_slice()),
                &families,
                previous
                    .as_ref()
                    .map(|(_, t)| sampled.duration_since(*t).as_secs_f64()),
                &leaf_collisions,
            );
            let families = Arc::new(families);
            let answered = std::mem::take(&mut waiting);
            if attrs_tx
                .blocking_send((attrs, families.clone(), answered))
                .is_err()
            {
                return;
            }
            previous = Some((families.to_vec(), sampled));
            match collect_now_rx.recv_timeout(interval) {
                Ok(done) => {
                    waiting.push(done);
                    // Requests that came together share one sample.
                    waiting.extend(collect_now_rx.try_iter());
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(interval)
                }
            }
        }
    });

    let drops = Arc::new(Drops::default());
    let (stop_tx, mut stop_rx) = mpsc::channel::<Stop>(1);
    let cell = view.clone();
    let max_datagram = engine.config().max_datagram_bytes;
    let security = opts.gossip_security.clone();
    let limits = opts.limits;
    let (agent_cmd_tx, mut agent_cmd_rx) = mpsc::unbounded_channel();
    let (mut overlay, mut local_rx) = crate::overlay::runtime::OverlayRuntime::new(
        advertise,
        opts.zone.clone(),
        opts.id ^ wall_ms().rotate_left(17),
        opts.actions.clone(),
        agent_cmd_tx,
        command_guard,
        opts.limits.pending_queries,
    );
    let mut absent =
        absent::AbsentAttributes::new(&opts.aggregates, opts.interval.as_millis() as u64);
    let served_otlp = otlp_counters.clone();
    let task = tokio::spawn(async move {
        let mut host: Arc<Vec<MetricFamily>> = Arc::new(Vec::new());
        let mut buf = vec![0u8; 65_536];
        // Said once, loudly: seeds configured but nobody has answered.
        let seeds = engine.config().seeds.clone();
        let lonely_warning_ms = 10 * engine.config().interval_ms;
        let mut warned = false;
        let publish = |engine: &Engine, host: &Arc<Vec<MetricFamily>>| {
            cell.set(View {
                queries: query_metrics.clone(),
                otlp: served_otlp.clone(),
                signatures: signatures.clone(),
                limits: limit_counters.clone(),
                collisions: collisions.clone(),
                ..View::capture(engine, now().mono_ms, host.clone(), drops.snapshot())
            });
        };
        // Gossip and answers wait for the first collection: until then
        // this agent's row holds none of the host's values, and peers would
        // count it as a member with NULLs (a query would count it as
        // answered). Bounded, so that a hanging collector does not keep
        // the agent out of the cluster.
        let first_wait = timeout + Duration::from_secs(1);
        match tokio::time::timeout(first_wait, attrs_rx.recv()).await {
            Ok(Some((attrs, families, collected))) => {
                host = families;
                let effects = take_sample(&mut engine, &mut absent, now(), attrs, collected);
                send_all(&socket, security.as_deref(), effects).await;
            }
            _ => tracing::warn!(
                waited = ?first_wait,
                "the first collection has not finished; joining the cluster without it"
            ),
        }
        publish(&engine, &host);
        loop {
            let next = engine.next_tick_ms();
            let overlay_next = overlay.overlay.next_tick_ms().unwrap_or(u64::MAX);
            let wait = Duration::from_millis(next.saturating_sub(now().mono_ms));
            let overlay_wait = Duration::from_millis(overlay_next.saturating_sub(now().mono_ms));
            let mut overlay_effects = Vec::new();
            let effects = tokio::select! {
                received = socket.recv_from(&mut buf) => match received {
                    Ok((len, from)) => match transport::unseal(security.as_deref(), wall_ms(), &buf[..len], max_datagram)
                        .and_then(|plain| transport::decode_frame(&plain, max_datagram)) {
                        Ok(transport::Frame::Gossip(mut envelope)) => {
                            for limit in limits.screen(&mut envelope) {
                                limit_counters.count(limit);
                            }
                            engine.handle(now(), from, envelope)
                        }
                        Ok(transport::Frame::Overlay(message)) => {
                            let dir = crate::overlay::Tables::of(&engine);
                            overlay_effects = overlay.overlay.handle(now().mono_ms, from, message, &dir);
                            Vec::new()
                        }
                        Err(reason) => {
                            drops.count(reason);
                            tracing::debug!(%from, %reason, "datagram dropped");
                            Vec::new()
                        }
                    },
                    Err(e) => {
                        tracing::debug!(error = %e, "receive failed");
                        Vec::new()
                    }
                },
                _ = tokio::time::sleep(wait) => {
                    absent.due(&engine, now().mono_ms);
                    engine.tick(now())
                }
                _ = tokio::time::sleep(overlay_wait), if overlay_next != u64::MAX => {
                    let dir = crate::overlay::Tables::of(&engine);
                    overlay_effects = overlay.overlay.tick(now().mono_ms, &dir);
                    Vec::new()
                }
                Some(call) = calls_rx.recv() => {
                    let dir = crate::overlay::Tables::of(&engine);
                    overlay_effects = overlay.call(now().mono_ms, call, &dir);
                    Vec::new()
                }
                Some((qid, outcome)) = local_rx.recv() => {
                    let dir = crate::overlay::Tables::of(&engine);
                    overlay_effects = overlay.overlay.local_done(now().mono_ms, qid, outcome, &dir);
                    Vec::new()
                }
                Some((cert, verdict)) = cert_rx.recv() => {
                    match engine.install_certificate(now(), cert) {
                        Ok(effects) => {
                            let _ = verdict.send(Ok(()));
                            absent.due(&engine, now().mono_ms);
                            effects
                        }
                        Err(e) => {
                            let _ = verdict.send(Err(e));
                            Vec::new()
                        }
                    }
                }
                Some(command) = agent_cmd_rx.recv() => {
                    match command {
                        crate::overlay::runtime::AgentCommand::Collect { done } => {
                            let _ = collect_now_tx.send(done);
                        }
                        crate::overlay::runtime::AgentCommand::SetLogLevel(level) => {
                            let _ = crate::overlay::runtime::set_log_level(&level);
                        }
                    }
                    Vec::new()
                }
                Some((attrs, families, collected)) = attrs_rx.recv() => {
                    host = families;
                    take_sample(&mut engine, &mut absent, now(), attrs, collected)
                }
                Some(control) = stop_rx.recv() => match control {
                    Stop::Leave => {
                        let effects = engine.leave(now());
                        send_all(&socket, security.as_deref(), effects).await;
                        tracing::info!("left the cluster");
                        publish(&engine, &host);
                        return;
                    }
                    Stop::Reload { aggregates, trusted } => {
                        tracing::info!(columns = aggregates.columns().len(), "configuration reloaded");
                        if trusted != engine.config().certificates.trusted {
                            if trusted.is_empty() {
                                tracing::warn!("trusted operator keys removed: COMMANDS ARE UNSIGNED from now on, and aggregate certificates are dropped");
                            } else {
                                tracing::info!(keys = ?trusted.describe(), "trusted operator keys reloaded");
                            }
                        }
                        overlay.set_trusted_keys(trusted.clone());
                        let (dropped, mut effects) = engine.set_trusted_keys(now(), trusted);
                        for cert in dropped {
                            tracing::warn!(zone = %cert.zone, name = %cert.name, "aggregate certificate dropped: no trusted key signed it");
                        }
                        effects.extend(engine.set_aggregates(now(), aggregates));
                        effects
                    }
                }
            };
            send_all(&socket, security.as_deref(), effects).await;
            if !overlay_effects.is_empty() {
                let own = || {
                    engine
                        .own_row()
                        .map(|r| r.values().clone())
                        .unwrap_or_default()
                };
                for (to, message) in overlay.effects(overlay_effects, own, &host) {
                    let bytes = transport::seal(
                        security.as_deref(),
                        wall_ms(),
                        transport::encode_overlay(&message),
                    );
                    if let Err(e) = socket.send_to(&bytes, to).await {
                        tracing::debug!(%to, error = %e, "overlay send failed");
                    }
                }
            }
            limit_counters.set(
                crate::engine::Limit::PendingQueries,
                overlay.overlay.stats().pending_refused,
            );
            let live = overlay.overlay.live_count();
            query_metrics.set_tasks(
                live,
                overlay.overlay.task_count() - live,
                overlay.overlay.stats().live_peak,
            );
            publish(&engine, &host);
            let alone = engine
                .tables()
                .iter()
                .all(|t| t.live_siblings().next().is_none());
            if alone && !warned && !seeds.is_empty() && now().mono_ms > lonely_warning_ms {
                tracing::warn!(seeds = ?seeds, "no seed has answered after 10 gossip rounds; check the addresses and that UDP reaches them");
                warned = true;
            }
        }
    });
    Ok(RunningAgent {
        gossip_addr,
        web_addr,
        view,
        otlp: otlp_counters,
        stop: stop_tx,
        task,
        static_attrs: shared_attrs,
        host_collectors: opts.host_collectors,
    })
}

/// A fresh sample becomes this agent's row; the `collect` commands
/// waiting for it are told.
fn take_sample(
    engine: &mut Engine,
    absent: &mut absent::AbsentAttributes,
    now: Now,
    attrs: Attributes,
    collected: Vec<tokio::sync::oneshot::Sender<()>>,
) -> Vec<Effect> {
    let effects = engine.set_attributes(now, attrs);
    absent.collected();
    for done in collected {
        let _ = done.send(());
    }
    effects
}

async fn send_all(
    socket: &tokio::net::UdpSocket,
    security: Option<&GossipSecurity>,
    effects: Vec<Effect>,
) {
    for effect in effects {
        let Effect::Send { to, envelope, .. } = effect;
        let bytes = transport::seal(security, wall_ms(), transport::encode(&envelope));
        if let Err(e) = socket.send_to(&bytes, to).await {
            tracing::debug!(%to, error = %e, "send failed");
        }
    }
}

#[cfg(test)]
mod host_aggregate_tests {
    /// Built from named attributes, the default aggregates are still the
    /// statement they were written as: their columns are served as
    /// `astrolabe_zone_<column>`, which dashboards and rules query.
    #[test]
    fn the_default_aggregates_are_the_statement_dashboards_rely_on() {
        assert_eq!(
            super::host_aggregates(),
            "SELECT avg(cpu_utilization) AS cpu_utilization_avg, max(cpu_utilization) AS cpu_utilization_max, quantile(0.95, cpu_utilization) AS cpu_utilization_p95, avg(memory_used_ratio) AS memory_used_ratio_avg, max(memory_used_ratio) AS memory_used_ratio_max, quantile(0.95, memory_used_ratio) AS memory_used_ratio_p95, max(load1) AS load1_max, avg(load1) AS load1_avg, sum(memory_available_bytes) AS memory_available_bytes_all, sum(processes_running) AS processes_running_all, min(filesystem_root_free_ratio) AS filesystem_root_free_ratio_min, sum(network_receive_bytes_per_second) AS network_receive_bytes_per_second_all, sum(network_transmit_bytes_per_second) AS network_transmit_bytes_per_second_all"
        );
    }
}
