//! Process groups: processes whose name (comm) or command line matches a
//! regular expression, summed per group.

use regex::Regex;

use crate::host::proc_error;
use crate::{Collector, CollectorError, Host, Kind, MetricFamily};

#[derive(Debug)]
pub struct ProcessGroup {
    pub name: String,
    pub pattern: Regex,
}

impl ProcessGroup {
    /// `group=regex`, e.g. `nginx=^nginx`; the regex is matched against the
    /// process name and then the command line.
    pub fn parse(spec: &str) -> Result<ProcessGroup, String> {
        let (name, pattern) = spec
            .split_once('=')
            .ok_or_else(|| format!("process group {spec:?}: expected name=regex"))?;
        if name.is_empty() {
            return Err(format!("process group {spec:?}: the name is empty"));
        }
        let pattern = Regex::new(pattern).map_err(|e| format!("process group {name:?}: {e}"))?;
        Ok(ProcessGroup {
            name: name.to_string(),
            pattern,
        })
    }
}

pub struct ProcessCollector {
    groups: Vec<ProcessGroup>,
    host: Host,
}

impl ProcessCollector {
    pub fn new(groups: Vec<ProcessGroup>, host: Host) -> Self {
        ProcessCollector { groups, host }
    }
}

/// Open descriptors of the process at `dir`, counted from its `fd`
/// directory as node_exporter does. Not procfs's `fd_count`: that takes
/// the directory's size when it is not zero, which procfs makes the count
/// since Linux 6.2 but any other filesystem (a fixture's) makes 4096; and
/// before 6.2 it counts `.` and `..` too.
fn open_fds(dir: &std::path::Path) -> f64 {
    std::fs::read_dir(dir.join("fd")).map_or(0, |d| d.count()) as f64
}

/// Name, help, type and which total a group family reports.
type Spec = (&'static str, &'static str, Kind, fn(&Totals) -> f64);

#[derive(Default, Clone, Copy)]
struct Totals {
    count: f64,
    cpu_seconds: f64,
    rss_bytes: f64,
    open_fds: f64,
}

impl Collector for ProcessCollector {
    fn name(&self) -> &'static str {
        "processes"
    }

    fn collect(&self) -> Result<Vec<MetricFamily>, CollectorError> {
        let tps = self.host.ticks_per_second as f64;
        let page = self.host.page_size as f64;
        let mut totals = vec![Totals::default(); self.groups.len()];
        let mut all = 0.0;
        let root = &self.host.paths.procfs;
        let procs = procfs::process::all_processes_with_root(root).map_err(proc_error)?;
        for p in procs.flatten() {
            // Processes exit while we read: skip what has gone.
            let Ok(stat) = p.stat() else { continue };
            all += 1.0;
            let cmdline = p.cmdline().map(|c| c.join(" ")).unwrap_or_default();
            for (g, t) in self.groups.iter().zip(totals.iter_mut()) {
                if g.pattern.is_match(&stat.comm)
                    || (!cmdline.is_empty() && g.pattern.is_match(&cmdline))
                {
                    t.count += 1.0;
                    t.cpu_seconds += (stat.utime + stat.stime) as f64 / tps;
                    t.rss_bytes += stat.rss as f64 * page;
                    t.open_fds += open_fds(&root.join(p.pid.to_string()));
                }
            }
        }
        let mut out = vec![MetricFamily::gauge(
            "astrolabe_processes",
            "Processes on the host.",
            all,
        )];
        let specs: [Spec; 4] = [
            (
                "astrolabe_process_group_count",
                "Processes in the group.",
                Kind::Gauge,
                |t| t.count,
            ),
            (
                "astrolabe_process_group_cpu_seconds_total",
                "CPU time of the group's live processes.",
                Kind::Counter,
                |t| t.cpu_seconds,
            ),
            (
                "astrolabe_process_group_resident_memory_bytes",
                "Resident memory of the group.",
                Kind::Gauge,
                |t| t.rss_bytes,
            ),
            (
                "astrolabe_process_group_open_fds",
                "Open file descriptors of the group.",
                Kind::Gauge,
                |t| t.open_fds,
            ),
        ];
        for (name, help, kind, get) in specs {
            let mut f = MetricFamily::new(name, help, kind);
            for (g, t) in self.groups.iter().zip(&totals) {
                f.push(&[("group", &g.name)], get(t));
            }
            out.push(f);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_this_test_process_by_name() {
        let exe = std::env::current_exe().unwrap();
        let comm: String = exe
            .file_name()
            .unwrap()
            .to_string_lossy()
            .chars()
            .take(15)
            .collect();
        let group = ProcessGroup::parse(&format!("me=^{}", regex::escape(&comm))).unwrap();
        let c = ProcessCollector::new(vec![group], Host::default());
        let fams = c.collect().unwrap();
        let count = fams
            .iter()
            .find(|f| f.name == "astrolabe_process_group_count")
            .unwrap();
        assert!(count.samples[0].value >= 1.0);
        let rss = fams
            .iter()
            .find(|f| f.name == "astrolabe_process_group_resident_memory_bytes")
            .unwrap();
        assert!(rss.samples[0].value > 0.0);
        assert!(
            fams.iter()
                .find(|f| f.name == "astrolabe_processes")
                .unwrap()
                .unlabeled()
                .unwrap()
                >= 1.0
        );
        assert!(ProcessGroup::parse("x=(").unwrap_err().contains("\"x\""));
        assert!(ProcessGroup::parse("nopattern").is_err());
    }
}

#[cfg(test)]
mod fixture_tests {
    use crate::{fixture, Collector};

    #[test]
    fn sums_the_fixture_processes_by_group_as_the_golden_file() {
        let families = super::ProcessCollector::new(fixture::process_groups(), fixture::host())
            .collect()
            .unwrap();
        fixture::assert_golden("processes", &families);
    }
}
