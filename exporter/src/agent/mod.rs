//! The agent: the engine under tokio, fed by the UDP socket, a timer and
//! the collectors, publishing a snapshot for the HTTP endpoint.

mod absent;
mod collect;
mod leaf;
pub mod resident;

use crate::wall_clock::wall_ms;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use astrolabe_collectors::MetricFamily;
use tokio::sync::mpsc;

pub use leaf::{attr, leaf_attributes};

use crate::aggregate::AggregateSet;
use crate::engine::{EngineConfig, Now};
use crate::node::{Input, Node, NodeConfig, Output};
use crate::transport;
use crate::transport::keyring::GossipSecurity;
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
    let signatures = Arc::new(crate::security::SignatureRefusals::default());
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
    let node_cfg = NodeConfig::new(
        cfg,
        opts.id ^ wall_ms().rotate_left(17),
        opts.signature_window.as_millis() as u64,
    );
    let clock = Clock::new();
    let static_attrs: Attributes = opts
        .attributes
        .iter()
        .map(|(k, v)| (k.as_str().into(), v.clone()))
        .collect();
    let node = Node::new(node_cfg, aggregates, static_attrs.clone(), clock.now())?;

    let view = Arc::new(ViewCell::default());
    let (cert_tx, cert_rx) = mpsc::channel::<crate::security::api::CertCall>(16);
    let (calls_tx, calls_rx) = mpsc::channel::<crate::overlay::runtime::Call>(64);
    let query_metrics = Arc::new(crate::overlay::metrics::QueryMetrics::default());
    let otlp_counters = Arc::new(crate::otel::OtlpCounters::default());
    // The overlay's APIs go through the same TLS and authentication as the rest.
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
    let web_addr = serve_web(&opts, app, node.limit_counters().clone()).await?;
    tracing::info!(zone = %opts.zone, id = opts.id, gossip = %gossip_addr, advertise = %advertise, web = %web_addr, seeds = ?opts.seeds, "agent started");

    let collisions = Arc::new(crate::http::names::NameCollisions::default());
    let shared_attrs = Arc::new(std::sync::RwLock::new(static_attrs));
    let (samples, collect_now) = collect::spawn(&opts, shared_attrs.clone(), collisions.clone());
    let (host_work, done_rx) = crate::overlay::runtime::HostWork::new(
        opts.zone.clone(),
        opts.actions.clone(),
        collect_now,
    );
    let (stop_tx, stop_rx) = mpsc::channel::<Stop>(1);
    let event_loop = EventLoop {
        node,
        clock,
        socket,
        security: opts.gossip_security.clone(),
        host_work,
        absent: absent::AbsentAttributes::new(&opts.aggregates, opts.interval.as_millis() as u64),
        publish: Publisher {
            cell: view.clone(),
            queries: query_metrics,
            otlp: otlp_counters.clone(),
            signatures,
            collisions,
        },
        first_wait: opts.collector_timeout + Duration::from_secs(1),
    };
    let task = tokio::spawn(event_loop.run(Channels {
        samples,
        calls: calls_rx,
        done: done_rx,
        certs: cert_rx,
        stop: stop_rx,
    }));
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

/// Serves the HTTP endpoint (with TLS and basic auth when configured,
/// and the request limits in front); returns where it listens.
async fn serve_web(
    opts: &AgentOptions,
    app: axum::Router,
    limit_counters: Arc<crate::engine::LimitCounters>,
) -> Result<SocketAddr, AgentError> {
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
            limit_counters,
        )
        .await
        .map_err(|e| AgentError::WebConfig(e.to_string()))?,
        None => crate::http::serve_router(
            opts.web_listen,
            shed(app),
            opts.limits.http_read_timeout,
            limit_counters,
        )
        .await
        .map_err(|error| AgentError::Web {
            addr: opts.web_listen,
            reason: transport::os_reason(&error),
            error,
        })?,
    };
    Ok(web_addr)
}

/// The agent's clocks: monotonic since start, and the wall clock.
#[derive(Clone, Copy)]
struct Clock {
    started: Instant,
}

impl Clock {
    fn new() -> Clock {
        Clock {
            started: Instant::now(),
        }
    }

