//! The one way black-box tests start agent processes: [`Agent::builder`]
//! for one, [`Cluster::builder`] for several seeded from each other.
//!
//! Every agent gets free ports, 200 ms rounds, a textfile directory of its
//! own and `ASTROLABE_LOG=warn` unless told otherwise; its stderr goes to
//! a file beside that directory ([`Agent::log`]), so that a failing wait can
//! name the agent and quote what it said. `spawn` waits, with a deadline,
//! until the agent has caught up after its start (before that it answers
//! 503 on `/-/ready` and refuses requests); `start` does not wait. Every
//! process is killed when its handle is dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, http_get, http_get_with, temp_dir, zone_value, BIN};

/// How long `spawn` waits for an agent to catch up after its start.
pub const READY_DEADLINE: Duration = Duration::from_secs(20);

/// Everything an agent process is started with, kept so that it can be
/// started again exactly so (same ports, flags and variables): a restart.
#[derive(Debug, Clone)]
pub struct Launch {
    /// `--zone`; none for an agent whose zone comes from a file or variable.
    pub zone: Option<String>,
    pub gossip: u16,
    pub web: u16,
    /// The host the gossip socket listens on (`127.0.0.1`, or `[::1]`).
    pub gossip_host: String,
    /// Gossip ports on `gossip_host` to seed from.
    pub seeds: Vec<u16>,
    /// The textfile directory (created on start).
    pub dir: PathBuf,
    /// `--gossip.interval`, if any.
    pub interval: Option<String>,
    /// Whether the zone, listen addresses, interval and textfile directory
    /// are given as flags; without, the test's args, variables or file say
    /// all (the ports are still chosen, for it to use).
    pub flags: bool,
    pub args: Vec<String>,
    /// Variables set for the process; `ASTROLABE_LOG` is `warn` unless set.
    pub env: Vec<(String, String)>,
    /// Variables removed from the process's environment.
    pub env_remove: Vec<String>,
    /// Whether `spawn` waits for the agent to catch up.
    pub wait_ready: bool,
    /// Files (name, text) written into `dir` before the agent starts.
    pub textfiles: Vec<(String, String)>,
    /// The directory made for this agent alone, removed with it.
    own_dir: Option<PathBuf>,
}

