//! Collectors: each samples one source (a /proc file, a directory of
//! `*.prom` files) into metric families with node_exporter's names, so that
//! node_exporter dashboards work against the agent.
//!
//! A collector is plain blocking code behind one trait; `run_all` runs them
//! on threads with a deadline, so one that hangs (a stale NFS mount) is
//! reported failed without holding up the others or the scrape.

// Unsafe code only in filesystem.rs's statvfs call, with its SAFETY comment.
#![deny(unsafe_code)]

mod application;
mod cpu;
mod diskstats;
mod filesystem;
#[cfg(any(test, feature = "fixture"))]
pub mod fixture;
mod host;
mod loadavg;
mod meminfo;
mod model;
mod netdev;
mod pressure;
mod processes;
mod runner;
pub mod textfile;

pub use application::ApplicationCollector;
pub use cpu::{utilization, CpuCollector};
pub use diskstats::DiskstatsCollector;
pub use filesystem::FilesystemCollector;
pub use host::{Host, HostPaths};
pub use loadavg::LoadavgCollector;
pub use meminfo::MeminfoCollector;
pub use model::{Kind, MetricFamily, Sample};
pub use netdev::NetdevCollector;
pub use pressure::PressureCollector;
pub use processes::{ProcessCollector, ProcessGroup};
pub use runner::{run_all, CollectorOutcome};
pub use textfile::TextfileCollector;

#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    #[error("reading {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Proc(String),
    #[error("{file}:{line}: {reason}")]
    Parse {
        file: String,
        line: usize,
        reason: String,
    },
    #[error("the collector panicked (a bug: please report it)")]
    Panicked,
}

/// One source of samples. `collect` may block (see `may_block`); the
/// runner bounds it.
pub trait Collector: Send + Sync {
    fn name(&self) -> &'static str;
    fn collect(&self) -> Result<Vec<MetricFamily>, CollectorError>;
    /// Whether a run can hang (a dead NFS server, a process stuck with its
    /// memory map locked, a slow application): such a collector runs on a
    /// thread of its own, under the deadline. Collectors that only read
    /// kernel counters from /proc say no and run in line, sparing a thread
    /// (and its stack and allocator pages) per round.
    fn may_block(&self) -> bool {
        true
    }
}

/// The host collectors an agent runs by default, reading `host`.
pub fn default_collectors(host: &Host) -> Vec<std::sync::Arc<dyn Collector>> {
    let paths = &host.paths;
    vec![
        std::sync::Arc::new(CpuCollector::new(host.clone())),
        std::sync::Arc::new(MeminfoCollector::new(paths.clone())),
        std::sync::Arc::new(LoadavgCollector::new(paths.clone())),
        std::sync::Arc::new(NetdevCollector::new(paths.clone())),
        std::sync::Arc::new(DiskstatsCollector::new(paths.clone())),
        std::sync::Arc::new(FilesystemCollector::new(paths.clone())),
        std::sync::Arc::new(PressureCollector::new(paths.clone())),
    ]
}
