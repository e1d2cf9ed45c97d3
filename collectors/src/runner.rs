//! Runs collectors concurrently with a deadline each.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{Collector, CollectorError, Kind, MetricFamily};

#[derive(Debug, Clone)]
pub struct CollectorOutcome {
    pub name: &'static str,
    pub success: bool,
    pub duration: Duration,
    pub error: Option<String>,
}

/// Collectors whose last run has not returned yet: a hung collector (say,
/// statfs on a dead NFS server) cannot be cancelled, so it is not started
/// again until it returns; meanwhile it is reported failed.
/// Keyed by the collector instance, not its name: one process may run many
/// agents (the demo), each with its own collectors of the same names.
static RUNNING: Mutex<Vec<usize>> = Mutex::new(Vec::new());

fn key(c: &Arc<dyn Collector>) -> usize {
    Arc::as_ptr(c) as *const () as usize
}

/// Runs every collector that may block on its own thread, the others in
/// line meanwhile, and waits at most `timeout` for all of them. Returns the
/// families of those that finished in time, plus
/// `astrolabe_collector_success` and `astrolabe_collector_duration_seconds`.
pub fn run_all(
    collectors: &[Arc<dyn Collector>],
    timeout: Duration,
) -> (Vec<MetricFamily>, Vec<CollectorOutcome>) {
    let started = Instant::now();
    let (tx, rx) = mpsc::channel();
    let mut pending = Vec::new();
    let mut outcomes = Vec::new();
    let (threaded, in_line): (Vec<_>, Vec<_>) = collectors.iter().partition(|c| c.may_block());
    for c in threaded {
        let name = c.name();
        let id = key(c);
        {
            let mut running = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
            if running.contains(&id) {
                outcomes.push(CollectorOutcome {
                    name,
                    success: false,
                    duration: Duration::ZERO,
                    error: Some("previous run still running".into()),
                });
                continue;
            }
            running.push(id);
        }
        pending.push(name);
        let c = Arc::clone(c);
        let tx = tx.clone();
        std::thread::spawn(move || {
            let t = Instant::now();
            let result = c.collect();
            RUNNING
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|n| *n != id);
            let _ = tx.send((name, t.elapsed(), result));
        });
    }
    drop(tx);
    let mut families = Vec::new();
    for c in in_line {
        let t = Instant::now();
        // A bug in one collector must not take the collector loop with it.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.collect()))
            .unwrap_or(Err(CollectorError::Panicked));
        record(c.name(), t.elapsed(), result, &mut families, &mut outcomes);
    }
    while !pending.is_empty() {
        let left = timeout.saturating_sub(started.elapsed());
        match rx.recv_timeout(left) {
            Ok((name, duration, result)) => {
                pending.retain(|n| *n != name);
                record(name, duration, result, &mut families, &mut outcomes);
            }
            Err(_) => break,
        }
    }
    for name in pending {
        outcomes.push(CollectorOutcome {
            name,
            success: false,
            duration: timeout,
            error: Some(format!("timed out after {timeout:?}")),
        });
    }
    outcomes.sort_by_key(|o| o.name);
    let mut success = MetricFamily::new(
        "astrolabe_collector_success",
        "Whether a collector succeeded.",
        Kind::Gauge,
    );
    let mut duration = MetricFamily::new(
        "astrolabe_collector_duration_seconds",
        "Duration of a collector's last run.",
        Kind::Gauge,
    );
    for o in &outcomes {
        success.push(&[("collector", o.name)], if o.success { 1.0 } else { 0.0 });
        duration.push(&[("collector", o.name)], o.duration.as_secs_f64());
    }
    families.push(success);
    families.push(duration);
    (families, outcomes)
}

