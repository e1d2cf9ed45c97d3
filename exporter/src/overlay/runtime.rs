//! The overlay under tokio, for the agent: calls from HTTP handlers in,
//! datagrams out, host answers computed off the event loop.

use crate::wall_clock::wall_ms;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use astrolabe_collectors::MetricFamily;
use tokio::sync::mpsc;

use super::actions::Actions;
use super::command::{Status, Tally};
use super::local::local_data;
use super::query::Query;
use super::{
    Answer, Directory, Outcome, Overlay, OverlayConfig, OverlayEffect, OverlayMessage, Request,
    RequestError,
};
use crate::security::command::CommandGuard;
use crate::zone::{Attributes, ZonePath};

type LogReloader = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

static LOG_RELOADER: std::sync::OnceLock<LogReloader> = std::sync::OnceLock::new();

/// Installed by the binary's logging set-up; `set-log-level` uses it.
pub fn set_log_reloader(reload: LogReloader) {
    let _ = LOG_RELOADER.set(reload);
}

/// Applies a filter such as `debug` or `astrolabe=trace,info`; anything
/// that is not a level or directive is refused and the old filter stays.
pub fn set_log_level(level: &str) -> Result<(), String> {
    super::log_filter::check(level).map_err(|e| e.to_string())?;
    match LOG_RELOADER.get() {
        Some(reload) => reload(level),
        None => Err("this process's log level cannot be changed".into()),
    }
}

/// A request from a caller, and where its answers go.
pub struct Call {
    pub zone: ZonePath,
    pub request: Request,
    pub timeout_ms: u64,
    pub answers: mpsc::UnboundedSender<Result<Answer, RequestError>>,
}

/// How HTTP handlers reach the overlay.
#[derive(Clone)]
pub struct OverlayHandle {
    pub calls: mpsc::Sender<Call>,
    /// Latency, outcome and coverage of what the handlers answered.
    pub metrics: Arc<super::metrics::QueryMetrics>,
}

/// Changes to the agent a command asks for.
#[derive(Debug)]
pub enum AgentCommand {
    SetLogLevel(String),
    /// Sample now; `done` is told once the fresh sample is the agent's
    /// row, so that a query right after the command sees it.
    Collect {
        done: tokio::sync::oneshot::Sender<()>,
    },
}

/// How long `collect` waits for the collectors before reporting failure.
const COLLECT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

pub struct OverlayRuntime {
    pub overlay: Overlay,
    pending: HashMap<u64, mpsc::UnboundedSender<Result<Answer, RequestError>>>,
    local_tx: mpsc::UnboundedSender<(u64, Outcome)>,
    actions: Arc<Actions>,
    agent_commands: mpsc::UnboundedSender<AgentCommand>,
    /// Checks operator signatures before anything runs here.
    guard: CommandGuard,
}

impl OverlayRuntime {
    pub fn new(
        addr: SocketAddr,
        zone: ZonePath,
        seed: u64,
        actions: Actions,
        agent_commands: mpsc::UnboundedSender<AgentCommand>,
        guard: CommandGuard,
        max_pending: usize,
    ) -> (OverlayRuntime, mpsc::UnboundedReceiver<(u64, Outcome)>) {
        let (local_tx, local_rx) = mpsc::unbounded_channel();
        let mut cfg = OverlayConfig::new(addr, zone, seed);
        cfg.max_pending = max_pending;
        (
            OverlayRuntime {
                overlay: Overlay::new(cfg),
                pending: HashMap::new(),
                local_tx,
                actions: Arc::new(actions),
                agent_commands,
                guard,
            },
            local_rx,
        )
    }

    /// The operator keys commands must be signed by from now on (SIGHUP).
    pub fn set_trusted_keys(&mut self, trusted: crate::security::TrustedKeys) {
        self.guard.set_trusted(trusted);
    }

    pub fn call(&mut self, now: u64, call: Call, dir: &dyn Directory) -> Vec<OverlayEffect> {
        match self
            .overlay
            .start(now, call.zone, call.request, call.timeout_ms, dir)
        {
            Ok((qid, effects)) => {
                self.pending.insert(qid, call.answers);
                effects
            }
            Err(e) => {
                let _ = call.answers.send(Err(e));
                Vec::new()
            }
        }
    }

