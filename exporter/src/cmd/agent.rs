//! `astrolabe agent`: run one agent.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use astrolabe_collectors::HostPaths;
use clap::{Args, Parser};

use crate::config::FileConfig;
use crate::engine::Limits;

/// Parses `agent` arguments alone (for check-config's defaults).
#[derive(Debug, Parser)]
struct AgentOnly {
    #[command(flatten)]
    args: AgentArgs,
}

impl AgentArgs {
    /// The defaults and the `ASTROLABE_*` environment, as `agent` alone
    /// would see them, with the matches that say where each value came from.
    fn from_environment() -> anyhow::Result<(AgentArgs, clap::ArgMatches)> {
        use clap::{CommandFactory, FromArgMatches};
        let matches = AgentOnly::command()
            .try_get_matches_from(["agent"])
            .map_err(|e| anyhow::anyhow!("{}", e.to_string().lines().next().unwrap_or("")))?;
        let mut args = AgentOnly::from_arg_matches(&matches)?.args;
        args.note_environment(&matches);
        Ok((args, matches))
    }

    /// Lists whose items can hold commas (SQL, regexes, command lines,
    /// attribute values) take one item per flag on the command line; in
    /// their variable the items are separated by `;`.
    /// Also notes which settings came from the environment, for `named`.
    pub fn note_environment(&mut self, matches: &clap::ArgMatches) {
        let from_env =
            |id: &str| matches.value_source(id) == Some(clap::parser::ValueSource::EnvVariable);
        self.from_env = matches
            .ids()
            .map(|id| id.as_str().to_string())
            .filter(|id| from_env(id))
            .collect();
        for (id, list) in [
            ("aggregates", &mut self.aggregates),
            ("attributes", &mut self.attributes),
            ("process_groups", &mut self.process_groups),
            ("actions", &mut self.actions),
        ] {
            if from_env(id) {
                *list = list
                    .iter()
                    .flat_map(|v| v.split(ENV_LIST_SEPARATOR))
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .map(str::to_string)
                    .collect();
            }
        }
    }

    /// How an error names a setting: the file's key if its value came from
    /// the file, else its flag.
    fn named(&self, id: &'static str) -> String {
        let (flag, key) = match id {
            "zone" => ("--zone", "zone"),
            "seeds" => ("--gossip.seed", "[gossip] seeds"),
            "gossip_key" => ("--gossip.key", "[gossip] key"),
            "gossip_keyring_file" => ("--gossip.keyring-file", "[gossip] keyring_file"),
            "attributes" => ("--attribute", "[attributes]"),
            "aggregates" => ("--aggregate", "aggregates"),
            "process_groups" => ("--collector.process.group", "[collector] process_groups"),
            "trusted_keys" => ("--security.trusted-key", "[security] trusted_keys"),
            "otlp_endpoint" => ("--otlp.endpoint", "[otlp] endpoint"),
            "otlp_protocol" => ("--otlp.protocol", "[otlp] protocol"),
            "log_format" => ("--log.format", "[log] format"),
            "path_procfs" => ("--path.procfs", "[path] procfs"),
            "path_sysfs" => ("--path.sysfs", "[path] sysfs"),
            "path_rootfs" => ("--path.rootfs", "[path] rootfs"),
            other => (other, other),
        };
        if self.from_env.contains(id) {
            use clap::CommandFactory;
            let variable = AgentOnly::command()
                .get_arguments()
                .find(|a| a.get_id() == id)
                .and_then(|a| a.get_env())
                .map(|v| v.to_string_lossy().into_owned());
            if let Some(v) = variable {
                return v;
            }
        }
        match (&self.config_file, self.from_file.contains(id)) {
            (Some(path), true) => format!("{}: {key}", path.display()),
            _ => flag.to_string(),
        }
    }
}

/// What `--log.format` takes.
const LOG_FORMATS: [&str; 2] = ["text", "json"];

/// Separates the items of `ASTROLABE_AGGREGATE`, `ASTROLABE_ATTRIBUTE`,
/// `ASTROLABE_COLLECTOR_PROCESS_GROUP` and `ASTROLABE_OVERLAY_ACTION`.
pub const ENV_LIST_SEPARATOR: char = ';';

use crate::agent::{id_from_zone, start, AgentOptions};
use crate::zone::{Value, ZonePath};