fn record(
    name: &'static str,
    duration: Duration,
    result: Result<Vec<MetricFamily>, CollectorError>,
    families: &mut Vec<MetricFamily>,
    outcomes: &mut Vec<CollectorOutcome>,
) {
    let error = match result {
        Ok(f) => {
            families.extend(f);
            None
        }
        Err(e) => Some(e.to_string()),
    };
    outcomes.push(CollectorOutcome {
        name,
        success: error.is_none(),
        duration,
        error,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CollectorError;

    struct Hangs;
    impl Collector for Hangs {
        fn name(&self) -> &'static str {
            "hangs"
        }
        fn collect(&self) -> Result<Vec<MetricFamily>, CollectorError> {
            std::thread::sleep(Duration::from_secs(3600));
            Ok(Vec::new())
        }
    }

    #[test]
    fn host_collectors_read_the_real_proc() {
        let (families, outcomes) = run_all(
            &crate::default_collectors(&crate::Host::default()),
            Duration::from_secs(5),
        );
        assert!(outcomes.iter().all(|o| o.success), "{outcomes:?}");
        let find = |n: &str| {
            families
                .iter()
                .find(|f| f.name == n)
                .unwrap_or_else(|| panic!("{n} missing"))
        };
        let rx = find("node_network_receive_bytes_total");
        assert!(rx
            .samples
            .iter()
            .any(|s| s.labels.contains(&("device".into(), "lo".into()))));
        let size = find("node_filesystem_size_bytes");
        assert!(size
            .samples
            .iter()
            .all(|s| s.value > 0.0 || s.labels.iter().any(|(k, _)| k == "fstype")));
        assert!(!size
            .samples
            .iter()
            .any(|s| s.labels.contains(&("fstype".into(), "proc".into()))));
        find("node_disk_reads_completed_total");
        find("node_memory_MemTotal_bytes");
    }

    struct Panics;
    impl Collector for Panics {
        fn name(&self) -> &'static str {
            "panics"
        }
        fn collect(&self) -> Result<Vec<MetricFamily>, CollectorError> {
            panic!("a bug")
        }
        fn may_block(&self) -> bool {
            false
        }
    }

    #[test]
    fn an_in_line_collector_that_panics_fails_alone() {
        let collectors: Vec<Arc<dyn Collector>> = vec![
            Arc::new(Panics),
            Arc::new(crate::LoadavgCollector::new(Default::default())),
        ];
        let (families, outcomes) = run_all(&collectors, Duration::from_secs(5));
        assert!(families.iter().any(|f| f.name == "node_load1"));
        let failed = outcomes.iter().find(|o| o.name == "panics").unwrap();
        assert!(!failed.success);
        assert!(failed.error.as_deref().unwrap().contains("panicked"));
        let success = families
            .iter()
            .find(|f| f.name == "astrolabe_collector_success")
            .unwrap();
        assert_eq!(success.samples.len(), 2);
    }

    #[test]
    fn a_hung_collector_does_not_stall_the_others() {
        let collectors: Vec<Arc<dyn Collector>> = vec![
            Arc::new(Hangs),
            Arc::new(crate::LoadavgCollector::new(Default::default())),
            Arc::new(crate::MeminfoCollector::new(Default::default())),
            Arc::new(crate::CpuCollector::new(Default::default())),
        ];
        let t = Instant::now();
        let (families, outcomes) = run_all(&collectors, Duration::from_millis(300));
        assert!(t.elapsed() < Duration::from_secs(2));
        assert!(families.iter().any(|f| f.name == "node_load1"));
        assert!(families
            .iter()
            .any(|f| f.name == "node_memory_MemTotal_bytes" && f.unlabeled().unwrap() > 0.0));
        let cpu = families
            .iter()
            .find(|f| f.name == "node_cpu_seconds_total")
            .unwrap();
        assert!(cpu
            .samples
            .iter()
            .any(|s| s.labels.contains(&("cpu".into(), "0".into()))));
        let hung = outcomes.iter().find(|o| o.name == "hangs").unwrap();
        assert!(!hung.success);
        assert!(outcomes
            .iter()
            .filter(|o| o.name != "hangs")
            .all(|o| o.success));
        // Still hung: not started a second time, reported at once.
        let (_, again) = run_all(&collectors[..1], Duration::from_millis(300));
        assert_eq!(
            again[0].error.as_deref(),
            Some("previous run still running")
        );
        let success = families
            .iter()
            .find(|f| f.name == "astrolabe_collector_success")
            .unwrap();
        assert_eq!(success.samples.len(), 4);
    }
}
