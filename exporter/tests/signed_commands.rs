//! Signed commands over real agent processes on loopback: with trusted
//! operator keys configured, only commands signed by one of them run;
//! unsigned, wrongly signed, tampered and replayed ones are refused,
//! answered as "refused" and counted; and a process holding the cluster
//! gossip key, speaking the overlay protocol directly, cannot make an
//! agent run an action.

mod common;

use std::net::UdpSocket;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use astrolabe::overlay::{Outcome, OverlayMessage, Request};
use astrolabe::security::command::seal_command;
use astrolabe::security::OperatorKey;
use astrolabe::transport::keyring::{GossipSecurity, Key, Keyring};
use astrolabe::zone::ZonePath;
use base64::Engine as _;
use common::*;
use serde_json::{json, Value};

fn refusals(agent: &Agent, reason: &str) -> f64 {
    signature_refusals(agent, "command", reason)
}

fn counts(v: &Value) -> (Value, Value, Value) {
    (
        v["ok"].clone(),
        v["refused"].clone(),
        v["not_configured"].clone(),
    )
}

/// `astrolabe command --key KEY` run against `server`: its JSON answer.
/// It exits 0 exactly when every host that answered ran the command.
fn command_via_cli(server: &str, zone: &str, key: &Path, command: &str) -> Value {
    let key = key.to_str().unwrap();
    let args = [
        "command", "--server", server, "--zone", zone, "--json", "--key", key, command,
    ];
    let ran = after_catch_up(|| run_cli(&args, &[]), |r| r.stderr.clone());
    let v: Value = serde_json::from_str(&ran.stdout).unwrap();
    let not_run = ["failed", "refused", "not_configured"]
        .iter()
        .map(|k| v[k].as_u64().unwrap_or(0))
        .sum::<u64>();
    assert_eq!(
        ran.ok,
        not_run == 0 && v["ok"].as_u64() > Some(0),
        "{v} {}",
        ran.stderr
    );
    v
}

/// A signed command body as `astrolabe command --key` sends it.
fn signed_body(key: &OperatorKey, zone: &str, command: &str, args: &[String], nonce: u64) -> Value {
    let seal = seal_command(key, zone, command, args, wall_ms(), nonce);
    let b64 = base64::engine::general_purpose::STANDARD;
    json!({
        "zone": zone, "command": command, "args": args, "timeout_ms": 5000,
        "issued_ms": seal.issued_ms, "nonce": seal.nonce,
        "key": b64.encode(&seal.key), "signature": b64.encode(&seal.signature),
    })
}

