use procfs::{DiskStats, FromRead};

use crate::host::proc_error;
use crate::{Collector, CollectorError, HostPaths, Kind, MetricFamily};

/// Name, help, type and how to read the value from a disk's counters.
type Spec = (
    &'static str,
    &'static str,
    Kind,
    fn(&procfs::DiskStat) -> f64,
);

/// `node_disk_*{device}` from /proc/diskstats (sectors are 512 bytes).
pub struct DiskstatsCollector {
    paths: HostPaths,
}

impl DiskstatsCollector {
    pub fn new(paths: HostPaths) -> Self {
        DiskstatsCollector { paths }
    }
}

impl Collector for DiskstatsCollector {
    fn name(&self) -> &'static str {
        "diskstats"
    }

    /// Kernel counters, read without waiting on any device.
    fn may_block(&self) -> bool {
        false
    }

    fn collect(&self) -> Result<Vec<MetricFamily>, CollectorError> {
        let DiskStats(disks) =
            DiskStats::from_file(self.paths.proc("diskstats")).map_err(proc_error)?;
        // Like node_exporter's default exclude: partitions of loop and ram devices.
        let disks: Vec<_> = disks
            .into_iter()
            .filter(|d| !d.name.starts_with("loop") && !d.name.starts_with("ram"))
            .collect();
        let specs: [Spec; 7] = [
            (
                "node_disk_reads_completed_total",
                "The total number of reads completed successfully.",
                Kind::Counter,
                |d| d.reads as f64,
            ),
            (
                "node_disk_writes_completed_total",
                "The total number of writes completed successfully.",
                Kind::Counter,
                |d| d.writes as f64,
            ),
            (
                "node_disk_read_bytes_total",
                "The total number of bytes read successfully.",
                Kind::Counter,
                |d| d.sectors_read as f64 * 512.0,
            ),
            (
                "node_disk_written_bytes_total",
                "The total number of bytes written successfully.",
                Kind::Counter,
                |d| d.sectors_written as f64 * 512.0,
            ),
            (
                "node_disk_read_time_seconds_total",
                "The total number of seconds spent by all reads.",
                Kind::Counter,
                |d| d.time_reading as f64 / 1000.0,
            ),
            (
                "node_disk_write_time_seconds_total",
                "This is the total number of seconds spent by all writes.",
                Kind::Counter,
                |d| d.time_writing as f64 / 1000.0,
            ),
            (
                "node_disk_io_time_seconds_total",
                "Total seconds spent doing I/Os.",
                Kind::Counter,
                |d| d.time_in_progress as f64 / 1000.0,
            ),
        ];
        Ok(specs
            .iter()
            .map(|(name, help, kind, get)| {
                let mut f = MetricFamily::new(name, help, *kind);
                for d in &disks {
                    f.push(&[("device", d.name.as_str())], get(d));
                }
                f
            })
            .collect())
    }
}

#[cfg(test)]
mod fixture_tests {
    use crate::{fixture, Collector};

    #[test]
    fn reads_the_fixture_diskstats_as_the_golden_file() {
        let families = super::DiskstatsCollector::new(fixture::paths())
            .collect()
            .unwrap();
        fixture::assert_golden("diskstats", &families);
    }
}
