//! The collector thread: samples the host every interval (or at once when
//! a `collect` command asks) and sends the agent's leaf attributes, with
//! the metric families they came from, to the event loop.

use std::sync::{Arc, RwLock};
use std::time::Instant;

use astrolabe_collectors::{Collector, MetricFamily, TextfileCollector};
use tokio::sync::{mpsc, oneshot};

use super::{leaf_attributes, AgentOptions};
use crate::http::names::NameCollisions;
use crate::overlay::runtime::CollectNow;
use crate::zone::Attributes;

/// One collection.
pub(super) struct Sample {
    /// The agent's row: static attributes and what the collectors found.
    pub attributes: Attributes,
    /// The collectors' families, for queries over this host.
    pub families: Arc<Vec<MetricFamily>>,
    /// The `collect` commands this sample answers.
    pub collected: Vec<oneshot::Sender<()>>,
}

/// Starts the collectors on their own thread; `base` holds the static
/// attributes (a reload replaces them). Returns the samples and the
/// channel that asks for one now.
pub(super) fn spawn(
    opts: &AgentOptions,
    base: Arc<RwLock<Attributes>>,
    collisions: Arc<NameCollisions>,
) -> (mpsc::Receiver<Sample>, CollectNow) {
    let (samples_tx, samples_rx) = mpsc::channel::<Sample>(4);
    let collectors = collectors(opts);
    let interval = opts.collector_interval.unwrap_or(opts.interval);
    let timeout = opts.collector_timeout;
    let (collect_now_tx, collect_now_rx) = std::sync::mpsc::channel::<oneshot::Sender<()>>();
    std::thread::spawn(move || {
        let mut previous: Option<(Vec<MetricFamily>, Instant)> = None;
        let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
        loop {
            let sampled = Instant::now();
            let (families, _) = astrolabe_collectors::run_all(&collectors, timeout);
            let static_now = base.read().map(|b| b.clone()).unwrap_or_default();
            let attributes = leaf_attributes(
                &static_now,
                previous.as_ref().map(|(f, _)| f.as_slice()),
                &families,
                previous
                    .as_ref()
                    .map(|(_, t)| sampled.duration_since(*t).as_secs_f64()),
                &collisions,
            );
            let families = Arc::new(families);
            let sample = Sample {
                attributes,
                families: families.clone(),
                collected: std::mem::take(&mut waiting),
            };
            if samples_tx.blocking_send(sample).is_err() {
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
    (samples_rx, collect_now_tx)
}

/// The collectors the options ask for.
fn collectors(opts: &AgentOptions) -> Vec<Arc<dyn Collector>> {
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
    collectors
}
