//! Helpers for black-box tests: real agent processes on loopback.
#![allow(dead_code)]

// A path of its own: this file is also a test crate's root.
#[path = "common/deps.rs"]
mod deps;
#[allow(unused_imports)]
pub use deps::*;
#[path = "common/spawn.rs"]
mod spawn;
#[allow(unused_imports)]
pub use spawn::*;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_astrolabe");

/// A free port on loopback for both UDP and TCP, released before use: the
/// test's agent process binds it right after.
///
/// Ports come from below the kernel's ephemeral range, so neither the
/// kernel (for `bind(0)` or an outgoing connection) nor another test asking
/// for port 0 can take one between this check and the agent's bind. Test
/// processes run in parallel (nextest runs each test in its own process),
/// so each port handed out is reserved by a lock on a file named after it,
/// held until this test process exits.
pub fn free_port() -> u16 {
    free_ports(1)
}

/// `n` consecutive free ports, each reserved as `free_port` reserves one
/// (for `astrolabe demo`, whose agent i takes the first port + i); the first.
pub fn free_ports(n: u16) -> u16 {
    const LOW: u16 = 20_000;
    let high = ephemeral_low().clamp(LOW + 1_000, 32_768);
    let span = u32::from(high - LOW - n);
    let start = std::process::id().wrapping_mul(7_919) ^ nanos();
    for step in 0..span {
        let first = LOW + ((start.wrapping_add(step)) % span) as u16;
        if (first..first + n).all(reserve) {
            return first;
        }
    }
    panic!("no {n} free ports between {LOW} and {high}");
}

/// Takes `port` for this test process if no other holds it and it is free
/// for both TCP and UDP.
fn reserve(port: u16) -> bool {
    static HELD: std::sync::Mutex<Vec<std::fs::File>> = std::sync::Mutex::new(Vec::new());
    let dir = std::env::temp_dir().join("astrolabe-test-ports");
    std::fs::create_dir_all(&dir).expect("port reservation directory");
    let Ok(file) = std::fs::File::create(dir.join(port.to_string())) else {
        return false;
    };
    // flock rather than `File::try_lock`, which is newer than our MSRV.
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return false;
    }
    let tcp = TcpListener::bind(("127.0.0.1", port));
    let udp = UdpSocket::bind(("127.0.0.1", port));
    // Held whether or not the port is free: a busy one is not retried.
    HELD.lock().unwrap().push(file);
    tcp.is_ok() && udp.is_ok()
}

/// The first port the kernel hands out on its own.
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

fn nanos() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
}

/// A plain HTTP/1.1 GET on loopback; the body, if the status is 200.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    http_get_with(port, path, &[]).and_then(|(status, body)| (status == 200).then_some(body))
}

pub fn http_get_with(port: u16, path: &str, headers: &[&str]) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let status: u16 = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    let chunked = text
        .split("\r\n\r\n")
        .next()
        .is_some_and(|h| h.to_lowercase().contains("transfer-encoding: chunked"));
    Some((status, if chunked { dechunk(&body) } else { body }))
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = &after[n..];
        rest = rest.strip_prefix("\r\n").unwrap_or(rest);
    }
    out
}

