//! The configuration file and its precedence: flag > env > file > default.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

fn check(file: &std::path::Path) -> (bool, String) {
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(file)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text.trim().to_string())
}

#[test]
fn check_config_accepts_good_files_and_names_file_line_and_reason() {
    let dir = temp_dir("config-check");
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        "zone = \"/eu/fra/h1\"\naggregates = [\"SELECT max(load1) AS load_peak\"]\n[gossip]\nseeds = [\"127.0.0.1:7946\"]\ninterval = \"500ms\"\n[attributes]\nrole = \"web\"\n",
    )
    .unwrap();
    let (ok, text) = check(&good);
    assert!(ok, "{text}");
    assert!(text.contains("ok") && text.contains("/eu/fra/h1"), "{text}");

    for (name, body, needles) in [
        (
            "unknown.toml",
            "zone = \"/a/b\"\n[gossip]\nlisten_adress = \"127.0.0.1:1\"\n",
            vec!["unknown.toml", "line 3", "unknown field", "listen_adress"],
        ),
        (
            "zone.toml",
            "zone = \"/a//b\"\n",
            vec!["zone.toml", "empty segment"],
        ),
        (
            "agg.toml",
            "zone = \"/a/b\"\naggregates = [\"SELECT sum(x) AS s GROUP BY y\"]\n",
            vec!["agg.toml", "GROUP BY"],
        ),
        (
            "interval.toml",
            "zone = \"/a/b\"\n[gossip]\ninterval = \"soon\"\n",
            vec!["interval.toml", "gossip.interval"],
        ),
        (
            "collector-interval.toml",
            "zone = \"/a/b\"\n[collector]\ninterval = \"soon\"\n",
            vec!["collector-interval.toml", "collector.interval"],
        ),
        ("syntax.toml", "zone = \n", vec!["syntax.toml", "line 1"]),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, body).unwrap();
        let (ok, text) = check(&path);
        assert!(!ok, "{name} accepted");
        assert_eq!(text.lines().count(), 1, "{text}");
        for n in needles {
            assert!(text.contains(n), "{name}: {n:?} not in {text:?}");
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn flags_override_the_environment_which_overrides_the_file() {
    let dir = temp_dir("config-precedence");
    let file = dir.join("agent.toml");
    let web_from_file = free_port();
    std::fs::write(
        &file,
        format!("zone = \"/file/zone\"\n[web]\nlisten_address = \"127.0.0.1:{web_from_file}\"\n[gossip]\nlisten_address = \"127.0.0.1:{}\"\ninterval = \"200ms\"\n", free_port()),
    )
    .unwrap();
    // The file alone.
    let mut a = Command::new(BIN)
        .args(["agent", "--no-collector.host", "--config.file"])
        .arg(&file)
        .env("ASTROLABE_LOG", "warn")
        .spawn()
        .unwrap();
    let zone_of = |port: u16| {
        http_get(port, "/api/v1/zones")
            .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
            .map(|j| j["agent_zone"].as_str().unwrap_or("").to_string())
    };
    assert!(eventually(Duration::from_secs(10), || zone_of(
        web_from_file
    )
    .as_deref()
        == Some("/file/zone")));
    let _ = a.kill();
    let _ = a.wait();
    // The environment beats the file; a flag beats both.
    let web_from_flag = free_port();
    let mut b = Command::new(BIN)
        .args(["agent", "--no-collector.host", "--config.file"])
        .arg(&file)
        .args([
            "--web.listen-address",
            &format!("127.0.0.1:{web_from_flag}"),
        ])
        .env("ASTROLABE_ZONE", "/env/zone")
        .env(
            "ASTROLABE_WEB_LISTEN_ADDRESS",
            format!("127.0.0.1:{web_from_file}"),
        )
        .env("ASTROLABE_LOG", "warn")
        .spawn()
        .unwrap();
    let ok = eventually(Duration::from_secs(10), || {
        zone_of(web_from_flag).as_deref() == Some("/env/zone")
    });
    let _ = b.kill();
    let _ = b.wait();
    assert!(ok, "flag or env did not win");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sighup_reloads_aggregates_and_attributes_and_keeps_the_old_config_when_the_new_is_bad() {
    let dir = temp_dir("config-reload");
    let file = dir.join("agent.toml");
    let web = free_port();
    let body = |agg: &str, role: &str| {
        format!(
            "zone = \"/r/a\"\naggregates = [\"{agg}\"]\n[web]\nlisten_address = \"127.0.0.1:{web}\"\n[gossip]\nlisten_address = \"127.0.0.1:{}\"\ninterval = \"200ms\"\n[collector]\nhost = false\n[attributes]\nrole = \"{role}\"\nweight = 5\n",
            free_port()
        )
    };
    std::fs::write(&file, body("SELECT sum(weight) AS weight_before", "web")).unwrap();
    let mut agent = Command::new(BIN)
        .args(["agent", "--config.file"])
        .arg(&file)
        .env("ASTROLABE_LOG", "warn")
        .spawn()
        .unwrap();
    let has = |needle: &str| http_get(web, "/metrics").is_some_and(|m| m.contains(needle));
    assert!(eventually(Duration::from_secs(10), || has(
        "astrolabe_zone_weight_before{zone_path=\"/\"} 5"
    )));
    std::fs::write(
        &file,
        body(
            "SELECT sum(weight) AS weight_after, count(*) AS web_hosts WHERE role = 'db'",
            "db",
        ),
    )
    .unwrap();
    let hup = |pid: u32| {
        Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap()
    };
    hup(agent.id());
    let reloaded = eventually(Duration::from_secs(10), || {
        has("astrolabe_zone_weight_after{zone_path=\"/\"} 5")
            && has("astrolabe_zone_web_hosts{zone_path=\"/\"} 1")
            && !has("weight_before")
    });
    // A broken file is refused; the agent keeps serving the last good one.
    std::fs::write(
        &file,
        "zone = \"/r/a\"\naggregates = [\"SELECT nonsense(\"]\n",
    )
    .unwrap();
    hup(agent.id());
    std::thread::sleep(Duration::from_millis(800));
    let still = has("astrolabe_zone_weight_after{zone_path=\"/\"} 5");
    let _ = agent.kill();
    let _ = agent.wait();
    assert!(
        reloaded,
        "SIGHUP did not apply the new aggregates and attributes"
    );
    assert!(still, "a bad file replaced the running configuration");
    let _ = std::fs::remove_dir_all(dir);
}

/// `[limits]` in the file reaches the agent: an agent limited to 3
/// attributes per row refuses (and counts) a peer's row of 5 (its 3
/// static attributes plus `id` and `addr`), while an unlimited peer takes
/// it. Unknown keys and a zero `max_requests` are refused by check-config.
#[test]
fn limits_from_the_file_apply_and_bad_ones_are_refused() {
    let dir = temp_dir("config-limits");
    let strict = dir.join("strict.toml");
    std::fs::write(
        &strict,
        "[limits]\nattributes_per_row = 3\n[web]\nmax_requests = 8\n",
    )
    .unwrap();
    let (ok, text) = check(&strict);
    assert!(ok, "{text}");
    let wide = Agent::spawn(
        "/l/a/wide",
        &[],
        &dir.join("w"),
        &[
            "--no-collector.host",
            "--attribute",
            "x=1",
            "--attribute",
            "y=2",
            "--attribute",
            "z=3",
        ],
    );
    let limited = Agent::spawn(
        "/l/a/limited",
        &[wide.gossip],
        &dir.join("l"),
        &[
            "--no-collector.host",
            "--config.file",
            strict.to_str().unwrap(),
        ],
    );
    let refused = eventually(Duration::from_secs(30), || {
        limited.get("/metrics").is_some_and(|m| {
            m.lines().any(|l| {
                l.starts_with("astrolabe_limit_refusals_total{")
                    && l.contains("limit=\"attributes_per_row\"")
                    && l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) > Some(0.0)
            })
        })
    });
    assert!(refused, "the limited agent did not refuse the wide row");
    // The wide agent (default limits) takes the limited agent's small row.
    let taken = eventually(Duration::from_secs(30), || {
        wide.get("/api/v1/zones")
            .is_some_and(|z| z.contains("/l/a/limited"))
    });
    assert!(taken, "the default limits refused a small row");
    let zones = limited.get("/api/v1/zones").unwrap_or_default();
    assert!(!zones.contains("/l/a/wide"), "{zones}");

    for (name, body, needle) in [
        ("unknown.toml", "[limits]\nrows = 1\n", "unknown field"),
        ("zero.toml", "[web]\nmax_requests = 0\n", "web.max_requests"),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, body).unwrap();
        let (ok, text) = check(&path);
        assert!(!ok, "{name} accepted");
        assert!(text.contains(needle), "{name}: {text}");
    }
    let _ = std::fs::remove_dir_all(dir);
}
