//! `--web.config.file` against a running agent, checked with curl: basic
//! auth (401/401/200), TLS, mutual TLS without a client certificate
//! refused, a reload of the users, and clear start-up errors for expired
//! or mismatched certificate files. Certificates are made here (rcgen).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

struct Pki {
    dir: std::path::PathBuf,
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

impl Pki {
    /// A CA, a server certificate for 127.0.0.1 and a client certificate,
    /// plus an expired server certificate and a key of nobody.
    fn new(dir: &Path) -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(vec![]).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "test ca");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        write(dir, "ca.crt", &ca_cert.pem());

        let server_key = KeyPair::generate().unwrap();
        let server = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        write(
            dir,
            "server.crt",
            &server.signed_by(&server_key, &issuer).unwrap().pem(),
        );
        write(dir, "server.key", &server_key.serialize_pem());

        let mut expired = CertificateParams::new(vec!["127.0.0.1".into()]).unwrap();
        expired.not_before = rcgen::date_time_ymd(2020, 1, 1);
        expired.not_after = rcgen::date_time_ymd(2021, 1, 1);
        write(
            dir,
            "expired.crt",
            &expired.signed_by(&server_key, &issuer).unwrap().pem(),
        );
        write(
            dir,
            "other.key",
            &KeyPair::generate().unwrap().serialize_pem(),
        );

        let client_key = KeyPair::generate().unwrap();
        let mut client = CertificateParams::new(vec![]).unwrap();
        client
            .distinguished_name
            .push(DnType::CommonName, "prometheus");
        write(
            dir,
            "client.crt",
            &client.signed_by(&client_key, &issuer).unwrap().pem(),
        );
        write(dir, "client.key", &client_key.serialize_pem());
        Pki {
            dir: dir.to_path_buf(),
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_string()
    }
}

/// curl's status code for a request; "000" when no HTTP answer came.
fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
        ])
        .args(args)
        .output()
        .expect("curl is installed (.ci/run installs it)");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn wait_serving(args: &[&str]) -> bool {
    eventually(Duration::from_secs(20), || curl(args) != "000")
}