/// The value of `metric{zone_path="zone"...}` in an exposition.
pub fn zone_value(metrics: &str, metric: &str, zone: &str) -> Option<f64> {
    let prefix = format!("{metric}{{zone_path=\"{zone}\"");
    metrics
        .lines()
        .find(|l| l.starts_with(&prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Polls until `check` holds or the deadline passes; returns whether it held.
pub fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    check()
}

/// Runs `run` again while what it printed says the agent is still
/// catching up after its start (it refuses requests with 503 for a few
/// rounds, also when it is alone), for up to 10 s; only then.
pub fn after_catch_up<T>(mut run: impl FnMut() -> T, stderr: impl Fn(&T) -> String) -> T {
    let mut out = run();
    if stderr(&out).contains("catching up") {
        eventually(Duration::from_secs(10), || {
            out = run();
            !stderr(&out).contains("catching up")
        });
    }
    out
}

/// The sum of `metric`'s samples whose label `label` is `value`, in an
/// exposition (every other label summed over).
pub fn labelled_sum(metrics: &str, metric: &str, label: &str, value: &str) -> f64 {
    let prefix = format!("{metric}{{");
    let pair = format!("{label}=\"{value}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with(&prefix) && l.contains(&pair))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The value of the series written exactly as `series` (name and labels)
/// in an exposition.
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// `astrolabe_signature_refusals_total{kind,reason}` as `agent` serves
/// it; -1 if it does not.
pub fn signature_refusals(agent: &Agent, kind: &str, reason: &str) -> f64 {
    let series =
        format!(r#"astrolabe_signature_refusals_total{{kind="{kind}",reason="{reason}"}}"#);
    agent
        .metrics()
        .and_then(|m| sample(&m, &series))
        .unwrap_or(-1.0)
}

/// Milliseconds since the Unix epoch, by this machine's clock.
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// An on-demand query to the agent on `web`: its status and JSON answer
/// (null if not JSON).
pub fn query(web: u16, zone: &str, sql: &str, timeout_ms: u64) -> (u16, serde_json::Value) {
    http_post_json_value(
        web,
        "/api/v1/query",
        &serde_json::json!({"zone": zone, "sql": sql, "timeout_ms": timeout_ms}),
    )
}

/// `astrolabe_limit_refusals_total{limit="..."}` of an exposition.
pub fn limit_refusals(metrics: &str, limit: &str) -> f64 {
    labelled_sum(metrics, "astrolabe_limit_refusals_total", "limit", limit)
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("astrolabe-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A real Prometheus server (Debian package `prometheus`) on a free
/// loopback port, killed and its directory removed on drop.
pub struct Prometheus {
    child: Child,
    pub port: u16,
    dir: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus with `config`; its data goes under `dir`.
    pub fn start(config: &Path, dir: &Path) -> Prometheus {
        std::fs::create_dir_all(dir).unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian package) must be installed; .ci/run installs it");
        Prometheus {
            child,
            port,
            dir: dir.to_path_buf(),
        }
    }

    /// The JSON answer of an instant query, if Prometheus answered.
    pub fn query(&self, promql: &str) -> Option<serde_json::Value> {
        let path = format!("/api/v1/query?query={}", percent_encode(promql));
        let (_, body) = http_get_with(self.port, &path, &[])?;
        serde_json::from_str(&body).ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(self.dir.join("data"));
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `astrolabe_gossip_dropped_datagrams_total{reason="..."}` of an exposition.
pub fn dropped(metrics: &str, reason: &str) -> f64 {
    labelled_sum(
        metrics,
        "astrolabe_gossip_dropped_datagrams_total",
        "reason",
        reason,
    )
}

/// POSTs a JSON body over HTTP/1.0; the status (0 if none) and the body.
pub fn http_post_json(port: u16, path: &str, body: &serde_json::Value) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let text = body.to_string();
    let req = format!(
        "POST {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}",
        text.len()
    );
    if s.write_all(req.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let raw = String::from_utf8_lossy(&raw).to_string();
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// `http_post_json` with the body parsed (JSON null if it is not JSON).
pub fn http_post_json_value(
    port: u16,
    path: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let (status, text) = http_post_json(port, path, body);
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

/// Runs the binary with `args` and asserts that it succeeded (its stderr
/// is the failure message); its stdout.
pub fn run_ok<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Vec<u8> {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `astrolabe operator-key generate --out FILE`; the public key it prints.
pub fn generate_operator_key(path: &Path) -> String {
    let out = run_ok(&["operator-key", "generate", "--out", path.to_str().unwrap()]);
    String::from_utf8_lossy(&out).trim().to_string()
}

/// Waits until every agent's root row counts `members`.
pub fn roots_count(agents: &[Agent], members: f64, timeout: Duration) -> bool {
    eventually(timeout, || {
        agents.iter().all(|a| {
            a.get("/metrics")
                .and_then(|m| zone_value(&m, "astrolabe_zone_members", "/"))
                == Some(members)
        })
    })
}

/// What a run of the binary said: whether it succeeded, its stdout and
/// its stderr.
pub struct Ran {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the binary with `args` and the variables `env`.
pub fn run_cli<S: AsRef<std::ffi::OsStr>>(args: &[S], env: &[(&str, &str)]) -> Ran {
    let out = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    Ran {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