    fn now(&self) -> Now {
        Now {
            mono_ms: self.started.elapsed().as_millis() as u64,
            wall_ms: wall_ms(),
        }
    }

    /// When the monotonic `at_ms` is, as a tokio deadline.
    fn deadline(&self, at_ms: u64) -> tokio::time::Instant {
        let at = self
            .started
            .checked_add(Duration::from_millis(at_ms))
            // Nothing due for longer than a process lives: wake in a day.
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
        tokio::time::Instant::from_std(at)
    }
}

/// What the event loop reads besides the socket and the timer.
struct Channels {
    samples: mpsc::Receiver<collect::Sample>,
    calls: mpsc::Receiver<crate::overlay::runtime::Call>,
    done: mpsc::UnboundedReceiver<(u64, crate::overlay::Outcome)>,
    certs: mpsc::Receiver<crate::security::api::CertCall>,
    stop: mpsc::Receiver<Stop>,
}

/// Publishes the snapshot `/metrics` and the APIs read.
struct Publisher {
    cell: Arc<ViewCell>,
    queries: Arc<crate::overlay::metrics::QueryMetrics>,
    otlp: Arc<crate::otel::OtlpCounters>,
    signatures: Arc<crate::security::SignatureRefusals>,
    collisions: Arc<crate::http::names::NameCollisions>,
}

impl Publisher {
    fn publish(&self, node: &Node, now_ms: u64, host: &Arc<Vec<MetricFamily>>) {
        let overlay = node.overlay();
        node.limit_counters().set(
            crate::engine::Limit::PendingQueries,
            overlay.stats().pending_refused,
        );
        let live = overlay.live_count();
        self.queries
            .set_tasks(live, overlay.task_count() - live, overlay.stats().live_peak);
        self.cell.set(View {
            queries: self.queries.clone(),
            otlp: self.otlp.clone(),
            signatures: self.signatures.clone(),
            limits: node.limit_counters().clone(),
            collisions: self.collisions.clone(),
            ..View::capture(node.engine(), now_ms, host.clone(), node.drops().snapshot())
        });
    }
}

/// The agent's event loop: read, call the node, carry out its outputs.
struct EventLoop {
    node: Node,
    clock: Clock,
    socket: tokio::net::UdpSocket,
    security: Option<Arc<GossipSecurity>>,
    host_work: crate::overlay::runtime::HostWork,
    absent: absent::AbsentAttributes,
    publish: Publisher,
    /// How long gossip waits for the first collection.
    first_wait: Duration,
}

impl EventLoop {
    async fn run(mut self, mut ch: Channels) {
        let mut host: Arc<Vec<MetricFamily>> = Arc::new(Vec::new());
        let mut buf = vec![0u8; 65_536];
        let max_datagram = self.node.engine().config().max_datagram_bytes;
        let mut lonely = LonelyWarning::new(self.node.engine());
        // Gossip and answers wait for the first collection: until then this
        // agent's row holds none of the host's values, and peers would count
        // it as a member with NULLs. Bounded, so that a hanging collector
        // does not keep the agent out of the cluster.
        match tokio::time::timeout(self.first_wait, ch.samples.recv()).await {
            Ok(Some(sample)) => host = self.take_sample(sample),
            _ => {
                tracing::warn!(waited = ?self.first_wait, "the first collection has not finished; joining the cluster without it")
            }
        }
        self.carry_out(&host).await;
        loop {
            let deadline = self.clock.deadline(self.node.poll_timeout());
            // Each arm reads the clock when its event has come, not before
            // the wait.
            let clock = self.clock;
            tokio::select! {
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((len, from)) => {
                        let now = clock.now();
                        match transport::unseal(self.security.as_deref(), now.wall_ms, &buf[..len], max_datagram) {
                            Ok(plain) => self.node.handle_datagram(now, from, &plain),
                            Err(reason) => {
                                self.node.drops().count(reason);
                                tracing::debug!(%from, %reason, "datagram dropped");
                            }
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "receive failed"),
                },
                _ = tokio::time::sleep_until(deadline) => {
                    let now = clock.now();
                    self.absent.due(self.node.engine(), now.mono_ms);
                    self.node.tick(now);
                }
                Some(call) = ch.calls.recv() => self.host_work.call(&mut self.node, clock.now(), call),
                Some((qid, outcome)) = ch.done.recv() => self.node.apply(clock.now(), Input::LocalDone { qid, outcome }),
                Some((cert, verdict)) = ch.certs.recv() => {
                    let now = clock.now();
                    let result = self.node.install_certificate(now, cert);
                    if result.is_ok() {
                        self.absent.due(self.node.engine(), now.mono_ms);
                    }
                    let _ = verdict.send(result);
                }
                Some(sample) = ch.samples.recv() => host = self.take_sample(sample),
                Some(stop) = ch.stop.recv() => match stop {
                    Stop::Leave => {
                        self.node.apply(clock.now(), Input::Leave);
                        self.carry_out(&host).await;
                        tracing::info!("left the cluster");
                        return;
                    }
                    Stop::Reload { aggregates, trusted } => self.reload(clock.now(), aggregates, trusted),
                },
            }
            self.carry_out(&host).await;
            lonely.check(self.node.engine(), self.clock.now().mono_ms);
        }
    }

