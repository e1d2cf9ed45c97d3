//! The namespace test bed (bench/netns.py) in its small form: 32 real agent
//! processes, each in its own network namespace, joined by links with the
//! simulator's one-way delays (1-50 ms, no loss) through the bed's link
//! emulator, 200 ms rounds. Every agent's root must come to count all 32
//! and to equal the truth over the leaves (hosts, mem_sum, load min / max /
//! avg) after each of three changes, and every namespace the bed made must
//! be gone afterwards. Timings are the benchmark's (BENCHMARKS.md), not
//! asserted here.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const TEST: &str = "netns_bed_converges_and_cleans_up";

fn netns_names() -> Vec<String> {
    Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.split_whitespace().next().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Why the bed cannot run here, if it cannot: it needs root, `ip` with
/// permission to make a namespace, /dev/net/tun and python3.
fn missing() -> Option<String> {
    // SAFETY: a plain syscall without arguments.
    if unsafe { libc::geteuid() } != 0 {
        return Some("root (network namespaces)".into());
    }
    if !command_works("ip", &["-V"]) {
        return Some("ip (iproute2)".into());
    }
    let probe = format!("asbprobe{}", std::process::id());
    let made = command_works("ip", &["netns", "add", &probe]);
    let _ = command_works("ip", &["netns", "del", &probe]);
    if !made {
        return Some("permission to make a network namespace (ip netns add)".into());
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun (the bed's link emulator)".into());
    }
    if !command_works("python3", &["-c", "import ctypes"]) {
        return Some("python3".into());
    }
    None
}

#[test]
fn netns_bed_converges_and_cleans_up() {
    let why = missing();
    if !require(TEST, why.as_deref().unwrap_or(""), why.is_none()) {
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../bench/netns.py");
    let out = std::env::temp_dir().join(format!("astrolabe-netns-{}.json", std::process::id()));
    let mut child = Command::new("python3")
        .arg(script)
        .args(["--bin", BIN, "--agents", "32", "--branching", "16"])
        .args(["--interval", "200ms", "--seeds", "1", "--changes", "3"])
        .args(["--max-rounds", "150", "--no-sim", "--json"])
        .args(["--timeout", "75", "--prefix", "asbt"])
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start python3 bench/netns.py");
    let prefix = format!("asbt{}-", child.id());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > Duration::from_secs(85) {
            // SIGTERM: the bed removes its namespaces on the way out.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            std::thread::sleep(Duration::from_secs(5));
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let left: Vec<String> = netns_names()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    for ns in &left {
        let _ = command_works("ip", &["netns", "del", ns]);
    }
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    assert!(left.is_empty(), "the bed left namespaces behind: {left:?}");
    let status = status.expect("bench/netns.py did not finish within 85 s");
    let report: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("bench/netns.py printed no JSON ({e}); exit {status}"));
    assert!(
        status.success(),
        "bench/netns.py failed: {}",
        report["failures"]
    );
    let bed = &report["runs"][0]["bed"];
    assert!(bed.get("error").is_none(), "bed: {}", bed["error"]);
    assert_eq!(bed["root_correct"], true, "{}", bed["root_mismatch"]);
    // The last checkpoint's roots, as every agent served them.
    assert_eq!(bed["roots"]["members"], serde_json::json!([32]), "{bed}");
    assert_eq!(
        bed["roots"]["mem_sum"],
        serde_json::json!([bed["truth"]["mem_sum"]]),
        "{bed}"
    );
    assert_eq!(bed["namespaces_left"], serde_json::json!([]));
    assert!(bed["rounds_to_membership"].as_f64().is_some());
    assert_eq!(
        bed["rounds_to_value"]["all"].as_array().map(Vec::len),
        Some(3)
    );
}
