use procfs::{ExplicitSystemInfo, FromReadSI, KernelStats};

use crate::host::proc_error;
use crate::{Collector, CollectorError, Host, Kind, MetricFamily};

/// `node_cpu_seconds_total{cpu,mode}` and process counts from /proc/stat.
pub struct CpuCollector {
    host: Host,
}

impl CpuCollector {
    pub fn new(host: Host) -> Self {
        CpuCollector { host }
    }
}

impl Collector for CpuCollector {
    fn name(&self) -> &'static str {
        "cpu"
    }

    /// Kernel counters, read without waiting on any device.
    fn may_block(&self) -> bool {
        false
    }

    fn collect(&self) -> Result<Vec<MetricFamily>, CollectorError> {
        // The parser wants the system's constants for its `*_ms` helpers;
        // the ticks are converted here, with the host's own tick rate.
        let info = ExplicitSystemInfo {
            boot_time_secs: 0,
            ticks_per_second: self.host.ticks_per_second,
            page_size: self.host.page_size,
            is_little_endian: cfg!(target_endian = "little"),
        };
        let stat =
            KernelStats::from_file(self.host.paths.proc("stat"), &info).map_err(proc_error)?;
        let tps = self.host.ticks_per_second as f64;
        let mut seconds = MetricFamily::new(
            "node_cpu_seconds_total",
            "Seconds the CPUs spent in each mode.",
            Kind::Counter,
        );
        for (i, c) in stat.cpu_time.iter().enumerate() {
            let cpu = i.to_string();
            let modes = [
                ("user", c.user),
                ("nice", c.nice),
                ("system", c.system),
                ("idle", c.idle),
                ("iowait", c.iowait.unwrap_or(0)),
                ("irq", c.irq.unwrap_or(0)),
                ("softirq", c.softirq.unwrap_or(0)),
                ("steal", c.steal.unwrap_or(0)),
            ];
            for (mode, ticks) in modes {
                seconds.push(&[("cpu", &cpu), ("mode", mode)], ticks as f64 / tps);
            }
        }
        let mut out = vec![
            seconds,
            MetricFamily::gauge(
                "node_boot_time_seconds",
                "Node boot time, in unixtime.",
                stat.btime as f64,
            ),
        ];
        if let Some(r) = stat.procs_running {
            out.push(MetricFamily::gauge(
                "node_procs_running",
                "Number of processes in runnable state.",
                r as f64,
            ));
        }
        if let Some(b) = stat.procs_blocked {
            out.push(MetricFamily::gauge(
                "node_procs_blocked",
                "Number of processes blocked waiting for I/O to complete.",
                b as f64,
            ));
        }
        Ok(out)
    }
}

/// Share of non-idle CPU time between two samples of node_cpu_seconds_total.
pub fn utilization(before: &MetricFamily, after: &MetricFamily) -> Option<f64> {
    let sums = |f: &MetricFamily| {
        let mut busy = 0.0;
        let mut total = 0.0;
        for s in &f.samples {
            let mode = s
                .labels
                .iter()
                .find(|(k, _)| k == "mode")
                .map(|(_, v)| v.as_str());
            total += s.value;
            if !matches!(mode, Some("idle") | Some("iowait")) {
                busy += s.value;
            }
        }
        (busy, total)
    };
    let (b0, t0) = sums(before);
    let (b1, t1) = sums(after);
    let dt = t1 - t0;
    (dt > 0.0).then(|| ((b1 - b0) / dt).clamp(0.0, 1.0))
}

#[cfg(test)]
mod fixture_tests {
    use crate::{fixture, Collector};

    #[test]
    fn reads_the_fixture_proc_stat_as_the_golden_file() {
        let families = super::CpuCollector::new(fixture::host()).collect().unwrap();
        fixture::assert_golden("cpu", &families);
    }
}
