//! `--web.config.file`: TLS and basic authentication in the format of
//! Prometheus' exporter-toolkit, so an agent is secured like every exporter
//! and `promtool check web-config` checks its file.
//!
//! The file is re-read every second; a change that parses replaces the
//! running one (new certificates, new users), one that does not is logged
//! and ignored. Turning TLS on or off needs a restart.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct WebConfigError {
    pub path: String,
    pub reason: String,
}

/// The file as exporter-toolkit defines it; unknown keys are refused as
/// the toolkit does.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfigFile {
    pub tls_server_config: Option<TlsServerConfig>,
    /// Accepted for compatibility (HTTP/2, headers); not applied.
    pub http_server_config: Option<serde_yaml::Value>,
    #[serde(default)]
    pub basic_auth_users: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsServerConfig {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub cert: Option<String>,
    pub key: Option<String>,
    pub client_ca_file: Option<PathBuf>,
    pub client_ca: Option<String>,
    pub client_auth_type: Option<String>,
    pub client_allowed_sans: Option<Vec<String>>,
    pub min_version: Option<String>,
    pub max_version: Option<String>,
    /// rustls picks its own safe suites and curves; these are accepted and ignored.
    pub cipher_suites: Option<Vec<String>>,
    pub curve_preferences: Option<Vec<String>>,
    pub prefer_server_cipher_suites: Option<bool>,
}

/// A checked configuration, ready to serve.
pub struct WebConfig {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// user -> bcrypt hash
    pub users: BTreeMap<String, String>,
    /// Files whose change means a reload.
    watched: Vec<PathBuf>,
}

impl std::fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebConfig")
            .field("tls", &self.tls.is_some())
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn pem_text(
    base: &Path,
    file: &Option<PathBuf>,
    inline: &Option<String>,
    what: &str,
    watched: &mut Vec<PathBuf>,
) -> Result<Option<(String, Vec<u8>)>, String> {
    match (file, inline) {
        (Some(_), Some(_)) => Err(format!("{what}_file and {what} are both set; use one")),
        (Some(f), None) => {
            let path = resolve(base, f);
            let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            watched.push(path.clone());
            Ok(Some((path.display().to_string(), bytes)))
        }
        (None, Some(text)) => Ok(Some((format!("inline {what}"), text.clone().into_bytes()))),
        (None, None) => Ok(None),
    }
}

fn certs(name: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{name}: not PEM certificates ({e})"))?;
    if certs.is_empty() {
        return Err(format!("{name}: no certificate in it"));
    }
    Ok(certs)
}

/// Refuses a certificate outside its validity period, with the dates.
fn check_validity(name: &str, cert: &CertificateDer<'_>) -> Result<(), String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| format!("{name}: unreadable certificate ({e})"))?;
    let validity = parsed.validity();
    let now = x509_parser::time::ASN1Time::now();
    if now > validity.not_after {
        return Err(format!(
            "{name}: the certificate expired on {}",
            validity.not_after
        ));
    }
    if now < validity.not_before {
        return Err(format!(
            "{name}: the certificate is not valid before {}",
            validity.not_before
        ));
    }
    Ok(())
}

fn version(v: &str) -> Result<&'static rustls::SupportedProtocolVersion, String> {
    match v {
        "TLS12" => Ok(&rustls::version::TLS12),
        "TLS13" => Ok(&rustls::version::TLS13),
        "TLS10" | "TLS11" => Err(format!(
            "{v} is not supported (insecure); use TLS12 or TLS13"
        )),
        other => Err(format!("unknown TLS version {other:?}; use TLS12 or TLS13")),
    }
}

