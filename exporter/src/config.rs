//! The configuration file (TOML) of `astrolabe agent`.
//!
//! Precedence: flag > environment (`ASTROLABE_*`) > file > default. Flags
//! and the environment are clap's; a value the command line left at its
//! default is taken from the file when the file sets it. Unknown keys are
//! refused with the file, line and the keys that exist.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub zone: Option<String>,
    pub agent_id: Option<u64>,
    #[serde(default)]
    pub gossip: GossipSection,
    #[serde(default)]
    pub web: WebSection,
    #[serde(default)]
    pub collector: CollectorSection,
    #[serde(default)]
    pub path: PathSection,
    #[serde(default)]
    pub aggregates: Vec<String>,
    #[serde(default)]
    pub attributes: BTreeMap<String, toml::Value>,
    #[serde(default)]
    pub log: LogSection,
    #[serde(default)]
    pub otlp: OtlpSection,
    /// Actions the overlay may run: name = ["program", "arg", ...].
    #[serde(default)]
    pub actions: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub security: SecuritySection,
    #[serde(default)]
    pub limits: LimitsSection,
    #[serde(default)]
    pub overlay: OverlaySection,
}

/// `[overlay]`: how the actions of `[actions]` run.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverlaySection {
    /// Longest an action may run before it is killed (`--overlay.action-timeout`).
    pub action_timeout: Option<String>,
}

/// `[security]`: operator keys whose signatures commands and aggregate
/// certificates need.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecuritySection {
    /// Ed25519 public keys, base64 (`astrolabe operator-key generate`).
    #[serde(default)]
    pub trusted_keys: Vec<String>,
    pub signature_window: Option<String>,
}

/// `[limits]`: what a peer can make this agent hold (`engine::limits`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    pub rows_per_table: Option<usize>,
    pub zones_per_level: Option<usize>,
    pub attributes_per_row: Option<usize>,
    pub string_bytes: Option<usize>,
    pub list_length: Option<usize>,
    pub pending_queries: Option<usize>,
}

/// `[otlp]`: push to an OpenTelemetry endpoint (off without `endpoint`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpSection {
    pub endpoint: Option<String>,
    pub protocol: Option<String>,
    pub interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GossipSection {
    pub listen_address: Option<String>,
    pub advertise_address: Option<String>,
    #[serde(default)]
    pub seeds: Vec<String>,
    pub interval: Option<String>,
    /// Base64 of 32 bytes; the keyring file wins when both are set.
    pub key: Option<String>,
    pub keyring_file: Option<PathBuf>,
    pub replay_window: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSection {
    pub listen_address: Option<String>,
    /// exporter-toolkit web configuration (TLS, basic auth).
    pub config_file: Option<PathBuf>,
    /// `/metrics`, `/-/healthy` and `/-/ready` need no basic auth.
    pub metrics_unauthenticated: Option<bool>,
    /// HTTP requests (other than scrapes) served at once; more get 503.
    pub max_requests: Option<usize>,
    /// Scrapes and health checks served at once, apart; more get 503.
    pub max_scrapes: Option<usize>,
    /// Longest a request's headers, and apart its body, may take ("10s").
    pub read_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorSection {
    pub textfile_directory: Option<PathBuf>,
    pub timeout: Option<String>,
    pub interval: Option<String>,
    pub host: Option<bool>,
    pub application_url: Option<String>,
    #[serde(default)]
    pub application_import: Vec<String>,
    /// `name=regex` process groups (`--collector.process.group`).
    #[serde(default)]
    pub process_groups: Vec<String>,
}

/// `[path]`: where the host collectors read the host, as node_exporter's
/// `--path.*` flags (an agent in a container reads the host's at, say,
/// `/host/proc`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathSection {
    pub procfs: Option<PathBuf>,
    pub sysfs: Option<PathBuf>,
    pub rootfs: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    pub format: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct ConfigError {
    pub path: String,
    pub reason: String,
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let err = |reason: String| ConfigError {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        toml::from_str(&text).map_err(|e: toml::de::Error| {
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
            err(format!("line {line}, column {col}: {message}"))
        })
    }
}
