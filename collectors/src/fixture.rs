//! The fixture tree under `collectors/fixtures/` (a small host: `proc/`,
//! `sys/`, `rootfs/`), the collectors pointed at it, and the golden-file
//! check of their output, in the manner of node_exporter's
//! `collector/fixtures`. Compiled for this crate's tests and, with the
//! `fixture` feature, for the tests of crates that consume collector
//! output.
//!
//! `UPDATE_GOLDEN=1 cargo test -p astrolabe-collectors` rewrites
//! `fixtures/golden/<collector>.txt` from what the collectors produce;
//! review the diff before committing it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::filesystem::Usage;
use crate::{
    Collector, CpuCollector, DiskstatsCollector, FilesystemCollector, Host, HostPaths,
    LoadavgCollector, MeminfoCollector, MetricFamily, NetdevCollector, PressureCollector,
    ProcessCollector, ProcessGroup,
};

/// USER_HZ of the fixture host. The live value comes from sysconf, which
/// would make the golden files depend on the machine the tests run on; 100
/// is what Linux reports on every common architecture.
pub const TICKS_PER_SECOND: u64 = 100;
/// Page size of the fixture host, fixed for the same reason (4 KiB pages).
pub const PAGE_SIZE: u64 = 4096;

/// `collectors/fixtures`.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// The fixture host's procfs, sysfs and rootfs.
pub fn paths() -> HostPaths {
    let root = root();
    HostPaths {
        procfs: root.join("proc"),
        sysfs: root.join("sys"),
        rootfs: root.join("rootfs"),
    }
}

/// The fixture host, with fixed tick rate and page size.
pub fn host() -> Host {
    Host {
        paths: paths(),
        ticks_per_second: TICKS_PER_SECOND,
        page_size: PAGE_SIZE,
    }
}

/// The process groups the fixture's processes are sorted into: two that
/// match (by name, by command line) and one that matches nothing.
pub fn process_groups() -> Vec<ProcessGroup> {
    [
        "nginx=^nginx",
        "agent=--config.file",
        "absent=^no-such-process$",
    ]
    .iter()
    .filter_map(|g| ProcessGroup::parse(g).ok())
    .collect()
}

/// The filesystem collector on the fixture host. statvfs of a fixture
/// directory would report the disk the checkout happens to be on, so the
/// figures of mount point `M` come from the file `rootfs/M/statvfs`
/// instead (`f_frsize`, `f_blocks`, ... one `name value` a line, as
/// statvfs(3) names them); a mount point without one is unreachable, like
/// a mount point statvfs fails on.
pub fn filesystem_collector() -> FilesystemCollector {
    FilesystemCollector::with_usage(paths(), statvfs_file)
}

fn statvfs_file(mount_point: &Path) -> Option<Usage> {
    let text = std::fs::read_to_string(mount_point.join("statvfs")).ok()?;
    let field = |name: &str| {
        text.lines()
            .filter_map(|l| l.split_once(' '))
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| v.trim().parse::<f64>().ok())
    };
    let block = field("f_frsize")?;
    Some(Usage {
        size: field("f_blocks")? * block,
        free: field("f_bfree")? * block,
        avail: field("f_bavail")? * block,
        files: field("f_files")?,
        files_free: field("f_ffree")?,
    })
}

/// Every host collector, the process collector with `process_groups`
/// among them, reading the fixture host.
pub fn collectors() -> Vec<Arc<dyn Collector>> {
    let host = host();
    let paths = host.paths.clone();
    vec![
        Arc::new(CpuCollector::new(host.clone())),
        Arc::new(MeminfoCollector::new(paths.clone())),
        Arc::new(LoadavgCollector::new(paths.clone())),
        Arc::new(NetdevCollector::new(paths.clone())),
        Arc::new(DiskstatsCollector::new(paths.clone())),
        Arc::new(filesystem_collector()),
        Arc::new(PressureCollector::new(paths)),
        Arc::new(ProcessCollector::new(process_groups(), host)),
    ]
}

/// What all of `collectors` produce, in their order; a collector that
/// fails here is a broken fixture, so it panics with the collector's name.
pub fn collect_all() -> Vec<MetricFamily> {
    collectors()
        .iter()
        .flat_map(|c| {
            c.collect()
                .unwrap_or_else(|e| panic!("the {} fixture: {e}", c.name()))
        })
        .collect()
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Families as exposition text, made independent of the order in which a
/// collector happens to list things: families sorted by name, each with
/// its HELP and TYPE, then its samples sorted. Labels keep their order
/// (it is the collector's, and part of what the golden file pins).
pub fn render(families: &[MetricFamily]) -> String {
    let mut sorted: Vec<&MetricFamily> = families.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = String::new();
    for f in sorted {
        out.push_str(&format!("# HELP {} {}\n", f.name, f.help));
        out.push_str(&format!("# TYPE {} {}\n", f.name, f.kind.as_str()));
        let mut lines: Vec<String> = f
            .samples
            .iter()
            .map(|s| {
                let labels = if s.labels.is_empty() {
                    String::new()
                } else {
                    let pairs: Vec<String> = s
                        .labels
                        .iter()
                        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                        .collect();
                    format!("{{{}}}", pairs.join(","))
                };
                format!("{}{}{labels} {}\n", f.name, s.suffix, s.value)
            })
            .collect();
        lines.sort();
        out.extend(lines);
    }
    out
}

/// Compares `families`, rendered, with `fixtures/golden/<name>.txt`, or
/// rewrites that file when `UPDATE_GOLDEN` is set (to anything but `0`).
pub fn assert_golden(name: &str, families: &[MetricFamily]) {
    let path = root().join("golden").join(format!("{name}.txt"));
    let actual = render(families);
    if std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v != "0") {
        if let Err(e) = std::fs::write(&path, &actual) {
            panic!("writing {}: {e}", path.display());
        }
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    if actual != expected {
        let differing: Vec<String> = diff_lines(&expected, &actual);
        panic!(
            "{name}: the output differs from {} (UPDATE_GOLDEN=1 rewrites it):\n{}",
            path.display(),
            differing.join("\n")
        );
    }
}

/// The lines only one side has, `-` expected and `+` actual.
fn diff_lines(expected: &str, actual: &str) -> Vec<String> {
    let old: std::collections::BTreeSet<&str> = expected.lines().collect();
    let new: std::collections::BTreeSet<&str> = actual.lines().collect();
    old.difference(&new)
        .map(|l| format!("- {l}"))
        .chain(new.difference(&old).map(|l| format!("+ {l}")))
        .collect()
}