#[test]
fn basic_auth_and_tls_with_curl() {
    let dir = temp_dir("web-tls");
    let pki = Pki::new(&dir);
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let config = write(
        &dir,
        "web.yml",
        &format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\nbasic_auth_users:\n  prometheus: {hash}\n"
        ),
    );
    let gossip_key = astrolabe::transport::keyring::Key::generate(&mut rand::rng()).to_base64();
    let agent = Agent::builder("/w/h1")
        .dir(&dir.join("tf"))
        .args([
            "--no-collector.host",
            "--web.config.file",
            &config,
            "--gossip.key",
            &gossip_key,
        ])
        .start();
    let url = format!("https://127.0.0.1:{}/metrics", agent.web);
    let ca = pki.path("ca.crt");
    assert!(
        wait_serving(&["--cacert", &ca, &url]),
        "agent never served HTTPS"
    );
    assert_eq!(curl(&["--cacert", &ca, &url]), "401", "no credentials");
    assert_eq!(
        curl(&["--cacert", &ca, "-u", "prometheus:wrong", &url]),
        "401"
    );
    assert_eq!(curl(&["--cacert", &ca, "-u", "nobody:s3cret", &url]), "401");
    assert_eq!(
        curl(&["--cacert", &ca, "-u", "prometheus:s3cret", &url]),
        "200"
    );
    // Every path is protected, the key API too.
    assert_eq!(
        curl(&[
            "--cacert",
            &ca,
            &format!("https://127.0.0.1:{}/api/v1/zones", agent.web)
        ]),
        "401"
    );
    // `astrolabe keys` reaches a secured agent with the CA and the user.
    let keys = |password: &str| {
        Command::new(BIN)
            .args([
                "keys",
                "install",
                &astrolabe::transport::keyring::Key::generate(&mut rand::rng()).to_base64(),
            ])
            .args([
                "--server",
                &format!("https://127.0.0.1:{}", agent.web),
                "--tls.ca-file",
                &ca,
            ])
            .args(["--web.username", "prometheus"])
            .env("ASTROLABE_WEB_PASSWORD", password)
            .env("ASTROLABE_GOSSIP_KEY", &gossip_key)
            .output()
            .unwrap()
    };
    let ok = keys("s3cret");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let refused = keys("wrong");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stdout).contains("401"));
    // Plain HTTP on the TLS port gets nothing.
    assert_ne!(
        curl(&[&format!("http://127.0.0.1:{}/metrics", agent.web)]),
        "200"
    );

    // A new password in the file is in force within a few seconds.
    let hash2 = bcrypt::hash("n3w", 4).unwrap();
    write(
        &dir,
        "web.yml",
        &format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\nbasic_auth_users:\n  prometheus: {hash2}\n"
        ),
    );
    let reloaded = eventually(Duration::from_secs(20), || {
        curl(&["--cacert", &ca, "-u", "prometheus:n3w", &url]) == "200"
    });
    assert!(reloaded, "the changed web config was not re-read");
    assert_eq!(
        curl(&["--cacert", &ca, "-u", "prometheus:s3cret", &url]),
        "401"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn mutual_tls_refuses_a_client_without_certificate() {
    let dir = temp_dir("web-mtls");
    let pki = Pki::new(&dir);
    let config = write(
        &dir,
        "web.yml",
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_ca_file: ca.crt\n  client_auth_type: RequireAndVerifyClientCert\n",
    );
    let agent = Agent::builder("/w/h2")
        .dir(&dir.join("tf"))
        .args(["--no-collector.host", "--web.config.file", &config])
        .start();
    let url = format!("https://127.0.0.1:{}/metrics", agent.web);
    let (ca, cert, key) = (
        pki.path("ca.crt"),
        pki.path("client.crt"),
        pki.path("client.key"),
    );
    let with_cert = ["--cacert", &ca, "--cert", &cert, "--key", &key, &url];
    assert!(
        eventually(Duration::from_secs(20), || curl(&with_cert) == "200"),
        "a client with a certificate of the CA was not served"
    );
    assert_eq!(
        curl(&["--cacert", &ca, &url]),
        "000",
        "served without a client certificate"
    );
    // A certificate the CA did not sign is refused too.
    let self_signed_key = KeyPair::generate().unwrap();
    let stranger = CertificateParams::new(vec![])
        .unwrap()
        .self_signed(&self_signed_key)
        .unwrap();
    let (sc, sk) = (
        write(&dir, "stranger.crt", &stranger.pem()),
        write(&dir, "stranger.key", &self_signed_key.serialize_pem()),
    );
    assert_eq!(
        curl(&["--cacert", &ca, "--cert", &sc, "--key", &sk, &url]),
        "000"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Runs an agent that must refuse to start; returns its stderr.
fn start_error(config: &str) -> String {
    let mut agent = Agent::builder("/w/bad")
        .args(["--no-collector.host", "--web.config.file", config])
        .env("ASTROLABE_LOG", "error")
        .start();
    let ok = agent
        .exit_status(Duration::from_secs(30))
        .expect("the agent started with a bad web config");
    assert!(!ok);
    agent.log()
}

#[test]
fn expired_or_mismatched_certificates_stop_start_up_with_one_line() {
    let dir = temp_dir("web-bad");
    let _pki = Pki::new(&dir);
    let expired = write(
        &dir,
        "expired.yml",
        "tls_server_config:\n  cert_file: expired.crt\n  key_file: server.key\n",
    );
    let err = start_error(&expired);
    assert!(
        err.contains("expired.crt: the certificate expired on"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let mismatched = write(
        &dir,
        "mismatch.yml",
        "tls_server_config:\n  cert_file: server.crt\n  key_file: other.key\n",
    );
    let err = start_error(&mismatched);
    assert!(err.contains("other.key is not the private key of"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn promtool_accepts_every_shipped_web_config() {
    if !require(
        "promtool_accepts_every_shipped_web_config",
        "promtool (Debian package prometheus)",
        command_works("promtool", &["--version"]),
    ) {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/web-config");
    let mut checked = 0;
    for entry in std::fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yml") {
            let out = Command::new("promtool")
                .args(["check", "web-config"])
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    assert!(checked >= 4);
}

/// `--web.metrics-unauthenticated` (and `[web] metrics_unauthenticated` in
/// the TOML file) opens `/metrics` and the health checks to a scraper
/// without credentials; every API keeps answering 401 without them. An
/// agent without the option keeps `/metrics` closed.
#[test]
fn metrics_unauthenticated_opens_only_metrics_and_health() {
    let dir = temp_dir("web-open-metrics");
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let web = write(
        &dir,
        "web.yml",
        &format!("basic_auth_users:\n  prometheus: {hash}\n"),
    );
    let toml = write(
        &dir,
        "agent.toml",
        "[web]\nmetrics_unauthenticated = true\n",
    );
    let gossip_key = astrolabe::transport::keyring::Key::generate(&mut rand::rng()).to_base64();
    let common = [
        "--no-collector.host",
        "--web.config.file",
        &web,
        "--gossip.key",
        &gossip_key,
    ];
    let by_flag = Agent::builder("/w/open1")
        .dir(&dir.join("tf1"))
        .args([&common[..], &["--web.metrics-unauthenticated"]].concat())
        .start();
    let by_file = Agent::builder("/w/open2")
        .dir(&dir.join("tf2"))
        .args([&common[..], &["--config.file", &toml]].concat())
        .start();
    let closed = Agent::builder("/w/closed")
        .dir(&dir.join("tf3"))
        .args(common)
        .start();
    // The environment variable, like the others with one more variable.
    let by_env = Agent::builder("/w/open3")
        .dir(&dir.join("tf4"))
        .args(common)
        .env("ASTROLABE_WEB_METRICS_UNAUTHENTICATED", "true")
        .start();
    for agent in [&by_flag, &by_file, &by_env] {
        let base = agent.url();
        assert!(
            wait_serving(&[&format!("{base}/metrics")]),
            "{} never served",
            agent.zone
        );
        for open in ["/metrics", "/-/healthy"] {
            assert_eq!(curl(&[&format!("{base}{open}")]), "200", "{open}");
        }
        // Ready or not (a lone agent hears no peer), it answers, not 401.
        assert_ne!(curl(&[&format!("{base}/-/ready")]), "401");
        for (method, api) in [
            ("POST", "/api/v1/query"),
            ("POST", "/api/v1/command"),
            ("GET", "/api/v1/keys"),
            ("POST", "/api/v1/keys"),
            ("GET", "/api/v1/zones"),
            ("GET", "/"),
            ("GET", "/metrics/"),
        ] {
            let url = format!("{base}{api}");
            let args = [
                "-X",
                method,
                "-H",
                "content-type: application/json",
                "-d",
                "{}",
                &url,
            ];
            let args = if method == "GET" {
                &args[6..]
            } else {
                &args[..]
            };
            assert_eq!(curl(args), "401", "{method} {api} without credentials");
        }
        // The credentials still open the APIs.
        assert_eq!(
            curl(&["-u", "prometheus:s3cret", &format!("{base}/api/v1/keys")]),
            "200"
        );
    }
    let url = format!("http://127.0.0.1:{}/metrics", closed.web);
    assert!(wait_serving(&[&url]), "the control agent never served");
    assert_eq!(curl(&[&url]), "401", "/metrics open without the option");
    assert_eq!(curl(&["-u", "prometheus:s3cret", &url]), "200");
    let _ = std::fs::remove_dir_all(dir);
}

/// With basic auth, the request limit (`--web.max-requests`) is outside
/// authentication: an authenticated request in flight holds the one slot,
/// and a request without credentials is shed with 503 before bcrypt or a
/// 401; once the slot is free the usual 401 and 200 come back.
#[test]
fn the_request_limit_sheds_before_authentication() {
    use std::io::Write;
    let dir = temp_dir("web-limit");
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let web = write(
        &dir,
        "web.yml",
        &format!("basic_auth_users:\n  prometheus: {hash}\n"),
    );
    let agent = Agent::builder("/w/limit")
        .dir(&dir.join("tf"))
        .args([
            "--no-collector.host",
            "--web.config.file",
            &web,
            "--web.max-requests",
            "1",
        ])
        .start();
    let url = format!("http://127.0.0.1:{}/metrics", agent.web);
    assert!(wait_serving(&[&url]), "agent never served");
    // Authenticated, and waiting for a body that never comes.
    let mut held = std::net::TcpStream::connect(("127.0.0.1", agent.web)).unwrap();
    held.write_all(
        b"POST /api/v1/query HTTP/1.1\r\nHost: x\r\nAuthorization: Basic cHJvbWV0aGV1czpzM2NyZXQ=\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{",
    )
    .unwrap();
    // The API's budget is full: an API request without credentials is
    // shed (503) before authentication; scrapes have a budget of their
    // own (`--web.max-scrapes`) and still answer.
    let api = format!("http://127.0.0.1:{}/api/v1/zones", agent.web);
    assert!(
        eventually(Duration::from_secs(10), || curl(&[&api]) == "503"),
        "a request without credentials was not shed while the slot was held"
    );
    assert_eq!(curl(&["-u", "prometheus:s3cret", &url]), "200");
    drop(held);
    assert!(
        eventually(Duration::from_secs(10), || curl(&[&api]) == "401"),
        "authentication did not come back once the slot was free"
    );
    assert_eq!(curl(&["-u", "prometheus:s3cret", &api]), "200");
    let _ = std::fs::remove_dir_all(dir);
}