#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// TOML configuration file; flags and ASTROLABE_* variables override it.
    #[arg(long = "config.file", env = "ASTROLABE_CONFIG_FILE")]
    pub config_file: Option<PathBuf>,
    /// This agent's leaf zone, e.g. /eu/fra/host7 [default: /local/<hostname>]
    #[arg(long, env = "ASTROLABE_ZONE")]
    pub zone: Option<String>,
    /// Agent id (contacts are the lowest ids) [default: a hash of the zone]
    #[arg(long = "agent.id", env = "ASTROLABE_AGENT_ID")]
    pub id: Option<u64>,
    /// UDP address to gossip on.
    #[arg(
        long = "gossip.listen-address",
        env = "ASTROLABE_GOSSIP_LISTEN_ADDRESS",
        default_value = "0.0.0.0:7946"
    )]
    pub gossip_listen: SocketAddr,
    /// Address peers reach this agent at, if not the listen address (NAT, containers).
    #[arg(
        long = "gossip.advertise-address",
        env = "ASTROLABE_GOSSIP_ADVERTISE_ADDRESS"
    )]
    pub gossip_advertise: Option<SocketAddr>,
    /// An agent to join through (repeatable).
    #[arg(
        long = "gossip.seed",
        env = "ASTROLABE_GOSSIP_SEED",
        value_delimiter = ','
    )]
    pub seeds: Vec<String>,
    /// Gossip round, e.g. 1s or 200ms.
    #[arg(long = "gossip.interval", env = "ASTROLABE_GOSSIP_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Address of the HTTP endpoint (/metrics, /api/v1/zones, /).
    #[arg(
        long = "web.listen-address",
        env = "ASTROLABE_WEB_LISTEN_ADDRESS",
        default_value = "0.0.0.0:9464"
    )]
    pub web_listen: SocketAddr,
    /// exporter-toolkit web configuration file (TLS, client certificates, basic auth), re-read when it changes.
    #[arg(long = "web.config.file", env = "ASTROLABE_WEB_CONFIG_FILE")]
    pub web_config_file: Option<PathBuf>,
    /// With basic_auth_users in --web.config.file, still serve /metrics, /-/healthy and /-/ready without credentials (the APIs keep needing them).
    #[arg(
        long = "web.metrics-unauthenticated",
        env = "ASTROLABE_WEB_METRICS_UNAUTHENTICATED"
    )]
    pub web_metrics_unauthenticated: bool,
    /// HTTP requests other than scrapes (the APIs, the landing page) served at once; more are answered 503 and counted.
    #[arg(long = "web.max-requests", env = "ASTROLABE_WEB_MAX_REQUESTS", default_value_t = Limits::default().http_requests, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub web_max_requests: usize,
    /// Requests for /metrics, /-/healthy and /-/ready served at once, apart from --web.max-requests (which API requests cannot take from them); more are answered 503 and counted.
    #[arg(long = "web.max-scrapes", env = "ASTROLABE_WEB_MAX_SCRAPES", default_value_t = Limits::default().http_scrapes, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub web_max_scrapes: usize,
    /// Longest a request's headers, and apart its body, may take to arrive; slower clients are cut (408 or the connection closed) and counted. Keep-alive connections idle that long are closed.
    #[arg(long = "web.read-timeout", env = "ASTROLABE_WEB_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub web_read_timeout: Duration,
    /// Rows one table (the children of one zone) may hold; rows of new zones beyond are refused.
    #[arg(long = "limits.rows-per-table", env = "ASTROLABE_LIMITS_ROWS_PER_TABLE", default_value_t = Limits::default().rows_per_table)]
    pub rows_per_table: usize,
    /// Zone names one table may track (rows plus dropped rows remembered against resurrection).
    #[arg(long = "limits.zones-per-level", env = "ASTROLABE_LIMITS_ZONES_PER_LEVEL", default_value_t = Limits::default().zones_per_level)]
    pub zones_per_level: usize,
    /// Attributes (or aggregate columns) of one received row.
    #[arg(long = "limits.attributes-per-row", env = "ASTROLABE_LIMITS_ATTRIBUTES_PER_ROW", default_value_t = Limits::default().attributes_per_row)]
    pub attributes_per_row: usize,
    /// Bytes of one string (value or attribute name) in a received row.
    #[arg(long = "limits.string-bytes", env = "ASTROLABE_LIMITS_STRING_BYTES", default_value_t = Limits::default().string_bytes)]
    pub string_bytes: usize,
    /// Items of one list (value, top-n items, sketch bins) in a received row.
    #[arg(long = "limits.list-length", env = "ASTROLABE_LIMITS_LIST_LENGTH", default_value_t = Limits::default().list_length)]
    pub list_length: usize,
    /// Overlay tasks (and, apart, reply assemblies) held at once; peers' asks beyond are refused.
    #[arg(long = "limits.pending-queries", env = "ASTROLABE_LIMITS_PENDING_QUERIES", default_value_t = Limits::default().pending_queries)]
    pub pending_queries: usize,
    /// Directory of *.prom files to read, like node_exporter's.
    #[arg(
        long = "collector.textfile.directory",
        env = "ASTROLABE_COLLECTOR_TEXTFILE_DIRECTORY"
    )]
    pub textfile_directory: Option<PathBuf>,
    /// A local Prometheus endpoint to scrape, e.g. http://localhost:8080/metrics.
    #[arg(
        long = "collector.application.url",
        env = "ASTROLABE_COLLECTOR_APPLICATION_URL"
    )]
    pub application_url: Option<String>,
    /// A metric of that endpoint to import (repeatable, or comma-separated); unlabeled ones become attributes.
    #[arg(
        long = "collector.application.import",
        env = "ASTROLABE_COLLECTOR_APPLICATION_IMPORT",
        value_delimiter = ','
    )]
    pub application_import: Vec<String>,
    /// A process group to report, name=regex on the process name or command line (repeatable; in the variable, separated by ;).
    #[arg(
        long = "collector.process.group",
        env = "ASTROLABE_COLLECTOR_PROCESS_GROUP"
    )]
    pub process_groups: Vec<String>,
    /// An action the overlay may run here, name=program args (repeatable; in the variable, separated by ;),
    /// e.g. 'restart-app=systemctl restart app'; none runs unless configured.
    #[arg(long = "overlay.action", env = "ASTROLABE_OVERLAY_ACTION")]
    pub actions: Vec<String>,
    /// Actions from the file's `[actions]` table.
    #[arg(skip)]
    pub file_actions: Vec<(String, Vec<String>)>,
    /// Settings (by argument id) whose value came from the file, so that
    /// an error names the file's key rather than a flag nobody gave.
    #[arg(skip)]
    pub from_file: std::collections::BTreeSet<&'static str>,
    /// Settings (by argument id) given by their `ASTROLABE_*` variable.
    #[arg(skip)]
    pub from_env: std::collections::BTreeSet<String>,
    /// Longest an action may run before it is killed and reported failed.
    #[arg(long = "overlay.action-timeout", env = "ASTROLABE_OVERLAY_ACTION_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub action_timeout: Duration,
    /// Longest a collector may take before it is reported failed.
    #[arg(long = "collector.timeout", env = "ASTROLABE_COLLECTOR_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub collector_timeout: Duration,
    /// How often the collectors sample (default: every gossip round); the
    /// `collect` command samples at once in between.
    #[arg(long = "collector.interval", env = "ASTROLABE_COLLECTOR_INTERVAL", value_parser = parse_duration)]
    pub collector_interval: Option<Duration>,
    /// Where the host's procfs is mounted, e.g. /host/proc for an agent in a container (node_exporter's flag).
    #[arg(long = "path.procfs", env = "ASTROLABE_PATH_PROCFS", default_value_os_t = HostPaths::default().procfs)]
    pub path_procfs: PathBuf,
    /// Where the host's sysfs is mounted, e.g. /host/sys (node_exporter's flag; no collector reads it yet).
    #[arg(long = "path.sysfs", env = "ASTROLABE_PATH_SYSFS", default_value_os_t = HostPaths::default().sysfs)]
    pub path_sysfs: PathBuf,
    /// Where the host's root filesystem is mounted, e.g. /host/root: mount point M is measured at this path joined with M and labelled M (node_exporter's flag).
    #[arg(long = "path.rootfs", env = "ASTROLABE_PATH_ROOTFS", default_value_os_t = HostPaths::default().rootfs)]
    pub path_rootfs: PathBuf,
    /// Do not run the host collectors (cpu, memory, load, network, disks, filesystems, pressure, processes).
    #[arg(long = "no-collector.host", env = "ASTROLABE_NO_COLLECTOR_HOST")]
    pub no_host_collectors: bool,
    /// An aggregate applied at every level, e.g. 'SELECT max(load1) AS load1_peak' (repeatable; in the variable, separated by ;).
    #[arg(long = "aggregate", env = "ASTROLABE_AGGREGATE")]
    pub aggregates: Vec<String>,
    /// A static attribute of this agent's row, k=v (repeatable; in the variable, separated by ;).
    #[arg(long = "attribute", env = "ASTROLABE_ATTRIBUTE")]
    pub attributes: Vec<String>,
    /// OTLP endpoint to push metrics to, e.g. http://collector:4317 (off when unset).
    #[arg(long = "otlp.endpoint", env = "ASTROLABE_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// OTLP protocol: grpc or http/protobuf.
    #[arg(
        long = "otlp.protocol",
        env = "ASTROLABE_OTLP_PROTOCOL",
        default_value = "grpc"
    )]
    pub otlp_protocol: String,
    /// How often to push to the OTLP endpoint.
    #[arg(long = "otlp.interval", env = "ASTROLABE_OTLP_INTERVAL", default_value = "15s", value_parser = parse_duration)]
    pub otlp_interval: Duration,
    /// Gossip encryption key, base64 of 32 bytes (astrolabe keys generate); prefer the environment or a keyring file to the command line.
    #[arg(
        long = "gossip.key",
        env = "ASTROLABE_GOSSIP_KEY",
        hide_env_values = true
    )]
    pub gossip_key: Option<String>,
    /// Gossip keyring file: a JSON array of base64 keys, the first seals; `astrolabe keys` changes it. Created from --gossip.key if missing.
    #[arg(long = "gossip.keyring-file", env = "ASTROLABE_GOSSIP_KEYRING_FILE")]
    pub gossip_keyring_file: Option<PathBuf>,
    /// Sealed datagrams stamped further than this from our clock are dropped, and any seen twice within it.
    #[arg(long = "gossip.replay-window", env = "ASTROLABE_GOSSIP_REPLAY_WINDOW", default_value = "60s", value_parser = parse_duration)]
    pub gossip_replay_window: Duration,
    /// An operator's Ed25519 public key (base64) whose signatures on commands and aggregate certificates this agent accepts (repeatable). With none, commands run unsigned.
    #[arg(
        long = "security.trusted-key",
        env = "ASTROLABE_SECURITY_TRUSTED_KEY",
        value_delimiter = ','
    )]
    pub trusted_keys: Vec<String>,
    /// A signed command issued further than this from our clock is refused (and any nonce seen twice within it).
    #[arg(long = "security.signature-window", env = "ASTROLABE_SECURITY_SIGNATURE_WINDOW", default_value = "60s", value_parser = parse_duration)]
    pub signature_window: Duration,
    /// Log format: text or json.
    #[arg(
        long = "log.format",
        env = "ASTROLABE_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: String,
}

