//! Start-up code out of the resident set. Most of an agent's resident
//! memory is code: its binary's pages and the shared libraries'
//! (BENCHMARKS.md, stop 18), and a good part of those ran once: argument
//! and configuration parsing, the SQL parser for the aggregates, the
//! dynamic linker, socket and TLS set-up. Once the agent runs, its
//! read-only file mappings are dropped from its page tables; what the
//! running agent uses faults straight back in from the page cache (a minor
//! fault, no I/O), what it does not use stops counting against it.

use std::io::BufRead;

/// One mapping of `/proc/self/smaps`: its range, and whether dropping its
/// pages is harmless (a read-only private mapping of a file with no page
/// of its own: no relocated data, nothing written).
#[derive(Debug, PartialEq)]
struct Mapping {
    start: usize,
    end: usize,
    resident_kb: u64,
    droppable: bool,
}

fn mappings(smaps: impl BufRead) -> Vec<Mapping> {
    let mut out: Vec<Mapping> = Vec::new();
    for line in smaps.lines().map_while(Result::ok) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let first = fields.first().copied().unwrap_or_default();
        if let Some((start, end)) = first.split_once('-') {
            let (Ok(start), Ok(end)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            ) else {
                continue;
            };
            // address perms offset device inode path: a path of one word
            // (not "... (deleted)", whose file is gone).
            let file = fields.len() == 6 && fields[5].starts_with('/');
            let perms = fields.get(1).map(|p| p.as_bytes());
            let read_only = matches!(perms, Some([b'r', b'-', _, b'p']));
            out.push(Mapping {
                start,
                end,
                resident_kb: 0,
                droppable: file && read_only,
            });
            continue;
        }
        let Some(last) = out.last_mut() else { continue };
        let kb = fields
            .get(1)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        match first {
            "Rss:" => last.resident_kb = kb,
            // Pages of its own (relocations written before RELRO made it
            // read-only): dropping them would bring back the file's bytes.
            "Anonymous:" if kb > 0 => last.droppable = false,
            _ => {}
        }
    }
    out
}

/// Drops the read-only pages of the executable and its libraries from the
/// resident set; returns the KiB that were resident in them. Linux only;
/// elsewhere, nothing.
#[allow(unsafe_code)] // madvise(2) on file mappings; SAFETY below
pub fn release_startup_pages() -> u64 {
    #[cfg(target_os = "linux")]
    {
        let Ok(file) = std::fs::File::open("/proc/self/smaps") else {
            return 0;
        };
        let mut released = 0;
        for m in mappings(std::io::BufReader::new(file)) {
            if !m.droppable {
                continue;
            }
            // SAFETY: the range is a whole read-only private file mapping
            // with no anonymous page: MADV_DONTNEED only
            // unmaps its pages, and any later access faults the same bytes
            // back in from the file.
            let done = unsafe {
                libc::madvise(
                    m.start as *mut libc::c_void,
                    m.end - m.start,
                    libc::MADV_DONTNEED,
                )
            };
            if done == 0 {
                released += m.resident_kb;
            }
        }
        released
    }
    #[cfg(not(target_os = "linux"))]
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0a0000000-55d0a0311000 r--p 00000000 fe:00 5521522                    /usr/bin/astrolabe
Rss:                1568 kB
Anonymous:             0 kB
55d0a0311000-55d0a0e23000 r-xp 00311000 fe:00 5521522                    /usr/bin/astrolabe
Rss:                6848 kB
Anonymous:             0 kB
55d0a0e23000-55d0a0e89000 r--p 00e23000 fe:00 5521522                    /usr/bin/astrolabe
Rss:                 408 kB
Anonymous:           400 kB
55d0a0e89000-55d0a0e90000 rw-p 00e88000 fe:00 5521522                    /usr/bin/astrolabe
Rss:                  28 kB
Anonymous:            28 kB
7f7399662000-7f73997b8000 r-xp 00026000 fe:00 326279                     /usr/lib/x86_64-linux-gnu/libc.so.6
Rss:                 952 kB
Anonymous:             0 kB
7f7399700000-7f7399800000 r-xp 00026000 fe:00 326280                     /usr/lib/old.so (deleted)
Rss:                  52 kB
Anonymous:             0 kB
20000000000-20000380000 rw-p 00000000 00:00 0 
Rss:                 468 kB
Anonymous:           468 kB
";

    #[test]
    fn only_clean_read_only_file_mappings_are_dropped() {
        let found = mappings(SMAPS.as_bytes());
        let droppable: Vec<(usize, u64)> = found
            .iter()
            .filter(|m| m.droppable)
            .map(|m| (m.start, m.resident_kb))
            .collect();
        assert_eq!(
            droppable,
            vec![
                (0x55d0a0000000, 1568),
                (0x55d0a0311000, 6848),
                (0x7f7399662000, 952)
            ]
        );
        assert_eq!(found.len(), 7);
    }

    #[test]
    fn releasing_keeps_the_process_running() {
        // The test binary's own pages go and come back as they are used.
        let _ = release_startup_pages();
        let v: Vec<u64> = (0..1000).map(|i| i * i).collect();
        assert_eq!(v.iter().sum::<u64>(), 332_833_500);
    }
}
