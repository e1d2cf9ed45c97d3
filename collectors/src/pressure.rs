use procfs::{CpuPressure, FromRead, IoPressure, MemoryPressure};

use crate::{Collector, CollectorError, HostPaths, Kind, MetricFamily};

/// Pressure stall information (/proc/pressure, Linux 4.20+), named like
/// node_exporter's. A kernel without PSI yields no samples, not an error.
pub struct PressureCollector {
    paths: HostPaths,
}

impl PressureCollector {
    pub fn new(paths: HostPaths) -> Self {
        PressureCollector { paths }
    }
}

impl Collector for PressureCollector {
    fn name(&self) -> &'static str {
        "pressure"
    }

    /// Kernel counters, read without waiting on any device.
    fn may_block(&self) -> bool {
        false
    }

    fn collect(&self) -> Result<Vec<MetricFamily>, CollectorError> {
        let dir = self.paths.proc("pressure");
        if !dir.exists() {
            return Ok(Vec::new());
        }
        let secs = |us: u64| us as f64 / 1e6;
        let mut out = Vec::new();
        let mut push = |name: &str, help: &str, v: f64| {
            let mut f = MetricFamily::new(name, help, Kind::Counter);
            f.push(&[], v);
            out.push(f);
        };
        if let Ok(cpu) = CpuPressure::from_file(dir.join("cpu")) {
            push(
                "node_pressure_cpu_waiting_seconds_total",
                "Total time in seconds that processes have waited for CPU time",
                secs(cpu.some.total),
            );
        }
        if let Ok(mem) = MemoryPressure::from_file(dir.join("memory")) {
            push(
                "node_pressure_memory_waiting_seconds_total",
                "Total time in seconds that processes have waited for memory",
                secs(mem.some.total),
            );
            push(
                "node_pressure_memory_stalled_seconds_total",
                "Total time in seconds no process could make progress due to memory congestion",
                secs(mem.full.total),
            );
        }
        if let Ok(io) = IoPressure::from_file(dir.join("io")) {
            push(
                "node_pressure_io_waiting_seconds_total",
                "Total time in seconds that processes have waited due to IO congestion",
                secs(io.some.total),
            );
            push(
                "node_pressure_io_stalled_seconds_total",
                "Total time in seconds no process could make progress due to IO congestion",
                secs(io.full.total),
            );
        }
        Ok(out)
    }
}

#[cfg(test)]
mod fixture_tests {
    use crate::{fixture, Collector};

    #[test]
    fn reads_the_fixture_pressure_as_the_golden_file() {
        let families = super::PressureCollector::new(fixture::paths())
            .collect()
            .unwrap();
        fixture::assert_golden("pressure", &families);
    }

    #[test]
    fn a_kernel_without_psi_yields_no_samples() {
        let mut paths = fixture::paths();
        paths.procfs = fixture::root().join("sys");
        let families = super::PressureCollector::new(paths).collect().unwrap();
        assert!(families.is_empty(), "{families:?}");
    }
}