/// `1s`, `200ms`, `2m`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (like 1s or 200ms)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(format!("{s:?} must be positive"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .map(|h| {
            h.replace(
                |c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'),
                "-",
            )
        })
        .unwrap_or_else(|| "host".into())
}

fn resolve_seed(seed: &str) -> anyhow::Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    seed.to_socket_addrs()
        .with_context(|| format!("seed {seed:?}: cannot resolve (use host:port)"))?
        .next()
        .with_context(|| format!("seed {seed:?}: no address"))
}

/// Fills the arguments the command line and environment left unset from
/// the configuration file: flag > env > file > default. Values read here
/// are checked here, so that errors name the file's key.
pub fn apply_file(args: &mut AgentArgs, matches: Option<&clap::ArgMatches>) -> anyhow::Result<()> {
    let Some(path) = args.config_file.clone() else {
        return Ok(());
    };
    let file = FileConfig::load(&path)?;
    let at = |reason: String| anyhow::anyhow!("{}: {reason}", path.display());
    let defaulted = |id: &str| {
        matches.is_none_or(|m| {
            !matches!(
                m.value_source(id),
                Some(clap::parser::ValueSource::CommandLine)
                    | Some(clap::parser::ValueSource::EnvVariable)
            )
        })
    };
    // A duration from the file, where neither flag nor environment set it.
    let duration = |value: Option<String>, id: &str, key: &str| {
        value
            .filter(|_| defaulted(id))
            .map(|v| parse_duration(&v).map_err(|e| at(format!("{key}: {e}"))))
            .transpose()
    };
    let taken = &mut args.from_file;
    let mut take = |id: &'static str| {
        taken.insert(id);
    };
    if args.zone.is_none() && file.zone.is_some() {
        args.zone = file.zone;
        take("zone");
    }
    for (name, argv) in file.actions {
        if argv.is_empty() {
            return Err(at(format!("[actions] {name}: the command is empty")));
        }
        args.file_actions.push((name, argv));
    }
    if args.id.is_none() {
        args.id = file.agent_id;
    }
    if let Some(v) = file
        .gossip
        .listen_address
        .filter(|_| defaulted("gossip_listen"))
    {
        args.gossip_listen = v
            .parse()
            .map_err(|_| at(format!("[gossip] listen_address {v:?} is not host:port")))?;
    }
    if args.gossip_advertise.is_none() {
        if let Some(v) = file.gossip.advertise_address {
            args.gossip_advertise = Some(
                v.parse()
                    .map_err(|_| at(format!("[gossip] advertise_address {v:?} is not ip:port")))?,
            );
        }
    }
    if args.seeds.is_empty() && !file.gossip.seeds.is_empty() {
        args.seeds = file.gossip.seeds;
        take("seeds");
    }
    if args.trusted_keys.is_empty() && !file.security.trusted_keys.is_empty() {
        args.trusted_keys = file.security.trusted_keys;
        take("trusted_keys");
    }
    if let Some(d) = duration(
        file.security.signature_window,
        "signature_window",
        "[security] signature_window",
    )? {
        args.signature_window = d;
    }
    if args.gossip_key.is_none() && file.gossip.key.is_some() {
        args.gossip_key = file.gossip.key;
        take("gossip_key");
    }
    if args.gossip_keyring_file.is_none() && file.gossip.keyring_file.is_some() {
        args.gossip_keyring_file = file.gossip.keyring_file;
        take("gossip_keyring_file");
    }
    if let Some(d) = duration(
        file.gossip.replay_window,
        "gossip_replay_window",
        "[gossip] replay_window",
    )? {
        args.gossip_replay_window = d;
    }
    if let Some(d) = duration(file.gossip.interval, "interval", "[gossip] interval")? {
        args.interval = d;
    }
    if let Some(v) = file.web.listen_address.filter(|_| defaulted("web_listen")) {
        args.web_listen = v
            .parse()
            .map_err(|_| at(format!("[web] listen_address {v:?} is not host:port")))?;
    }
    if args.web_config_file.is_none() {
        args.web_config_file = file.web.config_file;
    }
    if let Some(v) = file
        .web
        .metrics_unauthenticated
        .filter(|_| defaulted("web_metrics_unauthenticated"))
    {
        args.web_metrics_unauthenticated = v;
    }
    if args.textfile_directory.is_none() {
        args.textfile_directory = file.collector.textfile_directory;
    }
    if args.collector_interval.is_none() {
        args.collector_interval = duration(
            file.collector.interval,
            "collector_interval",
            "[collector] interval",
        )?;
    }
    if let Some(d) = duration(
        file.collector.timeout,
        "collector_timeout",
        "[collector] timeout",
    )? {
        args.collector_timeout = d;
    }
    if let Some(d) = duration(
        file.overlay.action_timeout,
        "action_timeout",
        "[overlay] action_timeout",
    )? {
        args.action_timeout = d;
    }
    if let Some(host) = file
        .collector
        .host
        .filter(|_| defaulted("no_host_collectors"))
    {
        args.no_host_collectors = !host;
    }
    for (id, value, slot) in [
        ("path_procfs", file.path.procfs, &mut args.path_procfs),
        ("path_sysfs", file.path.sysfs, &mut args.path_sysfs),
        ("path_rootfs", file.path.rootfs, &mut args.path_rootfs),
    ] {
        if let Some(v) = value.filter(|_| defaulted(id)) {
            *slot = v;
            take(id);
        }
    }
    if args.application_url.is_none() {
        args.application_url = file.collector.application_url;
    }
    if args.application_import.is_empty() {
        args.application_import = file.collector.application_import;
    }
    if args.process_groups.is_empty() && !file.collector.process_groups.is_empty() {
        args.process_groups = file.collector.process_groups;
        take("process_groups");
    }
    if args.aggregates.is_empty() && !file.aggregates.is_empty() {
        args.aggregates = file.aggregates;
        take("aggregates");
    }
    if args.attributes.is_empty() && !file.attributes.is_empty() {
        crate::http::names::check_configured(file.attributes.keys().map(String::as_str))
            .map_err(|e| at(format!("[attributes]: {e}")))?;
        for (k, v) in file.attributes {
            let text = match v {
                toml::Value::String(s) => s,
                other => other.to_string(),
            };
            args.attributes.push(format!("{k}={text}"));
        }
        take("attributes");
    }
    if args.otlp_endpoint.is_none() && file.otlp.endpoint.is_some() {
        args.otlp_endpoint = file.otlp.endpoint;
        take("otlp_endpoint");
    }
    if let Some(v) = file.otlp.protocol.filter(|_| defaulted("otlp_protocol")) {
        args.otlp_protocol = v;
        take("otlp_protocol");
    }
    if let Some(d) = duration(file.otlp.interval, "otlp_interval", "[otlp] interval")? {
        args.otlp_interval = d;
    }
    if let Some(v) = file.log.format.filter(|_| defaulted("log_format")) {
        args.log_format = v;
        take("log_format");
    }
    if let Some(v) = file
        .web
        .max_requests
        .filter(|_| defaulted("web_max_requests"))
    {
        if v == 0 {
            return Err(at("[web] max_requests: must be at least 1".into()));
        }
        args.web_max_requests = v;
    }
    if let Some(v) = file
        .web
        .max_scrapes
        .filter(|_| defaulted("web_max_scrapes"))
    {
        if v == 0 {
            return Err(at("[web] max_scrapes: must be at least 1".into()));
        }
        args.web_max_scrapes = v;
    }
    if let Some(d) = duration(
        file.web.read_timeout,
        "web_read_timeout",
        "[web] read_timeout",
    )? {
        args.web_read_timeout = d;
    }
    let limits = &file.limits;
    for (id, value, slot) in [
        (
            "rows_per_table",
            limits.rows_per_table,
            &mut args.rows_per_table,
        ),
        (
            "zones_per_level",
            limits.zones_per_level,
            &mut args.zones_per_level,
        ),
        (
            "attributes_per_row",
            limits.attributes_per_row,
            &mut args.attributes_per_row,
        ),
        ("string_bytes", limits.string_bytes, &mut args.string_bytes),
        ("list_length", limits.list_length, &mut args.list_length),
        (
            "pending_queries",
            limits.pending_queries,
            &mut args.pending_queries,
        ),
    ] {
        if let Some(v) = value.filter(|_| defaulted(id)) {
            *slot = v;
        }
    }
    Ok(())
}