impl Launch {
    /// An agent in `zone` (none: no `--zone`), on free ports, with a
    /// textfile directory of its own under the temporary directory.
    fn new(zone: Option<&str>) -> Launch {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static AGENTS: AtomicUsize = AtomicUsize::new(0);
        let n = AGENTS.fetch_add(1, Ordering::Relaxed);
        let root = std::env::temp_dir().join(format!("astrolabe-agent{n}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let mut launch = Launch::with_dir(zone, root.join("textfiles"));
        launch.own_dir = Some(root);
        launch
    }

    fn with_dir(zone: Option<&str>, dir: PathBuf) -> Launch {
        Launch {
            zone: zone.map(str::to_string),
            gossip: free_port(),
            web: free_port(),
            gossip_host: "127.0.0.1".into(),
            seeds: Vec::new(),
            dir,
            interval: Some("200ms".into()),
            flags: true,
            args: Vec::new(),
            env: Vec::new(),
            env_remove: Vec::new(),
            wait_ready: true,
            textfiles: Vec::new(),
            own_dir: None,
        }
    }

    /// The textfile directory (instead of one of its own, removed with it).
    pub fn dir(mut self, dir: &Path) -> Launch {
        self.dir = dir.to_path_buf();
        self.own_dir = None;
        self
    }

    /// A textfile `w.prom` holding `text`, written when the agent starts.
    pub fn textfile(mut self, text: impl AsRef<str>) -> Launch {
        self.textfiles
            .push(("w.prom".into(), text.as_ref().to_string()));
        self
    }

    pub fn seed(mut self, gossip: u16) -> Launch {
        self.seeds.push(gossip);
        self
    }

    pub fn seeds(mut self, gossip: &[u16]) -> Launch {
        self.seeds.extend_from_slice(gossip);
        self
    }

    pub fn arg(mut self, arg: impl AsRef<str>) -> Launch {
        self.args.push(arg.as_ref().to_string());
        self
    }

    pub fn args<S: AsRef<str>>(mut self, args: impl IntoIterator<Item = S>) -> Launch {
        self.args
            .extend(args.into_iter().map(|s| s.as_ref().to_string()));
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<str>) -> Launch {
        self.env.push((key.to_string(), value.as_ref().to_string()));
        self
    }

    pub fn env_remove(mut self, key: &str) -> Launch {
        self.env_remove.push(key.to_string());
        self
    }

    /// `--gossip.interval` (`None`: the agent's default).
    pub fn interval(mut self, interval: Option<&str>) -> Launch {
        self.interval = interval.map(str::to_string);
        self
    }

    /// Gossip on `[::1]` instead of `127.0.0.1` (seeds too).
    pub fn ipv6(mut self) -> Launch {
        self.gossip_host = "[::1]".into();
        self
    }

    /// No zone, address, interval or textfile flags: the test's own args,
    /// variables or file say where the agent listens (on `gossip`/`web`).
    pub fn bare(mut self) -> Launch {
        self.flags = false;
        self
    }

    /// `spawn` returns at once instead of waiting for the catch-up (for an
    /// agent behind TLS or credentials, or one meant to fail).
    pub fn unready(mut self) -> Launch {
        self.wait_ready = false;
        self
    }

    /// Where the process's stderr goes: beside the textfile directory.
    pub fn log_path(&self) -> PathBuf {
        let mut name = self.dir.file_name().unwrap_or_default().to_os_string();
        name.push(".stderr");
        self.dir.with_file_name(name)
    }

    /// Starts the agent, without waiting for anything.
    pub fn start(&self) -> Agent {
        std::fs::create_dir_all(&self.dir).unwrap();
        for (name, text) in &self.textfiles {
            std::fs::write(self.dir.join(name), text).unwrap();
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("agent log file");
        let mut cmd = Command::new(BIN);
        cmd.arg("agent");
        if self.flags {
            if let Some(zone) = &self.zone {
                cmd.args(["--zone", zone]);
            }
            cmd.args([
                "--gossip.listen-address",
                &format!("{}:{}", self.gossip_host, self.gossip),
            ])
            .args(["--web.listen-address", &format!("127.0.0.1:{}", self.web)]);
            if let Some(interval) = &self.interval {
                cmd.args(["--gossip.interval", interval]);
            }
            cmd.args(["--collector.textfile.directory", self.dir.to_str().unwrap()]);
        }
        for s in &self.seeds {
            cmd.args(["--gossip.seed", &format!("{}:{s}", self.gossip_host)]);
        }
        cmd.args(&self.args).env("ASTROLABE_LOG", "warn");
        for key in &self.env_remove {
            cmd.env_remove(key);
        }
        let child = cmd
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start agent");
        Agent {
            zone: self.zone.clone().unwrap_or_default(),
            gossip: self.gossip,
            web: self.web,
            dir: self.dir.clone(),
            child: Some(child),
            launch: self.clone(),
        }
    }

    /// Starts the agent and, unless `unready`, waits for its catch-up.
    pub fn spawn(&self) -> Agent {
        let mut agent = self.start();
        if self.wait_ready {
            agent.wait_ready(READY_DEADLINE);
        }
        agent
    }
}

/// A running (or stopped) agent process; killed on drop.
pub struct Agent {
    /// Its `--zone` (empty if it was started without).
    pub zone: String,
    pub gossip: u16,
    pub web: u16,
    pub dir: PathBuf,
    pub child: Option<Child>,
    /// How it was started: `restart` starts it so again.
    pub launch: Launch,
}

impl Agent {
    /// An agent in `zone` on free ports; `spawn` it or `start` it.
    pub fn builder(zone: &str) -> Launch {
        Launch::new(Some(zone))
    }

    /// An agent started without `--zone` (from a file or variables).
    pub fn builder_without_zone() -> Launch {
        Launch::new(None)
    }

    /// `127.0.0.1:WEB`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.web)
    }

    /// `http://127.0.0.1:WEB`, for `--server`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The body of a GET of `path`, if the status is 200.
    pub fn get(&self, path: &str) -> Option<String> {
        http_get(self.web, path)
    }

    /// The status and body of a GET of `path` with `headers`.
    pub fn get_with(&self, path: &str, headers: &[&str]) -> Option<(u16, String)> {
        http_get_with(self.web, path, headers)
    }

    pub fn metrics(&self) -> Option<String> {
        self.get("/metrics")
    }

    /// `metric{zone_path="zone"}` of its /metrics.
    pub fn zone_value(&self, metric: &str, zone: &str) -> Option<f64> {
        zone_value(&self.metrics()?, metric, zone)
    }

    /// An on-demand query: its status and JSON answer (null if not JSON).
    pub fn query(&self, zone: &str, sql: &str, timeout_ms: u64) -> (u16, serde_json::Value) {
        super::query(self.web, zone, sql, timeout_ms)
    }

    /// Sends `sig` (`-TERM`, `-HUP`, ...) and leaves it running.
    pub fn send(&self, sig: &str) {
        if let Some(pid) = self.pid() {
            let status = Command::new("kill").args([sig, &pid.to_string()]).status();
            assert!(status.is_ok_and(|s| s.success()), "kill {sig} {pid}");
        }
    }

    /// Sends `sig` and waits for the process to exit.
    pub fn signal(&mut self, sig: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args([sig, &child.id().to_string()])
                .status();
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    /// SIGKILL, waited for.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops it with `sig` and starts it again as it was started, without
    /// waiting for its catch-up.
    pub fn restart(&mut self, sig: &str) {
        self.signal(sig);
        let again = self.launch.start();
        // The old handle's process is gone; its directory is the new one's.
        let mut old = std::mem::replace(self, again);
        old.launch.own_dir = None;
    }

    /// Waits up to `timeout` for the process to exit on its own; whether it
    /// succeeded, or `None` if it still runs (and is then killed).
    pub fn exit_status(&mut self, timeout: Duration) -> Option<bool> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return Some(status.success());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
        None
    }

    /// All it wrote on stderr so far (across restarts).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.launch.log_path()).unwrap_or_default()
    }

    /// The last lines of its stderr, for a failure message.
    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Waits until the agent has caught up after its start: `/-/ready`
    /// answers 200, or 503 for no other reason than a missing peer (an
    /// agent alone). Panics after `timeout`, or if the process exits,
    /// naming the agent and quoting its stderr.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let start = Instant::now();
        let mut last = None;
        loop {
            if !self.running() {
                self.fail(&format!(
                    "exited before it was ready (last answer {last:?})"
                ));
            }
            last = self.get_with("/-/ready", &[]);
            match &last {
                Some((200, _)) => return,
                Some((503, body)) if !body.contains("catching up") => return,
                _ => {}
            }
            if start.elapsed() > timeout {
                self.fail(&format!(
                    "not ready after {timeout:?} (last answer {last:?})"
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn fail(&self, what: &str) -> ! {
        let name = if self.zone.is_empty() {
            "(no --zone)"
        } else {
            &self.zone
        };
        panic!(
            "agent {name} (web {}, gossip {}) {what}; its stderr ends:\n{}",
            self.web,
            self.gossip,
            self.log_tail()
        );
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
        if let Some(root) = &self.launch.own_dir {
            let _ = std::fs::remove_dir_all(root);
        }
    }
}

/// What `Cluster::builder` makes of agent `i` before it starts.
type Each = Box<dyn Fn(usize, Launch) -> Launch>;

/// Several agents, each seeded with earlier ones.
pub struct ClusterBuilder {
    name: String,
    zones: Vec<String>,
    common: Launch,
    seeds: Box<dyn Fn(usize, usize) -> Vec<usize>>,
    each: Vec<Each>,
    textfile: Option<Box<dyn Fn(usize) -> String>>,
    wait_ready: bool,
}

impl ClusterBuilder {
    /// `n` agents in `/NAME/h0` ... (unless `zones` names them).
    pub fn agents(mut self, n: usize) -> ClusterBuilder {
        let name = self.name.clone();
        self.zones = (0..n).map(|i| format!("/{name}/h{i}")).collect();
        self
    }

    /// One agent per zone, in this order.
    pub fn zones<S: AsRef<str>>(mut self, zones: impl IntoIterator<Item = S>) -> ClusterBuilder {
        self.zones = zones.into_iter().map(|z| z.as_ref().to_string()).collect();
        self
    }

    /// An argument for every agent.
    pub fn arg(mut self, arg: impl AsRef<str>) -> ClusterBuilder {
        self.common = self.common.arg(arg);
        self
    }

    pub fn args<S: AsRef<str>>(mut self, args: impl IntoIterator<Item = S>) -> ClusterBuilder {
        self.common = self.common.args(args);
        self
    }

    /// A variable for every agent.
    pub fn env(mut self, key: &str, value: impl AsRef<str>) -> ClusterBuilder {
        self.common = self.common.env(key, value);
        self
    }

    pub fn interval(mut self, interval: &str) -> ClusterBuilder {
        self.common = self.common.interval(Some(interval));
        self
    }

    pub fn ipv6(mut self) -> ClusterBuilder {
        self.common = self.common.ipv6();
        self
    }

    /// Agent i is seeded with each of the first `k` agents before it (the
    /// default: 1, agent 0 seeds everyone).
    pub fn seeded_by_first(mut self, k: usize) -> ClusterBuilder {
        self.seeds = Box::new(move |i, _| (0..i.min(k)).collect());
        self
    }

    /// Agent i (of n) is seeded with the agents `seeds(i, n)` names (ports
    /// are chosen first, so any agent can seed any other).
    pub fn seeds(mut self, seeds: impl Fn(usize, usize) -> Vec<usize> + 'static) -> ClusterBuilder {
        self.seeds = Box::new(seeds);
        self
    }

    /// Agent i's textfile directory holds `w.prom` with `text(i)`.
    pub fn textfile(mut self, text: impl Fn(usize) -> String + 'static) -> ClusterBuilder {
        self.textfile = Some(Box::new(text));
        self
    }

    /// More of agent i's start (its own flags, variables ...).
    pub fn each(mut self, f: impl Fn(usize, Launch) -> Launch + 'static) -> ClusterBuilder {
        self.each.push(Box::new(f));
        self
    }

    /// `spawn` returns once all are started, without waiting for them.
    pub fn unready(mut self) -> ClusterBuilder {
        self.wait_ready = false;
        self
    }

    /// Starts every agent, then waits for each to catch up (unless
    /// `unready`), each with its own deadline.
    pub fn spawn(self) -> Cluster {
        let dir = temp_dir(&self.name);
        let n = self.zones.len();
        let launches: Vec<Launch> = self
            .zones
            .iter()
            .enumerate()
            .map(|(i, zone)| {
                let mut l = self.common.clone().dir(&dir.join(format!("a{i}")));
                l.zone = Some(zone.clone());
                l.gossip = free_port();
                l.web = free_port();
                self.each.iter().fold(l, |l, f| f(i, l))
            })
            .collect();
        let gossip: Vec<u16> = launches.iter().map(|l| l.gossip).collect();
        let mut agents = Vec::with_capacity(n);
        for (i, mut l) in launches.into_iter().enumerate() {
            l.seeds
                .extend((self.seeds)(i, n).into_iter().map(|s| gossip[s]));
            if let Some(text) = &self.textfile {
                l = l.textfile(text(i));
            }
            agents.push(l.start());
        }
        if self.wait_ready {
            for a in &mut agents {
                if a.launch.wait_ready {
                    a.wait_ready(READY_DEADLINE);
                }
            }
        }
        Cluster { agents, dir }
    }
}

/// Agents started together; every process is killed and the directory
/// removed on drop.
pub struct Cluster {
    pub agents: Vec<Agent>,
    pub dir: PathBuf,
}

impl Cluster {
    /// A cluster named `name` (its directory, its default zones).
    pub fn builder(name: &str) -> ClusterBuilder {
        ClusterBuilder {
            name: name.to_string(),
            zones: Vec::new(),
            common: Launch::with_dir(None, PathBuf::new()),
            seeds: Box::new(|i, _| (0..i.min(1)).collect()),
            each: Vec::new(),
            textfile: None,
            wait_ready: true,
        }
    }

    pub fn webs(&self) -> Vec<u16> {
        self.agents.iter().map(|a| a.web).collect()
    }
}

impl std::ops::Deref for Cluster {
    type Target = [Agent];
    fn deref(&self) -> &[Agent] {
        &self.agents
    }
}

impl std::ops::DerefMut for Cluster {
    fn deref_mut(&mut self) -> &mut [Agent] {
        &mut self.agents
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.agents.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl<'a> IntoIterator for &'a Cluster {
    type Item = &'a Agent;
    type IntoIter = std::slice::Iter<'a, Agent>;
    fn into_iter(self) -> Self::IntoIter {
        self.agents.iter()
    }
}
