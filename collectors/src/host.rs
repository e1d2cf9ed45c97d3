//! Where the host collectors read the host: node_exporter's `--path.procfs`,
//! `--path.sysfs` and `--path.rootfs`, so that an agent in a container can
//! read the host's `/proc` mounted at, say, `/host/proc`, and so that tests
//! can point the collectors at a fixture tree.

use std::path::{Path, PathBuf};

/// The roots of the host's pseudo filesystems and of its root filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPaths {
    /// Where the host's procfs is mounted (default `/proc`).
    pub procfs: PathBuf,
    /// Where the host's sysfs is mounted (default `/sys`); no collector
    /// reads it yet, the flag exists for the ones node_exporter has there.
    pub sysfs: PathBuf,
    /// Where the host's root filesystem is mounted (default `/`): the
    /// filesystem collector looks up mount point `M` at `rootfs/M`.
    pub rootfs: PathBuf,
}

impl Default for HostPaths {
    fn default() -> Self {
        HostPaths {
            procfs: PathBuf::from("/proc"),
            sysfs: PathBuf::from("/sys"),
            rootfs: PathBuf::from("/"),
        }
    }
}

impl HostPaths {
    /// A file under the procfs root, e.g. `proc("net/dev")`.
    pub fn proc(&self, relative: impl AsRef<Path>) -> PathBuf {
        self.procfs.join(relative)
    }

    /// Where the host's mount point `mount_point` is seen from here: the
    /// rootfs joined with it, as node_exporter's `rootfsFilePath` does
    /// (unchanged with the default rootfs `/`).
    pub fn rooted(&self, mount_point: &str) -> PathBuf {
        self.rootfs.join(mount_point.trim_start_matches('/'))
    }
}

/// What the host collectors read: the paths, and the two constants of the
/// running kernel that turn /proc's units into seconds and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub paths: HostPaths,
    /// USER_HZ: the unit of the tick counts in /proc/stat and /proc/<pid>/stat.
    pub ticks_per_second: u64,
    /// The unit of `rss` in /proc/<pid>/stat.
    pub page_size: u64,
}

impl Host {
    /// The host at `paths`, with this kernel's tick rate and page size.
    pub fn new(paths: HostPaths) -> Host {
        Host {
            paths,
            ticks_per_second: procfs::ticks_per_second(),
            page_size: procfs::page_size(),
        }
    }
}

impl Default for Host {
    fn default() -> Self {
        Host::new(HostPaths::default())
    }
}

/// The one error every reader of a /proc file maps to.
pub(crate) fn proc_error(e: procfs::ProcError) -> crate::CollectorError {
    crate::CollectorError::Proc(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Collector;

    #[test]
    fn mount_points_are_looked_up_under_the_rootfs() {
        let host = HostPaths {
            rootfs: PathBuf::from("/host"),
            ..HostPaths::default()
        };
        assert_eq!(host.rooted("/"), Path::new("/host"));
        assert_eq!(host.rooted("/srv/data"), Path::new("/host/srv/data"));
        assert_eq!(HostPaths::default().rooted("/boot"), Path::new("/boot"));
    }

    #[test]
    fn a_missing_procfs_fails_the_collector_naming_the_file() {
        let paths = HostPaths {
            procfs: PathBuf::from("/nonexistent/proc"),
            ..HostPaths::default()
        };
        let err = crate::LoadavgCollector::new(paths).collect().unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/proc/loadavg"),
            "{err}"
        );
    }
}