pub fn options(args: &AgentArgs) -> anyhow::Result<AgentOptions> {
    if !LOG_FORMATS.contains(&args.log_format.as_str()) {
        bail!(
            "{} {:?}: use text or json",
            args.named("log_format"),
            args.log_format
        );
    }
    let zone_text = args
        .zone
        .clone()
        .unwrap_or_else(|| format!("/local/{}", hostname()));
    let zone = ZonePath::parse(&zone_text).with_context(|| args.named("zone"))?;
    if zone.is_root() {
        bail!(
            "{}: an agent's zone must be below the root, like /local/host1",
            args.named("zone")
        );
    }
    let mut attributes = Vec::new();
    for a in &args.attributes {
        let Some((k, v)) = a.split_once('=') else {
            bail!("{} {a:?}: expected name=value", args.named("attributes"));
        };
        if k.is_empty() {
            bail!("{} {a:?}: the name is empty", args.named("attributes"));
        }
        attributes.push((k.to_string(), Value::parse_literal(v)));
    }
    crate::http::names::check_configured(attributes.iter().map(|(k, _)| k.as_str()))
        .map_err(|e| anyhow::anyhow!("--attribute: {e}"))?;
    for g in &args.process_groups {
        astrolabe_collectors::ProcessGroup::parse(g)
            .map_err(|e| anyhow::anyhow!("{}: {e}", args.named("process_groups")))?;
    }
    let host_paths = host_paths(args)?;
    let mut actions = crate::overlay::actions::Actions {
        defined: Default::default(),
        timeout: args.action_timeout,
    };
    for (name, argv) in &args.file_actions {
        actions.defined.insert(name.clone(), argv.clone());
    }
    for a in &args.actions {
        let (name, argv) = crate::overlay::actions::parse_action(a)
            .map_err(|e| anyhow::anyhow!("--overlay.action: {e}"))?;
        actions.defined.insert(name, argv);
    }
    let seeds = args
        .seeds
        .iter()
        .map(|s| resolve_seed(s).with_context(|| args.named("seeds")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let keyring_setting = if args.gossip_keyring_file.is_some() {
        "gossip_keyring_file"
    } else {
        "gossip_key"
    };
    let gossip_security = crate::transport::keyring::load_keyring(
        args.gossip_key.as_deref(),
        args.gossip_keyring_file.as_deref(),
    )
    .map_err(|e| anyhow::anyhow!("{}: {e}", args.named(keyring_setting)))?
    .map(|ring| {
        std::sync::Arc::new(crate::transport::keyring::GossipSecurity::new(
            ring,
            args.gossip_keyring_file.clone(),
            args.gossip_replay_window.as_millis() as u64,
        ))
    });
    let trusted_keys = crate::security::TrustedKeys::parse(&args.trusted_keys)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.named("trusted_keys")))?;
    Ok(AgentOptions {
        trusted_keys,
        signature_window: args.signature_window,
        id: args.id.unwrap_or_else(|| id_from_zone(&zone)),
        zone,
        listen: args.gossip_listen,
        advertise: args.gossip_advertise,
        seeds,
        interval: args.interval,
        web_listen: args.web_listen,
        textfile_directory: args.textfile_directory.clone(),
        aggregates: args.aggregates.clone(),
        attributes,
        collector_timeout: args.collector_timeout,
        collector_interval: args.collector_interval,
        host_collectors: !args.no_host_collectors,
        host_paths,
        application: args
            .application_url
            .clone()
            .map(|url| (url, args.application_import.clone())),
        process_groups: args.process_groups.clone(),
        gossip_security,
        web_config: args.web_config_file.clone(),
        metrics_unauthenticated: args.web_metrics_unauthenticated,
        limits: Limits {
            rows_per_table: args.rows_per_table,
            zones_per_level: args.zones_per_level,
            attributes_per_row: args.attributes_per_row,
            string_bytes: args.string_bytes,
            list_length: args.list_length,
            pending_queries: args.pending_queries,
            http_requests: args.web_max_requests,
            http_scrapes: args.web_max_scrapes,
            http_read_timeout: args.web_read_timeout,
        },
        actions,
    })
}

