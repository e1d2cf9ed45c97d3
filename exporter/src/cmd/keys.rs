//! `astrolabe keys`: generate gossip keys and rotate them across a running
//! cluster.
//!
//! Rotation is Serf's three steps, each applied to every agent before the
//! next is started: `install NEW` (every agent opens NEW, still seals with
//! OLD), `use NEW` (agents seal with NEW; everyone opens it already),
//! `remove OLD` (nobody seals with it any more). No round is lost because
//! at every moment every agent opens what every other agent seals.
//!
//! Each command is sealed with a key of the cluster (`--gossip.key` or
//! `--gossip.keyring-file`, as for the agent) and posted to
//! `/api/v1/keys` of every `--server`. Agents started with a keyring file
//! write the change to it, so a restart keeps the rotated keyring.

use crate::wall_clock::wall_ms;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use crate::http::keys::{KeysJson, NO_KEYRING};
use crate::transport::keyring::{load_keyring, Key, KeyCommand, KeyOp, Keyring};

#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub command: KeysCommand,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Print a new random key (base64 of 32 bytes).
    Generate,
    /// List each agent's key fingerprints, the sealing one first.
    List(Servers),
    /// Make every agent open datagrams sealed with KEY (step 1 of a rotation).
    Install(Change),
    /// Make every agent seal with KEY, installed before (step 2).
    Use(Change),
    /// Make every agent forget KEY, no longer used by anyone (step 3).
    Remove(Change),
}

#[derive(Debug, Clone, Args)]
pub struct Servers {
    /// An agent's HTTP address, e.g. http://10.0.0.7:9464 (repeatable, or comma-separated).
    #[arg(
        long = "server",
        env = "ASTROLABE_SERVERS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:9464"
    )]
    pub servers: Vec<String>,
    /// Seconds to wait for each agent.
    #[arg(long, default_value = "5")]
    pub timeout: u64,
    /// CA certificate (PEM) that signed the agents' HTTPS certificates.
    #[arg(long = "tls.ca-file", env = "ASTROLABE_TLS_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for agents that require one (mTLS).
    #[arg(
        long = "tls.cert-file",
        env = "ASTROLABE_TLS_CERT_FILE",
        requires = "key_file"
    )]
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(
        long = "tls.key-file",
        env = "ASTROLABE_TLS_KEY_FILE",
        requires = "cert_file"
    )]
    pub key_file: Option<PathBuf>,
    /// Basic auth user of the agents' web config.
    #[arg(long = "web.username", env = "ASTROLABE_WEB_USERNAME")]
    pub username: Option<String>,
    /// Its password (prefer the environment variable).
    #[arg(
        long = "web.password",
        env = "ASTROLABE_WEB_PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<String>,
}

impl Servers {
    fn agent(&self) -> anyhow::Result<ureq::Agent> {
        use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};
        let read =
            |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
        let mut tls = TlsConfig::builder();
        if let Some(ca) = &self.ca_file {
            let cert = Certificate::from_pem(&read(ca)?)
                .with_context(|| format!("{}: not a PEM certificate", ca.display()))?;
            tls = tls.root_certs(RootCerts::new_with_certs(&[cert]));
        }
        if let (Some(c), Some(k)) = (&self.cert_file, &self.key_file) {
            let cert = Certificate::from_pem(&read(c)?)
                .with_context(|| format!("{}: not a PEM certificate", c.display()))?;
            let key = PrivateKey::from_pem(&read(k)?)
                .with_context(|| format!("{}: not a PEM private key", k.display()))?;
            tls = tls.client_cert(Some(ClientCert::new_with_certs(&[cert], key)));
        }
        Ok(ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(self.timeout)))
            .http_status_as_error(false)
            .tls_config(tls.build())
            .build()
            .into())
    }

    /// The Authorization header, if a user is given.
    fn authorization(&self) -> Option<String> {
        use base64::Engine as _;
        let user = self.username.as_ref()?;
        let pass = self.password.clone().unwrap_or_default();
        Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
        ))
    }
}

#[derive(Debug, Clone, Args)]
pub struct Change {
    /// The key to install, use or remove (base64).
    pub key: String,
    #[command(flatten)]
    pub servers: Servers,
    /// A key the agents hold now, to seal the command with.
    #[arg(
        long = "gossip.key",
        env = "ASTROLABE_GOSSIP_KEY",
        hide_env_values = true
    )]
    pub gossip_key: Option<String>,
    /// A keyring file whose first key the agents hold now.
    #[arg(long = "gossip.keyring-file", env = "ASTROLABE_GOSSIP_KEYRING_FILE")]
    pub gossip_keyring_file: Option<PathBuf>,
}

