use procfs::Current;

use crate::{Collector, CollectorError, MetricFamily};

/// `node_load1`, `node_load5`, `node_load15` from /proc/loadavg.
pub struct LoadavgCollector;

impl Collector for LoadavgCollector {
    fn name(&self) -> &'static str {
        "loadavg"
    }

    /// Kernel counters, read without waiting on any device.
    fn may_block(&self) -> bool {
        false
    }

    fn collect(&self) -> Result<Vec<MetricFamily>, CollectorError> {
        let l = procfs::LoadAverage::current().map_err(|e| CollectorError::Proc(e.to_string()))?;
        Ok(vec![
            MetricFamily::gauge("node_load1", "1m load average.", l.one as f64),
            MetricFamily::gauge("node_load5", "5m load average.", l.five as f64),
            MetricFamily::gauge("node_load15", "15m load average.", l.fifteen as f64),
        ])
    }
}
