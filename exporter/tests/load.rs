//! Availability under load and abuse, from outside, against real agent
//! processes on loopback: hundreds of slow uploads and slowloris
//! connections held open against one agent while a query burst runs
//! through it. Every scrape and health check answers 200 within its usual
//! time, every admitted answer is complete, every refused request is a 503
//! with its reason; then an agent with a tiny `--limits.pending-queries`
//! refuses what it will not take at once, with the reason, and answers
//! what it takes completely.
//!
//! A correctness test, not a timing benchmark (bench/capacity.py is): the
//! time bound on scrapes is generous.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const SQL: &str = "SELECT count(*) AS n FROM host";
/// A scrape, however loaded the agent, answers well within this.
const SCRAPE_BOUND: Duration = Duration::from_secs(2);
const SLOW_UPLOADS: usize = 300;
const SLOWLORIS: usize = 200;

fn root_members(agent: &Agent) -> Option<f64> {
    agent
        .get("/metrics")
        .and_then(|m| zone_value(&m, "astrolabe_zone_members", "/"))
}

/// One hostile connection: a slow upload (whole headers, then a body a
/// byte at a time) or a slowloris (headers a line at a time, never ended).
struct Slow {
    stream: Option<TcpStream>,
    upload: bool,
    sent: usize,
}

impl Slow {
    fn open(port: u16, upload: bool) -> Slow {
        let stream = TcpStream::connect(("127.0.0.1", port)).ok().and_then(|mut s| {
            let head: &[u8] = if upload {
                b"POST /api/v1/query HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"
            } else {
                b"GET /metrics HTTP/1.1\r\nHost: x\r\n"
            };
            s.set_nonblocking(true).ok()?;
            s.write_all(head).ok()?;
            Some(s)
        });
        Slow {
            stream,
            upload,
            sent: 0,
        }
    }

    /// Sends a little more; false once the agent has cut the connection.
    fn trickle(&mut self) -> bool {
        let Some(s) = &mut self.stream else {
            return false;
        };
        let more: &[u8] = if self.upload { b" " } else { b"X-a: b\r\n" };
        self.sent += 1;
        match s.write(more) {
            Ok(_) => true,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
            Err(_) => false,
        }
    }
}

#[derive(Default)]
struct Tally {
    complete: AtomicUsize,
    refused: Mutex<Vec<String>>,
    wrong: Mutex<Vec<String>>,
}