    /// A fresh sample becomes this agent's row; the `collect` commands
    /// waiting for it are told. Returns the sample's metric families.
    fn take_sample(&mut self, sample: collect::Sample) -> Arc<Vec<MetricFamily>> {
        self.node
            .apply(self.clock.now(), Input::Attributes(sample.attributes));
        self.absent.collected();
        for done in sample.collected {
            let _ = done.send(());
        }
        sample.families
    }

    fn reload(
        &mut self,
        now: Now,
        aggregates: Arc<AggregateSet>,
        trusted: crate::security::TrustedKeys,
    ) {
        tracing::info!(
            columns = aggregates.columns().len(),
            "configuration reloaded"
        );
        if trusted != self.node.engine().config().certificates.trusted {
            if trusted.is_empty() {
                tracing::warn!("trusted operator keys removed: COMMANDS ARE UNSIGNED from now on, and aggregate certificates are dropped");
            } else {
                tracing::info!(keys = ?trusted.describe(), "trusted operator keys reloaded");
            }
        }
        self.node.apply(
            now,
            Input::Reload {
                aggregates,
                trusted,
            },
        );
    }

    /// Sends, answers and runs what the node asks for, then publishes.
    async fn carry_out(&mut self, host: &Arc<Vec<MetricFamily>>) {
        while let Some(output) = self.node.poll_output() {
            match output {
                Output::Datagram { to, bytes } => self.send(to, bytes).await,
                // Not configured here (`Wire::Bytes`); encoded all the same.
                Output::Envelope { to, envelope, .. } => {
                    self.send(to, transport::encode(&envelope)).await
                }
                Output::Answer { qid, answer } => self.host_work.answer(qid, answer),
                Output::Local { qid, work } => self.host_work.run(qid, work, host),
            }
        }
        self.publish
            .publish(&self.node, self.clock.now().mono_ms, host);
    }

    /// Sends one datagram, sealed when gossip is encrypted.
    async fn send(&self, to: SocketAddr, bytes: Vec<u8>) {
        let bytes = transport::seal(self.security.as_deref(), wall_ms(), bytes);
        if let Err(e) = self.socket.send_to(&bytes, to).await {
            tracing::debug!(%to, error = %e, "send failed");
        }
    }
}

/// Said once, loudly: seeds configured but nobody answered in 10 rounds.
struct LonelyWarning {
    seeds: Vec<SocketAddr>,
    after_ms: u64,
    warned: bool,
}

impl LonelyWarning {
    fn new(engine: &crate::engine::Engine) -> LonelyWarning {
        LonelyWarning {
            seeds: engine.config().seeds.clone(),
            after_ms: 10 * engine.config().interval_ms,
            warned: engine.config().seeds.is_empty(),
        }
    }

    fn check(&mut self, engine: &crate::engine::Engine, now_ms: u64) {
        if self.warned || now_ms <= self.after_ms {
            return;
        }
        let alone = engine
            .tables()
            .iter()
            .all(|t| t.live_siblings().next().is_none());
        if alone {
            tracing::warn!(seeds = ?self.seeds, "no seed has answered after 10 gossip rounds; check the addresses and that UDP reaches them");
            self.warned = true;
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