fn url(server: &str) -> String {
    let base = if server.contains("://") {
        server.to_string()
    } else {
        format!("http://{server}")
    };
    format!("{}/api/v1/keys", base.trim_end_matches('/'))
}

/// Reads an answer body, bounded so a wrong server cannot flood us.
fn read(resp: ureq::http::Response<ureq::Body>) -> Result<(u16, String), ureq::Error> {
    let status = resp.status().as_u16();
    let text = resp
        .into_body()
        .with_config()
        .limit(1 << 20)
        .read_to_string()?;
    Ok((status, text))
}

/// A 404 from `/api/v1/keys`: the agent runs without a keyring.
fn no_keyring(status: u16) -> bool {
    status == 404
}

fn describe(text: &str) -> String {
    match serde_json::from_str::<KeysJson>(text) {
        Ok(k) => format!("keys {} (sealing with {})", k.keys.join(", "), k.primary),
        Err(_) => text.trim().to_string(),
    }
}

pub fn run(args: KeysArgs) -> anyhow::Result<()> {
    match args.command {
        KeysCommand::Generate => {
            println!("{}", Key::generate(&mut rand::rng()).to_base64());
            Ok(())
        }
        KeysCommand::List(s) => {
            let http = s.agent()?;
            let (mut failed, mut keyless) = (0, 0);
            for server in &s.servers {
                let mut req = http.get(&url(server));
                if let Some(a) = s.authorization() {
                    req = req.header("authorization", a);
                }
                match req.call().and_then(read) {
                    Ok((200, text)) => println!("{server}: {}", describe(&text)),
                    Ok((status, _)) if no_keyring(status) => {
                        keyless += 1;
                        println!("{server}: {NO_KEYRING}");
                    }
                    Ok((status, text)) => {
                        failed += 1;
                        println!("{server}: HTTP {status}: {}", text.trim());
                    }
                    Err(e) => {
                        failed += 1;
                        println!("{server}: {e}");
                    }
                }
            }
            let total = s.servers.len();
            match (failed, keyless) {
                (0, 0) => {}
                (0, k) => bail!("{k} of {total} agents have no gossip keyring"),
                (f, 0) => bail!("{f} of {total} agents did not answer"),
                (f, k) => {
                    bail!("{f} of {total} agents did not answer and {k} have no gossip keyring")
                }
            }
            Ok(())
        }
        KeysCommand::Install(c) => change(KeyOp::Install, c),
        KeysCommand::Use(c) => change(KeyOp::Use, c),
        KeysCommand::Remove(c) => change(KeyOp::Remove, c),
    }
}

fn change(op: KeyOp, c: Change) -> anyhow::Result<()> {
    let key = Key::parse(&c.key).context("KEY")?;
    let ring: Keyring = load_keyring(c.gossip_key.as_deref(), c.gossip_keyring_file.as_deref())
        .context("the key to seal the command with")?
        .context("give a key the agents hold now: --gossip.key, --gossip.keyring-file or ASTROLABE_GOSSIP_KEY")?;
    let body = serde_json::to_vec(&KeyCommand {
        op,
        key: key.to_base64(),
    })?;
    let http = c.servers.agent()?;
    let mut failed = Vec::new();
    for server in &c.servers.servers {
        // Sealed per agent: each seal is accepted once (replay protection).
        let sealed = ring.seal(wall_ms(), rand::random(), &body);
        let mut req = http
            .post(&url(server))
            .header("content-type", "application/octet-stream");
        if let Some(a) = c.servers.authorization() {
            req = req.header("authorization", a);
        }
        match req.send(&sealed[..]).and_then(read) {
            Ok((200, text)) => println!("{server}: ok, {}", describe(&text)),
            Ok((status, _)) if no_keyring(status) => {
                println!("{server}: refused, {NO_KEYRING}");
                failed.push(server.clone());
            }
            Ok((status, text)) => {
                println!("{server}: refused, HTTP {status}: {}", text.trim());
                failed.push(server.clone());
            }
            Err(e) => {
                println!("{server}: {e}");
                failed.push(server.clone());
            }
        }
    }
    if !failed.is_empty() {
        bail!(
            "{op:?} {} failed on {} of {} agents ({}); fix them and run it again before the next step",
            key.fingerprint(),
            failed.len(),
            c.servers.servers.len(),
            failed.join(", ")
        );
    }
    Ok(())
}