fn tls_config(
    base: &Path,
    t: &TlsServerConfig,
    watched: &mut Vec<PathBuf>,
) -> Result<rustls::ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (cert_name, cert_pem) = pem_text(base, &t.cert_file, &t.cert, "cert", watched)?
        .ok_or("tls_server_config: cert_file is required")?;
    let (key_name, key_pem) = pem_text(base, &t.key_file, &t.key, "key", watched)?
        .ok_or("tls_server_config: key_file is required")?;
    let chain = certs(&cert_name, &cert_pem)?;
    check_validity(&cert_name, &chain[0])?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| format!("{key_name}: not a PEM private key ({e})"))?;
    let signing = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| format!("{key_name}: unusable private key ({e})"))?;
    rustls::sign::CertifiedKey::new(chain.clone(), signing)
        .keys_match()
        .map_err(|_| format!("{key_name} is not the private key of {cert_name}"))?;

    let min = version(t.min_version.as_deref().unwrap_or("TLS12"))?;
    let max = version(t.max_version.as_deref().unwrap_or("TLS13"))?;
    let versions: Vec<&'static rustls::SupportedProtocolVersion> =
        [&rustls::version::TLS12, &rustls::version::TLS13]
            .into_iter()
            .filter(|v| {
                let rank = |x: &rustls::SupportedProtocolVersion| {
                    x.version == rustls::ProtocolVersion::TLSv1_3
                };
                rank(v) >= rank(min) && rank(v) <= rank(max)
            })
            .collect();
    if versions.is_empty() {
        return Err("min_version is above max_version".into());
    }
    if t.client_allowed_sans
        .as_ref()
        .is_some_and(|s| !s.is_empty())
    {
        return Err("client_allowed_sans is not supported; use a client CA of its own".into());
    }
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| e.to_string())?;
    let ca = pem_text(base, &t.client_ca_file, &t.client_ca, "client_ca", watched)?;
    let auth = t.client_auth_type.as_deref().unwrap_or("NoClientCert");
    let roots = match &ca {
        Some((name, pem)) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs(name, pem)? {
                roots
                    .add(c)
                    .map_err(|e| format!("{name}: unusable CA certificate ({e})"))?;
            }
            Some(Arc::new(roots))
        }
        None => None,
    };
    let verifier = |roots: &Option<Arc<rustls::RootCertStore>>, optional: bool| {
        let roots = roots
            .clone()
            .ok_or_else(|| format!("client_auth_type {auth} needs client_ca_file"))?;
        let b =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
        let b = if optional {
            b.allow_unauthenticated()
        } else {
            b
        };
        b.build().map_err(|e| format!("client_ca_file: {e}"))
    };
    let builder = match auth {
        "NoClientCert" | "" => {
            if ca.is_some() {
                return Err("client_ca_file is set but client_auth_type is NoClientCert; set RequireAndVerifyClientCert or VerifyClientCertIfGiven".into());
            }
            builder.with_no_client_auth()
        }
        "RequireAndVerifyClientCert" => builder.with_client_cert_verifier(verifier(&roots, false)?),
        "VerifyClientCertIfGiven" => builder.with_client_cert_verifier(verifier(&roots, true)?),
        "RequestClientCert" | "RequireAnyClientCert" => {
            return Err(format!(
                "client_auth_type {auth} (unverified client certificates) is not supported; use RequireAndVerifyClientCert or VerifyClientCertIfGiven"
            ))
        }
        other => return Err(format!("unknown client_auth_type {other:?}")),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("{cert_name}: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

impl WebConfig {
    pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
        let err = |reason: String| WebConfigError {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        WebConfig::parse(&text, path.parent().unwrap_or(Path::new(".")))
            .map_err(err)
            .map(|mut c| {
                c.watched.push(path.to_path_buf());
                c
            })
    }

    /// Parses the YAML; relative file names are relative to `base`, the
    /// file's directory, as in exporter-toolkit.
    pub fn parse(text: &str, base: &Path) -> Result<WebConfig, String> {
        let file: WebConfigFile = if text.trim().is_empty() {
            WebConfigFile::default()
        } else {
            serde_yaml::from_str(text).map_err(|e| e.to_string().replace('\n', " "))?
        };
        let mut watched = Vec::new();
        let tls = file
            .tls_server_config
            .as_ref()
            .map(|t| tls_config(base, t, &mut watched))
            .transpose()?
            .map(Arc::new);
        for (user, hash) in &file.basic_auth_users {
            if user.contains(':') {
                return Err(format!("basic_auth_users: user {user:?} contains ':'"));
            }
            hash.parse::<bcrypt::HashParts>()
                .map_err(|_| format!("basic_auth_users: the password of {user:?} is not a bcrypt hash (htpasswd -nBC 10 {user})"))?;
        }
        Ok(WebConfig {
            tls,
            users: file.basic_auth_users,
            watched,
        })
    }
}

/// The configuration in force and what it has already verified.
pub struct WebState {
    path: PathBuf,
    current: RwLock<Arc<WebConfig>>,
    /// sha256(user, password, hash) of credentials bcrypt accepted: bcrypt
    /// costs ~50 ms on purpose, a scrape every few seconds should not.
    verified: Mutex<HashSet<[u8; 32]>>,
    /// Bounds the CPU that wrong passwords can cost at once.
    bcrypt_slots: tokio::sync::Semaphore,
    /// `--web.metrics-unauthenticated`: [`UNAUTHENTICATED_PATHS`] need no credentials.
    metrics_unauthenticated: bool,
}

/// What `--web.metrics-unauthenticated` opens: what a scraper and a health
/// probe need. Nothing that answers questions about the cluster or acts on
/// it (`/api/...`, the landing page) is ever opened. Matched exactly, so
/// `/metrics/x` or `/metrics?` tricks reach the router with auth applied.
pub const UNAUTHENTICATED_PATHS: [&str; 3] = super::limit::SCRAPE_PATHS;

impl WebState {
    pub fn current(&self) -> Arc<WebConfig> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn fingerprint(paths: &[PathBuf]) -> Vec<u8> {
        let mut h = Sha256::new();
        for p in paths {
            h.update(p.as_os_str().as_encoded_bytes());
            h.update(std::fs::read(p).unwrap_or_default());
        }
        h.finalize().to_vec()
    }
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Basic realm=\"astrolabe\"")],
        "Unauthorized\n",
    )
        .into_response()
}