/// `--path.procfs`, `--path.sysfs` and `--path.rootfs`; one the user set
/// is refused at start-up unless it is a directory: a mistyped host mount
/// would otherwise only show as collectors failing every round.
fn host_paths(args: &AgentArgs) -> anyhow::Result<HostPaths> {
    let defaults = HostPaths::default();
    for (id, path, default) in [
        ("path_procfs", &args.path_procfs, &defaults.procfs),
        ("path_sysfs", &args.path_sysfs, &defaults.sysfs),
        ("path_rootfs", &args.path_rootfs, &defaults.rootfs),
    ] {
        // A default is not checked: a host (or sandbox) without /sys
        // still starts, as node_exporter does, and a collector that
        // cannot read its file says so when it runs.
        if path == default {
            continue;
        }
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => bail!("{} {}: not a directory", args.named(id), path.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("{} {}: no such directory", args.named(id), path.display())
            }
            Err(e) => bail!(
                "{} {}: {}",
                args.named(id),
                path.display(),
                crate::transport::os_reason(&e)
            ),
        }
    }
    Ok(HostPaths {
        procfs: args.path_procfs.clone(),
        sysfs: args.path_sysfs.clone(),
        rootfs: args.path_rootfs.clone(),
    })
}

/// The OTLP push, if an endpoint is configured; checked before start-up.
pub fn otlp_options(args: &AgentArgs) -> anyhow::Result<Option<crate::otel::OtlpOptions>> {
    let Some(endpoint) = args
        .otlp_endpoint
        .as_deref()
        .filter(|e| !e.trim().is_empty())
    else {
        return Ok(None);
    };
    use crate::otel::OtlpError;
    // The OTLP errors name the flags; say the file's key where it came from.
    let protocol: crate::otel::Protocol = args.otlp_protocol.parse().map_err(|e| match e {
        OtlpError::Protocol(p) => anyhow::anyhow!(
            "{} {p:?}: use grpc or http/protobuf",
            args.named("otlp_protocol")
        ),
        other => other.into(),
    })?;
    let opts = crate::otel::OtlpOptions::new(endpoint, protocol, args.otlp_interval);
    opts.signal_endpoint().map_err(|e| match e {
        OtlpError::Endpoint { endpoint, reason } => {
            anyhow::anyhow!("{} {endpoint:?}: {reason}", args.named("otlp_endpoint"))
        }
        other => other.into(),
    })?;
    Ok(Some(opts))
}

