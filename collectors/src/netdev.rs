use procfs::net::InterfaceDeviceStatus;
use procfs::FromRead;

use crate::host::proc_error;
use crate::{Collector, CollectorError, HostPaths, Kind, MetricFamily};

/// Name, help and how to read the value from a device's counters.
type Spec = (
    &'static str,
    &'static str,
    fn(&procfs::net::DeviceStatus) -> u64,
);

/// `node_network_{receive,transmit}_*_total{device}` from /proc/net/dev.
pub struct NetdevCollector {
    paths: HostPaths,
}

impl NetdevCollector {
    pub fn new(paths: HostPaths) -> Self {
        NetdevCollector { paths }
    }
}

impl Collector for NetdevCollector {
    fn name(&self) -> &'static str {
        "netdev"
    }

    /// Kernel counters, read without waiting on any device.
    fn may_block(&self) -> bool {
        false
    }

    fn collect(&self) -> Result<Vec<MetricFamily>, CollectorError> {
        let InterfaceDeviceStatus(devs) =
            InterfaceDeviceStatus::from_file(self.paths.proc("net/dev")).map_err(proc_error)?;
        let mut names: Vec<&String> = devs.keys().collect();
        names.sort();
        let specs: [Spec; 8] = [
            (
                "node_network_receive_bytes_total",
                "Network device statistic receive_bytes.",
                |d| d.recv_bytes,
            ),
            (
                "node_network_receive_packets_total",
                "Network device statistic receive_packets.",
                |d| d.recv_packets,
            ),
            (
                "node_network_receive_errs_total",
                "Network device statistic receive_errs.",
                |d| d.recv_errs,
            ),
            (
                "node_network_receive_drop_total",
                "Network device statistic receive_drop.",
                |d| d.recv_drop,
            ),
            (
                "node_network_transmit_bytes_total",
                "Network device statistic transmit_bytes.",
                |d| d.sent_bytes,
            ),
            (
                "node_network_transmit_packets_total",
                "Network device statistic transmit_packets.",
                |d| d.sent_packets,
            ),
            (
                "node_network_transmit_errs_total",
                "Network device statistic transmit_errs.",
                |d| d.sent_errs,
            ),
            (
                "node_network_transmit_drop_total",
                "Network device statistic transmit_drop.",
                |d| d.sent_drop,
            ),
        ];
        Ok(specs
            .iter()
            .map(|(name, help, get)| {
                let mut f = MetricFamily::new(name, help, Kind::Counter);
                for n in &names {
                    f.push(&[("device", n.as_str())], get(&devs[*n]) as f64);
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
    fn reads_the_fixture_net_dev_as_the_golden_file() {
        let families = super::NetdevCollector::new(fixture::paths())
            .collect()
            .unwrap();
        fixture::assert_golden("netdev", &families);
    }
}