async fn basic_auth(State(state): State<Arc<WebState>>, req: Request, next: Next) -> Response {
    let config = state.current();
    if config.users.is_empty() {
        return next.run(req).await;
    }
    if state.metrics_unauthenticated && UNAUTHENTICATED_PATHS.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let Some((user, password)) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| B64.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            s.split_once(':')
                .map(|(u, p)| (u.to_string(), p.to_string()))
        })
    else {
        return unauthorized();
    };
    let Some(hash) = config.users.get(&user).cloned() else {
        return unauthorized();
    };
    let key: [u8; 32] = Sha256::new()
        .chain_update(user.as_bytes())
        .chain_update([0])
        .chain_update(password.as_bytes())
        .chain_update([0])
        .chain_update(hash.as_bytes())
        .finalize()
        .into();
    let known = state
        .verified
        .lock()
        .map(|v| v.contains(&key))
        .unwrap_or(false);
    if !known {
        let Ok(_slot) = state.bcrypt_slots.acquire().await else {
            return unauthorized();
        };
        let ok =
            tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
                .await
                .unwrap_or(false);
        if !ok {
            return unauthorized();
        }
        if let Ok(mut v) = state.verified.lock() {
            if v.len() >= 1024 {
                v.clear();
            }
            v.insert(key);
        }
    }
    next.run(req).await
}

