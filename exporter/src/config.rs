//! Every setting of `astrolabe agent`, declared once.
//!
//! One struct, [`Settings`], whose sections are the TOML file's sections
//! and whose fields are the settings: each field's attributes give its
//! flag, its `ASTROLABE_*` variable and its default (clap), its doc comment
//! is its `--help` text, and its name is its key in the file (serde). Every
//! field is an `Option`, so that one value of the struct is one *layer*:
//! what the command line and the environment gave (clap already puts a
//! flag over its variable), what the file gave, and the defaults. They are
//! merged field by field, flag > environment > file > default
//! ([`Settings::or`]), and the result is resolved into the agent's
//! options by `cmd::agent::options`. A new setting is one field here.
//!
//! A setting's id (clap's argument id) is its path in the file,
//! `gossip.listen_address`, so an error can name the key, the flag or the
//! variable the bad value came from ([`Config::named`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use astrolabe_collectors::HostPaths;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser};
use serde::{Deserialize, Deserializer};

use crate::engine::Limits;

/// Declares one section of [`Settings`]: the struct (clap `Args` and serde
/// `Deserialize`, unknown keys refused), and its field-by-field merge.
/// Settings take flags and a key; `file_only` fields only a key (tables of
/// the user's names); `sections` are flattened into the command line and
/// are tables in the file. A list declared `=> env_list` takes one item
/// per flag, and in its variable items separated by `ENV_LIST_SEPARATOR`
/// (its items can hold commas: SQL, regexes, command lines).
macro_rules! settings {
    (
        $(#[$meta:meta])*
        pub struct $name:ident in $section:literal {
            $( $(#[$fmeta:meta])* pub $field:ident : $ty:ty $(=> $env_list:ident)?, )*
        }
        $( file_only { $( $(#[$ometa:meta])* pub $ofield:ident : $oty:ty, )* } )?
        $( sections { $( $(#[$smeta:meta])* pub $sfield:ident : $sty:ident, )* } )?
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, Args, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $(
                $(#[$fmeta])*
                #[arg(id = concat!($section, stringify!($field)))]
                pub $field: $ty,
            )*
            $($(
                $(#[$ometa])*
                #[arg(skip)]
                #[serde(default)]
                pub $ofield: $oty,
            )*)?
            $($(
                $(#[$smeta])*
                #[command(flatten)]
                #[serde(default)]
                pub $sfield: $sty,
            )*)?
        }

        impl $name {
            /// Each setting of `self`, else that of `lower`.
            pub fn or(self, lower: Self) -> Self {
                Self {
                    $( $field: self.$field.or(lower.$field), )*
                    $($( $ofield: self.$ofield.or(lower.$ofield), )*)?
                    $($( $sfield: self.$sfield.or(lower.$sfield), )*)?
                }
            }

            /// Unsets what clap filled in from a default: the defaults are
            /// a layer of their own, below the file.
            fn forget_defaults(&mut self, matches: &ArgMatches) {
                $(
                    let id = concat!($section, stringify!($field));
                    if matches.value_source(id) == Some(ValueSource::DefaultValue) {
                        self.$field = None;
                    }
                )*
                $($( self.$sfield.forget_defaults(matches); )*)?
            }

            /// The ids of the settings this layer holds a value for.
            fn given(&self, ids: &mut BTreeSet<&'static str>) {
                $(
                    if self.$field.is_some() {
                        ids.insert(concat!($section, stringify!($field)));
                    }
                )*
                $($(
                    if self.$ofield.is_some() {
                        ids.insert(concat!($section, stringify!($ofield)));
                    }
                )*)?
                $($( self.$sfield.given(ids); )*)?
            }

            /// Splits each `env_list` setting that came from its variable.
            fn split_env_lists(&mut self, from_env: &BTreeSet<&'static str>) {
                let _ = from_env; // a section may have no such list
                $($(
                    let _ = stringify!($env_list);
                    split_env_list(
                        &mut self.$field,
                        from_env.contains(concat!($section, stringify!($field))),
                    );
                )?)*
                $($( self.$sfield.split_env_lists(from_env); )*)?
            }
        }
    };
}

/// One `env_list` setting given by its variable: its one value is the
/// items separated by `ENV_LIST_SEPARATOR` (blank ones dropped).
fn split_env_list(list: &mut Option<Vec<String>>, from_env: bool) {
    if let (true, Some(items)) = (from_env, list.as_mut()) {
        *items = items
            .iter()
            .flat_map(|v| v.split(ENV_LIST_SEPARATOR))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .collect();
    }
}

settings! {
    /// `astrolabe agent`'s settings; the top level of the file.
    pub struct Settings in "" {
        /// TOML configuration file; flags and ASTROLABE_* variables override it.
        #[arg(long = "config.file", env = "ASTROLABE_CONFIG_FILE")]
        #[serde(skip)]
        pub config_file: Option<PathBuf>,
        /// This agent's leaf zone, e.g. /eu/fra/host7 [default: /local/<hostname>]
        #[arg(long, env = "ASTROLABE_ZONE")]
        pub zone: Option<String>,
        /// Agent id (contacts are the lowest ids) [default: a hash of the zone]
        #[arg(long = "agent.id", env = "ASTROLABE_AGENT_ID")]
        pub agent_id: Option<u64>,
        /// An aggregate applied at every level, e.g. 'SELECT max(load1) AS load1_peak' (repeatable; in the variable, separated by ;).
        #[arg(long = "aggregate", env = "ASTROLABE_AGGREGATE")]
        pub aggregates: Option<Vec<String>> => env_list,
        /// A static attribute of this agent's row, k=v (repeatable; in the variable, separated by ;).
        #[arg(long = "attribute", env = "ASTROLABE_ATTRIBUTE")]
        #[serde(default, deserialize_with = "attribute_table")]
        pub attributes: Option<Vec<String>> => env_list,
    }
    file_only {
        /// `[actions]`: name = [program, arguments...]; `--overlay.action`
        /// adds to them.
        pub actions: Option<BTreeMap<String, Vec<String>>>,
    }
    sections {
        pub gossip: GossipSettings,
        pub web: WebSettings,
        pub limits: LimitsSettings,
        pub collector: CollectorSettings,
        pub path: PathSettings,
        pub overlay: OverlaySettings,
        pub otlp: OtlpSettings,
        pub security: SecuritySettings,
        pub log: LogSettings,
    }
}

settings! {
    /// `[gossip]`.
    pub struct GossipSettings in "gossip." {
        /// UDP address to gossip on.
        #[arg(long = "gossip.listen-address", env = "ASTROLABE_GOSSIP_LISTEN_ADDRESS", default_value = "0.0.0.0:7946")]
        #[serde(default, deserialize_with = "host_port")]
        pub listen_address: Option<SocketAddr>,
        /// Address peers reach this agent at, if not the listen address (NAT, containers).
        #[arg(long = "gossip.advertise-address", env = "ASTROLABE_GOSSIP_ADVERTISE_ADDRESS")]
        #[serde(default, deserialize_with = "ip_port")]
        pub advertise_address: Option<SocketAddr>,
        /// An agent to join through (repeatable).
        #[arg(long = "gossip.seed", env = "ASTROLABE_GOSSIP_SEED", value_delimiter = ',')]
        pub seeds: Option<Vec<String>>,
        /// Gossip round, e.g. 1s or 200ms.
        #[arg(long = "gossip.interval", env = "ASTROLABE_GOSSIP_INTERVAL", default_value = "1s", value_parser = parse_duration)]
        #[serde(default, deserialize_with = "duration")]
        pub interval: Option<Duration>,
        /// Gossip encryption key, base64 of 32 bytes (astrolabe keys generate); prefer the environment or a keyring file to the command line.
        #[arg(long = "gossip.key", env = "ASTROLABE_GOSSIP_KEY", hide_env_values = true)]
        pub key: Option<String>,
        /// Gossip keyring file: a JSON array of base64 keys, the first seals; `astrolabe keys` changes it. Created from --gossip.key if missing.
        #[arg(long = "gossip.keyring-file", env = "ASTROLABE_GOSSIP_KEYRING_FILE")]
        pub keyring_file: Option<PathBuf>,
        /// Sealed datagrams stamped further than this from our clock are dropped, and any seen twice within it.
        #[arg(long = "gossip.replay-window", env = "ASTROLABE_GOSSIP_REPLAY_WINDOW", default_value = "60s", value_parser = parse_duration)]
        #[serde(default, deserialize_with = "duration")]
        pub replay_window: Option<Duration>,
    }
}

settings! {
    /// `[web]`.
    pub struct WebSettings in "web." {
        /// Address of the HTTP endpoint (/metrics, /api/v1/zones, /).
        #[arg(long = "web.listen-address", env = "ASTROLABE_WEB_LISTEN_ADDRESS", default_value = "0.0.0.0:9464")]
        #[serde(default, deserialize_with = "host_port")]
        pub listen_address: Option<SocketAddr>,
        /// exporter-toolkit web configuration file (TLS, client certificates, basic auth), re-read when it changes.
        #[arg(long = "web.config.file", env = "ASTROLABE_WEB_CONFIG_FILE")]
        pub config_file: Option<PathBuf>,
        /// With basic_auth_users in --web.config.file, still serve /metrics, /-/healthy and /-/ready without credentials (the APIs keep needing them).
        #[arg(long = "web.metrics-unauthenticated", env = "ASTROLABE_WEB_METRICS_UNAUTHENTICATED", action = clap::ArgAction::SetTrue)]
        pub metrics_unauthenticated: Option<bool>,
        /// HTTP requests other than scrapes (the APIs, the landing page) served at once; more are answered 503 and counted.
        #[arg(long = "web.max-requests", env = "ASTROLABE_WEB_MAX_REQUESTS", default_value = Limits::default().http_requests.to_string(), value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
        #[serde(default, deserialize_with = "at_least_one")]
        pub max_requests: Option<usize>,
        /// Requests for /metrics, /-/healthy and /-/ready served at once, apart from --web.max-requests (which API requests cannot take from them); more are answered 503 and counted.
        #[arg(long = "web.max-scrapes", env = "ASTROLABE_WEB_MAX_SCRAPES", default_value = Limits::default().http_scrapes.to_string(), value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
        #[serde(default, deserialize_with = "at_least_one")]
        pub max_scrapes: Option<usize>,
        /// Longest a request's headers, and apart its body, may take to arrive; slower clients are cut (408 or the connection closed) and counted. Keep-alive connections idle that long are closed.
        #[arg(long = "web.read-timeout", env = "ASTROLABE_WEB_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
        #[serde(default, deserialize_with = "duration")]
        pub read_timeout: Option<Duration>,
    }
}

settings! {
    /// `[limits]`: what a peer can make this agent hold (`engine::limits`).
    pub struct LimitsSettings in "limits." {
        /// Rows one table (the children of one zone) may hold; rows of new zones beyond are refused.
        #[arg(long = "limits.rows-per-table", env = "ASTROLABE_LIMITS_ROWS_PER_TABLE", default_value = Limits::default().rows_per_table.to_string())]
        pub rows_per_table: Option<usize>,
        /// Zone names one table may track (rows plus dropped rows remembered against resurrection).
        #[arg(long = "limits.zones-per-level", env = "ASTROLABE_LIMITS_ZONES_PER_LEVEL", default_value = Limits::default().zones_per_level.to_string())]
        pub zones_per_level: Option<usize>,
        /// Attributes (or aggregate columns) of one received row.
        #[arg(long = "limits.attributes-per-row", env = "ASTROLABE_LIMITS_ATTRIBUTES_PER_ROW", default_value = Limits::default().attributes_per_row.to_string())]
        pub attributes_per_row: Option<usize>,
        /// Bytes of one string (value or attribute name) in a received row.
        #[arg(long = "limits.string-bytes", env = "ASTROLABE_LIMITS_STRING_BYTES", default_value = Limits::default().string_bytes.to_string())]
        pub string_bytes: Option<usize>,
        /// Items of one list (value, top-n items, sketch bins) in a received row.
        #[arg(long = "limits.list-length", env = "ASTROLABE_LIMITS_LIST_LENGTH", default_value = Limits::default().list_length.to_string())]
        pub list_length: Option<usize>,
        /// Overlay tasks (and, apart, reply assemblies) held at once; peers' asks beyond are refused.
        #[arg(long = "limits.pending-queries", env = "ASTROLABE_LIMITS_PENDING_QUERIES", default_value = Limits::default().pending_queries.to_string())]
        pub pending_queries: Option<usize>,
    }
}

settings! {
    /// `[collector]`.
    pub struct CollectorSettings in "collector." {
        /// Directory of *.prom files to read, like node_exporter's.
        #[arg(long = "collector.textfile.directory", env = "ASTROLABE_COLLECTOR_TEXTFILE_DIRECTORY")]
        pub textfile_directory: Option<PathBuf>,
        /// A local Prometheus endpoint to scrape, e.g. http://localhost:8080/metrics.
        #[arg(long = "collector.application.url", env = "ASTROLABE_COLLECTOR_APPLICATION_URL")]
        pub application_url: Option<String>,
        /// A metric of that endpoint to import (repeatable, or comma-separated); unlabeled ones become attributes.
        #[arg(long = "collector.application.import", env = "ASTROLABE_COLLECTOR_APPLICATION_IMPORT", value_delimiter = ',')]
        pub application_import: Option<Vec<String>>,
        /// A process group to report, name=regex on the process name or command line (repeatable; in the variable, separated by ;).
        #[arg(long = "collector.process.group", env = "ASTROLABE_COLLECTOR_PROCESS_GROUP")]
        pub process_groups: Option<Vec<String>> => env_list,
        /// Longest a collector may take before it is reported failed.
        #[arg(long = "collector.timeout", env = "ASTROLABE_COLLECTOR_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
        #[serde(default, deserialize_with = "duration")]
        pub timeout: Option<Duration>,
        /// How often the collectors sample (default: every gossip round); the
        /// `collect` command samples at once in between.
        #[arg(long = "collector.interval", env = "ASTROLABE_COLLECTOR_INTERVAL", value_parser = parse_duration)]
        #[serde(default, deserialize_with = "duration")]
        pub interval: Option<Duration>,
        /// Do not run the host collectors (cpu, memory, load, network, disks, filesystems, pressure, processes).
        // The flag says "no", the file's key `host = false`: the flag's
        // value, true when given, is the key's negation.
        #[arg(long = "no-collector.host", env = "ASTROLABE_NO_COLLECTOR_HOST", action = clap::ArgAction::SetTrue, value_parser = clap::builder::TypedValueParser::map(clap::builder::BoolValueParser::new(), |no: bool| !no))]
        pub host: Option<bool>,
    }
}

settings! {
    /// `[path]`: where the host collectors read the host, as node_exporter's
    /// `--path.*` flags (an agent in a container reads the host's at, say,
    /// `/host/proc`).
    pub struct PathSettings in "path." {
        /// Where the host's procfs is mounted, e.g. /host/proc for an agent in a container (node_exporter's flag).
        #[arg(long = "path.procfs", env = "ASTROLABE_PATH_PROCFS", default_value = HostPaths::default().procfs.into_os_string())]
        pub procfs: Option<PathBuf>,
        /// Where the host's sysfs is mounted, e.g. /host/sys (node_exporter's flag; no collector reads it yet).
        #[arg(long = "path.sysfs", env = "ASTROLABE_PATH_SYSFS", default_value = HostPaths::default().sysfs.into_os_string())]
        pub sysfs: Option<PathBuf>,
        /// Where the host's root filesystem is mounted, e.g. /host/root: mount point M is measured at this path joined with M and labelled M (node_exporter's flag).
        #[arg(long = "path.rootfs", env = "ASTROLABE_PATH_ROOTFS", default_value = HostPaths::default().rootfs.into_os_string())]
        pub rootfs: Option<PathBuf>,
    }
}

settings! {
    /// `[overlay]`: the actions the overlay may run here.
    pub struct OverlaySettings in "overlay." {
        /// An action the overlay may run here, name=program args (repeatable; in the variable, separated by ;),
        /// e.g. 'restart-app=systemctl restart app'; none runs unless configured.
        // In the file, actions are the `[actions]` table.
        #[arg(long = "overlay.action", env = "ASTROLABE_OVERLAY_ACTION")]
        #[serde(skip)]
        pub action: Option<Vec<String>> => env_list,
        /// Longest an action may run before it is killed and reported failed.
        #[arg(long = "overlay.action-timeout", env = "ASTROLABE_OVERLAY_ACTION_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
        #[serde(default, deserialize_with = "duration")]
        pub action_timeout: Option<Duration>,
    }
}

settings! {
    /// `[otlp]`: push to an OpenTelemetry endpoint (off without `endpoint`).
    pub struct OtlpSettings in "otlp." {
        /// OTLP endpoint to push metrics to, e.g. http://collector:4317 (off when unset).
        #[arg(long = "otlp.endpoint", env = "ASTROLABE_OTLP_ENDPOINT")]
        pub endpoint: Option<String>,
        /// OTLP protocol: grpc or http/protobuf.
        #[arg(long = "otlp.protocol", env = "ASTROLABE_OTLP_PROTOCOL", default_value = "grpc")]
        pub protocol: Option<String>,
        /// How often to push to the OTLP endpoint.
        #[arg(long = "otlp.interval", env = "ASTROLABE_OTLP_INTERVAL", default_value = "15s", value_parser = parse_duration)]
        #[serde(default, deserialize_with = "duration")]
        pub interval: Option<Duration>,
    }
}

settings! {
    /// `[security]`: operator keys whose signatures commands and aggregate
    /// certificates need.
    pub struct SecuritySettings in "security." {
        /// An operator's Ed25519 public key (base64) whose signatures on commands and aggregate certificates this agent accepts (repeatable). With none, commands run unsigned.
        #[arg(long = "security.trusted-key", env = "ASTROLABE_SECURITY_TRUSTED_KEY", value_delimiter = ',')]
        pub trusted_keys: Option<Vec<String>>,
        /// A signed command issued further than this from our clock is refused (and any nonce seen twice within it).
        #[arg(long = "security.signature-window", env = "ASTROLABE_SECURITY_SIGNATURE_WINDOW", default_value = "60s", value_parser = parse_duration)]
        #[serde(default, deserialize_with = "duration")]
        pub signature_window: Option<Duration>,
    }
}

settings! {
    /// `[log]`.
    pub struct LogSettings in "log." {
        /// Log format: text or json.
        #[arg(long = "log.format", env = "ASTROLABE_LOG_FORMAT", default_value = "text")]
        pub format: Option<String>,
    }
}

/// Separates the items of the lists declared `=> env_list` in their
/// variable: `ASTROLABE_AGGREGATE`, `ASTROLABE_ATTRIBUTE`,
/// `ASTROLABE_COLLECTOR_PROCESS_GROUP` and `ASTROLABE_OVERLAY_ACTION`.
pub const ENV_LIST_SEPARATOR: char = ';';

/// Settings that only the command line and the environment give: the
/// file cannot name itself, and its actions are the `[actions]` table.
pub const NOT_IN_THE_FILE: [&str; 2] = ["config_file", "overlay.action"];

/// `agent`'s settings alone, as a command (for the layers without `main`).
#[derive(Debug, Parser)]
#[command(name = "agent")]
struct AgentOnly {
    #[command(flatten)]
    settings: Settings,
}

/// `astrolabe agent`'s command line, with its flags, variables, defaults
/// and help: the declaration above, as clap sees it.
pub fn command() -> clap::Command {
    with_value_names(AgentOnly::command())
}

/// Names each setting's value in `--help` and clap's errors after its id
/// in capitals (`<GOSSIP_INTERVAL>`, not `<gossip.interval>`). `main`
/// applies it to `agent`.
pub fn with_value_names(command: clap::Command) -> clap::Command {
    command.mut_args(|arg| {
        let name = arg.get_id().as_str().replace('.', "_").to_uppercase();
        match arg.get_value_names() {
            Some(_) => arg.value_name(name),
            None => arg,
        }
    })
}

/// What the command line and the environment gave, and which of them.
#[derive(Debug, Clone)]
pub struct CommandLine {
    pub settings: Settings,
    /// Ids of the settings given by their `ASTROLABE_*` variable.
    from_env: BTreeSet<&'static str>,
}

impl CommandLine {
    /// The layer `matches` (of `agent`) holds, defaults left out.
    pub fn from_matches(matches: &ArgMatches) -> anyhow::Result<CommandLine> {
        let mut settings = Settings::from_arg_matches(matches).map_err(one_line)?;
        settings.forget_defaults(matches);
        let mut given = BTreeSet::new();
        settings.given(&mut given);
        let from_env: BTreeSet<&'static str> = given
            .into_iter()
            .filter(|id| matches.value_source(id) == Some(ValueSource::EnvVariable))
            .collect();
        settings.split_env_lists(&from_env);
        Ok(CommandLine { settings, from_env })
    }

    /// The environment alone, as `agent` without flags would see it.
    pub fn from_environment() -> anyhow::Result<CommandLine> {
        let matches = command()
            .try_get_matches_from(["agent"])
            .map_err(one_line)?;
        CommandLine::from_matches(&matches)
    }
}

/// Held by the tests that read `ASTROLABE_*` variables or set them.
#[cfg(test)]
pub(crate) static ENVIRONMENT: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// clap's first line, not its usage and hints.
fn one_line(e: clap::Error) -> anyhow::Error {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or("bad arguments");
    anyhow::anyhow!("{}", first.trim_start_matches("error: "))
}

/// The defaults, from the declaration (the environment left out).
pub fn defaults() -> anyhow::Result<Settings> {
    let matches = command()
        .mut_args(|a| a.env(None::<&str>))
        .try_get_matches_from(["agent"])
        .map_err(one_line)?;
    Settings::from_arg_matches(&matches).map_err(one_line)
}

/// The layers merged: flag > environment > file > default, and where
/// each setting came from.
#[derive(Debug, Clone)]
pub struct Config {
    pub settings: Settings,
    from_env: BTreeSet<&'static str>,
    /// The file and the ids of the settings taken from it.
    from_file: Option<(PathBuf, BTreeSet<&'static str>)>,
}

impl Config {
    /// Reads the file the command line or environment names, if any, and
    /// merges the layers.
    pub fn load(given: &CommandLine) -> anyhow::Result<Config> {
        let file = match &given.settings.config_file {
            Some(path) => Some((path.clone(), Settings::load(path)?)),
            None => None,
        };
        Config::merge(given, file)
    }

    /// The layers merged, `file` read from the path it names.
    pub fn merge(given: &CommandLine, file: Option<(PathBuf, Settings)>) -> anyhow::Result<Config> {
        let defaults = defaults()?;
        let (settings, from_file) = match file {
            Some((path, file)) => {
                let mut from_file = BTreeSet::new();
                file.given(&mut from_file);
                let mut from_cli = BTreeSet::new();
                given.settings.given(&mut from_cli);
                from_file.retain(|id| !from_cli.contains(id));
                (
                    given.settings.clone().or(file).or(defaults),
                    Some((path, from_file)),
                )
            }
            None => (given.settings.clone().or(defaults), None),
        };
        Ok(Config {
            settings,
            from_env: given.from_env.clone(),
            from_file,
        })
    }

    /// How an error names a setting: its variable if it came from the
    /// environment, the file and its key if from the file, else its flag.
    pub fn named(&self, id: &str) -> String {
        let command = command();
        let arg = command.get_arguments().find(|a| a.get_id() == id);
        if self.from_env.contains(id) {
            if let Some(variable) = arg.and_then(|a| a.get_env()) {
                return variable.to_string_lossy().into_owned();
            }
        }
        match (&self.from_file, arg.and_then(|a| a.get_long())) {
            (Some((path, ids)), _) if ids.contains(id) => {
                format!("{}: {}", path.display(), key_of(id))
            }
            (_, Some(long)) => format!("--{long}"),
            _ => key_of(id),
        }
    }
}

/// A setting's key as the file writes it: `zone`, `[attributes]`,
/// `[gossip] listen_address`.
pub fn key_of(id: &str) -> String {
    match id.split_once('.') {
        Some((section, key)) => format!("[{section}] {key}"),
        None if matches!(id, "attributes" | "actions") => format!("[{id}]"),
        None => id.to_string(),
    }
}

/// A file that cannot be read or is not a configuration: the file and
/// why, with its line or its key.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct ConfigError {
    pub path: String,
    pub reason: String,
}

impl Settings {
    /// The file's layer. An unknown key or a value of the wrong type is
    /// refused with its line and column; a value the setting cannot take
    /// with the setting's key.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Settings::parse(&text, path)
    }

    /// [`Settings::load`] of `text`, as if read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Settings, ConfigError> {
        let err = |reason: String| ConfigError {
            path: path.display().to_string(),
            reason,
        };
        let at_line = |e: &toml::de::Error| {
            let (line, col) = e
                .span()
                .map(|s| {
                    let before = &text[..s.start.min(text.len())];
                    let line = before.matches('\n').count() + 1;
                    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                    (line, col)
                })
                .unwrap_or((0, 0));
            let message = e.message().replace('\n', " ");
            format!("line {line}, column {col}: {message}")
        };
        let document = toml::Deserializer::parse(text).map_err(|e| err(at_line(&e)))?;
        serde_path_to_error::deserialize(document).map_err(|e| {
            let message = e.inner().message();
            // The value checks below say what follows the key.
            if message.starts_with([':', ' ']) {
                err(format!("{}{}", key_of(&e.path().to_string()), message))
            } else {
                err(at_line(e.inner()))
            }
        })
    }
}

// The file's values that the file writes as text. Each error is what
// follows the key in the message (`[gossip] interval: "soon" is not ...`).

fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    String::deserialize(d)
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let v = text(d)?;
    parse_duration(&v)
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!(": {e}")))
}

fn host_port<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let v = text(d)?;
    v.parse()
        .map(Some)
        .map_err(|_| serde::de::Error::custom(format!(" {v:?} is not host:port")))
}

fn ip_port<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let v = text(d)?;
    v.parse()
        .map(Some)
        .map_err(|_| serde::de::Error::custom(format!(" {v:?} is not ip:port")))
}

fn at_least_one<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    match usize::deserialize(d)? {
        0 => Err(serde::de::Error::custom(": must be at least 1")),
        n => Ok(Some(n)),
    }
}

/// `[attributes]`, name = value, as the flag's `name=value` items.
fn attribute_table<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    let table = BTreeMap::<String, toml::Value>::deserialize(d)?;
    Ok(Some(
        table
            .into_iter()
            .map(|(k, v)| {
                let text = match v {
                    toml::Value::String(s) => s,
                    other => other.to_string(),
                };
                format!("{k}={text}")
            })
            .collect(),
    ))
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
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ASTROLABE_` and the flag's name in capitals, `.` and `-` as `_`.
    fn variable_of(long: &str) -> String {
        format!("ASTROLABE_{}", long.replace(['.', '-'], "_").to_uppercase())
    }

    /// The ids of the settings `layer` holds.
    fn given(layer: &Settings) -> BTreeSet<&'static str> {
        let mut ids = BTreeSet::new();
        layer.given(&mut ids);
        ids
    }

    /// Walks the declaration as clap sees it: every setting is in
    /// `--help` with its text and its variable (named after the flag),
    /// the environment layer takes the variable, and the file layer takes
    /// the key its id names. A field added with no flag, variable or key
    /// fails here, and so would one whose key and id disagreed.
    #[test]
    fn every_setting_is_in_the_help_and_taken_by_the_environment_and_the_file() {
        let _env = ENVIRONMENT.lock().unwrap_or_else(|e| e.into_inner());
        let dir = std::env::temp_dir().join(format!("astrolabe-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("one.toml");
        let help = command().render_help().to_string();
        let mut settings = 0;
        for arg in command().get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" {
                continue;
            }
            settings += 1;
            let long = arg.get_long().unwrap_or_else(|| panic!("{id} has no flag"));
            let variable = arg
                .get_env()
                .and_then(|v| v.to_str())
                .unwrap_or_else(|| panic!("{id} has no variable"));
            assert_eq!(variable, variable_of(long), "{id}");
            let doc = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            assert!(!doc.is_empty(), "--{long} has no help text");
            assert!(
                help.contains(&format!("--{long}")),
                "--{long} not in\n{help}"
            );
            assert!(
                help.contains(doc.trim_end_matches('.')),
                "{doc:?} not in\n{help}"
            );
            assert!(help.contains(&format!("[env: {variable}")), "{variable}");

            // One of these is a value each setting takes.
            let taken_from_env = ["1s", "127.0.0.1:1", "1", "true", "x=1"].iter().any(|v| {
                std::env::set_var(variable, v);
                let layer = CommandLine::from_environment();
                std::env::remove_var(variable);
                layer.is_ok_and(|l| l.from_env.contains(id) && given(&l.settings).contains(id))
            });
            assert!(taken_from_env, "{variable} is not taken");

            if NOT_IN_THE_FILE.contains(&id) {
                continue;
            }
            let (header, key) = match id.split_once('.') {
                Some((section, key)) => (format!("[{section}]\n"), key),
                None => (String::new(), id),
            };
            let samples = [
                "\"1s\"",
                "\"127.0.0.1:1\"",
                "1",
                "true",
                "[\"x=1\"]",
                "{ x = 1 }",
            ];
            let taken_from_file = samples.iter().any(|v| {
                std::fs::write(&file, format!("{header}{key} = {v}\n")).unwrap();
                Settings::load(&file).is_ok_and(|s| given(&s).contains(id))
            });
            assert!(taken_from_file, "{} is not a key of the file", key_of(id));
        }
        assert!(settings > 40, "{settings} settings");
        // The one key without a flag.
        std::fs::write(&file, "[actions]\nx = [\"true\"]\n").unwrap();
        assert!(given(&Settings::load(&file).unwrap()).contains("actions"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn keys_are_named_as_the_file_writes_them() {
        assert_eq!(key_of("zone"), "zone");
        assert_eq!(key_of("attributes"), "[attributes]");
        assert_eq!(key_of("gossip.listen_address"), "[gossip] listen_address");
    }

    #[test]
    fn an_overlong_duration_is_refused_not_a_panic() {
        let e = parse_duration("99999999999999999999999h").unwrap_err();
        assert!(e.contains("too long"), "{e}");
    }
}
