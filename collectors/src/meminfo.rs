use procfs::{FromRead, Meminfo};

use crate::host::proc_error;
use crate::{Collector, CollectorError, HostPaths, MetricFamily};

/// `node_memory_*_bytes` from /proc/meminfo, named like node_exporter's.
pub struct MeminfoCollector {
    paths: HostPaths,
}

impl MeminfoCollector {
    pub fn new(paths: HostPaths) -> Self {
        MeminfoCollector { paths }
    }
}

impl Collector for MeminfoCollector {
    fn name(&self) -> &'static str {
        "meminfo"
    }

    /// Kernel counters, read without waiting on any device.
    fn may_block(&self) -> bool {
        false
    }

    fn collect(&self) -> Result<Vec<MetricFamily>, CollectorError> {
        let m = Meminfo::from_file(self.paths.proc("meminfo")).map_err(proc_error)?;
        let mut out = vec![
            MetricFamily::gauge(
                "node_memory_MemTotal_bytes",
                "Memory information field MemTotal_bytes.",
                m.mem_total as f64,
            ),
            MetricFamily::gauge(
                "node_memory_MemFree_bytes",
                "Memory information field MemFree_bytes.",
                m.mem_free as f64,
            ),
            MetricFamily::gauge(
                "node_memory_Buffers_bytes",
                "Memory information field Buffers_bytes.",
                m.buffers as f64,
            ),
            MetricFamily::gauge(
                "node_memory_Cached_bytes",
                "Memory information field Cached_bytes.",
                m.cached as f64,
            ),
            MetricFamily::gauge(
                "node_memory_SwapTotal_bytes",
                "Memory information field SwapTotal_bytes.",
                m.swap_total as f64,
            ),
            MetricFamily::gauge(
                "node_memory_SwapFree_bytes",
                "Memory information field SwapFree_bytes.",
                m.swap_free as f64,
            ),
        ];
        if let Some(available) = m.mem_available {
            out.push(MetricFamily::gauge(
                "node_memory_MemAvailable_bytes",
                "Memory information field MemAvailable_bytes.",
                available as f64,
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod fixture_tests {
    use crate::{fixture, Collector};

    #[test]
    fn reads_the_fixture_meminfo_as_the_golden_file() {
        let families = super::MeminfoCollector::new(fixture::paths())
            .collect()
            .unwrap();
        fixture::assert_golden("meminfo", &families);
    }
}