    /// Carries out effects: datagrams to send are returned; host answers
    /// are computed on blocking threads and come back through the
    /// receiver `new` returned; answers go to their callers.
    pub fn effects(
        &mut self,
        effects: Vec<OverlayEffect>,
        attributes: impl Fn() -> Attributes,
        samples: &Arc<Vec<MetricFamily>>,
    ) -> Vec<(SocketAddr, OverlayMessage)> {
        let mut sends = Vec::new();
        for e in effects {
            match e {
                OverlayEffect::Send { to, message } => sends.push((to, message)),
                OverlayEffect::Answer { qid, answer } => {
                    let last = answer.reply.last;
                    if let Some(tx) = self.pending.get(&qid) {
                        let _ = tx.send(Ok(answer));
                    }
                    if last {
                        self.pending.remove(&qid);
                    }
                }
                OverlayEffect::Local { qid, request } => {
                    let leaf = self.overlay.config().zone.clone();
                    let tx = self.local_tx.clone();
                    match request.as_ref() {
                        Request::Query { sql } => {
                            let sql = sql.clone();
                            let attrs = attributes();
                            let samples = samples.clone();
                            tokio::task::spawn_blocking(move || {
                                let outcome = match Query::parse(&sql) {
                                    Ok(q) => Outcome::Query(
                                        q.local(&local_data(&q, &leaf, &attrs, &samples)),
                                    ),
                                    Err(e) => Outcome::Error(RequestError::BadQuery(e.0)),
                                };
                                let _ = tx.send((qid, outcome));
                            });
                        }
                        Request::Command { name, args, seal } => {
                            let host = leaf.to_string();
                            if let Err(reason) =
                                self.guard
                                    .check(&leaf, name, args, seal.as_ref(), wall_ms())
                            {
                                let why = format!("operator signature: {}", reason.label());
                                let tally = Tally::one(&host, Status::Refused, &why);
                                let _ = tx.send((qid, Outcome::Command(tally)));
                                continue;
                            }
                            let name = name.clone();
                            let args = args.clone();
                            let actions = self.actions.clone();
                            let agent = self.agent_commands.clone();
                            tokio::spawn(async move {
                                let tally = match name.as_str() {
                                    "set-log-level" => {
                                        tracing::warn!(level = %args.join(" "), "set-log-level requested over the overlay");
                                        match args.as_slice() {
                                            [level] => match set_log_level(level) {
                                                Ok(()) => Tally::one(
                                                    &host,
                                                    Status::Ok,
                                                    &format!("log level {level}"),
                                                ),
                                                Err(e) => Tally::one(&host, Status::Failed, &e),
                                            },
                                            _ => Tally::one(
                                                &host,
                                                Status::Failed,
                                                "set-log-level takes one level or filter, like debug or astrolabe=debug,info",
                                            ),
                                        }
                                    }
                                    "collect" => {
                                        tracing::warn!("collect requested over the overlay");
                                        let (done, collected) = tokio::sync::oneshot::channel();
                                        if agent.send(AgentCommand::Collect { done }).is_err() {
                                            Tally::one(&host, Status::Failed, "agent stopping")
                                        } else {
                                            match tokio::time::timeout(COLLECT_WAIT, collected)
                                                .await
                                            {
                                                Ok(Ok(())) => {
                                                    Tally::one(&host, Status::Ok, "collected")
                                                }
                                                Ok(Err(_)) => Tally::one(
                                                    &host,
                                                    Status::Failed,
                                                    "agent stopping",
                                                ),
                                                Err(_) => Tally::one(
                                                    &host,
                                                    Status::Failed,
                                                    "collectors did not finish in time",
                                                ),
                                            }
                                        }
                                    }
                                    _ => actions.run(&host, &name).await,
                                };
                                let _ = tx.send((qid, Outcome::Command(tally)));
                            });
                        }
                    }
                }
            }
        }
        sends
    }
}
