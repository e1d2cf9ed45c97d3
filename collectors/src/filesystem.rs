use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use procfs::{FromRead, MountEntry};

use crate::host::proc_error;
use crate::{Collector, CollectorError, HostPaths, Kind, MetricFamily};

/// Filesystem types node_exporter leaves out by default: pseudo and
/// virtual filesystems with no space to run out of.
const IGNORED_TYPES: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "fusectl",
    "hugetlbfs",
    "iso9660",
    "mqueue",
    "nsfs",
    "overlay",
    "proc",
    "procfs",
    "pstore",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "sysfs",
    "tracefs",
    "tmpfs",
    "ramfs",
];

/// `node_filesystem_{size,free,avail}_bytes` and `node_filesystem_files{,_free}`
/// from statvfs of every mount point. statvfs on a dead NFS server can hang;
/// that hangs this collector only, which the runner then reports failed.
///
/// The mount table is the procfs root's `mounts`; mount point `M` is
/// measured at the rootfs joined with `M`, and labelled `M`.
pub struct FilesystemCollector {
    paths: HostPaths,
    /// statvfs(3), or a stand-in: a fixture's figures cannot come from the
    /// live filesystem they happen to sit on.
    usage: fn(&Path) -> Option<Usage>,
}

impl FilesystemCollector {
    pub fn new(paths: HostPaths) -> Self {
        FilesystemCollector {
            paths,
            usage: statvfs,
        }
    }

    /// With `usage` in place of statvfs(3), for fixtures.
    #[cfg(any(test, feature = "fixture"))]
    pub(crate) fn with_usage(paths: HostPaths, usage: fn(&Path) -> Option<Usage>) -> Self {
        FilesystemCollector { paths, usage }
    }
}

/// What statvfs says of one filesystem, in bytes and file nodes.
pub(crate) struct Usage {
    pub size: f64,
    pub free: f64,
    pub avail: f64,
    pub files: f64,
    pub files_free: f64,
}

#[allow(unsafe_code)] // the statvfs(3) call; SAFETY below
fn statvfs(path: &Path) -> Option<Usage> {
    let c = CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: `c` is a valid NUL-terminated path and `buf` a properly sized
    // out-parameter that statvfs fills before we read it.
    let mut buf: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut buf) } != 0 {
        return None;
    }
    let block = buf.f_frsize as f64;
    Some(Usage {
        size: buf.f_blocks as f64 * block,
        free: buf.f_bfree as f64 * block,
        avail: buf.f_bavail as f64 * block,
        files: buf.f_files as f64,
        files_free: buf.f_ffree as f64,
    })
}

impl Collector for FilesystemCollector {
    fn name(&self) -> &'static str {
        "filesystem"
    }

    fn collect(&self) -> Result<Vec<MetricFamily>, CollectorError> {
        let mounts = Vec::<MountEntry>::from_file(self.paths.proc("mounts")).map_err(proc_error)?;
        let mut fams: Vec<MetricFamily> = [
            ("node_filesystem_size_bytes", "Filesystem size in bytes."),
            (
                "node_filesystem_free_bytes",
                "Filesystem free space in bytes.",
            ),
            (
                "node_filesystem_avail_bytes",
                "Filesystem space available to non-root users in bytes.",
            ),
            ("node_filesystem_files", "Filesystem total file nodes."),
            (
                "node_filesystem_files_free",
                "Filesystem total free file nodes.",
            ),
        ]
        .iter()
        .map(|(n, h)| MetricFamily::new(n, h, Kind::Gauge))
        .collect();
        let mut seen = std::collections::BTreeSet::new();
        for m in mounts {
            if IGNORED_TYPES.contains(&m.fs_vfstype.as_str()) || !seen.insert(m.fs_file.clone()) {
                continue;
            }
            let Some(u) = (self.usage)(&self.paths.rooted(&m.fs_file)) else {
                continue;
            };
            let labels = [
                ("device", m.fs_spec.as_str()),
                ("fstype", m.fs_vfstype.as_str()),
                ("mountpoint", m.fs_file.as_str()),
            ];
            for (f, v) in fams
                .iter_mut()
                .zip([u.size, u.free, u.avail, u.files, u.files_free])
            {
                f.push(&labels, v);
            }
        }
        Ok(fams)
    }
}

#[cfg(test)]
mod fixture_tests {
    use crate::{fixture, Collector};

    #[test]
    fn measures_the_fixture_mounts_under_the_rootfs_as_the_golden_file() {
        let families = fixture::filesystem_collector().collect().unwrap();
        fixture::assert_golden("filesystem", &families);
    }
}