/// Stops the OTLP task when the agent leaves.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Logging to stderr at `ASTROLABE_LOG` (default `default_level`), which
/// is refused unless it is a level or `target=level` directives.
pub fn init_logging(format: &str, default_level: &str) -> anyhow::Result<()> {
    let level = std::env::var("ASTROLABE_LOG")
        .ok()
        .filter(|l| !l.trim().is_empty());
    if let Some(l) = &level {
        crate::overlay::log_filter::check(l).map_err(|e| anyhow::anyhow!("ASTROLABE_LOG: {e}"))?;
    }
    let filter = tracing_subscriber::EnvFilter::try_new(level.as_deref().unwrap_or(default_level))
        .map_err(|e| anyhow::anyhow!("ASTROLABE_LOG: {e}"))?;
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // Both formats keep a handle on the filter, so that `set-log-level`
    // over the overlay works whatever the operator chose.
    match format {
        "text" => {
            let builder = builder.with_filter_reloading();
            install_log_reloader(builder.reload_handle());
            builder.try_init()
        }
        "json" => {
            let builder = builder.json().with_filter_reloading();
            install_log_reloader(builder.reload_handle());
            builder.try_init()
        }
        other => bail!("--log.format {other:?}: use text or json"),
    }
    .map_err(|e| anyhow::anyhow!("logging: {e}"))
}