#[test]
fn only_commands_signed_by_a_trusted_operator_key_run() {
    let dir = temp_dir("signed-commands");
    let good_path = dir.join("operator.key");
    let good_public = generate_operator_key(&good_path);
    let wrong_path = dir.join("stranger.key");
    let _wrong_public = generate_operator_key(&wrong_path);
    let good = astrolabe::security::key_file::load(&good_path).unwrap();
    let gossip_key = Key::generate(&mut rand::rng()).to_base64();

    // A bad trusted key stops start-up with one line naming it.
    let out = run_cli(
        &[
            "agent",
            "--zone",
            "/x/y",
            "--security.trusted-key",
            "not-a-key",
        ],
        &[],
    );
    assert!(!out.ok);
    let err = out.stderr;
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("--security.trusted-key") && err.contains("not-a-key"),
        "{err}"
    );

    let zones = ["/eu/a/h0", "/eu/a/h1", "/eu/b/h2", "/us/c/h3"];
    let (base, public) = (dir.clone(), good_public.clone());
    let agents = Cluster::builder("signed-commands-agents")
        .zones(zones)
        .args(["--gossip.key", &gossip_key])
        .each(move |i, agent| {
            let d = base.join(format!("a{i}"));
            std::fs::create_dir_all(&d).unwrap();
            let action = format!("touch-it=touch {}", d.join("touched").display());
            let config = d.join("agent.toml");
            // One agent takes its trusted key from the file, the rest from the flag.
            std::fs::write(
                &config,
                format!("[security]\ntrusted_keys = [\"{public}\"]\n"),
            )
            .unwrap();
            let agent = agent.dir(&d).args(["--overlay.action", action.as_str()]);
            if i == 3 {
                agent.args(["--config.file", config.to_str().unwrap()])
            } else {
                agent.args(["--security.trusted-key", public.as_str()])
            }
        })
        .spawn();
    let converged = roots_count(&agents, 4.0, Duration::from_secs(60));
    assert!(converged, "the cluster did not converge");
    let web = agents[0].web;
    let touched = |i: usize| dir.join(format!("a{i}")).join("touched").exists();
    for a in &agents {
        assert_eq!(refusals(a, "unsigned"), 0.0);
    }

    // Unsigned: refused everywhere, nothing runs, each agent counts one.
    let (status, v) = http_post_json_value(
        web,
        "/api/v1/command",
        &json!({"zone": "/", "command": "touch-it", "timeout_ms": 5000}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(counts(&v), (json!(0), json!(4), json!(0)), "{v}");
    assert!(v["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|o| o["status"] == json!("refused")));
    assert!((0..4).all(|i| !touched(i)));
    for a in &agents {
        assert_eq!(refusals(a, "unsigned"), 1.0, "{}", a.zone);
    }

    // Signed by a key no agent trusts, through the CLI: refused.
    let server = format!("http://127.0.0.1:{web}");
    let v = command_via_cli(&server, "/", &wrong_path, "touch-it");
    assert_eq!(counts(&v), (json!(0), json!(4), json!(0)), "{v}");
    assert!((0..4).all(|i| !touched(i)));
    for a in &agents {
        assert_eq!(refusals(a, "untrusted-key"), 1.0, "{}", a.zone);
    }

    // Signed by the trusted key, for /eu: runs on the three hosts of /eu only.
    let v = command_via_cli(&server, "/eu", &good_path, "touch-it");
    assert_eq!(counts(&v), (json!(3), json!(0), json!(0)), "{v}");
    assert_eq!(
        (0..4).map(touched).collect::<Vec<_>>(),
        [true, true, true, false]
    );

    // The same signed body twice: the second is a replay.
    let body = signed_body(&good, "/us", "touch-it", &[], 7);
    let (_, v) = http_post_json_value(web, "/api/v1/command", &body);
    assert_eq!(counts(&v), (json!(1), json!(0), json!(0)), "{v}");
    assert!(touched(3));
    let (_, v) = http_post_json_value(web, "/api/v1/command", &body);
    assert_eq!(counts(&v), (json!(0), json!(1), json!(0)), "{v}");
    assert_eq!(refusals(&agents[3], "replayed"), 1.0);

    // A signed body whose arguments were changed on the way.
    let mut tampered = signed_body(&good, "/", "collect", &[], 8);
    tampered["command"] = json!("touch-it");
    let (_, v) = http_post_json_value(web, "/api/v1/command", &tampered);
    assert_eq!(counts(&v), (json!(0), json!(4), json!(0)), "{v}");
    // A signature for /us sent to the whole tree: hosts outside /us refuse.
    let mut widened = signed_body(&good, "/us", "collect", &[], 9);
    widened["zone"] = json!("/");
    let (status, v) = http_post_json_value(web, "/api/v1/command", &widened);
    assert_eq!(status, 200, "{v}");
    assert_eq!(counts(&v), (json!(0), json!(4), json!(0)), "{v}");
    // A partial signature is the client's mistake: 400.
    let (status, _) = http_post_json_value(
        web,
        "/api/v1/command",
        &json!({"zone": "/", "command": "collect", "nonce": 1}),
    );
    assert_eq!(status, 400);

    // A process with the gossip key asks h3 directly over the overlay.
    std::fs::remove_file(dir.join("a3").join("touched")).unwrap();
    let ring = Keyring::new(vec![Key::parse(&gossip_key).unwrap()]).unwrap();
    let security = Arc::new(GossipSecurity::new(ring, None, 60_000));
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let ask = OverlayMessage::Ask {
        qid: 0xfeed,
        zone: ZonePath::parse("/us/c/h3").unwrap(),
        request: Arc::new(Request::Command {
            name: "touch-it".into(),
            args: Vec::new(),
            seal: None,
        }),
        budget_ms: 3000,
    };
    let bytes = astrolabe::transport::seal(
        Some(&security),
        wall_ms(),
        astrolabe::transport::encode_overlay(&ask),
    );
    socket
        .send_to(&bytes, ("127.0.0.1", agents[3].gossip))
        .unwrap();
    let mut buf = vec![0u8; 65_536];
    let (len, _) = socket.recv_from(&mut buf).expect("h3 answers the ask");
    let plain = astrolabe::transport::unseal(Some(&security), wall_ms(), &buf[..len], 65_536)
        .expect("the answer is sealed with the cluster key");
    let reply = match astrolabe::transport::decode_frame(&plain, 65_536) {
        Ok(astrolabe::transport::Frame::Overlay(OverlayMessage::Chunk {
            bytes, count: 1, ..
        })) => postcard::from_bytes::<astrolabe::overlay::Reply>(&bytes).unwrap(),
        _ => panic!("expected a one-chunk overlay reply"),
    };
    match reply.outcome {
        Outcome::Command(t) => assert_eq!((t.ok, t.refused), (0, 1), "{t:?}"),
        other => panic!("{other:?}"),
    }
    assert!(!touched(3));
    assert_eq!(refusals(&agents[3], "unsigned"), 2.0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Starts a lone agent with `env` and `args`; the agent if it serves
/// /metrics, else its one-line error.
fn start_alone(env: &[(&str, &str)], args: &[&str]) -> Result<Agent, String> {
    let mut agent = env
        .iter()
        .fold(Agent::builder("/solo/h"), |l, (k, v)| l.env(k, v))
        .env_remove("ASTROLABE_SECURITY_TRUSTED_KEY")
        .arg("--no-collector.host")
        .args(args)
        .start();
    let up = eventually(Duration::from_secs(10), || {
        agent.metrics().is_some() || !agent.running()
    });
    if up && agent.metrics().is_some() {
        return Ok(agent);
    }
    agent.kill();
    Err(agent.log().trim().to_string())
}

#[test]
fn trusted_keys_come_from_flag_then_environment_then_file() {
    let dir = temp_dir("trusted-key-layers");
    let k1_path = dir.join("k1.key");
    let k1 = generate_operator_key(&k1_path);
    let k2_path = dir.join("k2.key");
    let k2 = generate_operator_key(&k2_path);
    let file = dir.join("agent.toml");
    std::fs::write(&file, "[security]\ntrusted_keys = [\"bad-from-file\"]\n").unwrap();
    let file_arg = ["--config.file", file.to_str().unwrap()];

    // The file alone: its bad key stops start-up, named in one line.
    let err = start_alone(&[], &file_arg).err().expect("refused");
    assert!(
        err.contains("bad-from-file") && err.lines().count() == 1,
        "{err}"
    );
    // The environment wins over the file; a bad key in it is named too.
    let both = format!("{k1},bad-from-env");
    let err = start_alone(&[("ASTROLABE_SECURITY_TRUSTED_KEY", &both)], &file_arg)
        .err()
        .expect("refused");
    assert!(err.contains("bad-from-env"), "{err}");
    // The flag wins over a bad environment.
    let flagged = start_alone(
        &[("ASTROLABE_SECURITY_TRUSTED_KEY", "bad-from-env")],
        &["--security.trusted-key", &k1],
    );
    assert!(flagged.is_ok(), "{:?}", flagged.err());
    drop(flagged);

    // Two keys, comma-separated in the environment, over the file: a
    // command signed by either runs, one signed by neither does not.
    let pair = format!("{k1},{k2}");
    let agent =
        start_alone(&[("ASTROLABE_SECURITY_TRUSTED_KEY", &pair)], &file_arg).expect("starts");
    let server = agent.url();
    let stranger_path = dir.join("k3.key");
    generate_operator_key(&stranger_path);
    for (key, runs) in [(&k1_path, true), (&k2_path, true), (&stranger_path, false)] {
        let command = || {
            Command::new(BIN)
                .args(["command", "--server", &server, "--zone", "/solo", "--json"])
                .args(["--key", key.to_str().unwrap(), "collect"])
                .output()
                .unwrap()
        };
        let out = after_catch_up(command, |o| String::from_utf8_lossy(&o.stderr).into_owned());
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let expected = if runs {
            (json!(1), json!(0))
        } else {
            (json!(0), json!(1))
        };
        assert_eq!((v["ok"].clone(), v["refused"].clone()), expected, "{v}");
    }
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sighup_reloads_the_trusted_operator_keys() {
    let dir = temp_dir("signed-commands-reload");
    let first_path = dir.join("first.key");
    let first = generate_operator_key(&first_path);
    let second_path = dir.join("second.key");
    let second = generate_operator_key(&second_path);
    let config = dir.join("agent.toml");
    let trust = |key: &str| {
        std::fs::write(&config, format!("[security]\ntrusted_keys = [\"{key}\"]\n")).unwrap()
    };
    trust(&first);
    let action = format!("touch-it=touch {}", dir.join("touched").display());
    let agent = Agent::builder("/r/h0")
        .dir(&dir.join("agent"))
        .args([
            "--config.file",
            config.to_str().unwrap(),
            "--overlay.action",
            &action,
        ])
        .spawn();
    assert!(eventually(Duration::from_secs(10), || agent
        .get("/metrics")
        .is_some()));
    let server = agent.url();
    let run = |key: &Path| command_via_cli(&server, "/", key, "touch-it");
    assert_eq!(counts(&run(&second_path)), (json!(0), json!(1), json!(0)));
    assert_eq!(refusals(&agent, "untrusted-key"), 1.0);

    // The operator rotates the key in the file and sends SIGHUP.
    trust(&second);
    let pid = agent.child.as_ref().unwrap().id().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    let rotated = eventually(Duration::from_secs(10), || {
        counts(&run(&second_path)) == (json!(1), json!(0), json!(0))
    });
    assert!(rotated, "a command signed by the new key was not taken");
    assert!(dir.join("touched").exists());
    // The key taken out is refused from now on.
    assert_eq!(counts(&run(&first_path)), (json!(0), json!(1), json!(0)));
    // Still serving, with every refusal counted.
    assert!(refusals(&agent, "untrusted-key") >= 2.0);
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}