/// TLS connections, handshaken off the accept loop so a slow client cannot
/// hold up the others, fed to axum as a listener.
struct TlsListener {
    rx: mpsc::Receiver<(tokio_rustls::server::TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            // The accept loop is gone; serve nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// Most TLS handshakes in flight at once.
const MAX_HANDSHAKES: usize = 64;

fn tls_accept_loop(
    listener: tokio::net::TcpListener,
    state: Arc<WebState>,
    tx: mpsc::Sender<(tokio_rustls::server::TlsStream<TcpStream>, SocketAddr)>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let Some(tls) = state.current().tls.clone() else {
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let acceptor = tokio_rustls::TlsAcceptor::from(tls);
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        drop(slot);
                        let _ = tx.send((stream, peer)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake refused"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
}

fn watch(state: Arc<WebState>) {
    tokio::spawn(async move {
        let mut seen = WebState::fingerprint(&state.current().watched);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let now = WebState::fingerprint(&state.current().watched);
            if now == seen {
                continue;
            }
            seen = now;
            match WebConfig::load(&state.path) {
                Ok(fresh) if fresh.tls.is_some() != state.current().tls.is_some() => {
                    tracing::error!(path = %state.path.display(), "web config: turning TLS on or off needs a restart; keeping the old configuration");
                }
                Ok(fresh) => {
                    seen = WebState::fingerprint(&fresh.watched);
                    tracing::info!(path = %state.path.display(), tls = fresh.tls.is_some(), users = fresh.users.len(), "web config reloaded");
                    if let Ok(mut c) = state.current.write() {
                        *c = Arc::new(fresh);
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "web config refused; keeping the old one");
                }
            }
        }
    });
}

/// Serves `app` as the web config says: TLS if configured, basic auth on
/// every path if users are configured (but [`UNAUTHENTICATED_PATHS`] when
/// `metrics_unauthenticated`). `outer` wraps the authenticated app: the
/// request limit goes there, so that requests waiting for bcrypt count.
pub async fn serve(
    listen: SocketAddr,
    app: Router,
    config_path: &Path,
    metrics_unauthenticated: bool,
    outer: impl FnOnce(Router) -> Router,
    read_timeout: Duration,
    counters: Arc<crate::engine::LimitCounters>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), ServeError> {
    let config = WebConfig::load(config_path)?;
    let tls = config.tls.is_some();
    let state = Arc::new(WebState {
        path: config_path.to_path_buf(),
        current: RwLock::new(Arc::new(config)),
        verified: Mutex::new(HashSet::new()),
        bcrypt_slots: tokio::sync::Semaphore::new(2),
        metrics_unauthenticated,
    });
    let app = outer(app.layer(axum::middleware::from_fn_with_state(
        state.clone(),
        basic_auth,
    )));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: listen,
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: listen,
        source,
    })?;
    watch(state.clone());
    let handle = if tls {
        let (tx, rx) = mpsc::channel(MAX_HANDSHAKES);
        tls_accept_loop(listener, state, tx);
        tokio::spawn(async move {
            let l = TlsListener { rx, local: bound };
            super::serve_listener(l, app, read_timeout, counters).await
        })
    } else {
        tokio::spawn(super::serve_listener(listener, app, read_timeout, counters))
    };
    Ok((bound, handle))
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("--web.config.file {0}")]
    Config(#[from] WebConfigError),
    #[error("cannot listen for HTTP on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn examples() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/web-config")
    }

    #[test]
    fn every_shipped_example_loads() {
        let mut n = 0;
        for entry in std::fs::read_dir(examples()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yml") {
                let c = WebConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
                n += 1;
                for hash in c.users.values() {
                    // The examples' password, as their comments say.
                    assert!(bcrypt::verify("change-me", hash).unwrap());
                }
            }
        }
        assert!(n >= 4, "{n} examples");
    }

    #[test]
    fn bad_files_are_refused_with_a_reason() {
        let base = examples();
        let cases = [
            ("basic_auth_users:\n  u: plain\n", "not a bcrypt hash"),
            ("nope: 1\n", "unknown field"),
            ("tls_server_config:\n  key_file: example-server.key\n", "cert_file is required"),
            (
                "tls_server_config:\n  cert_file: example-server.crt\n  key_file: example-server.key\n  min_version: TLS10\n",
                "not supported",
            ),
            (
                "tls_server_config:\n  cert_file: example-server.crt\n  key_file: example-server.key\n  client_ca_file: example-client-ca.crt\n",
                "client_auth_type",
            ),
            (
                "tls_server_config:\n  cert_file: example-server.crt\n  key_file: example-server.key\n  client_auth_type: RequireAndVerifyClientCert\n",
                "needs client_ca_file",
            ),
            (
                "tls_server_config:\n  cert_file: missing.crt\n  key_file: example-server.key\n",
                "missing.crt",
            ),
        ];
        for (yaml, want) in cases {
            let e = WebConfig::parse(yaml, &base).unwrap_err();
            assert!(e.contains(want), "{yaml:?}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }
}