/// Sends `per_client` whole-tree queries from each of `clients` threads,
/// spread over `ports`; every answer must be complete (`hosts` of `hosts`)
/// or a 503 whose JSON body names one of `reasons`. A tally per port.
fn burst(
    ports: &[u16],
    clients: usize,
    per_client: usize,
    hosts: u64,
    reasons: &[&str],
) -> Vec<Arc<Tally>> {
    let tallies: Vec<Arc<Tally>> = ports.iter().map(|_| Arc::default()).collect();
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            let port = ports[i % ports.len()];
            let tally = tallies[i % ports.len()].clone();
            let reasons: Vec<String> = reasons.iter().map(|r| r.to_string()).collect();
            std::thread::spawn(move || {
                for _ in 0..per_client {
                    let (status, body) = http_post_json(
                        port,
                        "/api/v1/query",
                        &json!({"zone": "/", "sql": SQL, "timeout_ms": 5000}),
                    );
                    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                    let c = &v["coverage"];
                    let rows_n = v["rows"][0][0].as_u64();
                    match status {
                        200 if c["answered"].as_u64() == Some(hosts)
                            && c["expected"].as_u64() == Some(hosts)
                            && rows_n == Some(hosts) =>
                        {
                            tally.complete.fetch_add(1, Ordering::Relaxed);
                        }
                        503 if v["reason"]
                            .as_str()
                            .is_some_and(|r| reasons.iter().any(|x| x == r))
                            && v["error"].as_str().is_some_and(|e| !e.is_empty()) =>
                        {
                            tally
                                .refused
                                .lock()
                                .unwrap()
                                .push(v["reason"].as_str().unwrap_or("").to_string());
                        }
                        _ => tally.wrong.lock().unwrap().push(format!("{status} {body}")),
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    tallies
}

#[test]
fn slow_clients_and_a_query_burst_cannot_take_scrapes_or_trim_answers() {
    let agents = Cluster::builder("load")
        .zones([
            "/t/z0/h0", "/t/z0/h1", "/t/z1/h2", "/t/z1/h3", "/t/z2/h4", "/t/z2/h5",
        ])
        .arg("--no-collector.host")
        // Short, so that the test sees slow clients cut.
        .each(|i, a| {
            if i == 0 {
                a.args(["--web.read-timeout", "2s"])
            } else {
                a
            }
        })
        .spawn();
    // An agent that takes one query at a time.
    let mut small = Agent::builder("/t/z2/small")
        .seed(agents[0].gossip)
        .args(["--no-collector.host", "--limits.pending-queries", "1"])
        .spawn();
    let converged = |agents: &[&Agent], hosts: usize| {
        eventually(Duration::from_secs(40), || {
            agents.iter().all(|a| root_members(a) == Some(hosts as f64))
        })
    };
    let all: Vec<&Agent> = agents.iter().chain([&small]).collect();
    assert!(converged(&all, 7), "the cluster did not converge");

    // The small agent refuses what it will not take, at once and with the
    // reason; what it takes is answered completely. (It is the only entry
    // now: as a host it refuses peers' asks too, when full.)
    let t = Instant::now();
    let tally = burst(&[small.web], 12, 5, 7, &["pending_queries"]).remove(0);
    let wrong = tally.wrong.lock().unwrap().clone();
    let refused = tally.refused.lock().unwrap().len();
    let complete = tally.complete.load(Ordering::Relaxed);
    eprintln!(
        "small agent: {complete} complete, {refused} refused, {} wrong in {:?}",
        wrong.len(),
        t.elapsed()
    );
    assert!(wrong.is_empty(), "{wrong:?}");
    assert!(complete > 0, "the small agent answered nothing");
    assert!(
        refused > 0,
        "12 concurrent clients never found the small agent full"
    );
    let m = small.get("/metrics").expect("metrics");
    assert!(
        limit_refusals(&m, "pending_queries") >= refused as f64,
        "{refused} refusals, counted {}",
        limit_refusals(&m, "pending_queries")
    );
    // It leaves (cleanly: peers drop it at once).
    small.signal("-TERM");
    let six: Vec<&Agent> = agents.iter().collect();
    assert!(converged(&six, 6), "the small agent was not dropped");
    let hosts = 6;
    let target = agents[0].web;

    // Hostile connections, kept open (re-opened when cut) by one thread.
    let stop = Arc::new(AtomicBool::new(false));
    let cut = Arc::new(AtomicUsize::new(0));
    let attacker = {
        let (stop, cut) = (stop.clone(), cut.clone());
        std::thread::spawn(move || {
            let mut slow: Vec<Slow> = (0..SLOW_UPLOADS + SLOWLORIS)
                .map(|i| Slow::open(target, i < SLOW_UPLOADS))
                .collect();
            while !stop.load(Ordering::Relaxed) {
                for s in slow.iter_mut() {
                    if !s.trickle() {
                        cut.fetch_add(1, Ordering::Relaxed);
                        *s = Slow::open(target, s.upload);
                    }
                }
                std::thread::sleep(Duration::from_millis(300));
            }
            slow.iter().map(|s| s.sent).sum::<usize>()
        })
    };
    std::thread::sleep(Duration::from_secs(1));

    // Scrapes and health checks every 100 ms while it all runs.
    let scrapes = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut seen: Vec<(String, u16, Duration)> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                for path in ["/metrics", "/-/healthy", "/-/ready"] {
                    let t = Instant::now();
                    let status = http_get_with(target, path, &[]).map_or(0, |(s, _)| s);
                    seen.push((path.to_string(), status, t.elapsed()));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            seen
        })
    };

    // The burst: 20 clients, 15 whole-tree queries each, half through the
    // attacked agent (whose API slots the slow uploads hold, so many are
    // refused there), half through another.
    let ports = [target, agents[3].web];
    let tallies = burst(&ports, 20, 15, hosts, &["http_requests", "pending_queries"]);
    // Long enough for the read timeout to cut slow clients a few times.
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    let trickled = attacker.join().unwrap();
    let seen = scrapes.join().unwrap();

    for (port, tally) in ports.iter().zip(&tallies) {
        let wrong = tally.wrong.lock().unwrap().clone();
        let refused = tally.refused.lock().unwrap().clone();
        let complete = tally.complete.load(Ordering::Relaxed);
        let mut reasons = refused.clone();
        reasons.sort();
        reasons.dedup();
        eprintln!(
            "burst through :{port}: {complete} complete, {} refused {reasons:?}, {} wrong",
            refused.len(),
            wrong.len(),
        );
        assert!(
            wrong.is_empty(),
            "answers neither complete nor refused with a reason: {wrong:?}"
        );
    }
    let elsewhere = &tallies[1];
    assert_eq!(
        elsewhere.complete.load(Ordering::Relaxed),
        150,
        "queries through an agent not under attack were refused"
    );
    let slowest = seen.iter().map(|(_, _, d)| *d).max().unwrap_or_default();
    eprintln!(
        "{} scrapes and health checks, slowest {slowest:?}; {} hostile connections cut, {trickled} trickles",
        seen.len(),
        cut.load(Ordering::Relaxed),
    );
    assert!(seen.len() >= 10, "too few scrapes: {}", seen.len());
    for (path, status, took) in &seen {
        assert_eq!(*status, 200, "{path} answered {status} under attack");
        assert!(*took < SCRAPE_BOUND, "{path} took {took:?} under attack");
    }
    assert!(
        cut.load(Ordering::Relaxed) > 0,
        "no slow client was ever cut by --web.read-timeout"
    );
    let m = agents[0].get("/metrics").expect("metrics after the attack");
    assert!(
        limit_refusals(&m, "http_read_timeout") > 0.0,
        "cuts not counted"
    );
    assert_eq!(limit_refusals(&m, "http_scrapes"), 0.0);
}
