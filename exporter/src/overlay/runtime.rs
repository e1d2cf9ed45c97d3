//! The overlay's host side under tokio, for the agent: calls from HTTP
//! handlers in and their answers out, and the host work a request asks of
//! this agent (`node::LocalWork`) run off the event loop. What runs and
//! whether it may is decided by the sans-IO `Node`; this only carries it
//! out.

use std::collections::HashMap;
use std::sync::Arc;

use astrolabe_collectors::MetricFamily;
use tokio::sync::{mpsc, oneshot};

use super::actions::Actions;
use super::command::{Status, Tally};
use super::local::local_data;
use super::{Answer, Outcome, Request, RequestError};
use crate::engine::Now;
use crate::node::{LocalWork, Node};
use crate::zone::ZonePath;

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

/// Asks the collector thread for a sample now; the sender is told once
/// the fresh sample is the agent's row, so a query right after sees it.
pub type CollectNow = std::sync::mpsc::Sender<oneshot::Sender<()>>;

/// How long `collect` waits for the collectors before reporting failure.
const COLLECT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Callers waiting for answers, and the host work in flight.
pub struct HostWork {
    leaf: ZonePath,
    pending: HashMap<u64, mpsc::UnboundedSender<Result<Answer, RequestError>>>,
    done: mpsc::UnboundedSender<(u64, Outcome)>,
    actions: Arc<Actions>,
    collect: CollectNow,
}

impl HostWork {
    /// Work for the agent at `leaf`; finished work comes back through the
    /// receiver, to be given to the node as `Input::LocalDone`.
    pub fn new(
        leaf: ZonePath,
        actions: Actions,
        collect: CollectNow,
    ) -> (HostWork, mpsc::UnboundedReceiver<(u64, Outcome)>) {
        let (done, done_rx) = mpsc::unbounded_channel();
        let work = HostWork {
            leaf,
            pending: HashMap::new(),
            done,
            actions: Arc::new(actions),
            collect,
        };
        (work, done_rx)
    }

    /// Starts a caller's request; an error is its only answer.
    pub fn call(&mut self, node: &mut Node, now: Now, call: Call) {
        match node.request(now, call.zone, call.request, call.timeout_ms) {
            Ok(qid) => {
                self.pending.insert(qid, call.answers);
            }
            Err(e) => {
                let _ = call.answers.send(Err(e));
            }
        }
    }

    /// An answer for its caller; the last one ends the request.
    pub fn answer(&mut self, qid: u64, answer: Answer) {
        let last = answer.reply.last;
        if let Some(tx) = self.pending.get(&qid) {
            let _ = tx.send(Ok(answer));
        }
        if last {
            self.pending.remove(&qid);
        }
    }

    /// Runs host work on its own task; `samples` is the last collection.
    pub fn run(&self, qid: u64, work: LocalWork, samples: &Arc<Vec<MetricFamily>>) {
        let tx = self.done.clone();
        let host = self.leaf.to_string();
        match work {
            LocalWork::Query { query, attributes } => {
                let leaf = self.leaf.clone();
                let samples = samples.clone();
                // Reading /proc for process rows blocks.
                tokio::task::spawn_blocking(move || {
                    let data = local_data(&query, &leaf, &attributes, &samples);
                    let _ = tx.send((qid, Outcome::Query(query.local(&data))));
                });
            }
            LocalWork::SetLogLevel { level } => {
                tracing::warn!(level = %level, "set-log-level requested over the overlay");
                let tally = match set_log_level(&level) {
                    Ok(()) => Tally::one(&host, Status::Ok, &format!("log level {level}")),
                    Err(e) => Tally::one(&host, Status::Failed, &e),
                };
                let _ = tx.send((qid, Outcome::Command(tally)));
            }
            LocalWork::Collect => {
                tracing::warn!("collect requested over the overlay");
                let (done, collected) = oneshot::channel();
                let asked = self.collect.send(done).is_ok();
                tokio::spawn(async move {
                    let tally = if !asked {
                        Tally::one(&host, Status::Failed, "agent stopping")
                    } else {
                        match tokio::time::timeout(COLLECT_WAIT, collected).await {
                            Ok(Ok(())) => Tally::one(&host, Status::Ok, "collected"),
                            Ok(Err(_)) => Tally::one(&host, Status::Failed, "agent stopping"),
                            Err(_) => Tally::one(
                                &host,
                                Status::Failed,
                                "collectors did not finish in time",
                            ),
                        }
                    };
                    let _ = tx.send((qid, Outcome::Command(tally)));
                });
            }
            LocalWork::Action { name } => {
                let actions = self.actions.clone();
                tokio::spawn(async move {
                    let tally = actions.run(&host, &name).await;
                    let _ = tx.send((qid, Outcome::Command(tally)));
                });
            }
        }
    }
}
