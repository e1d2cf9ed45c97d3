use procfs::{FromRead, LoadAverage};

use crate::host::proc_error;
use crate::{Collector, CollectorError, HostPaths, MetricFamily};

/// `node_load1`, `node_load5`, `node_load15` from /proc/loadavg.
pub struct LoadavgCollector {
    paths: HostPaths,
}

impl LoadavgCollector {
    pub fn new(paths: HostPaths) -> Self {
        LoadavgCollector { paths }
    }
}

impl Collector for LoadavgCollector {
    fn name(&self) -> &'static str {
        "loadavg"
    }

    /// Kernel counters, read without waiting on any device.
    fn may_block(&self) -> bool {
        false
    }

    fn collect(&self) -> Result<Vec<MetricFamily>, CollectorError> {
        let l = LoadAverage::from_file(self.paths.proc("loadavg")).map_err(proc_error)?;
        Ok(vec![
            MetricFamily::gauge("node_load1", "1m load average.", l.one as f64),
            MetricFamily::gauge("node_load5", "5m load average.", l.five as f64),
            MetricFamily::gauge("node_load15", "15m load average.", l.fifteen as f64),
        ])
    }
}

#[cfg(test)]
mod fixture_tests {
    use crate::{fixture, Collector};

    #[test]
    fn reads_the_fixture_loadavg_as_the_golden_file() {
        let families = super::LoadavgCollector::new(fixture::paths())
            .collect()
            .unwrap();
        fixture::assert_golden("loadavg", &families);
    }
}