/// Lets `set-log-level LEVEL` replace the filter behind `handle`.
fn install_log_reloader<S: 'static>(
    handle: tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, S>,
) {
    crate::overlay::runtime::set_log_reloader(Box::new(move |level: &str| {
        let filter = tracing_subscriber::EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        handle.reload(filter).map_err(|e| e.to_string())
    }));
}

/// `astrolabe check-config FILE`: everything `agent` would refuse, without
/// starting, with the same `ASTROLABE_*` variables over the file.
pub fn check_config(path: PathBuf) -> anyhow::Result<()> {
    let (mut args, matches) = AgentArgs::from_environment()?;
    args.config_file = Some(path.clone());
    apply_file(&mut args, Some(&matches))?;
    let opts = options(&args)?;
    otlp_options(&args)?;
    let set = crate::aggregate::AggregateSet::with_system(
        &[crate::agent::host_aggregates()],
        &opts.aggregates,
    )
    .map_err(|e| anyhow::anyhow!("{}: {e}", args.named("aggregates")))?;
    println!(
        "{}: ok (zone {}, {} aggregate columns, {} seeds)",
        path.display(),
        opts.zone,
        set.columns().len(),
        opts.seeds.len()
    );
    Ok(())
}

/// How long after start the start-up code's pages are released.
const STARTUP_SETTLES: Duration = Duration::from_secs(10);

/// Collectors run on short-lived threads; glibc would give each its own
/// malloc arena and keep the pages. Two arenas are plenty for an agent.
#[allow(unsafe_code)] // one FFI call; SAFETY below
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

pub fn run(mut args: AgentArgs, matches: Option<&clap::ArgMatches>) -> anyhow::Result<()> {
    limit_malloc_arenas();
    if let Some(m) = matches {
        args.note_environment(m);
    }
    let given = args.clone();
    let matches = matches.cloned();
    apply_file(&mut args, matches.as_ref())?;
    let opts = options(&args)?;
    init_logging(&args.log_format, "info")?;
    let otlp = otlp_options(&args)?;
    // The main thread is plenty for one engine, one socket, scrapes and
    // OTLP pushes; a worker thread would only add its stack and allocator
    // pages to the resident set (BENCHMARKS.md, stop 18).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let identity = crate::otel::Identity {
            host_name: hostname(),
            zone_path: opts.zone.to_string(),
            agent_id: opts.id,
        };
        let (security, trusted) = (opts.gossip_security.clone(), opts.trusted_keys.clone());
        let agent = start(opts).await?;
        crate::agent::log_security(security.as_deref(), &trusted, agent.gossip_addr);
        let _otlp = match otlp {
            Some(o) => Some(AbortOnDrop(crate::otel::spawn(
                o,
                identity,
                agent.view.clone(),
                agent.otlp.clone(),
            )?)),
            None => None,
        };
        // Once start-up is over (sockets bound, first collection and
        // gossip rounds done), its code stops counting as resident.
        tokio::spawn(async {
            tokio::time::sleep(STARTUP_SETTLES).await;
            let kb = crate::agent::resident::release_startup_pages();
            tracing::debug!(kb, "start-up pages released");
        });
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM: leaving"); break; }
                _ = tokio::signal::ctrl_c() => { tracing::info!("interrupt: leaving"); break; }
                _ = hup.recv() => {
                    // Re-read the file over what the command line gave.
                    let mut fresh = given.clone();
                    let reloaded = apply_file(&mut fresh, matches.as_ref())
                        .and_then(|()| options(&fresh));
                    match reloaded {
                        Ok(new) => {
                            if let Err(e) = agent.reload(&new.aggregates, &new.attributes, &new.trusted_keys).await {
                                tracing::error!(error = %e, "SIGHUP: configuration refused, keeping the old one");
                            }
                        }
                        Err(e) => tracing::error!(error = %format!("{e:#}"), "SIGHUP: configuration refused, keeping the old one"),
                    }
                }
            }
        }
        agent.leave().await;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1s").unwrap(), Duration::from_secs(1));
        assert_eq!(parse_duration("200ms").unwrap(), Duration::from_millis(200));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("1d").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("abc").is_err());
    }

    /// What `agent` would make of `argv` (after the program name), with
    /// the matches that say where each value came from.
    fn parsed(argv: &[&str]) -> (AgentArgs, clap::ArgMatches) {
        use clap::{CommandFactory, FromArgMatches};
        let matches = AgentOnly::command()
            .try_get_matches_from(std::iter::once("agent").chain(argv.iter().copied()))
            .unwrap();
        let mut args = AgentOnly::from_arg_matches(&matches).unwrap().args;
        args.note_environment(&matches);
        (args, matches)
    }

    fn fixture(sub: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../collectors/fixtures")
            .join(sub)
    }

    #[test]
    fn host_paths_default_to_the_hosts_own_and_follow_the_flags() {
        let (args, _) = parsed(&["--zone", "/t/a"]);
        assert_eq!(options(&args).unwrap().host_paths, HostPaths::default());
        let (proc, sys, root) = (fixture("proc"), fixture("sys"), fixture("rootfs"));
        let (args, _) = parsed(&[
            "--zone",
            "/t/a",
            "--path.procfs",
            proc.to_str().unwrap(),
            "--path.sysfs",
            sys.to_str().unwrap(),
            "--path.rootfs",
            root.to_str().unwrap(),
        ]);
        let paths = options(&args).unwrap().host_paths;
        assert_eq!((paths.procfs, paths.sysfs, paths.rootfs), (proc, sys, root));
        use clap::CommandFactory;
        let command = AgentOnly::command();
        for (id, variable) in [
            ("path_procfs", "ASTROLABE_PATH_PROCFS"),
            ("path_sysfs", "ASTROLABE_PATH_SYSFS"),
            ("path_rootfs", "ASTROLABE_PATH_ROOTFS"),
        ] {
            let arg = command.get_arguments().find(|a| a.get_id() == id).unwrap();
            assert_eq!(arg.get_env().unwrap(), variable);
        }
    }

    #[test]
    fn a_host_path_that_is_not_a_directory_is_refused_in_one_line_naming_the_flag() {
        let (args, _) = parsed(&["--zone", "/t/a", "--path.procfs", "/nonexistent/proc"]);
        let e = format!("{:#}", options(&args).unwrap_err());
        assert_eq!(e, "--path.procfs /nonexistent/proc: no such directory");
        let file = fixture("proc/loadavg");
        let (args, _) = parsed(&["--zone", "/t/a", "--path.rootfs", file.to_str().unwrap()]);
        let e = format!("{:#}", options(&args).unwrap_err());
        assert_eq!(
            e,
            format!("--path.rootfs {}: not a directory", file.display())
        );
    }

    #[test]
    fn the_path_section_sets_the_host_paths_under_the_flags_and_errors_name_its_key() {
        let dir =
            std::env::temp_dir().join(format!("astrolabe-path-section-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("agent.toml");
        let proc = fixture("proc");
        std::fs::write(
            &file,
            format!(
                "zone = \"/t/a\"\n[path]\nprocfs = {:?}\nsysfs = \"/nonexistent/sys\"\n",
                proc.display().to_string()
            ),
        )
        .unwrap();
        let config = file.to_str().unwrap();
        let (mut args, matches) = parsed(&["--config.file", config]);
        apply_file(&mut args, Some(&matches)).unwrap();
        let e = format!("{:#}", options(&args).unwrap_err());
        assert_eq!(
            e,
            format!("{config}: [path] sysfs /nonexistent/sys: no such directory")
        );
        // The flag wins over the file.
        let (mut args, matches) = parsed(&["--config.file", config, "--path.sysfs", "/"]);
        apply_file(&mut args, Some(&matches)).unwrap();
        let paths = options(&args).unwrap().host_paths;
        assert_eq!((paths.procfs, paths.sysfs), (proc, PathBuf::from("/")));
        let _ = std::fs::remove_dir_all(dir);
    }
}
