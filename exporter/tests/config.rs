//! The configuration file and its precedence: flag > env > file > default.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;

fn check(file: &std::path::Path) -> (bool, String) {
    let out = run_cli(&["check-config", file.to_str().unwrap()], &[]);
    let text = format!("{}{}", out.stdout, out.stderr);
    (out.ok, text.trim().to_string())
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
            vec!["interval.toml", "[gossip] interval"],
        ),
        (
            "collector-interval.toml",
            "zone = \"/a/b\"\n[collector]\ninterval = \"soon\"\n",
            vec!["collector-interval.toml", "[collector] interval"],
        ),
        ("syntax.toml", "zone = \n", vec!["syntax.toml", "line 1"]),
        // What comes from the file is named by its key, never by a flag.
        (
            "root.toml",
            "zone = \"/\"\n",
            vec!["root.toml: zone:", "below the root"],
        ),
        (
            "attribute.toml",
            "zone = \"/a/b\"\n[attributes]\n\"\" = 1\n",
            vec!["attribute.toml: [attributes]", "the name is empty"],
        ),
        (
            "trusted.toml",
            "zone = \"/a/b\"\n[security]\ntrusted_keys = [\"nope\"]\n",
            vec!["trusted.toml: [security] trusted_keys"],
        ),
        (
            "group.toml",
            "zone = \"/a/b\"\n[collector]\nprocess_groups = [\"web\"]\n",
            vec!["group.toml: [collector] process_groups"],
        ),
        (
            "log.toml",
            "zone = \"/a/b\"\n[log]\nformat = \"xml\"\n",
            vec!["log.toml: [log] format", "\"xml\""],
        ),
        (
            "otlp.toml",
            "zone = \"/a/b\"\n[otlp]\nendpoint = \"http://c:4317\"\nprotocol = \"udp\"\n",
            vec!["otlp.toml: [otlp] protocol", "\"udp\""],
        ),
        (
            "action-timeout.toml",
            "zone = \"/a/b\"\n[overlay]\naction_timeout = \"never\"\n",
            vec!["action-timeout.toml", "[overlay] action_timeout"],
        ),
        (
            "empty-action.toml",
            "zone = \"/a/b\"\n[actions]\nnothing = []\n",
            vec!["empty-action.toml", "[actions] nothing"],
        ),
        (
            "listen.toml",
            "zone = \"/a/b\"\n[web]\nlisten_address = \"everywhere\"\n",
            vec!["listen.toml", "[web] listen_address"],
        ),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, body).unwrap();
        let (ok, text) = check(&path);
        assert!(!ok, "{name} accepted");
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(!text.contains("--"), "{name} names a flag: {text}");
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
    let from_file = Agent::builder_without_zone().bare().args([
        "--no-collector.host",
        "--config.file",
        file.to_str().unwrap(),
    ]);
    let web_from_file = from_file.web;
    std::fs::write(
        &file,
        format!("zone = \"/file/zone\"\n[web]\nlisten_address = \"127.0.0.1:{web_from_file}\"\n[gossip]\nlisten_address = \"127.0.0.1:{}\"\ninterval = \"200ms\"\n", from_file.gossip),
    )
    .unwrap();
    // The file alone.
    let mut a = from_file.spawn();
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
    a.kill();
    // The environment beats the file; a flag beats both.
    let b = Agent::builder_without_zone().bare().args([
        "--no-collector.host",
        "--config.file",
        file.to_str().unwrap(),
    ]);
    let web_from_flag = b.web;
    let mut b = b
        .args([
            "--web.listen-address",
            &format!("127.0.0.1:{web_from_flag}"),
        ])
        .env("ASTROLABE_ZONE", "/env/zone")
        .env(
            "ASTROLABE_WEB_LISTEN_ADDRESS",
            format!("127.0.0.1:{web_from_file}"),
        )
        .spawn();
    let ok = eventually(Duration::from_secs(10), || {
        zone_of(web_from_flag).as_deref() == Some("/env/zone")
    });
    b.kill();
    assert!(ok, "flag or env did not win");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sighup_reloads_aggregates_and_attributes_and_keeps_the_old_config_when_the_new_is_bad() {
    let dir = temp_dir("config-reload");
    let file = dir.join("agent.toml");
    let launch = Agent::builder_without_zone()
        .bare()
        .args(["--config.file", file.to_str().unwrap()]);
    let (web, gossip) = (launch.web, launch.gossip);
    let body = |agg: &str, role: &str| {
        format!(
            "zone = \"/r/a\"\naggregates = [\"{agg}\"]\n[web]\nlisten_address = \"127.0.0.1:{web}\"\n[gossip]\nlisten_address = \"127.0.0.1:{gossip}\"\ninterval = \"200ms\"\n[collector]\nhost = false\n[attributes]\nrole = \"{role}\"\nweight = 5\n",
        )
    };
    std::fs::write(&file, body("SELECT sum(weight) AS weight_before", "web")).unwrap();
    let mut agent = launch.spawn();
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
    agent.send("-HUP");
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
    agent.send("-HUP");
    std::thread::sleep(Duration::from_millis(800));
    let still = has("astrolabe_zone_weight_after{zone_path=\"/\"} 5");
    agent.kill();
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
    let wide = Agent::builder("/l/a/wide")
        .dir(&dir.join("w"))
        .args(["--no-collector.host", "--attribute", "x=1"])
        .args(["--attribute", "y=2", "--attribute", "z=3"])
        .spawn();
    let limited = Agent::builder("/l/a/limited")
        .dir(&dir.join("l"))
        .seed(wide.gossip)
        .args([
            "--no-collector.host",
            "--config.file",
            strict.to_str().unwrap(),
        ])
        .spawn();
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
        (
            "zero.toml",
            "[web]\nmax_requests = 0\n",
            "[web] max_requests",
        ),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, body).unwrap();
        let (ok, text) = check(&path);
        assert!(!ok, "{name} accepted");
        assert!(text.contains(needle), "{name}: {text}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// `ASTROLABE_` and the flag's name in capitals, `.` and `-` as `_`.
fn variable_of(flag: &str) -> String {
    format!(
        "ASTROLABE_{}",
        flag.trim_start_matches("--")
            .replace(['.', '-'], "_")
            .to_uppercase()
    )
}

/// Every flag `agent --help` lists has its `ASTROLABE_*` variable, named
/// after it: a flag added without one fails here.
#[test]
fn every_agent_flag_has_its_variable() {
    let help = String::from_utf8(run_ok(&["agent", "--help"])).unwrap();
    // One block per option: its line, then the lines indented deeper.
    let mut blocks: Vec<(String, String)> = Vec::new();
    for line in help.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("--") || trimmed.starts_with('-') && trimmed.contains(", --") {
            let flag = trimmed
                .split_whitespace()
                .find(|w| w.starts_with("--"))
                .unwrap_or_default()
                .trim_end_matches(',')
                .to_string();
            blocks.push((flag, line.to_string()));
        } else if let Some(last) = blocks.last_mut() {
            last.1.push_str(line);
        }
    }
    let flags: Vec<&str> = blocks.iter().map(|(f, _)| f.as_str()).collect();
    for expected in [
        "--attribute",
        "--aggregate",
        "--overlay.action",
        "--collector.interval",
    ] {
        assert!(flags.contains(&expected), "{expected} not in\n{help}");
    }
    for (flag, text) in &blocks {
        if flag == "--help" {
            continue;
        }
        let variable = variable_of(flag);
        assert!(
            text.contains(&format!("[env: {variable}="))
                || text.contains(&format!("[env: {variable}]")),
            "{flag} has no {variable}: {text}"
        );
    }
}

/// The list variables take several items, `;` apart where an item can hold
/// commas (SQL, attribute values, command lines), commas for metric names;
/// and the rest of the once-missing variables reach the agent.
#[test]
fn list_variables_take_several_items_and_reach_the_agent() {
    let dir = temp_dir("config-env-lists");
    let launch = Agent::builder("/env/a").bare().arg("--zone").arg("/env/a");
    let (gossip, web) = (launch.gossip, launch.web);
    let marker = dir.join("ran");
    let mut agent = launch
        .env("ASTROLABE_GOSSIP_LISTEN_ADDRESS", format!("127.0.0.1:{gossip}"))
        .env("ASTROLABE_WEB_LISTEN_ADDRESS", format!("127.0.0.1:{web}"))
        .env("ASTROLABE_GOSSIP_INTERVAL", "200ms")
        .env("ASTROLABE_ATTRIBUTE", "team=sre;tags=a,b; weight=5")
        .env(
            "ASTROLABE_AGGREGATE",
            "SELECT count(*) AS sre_hosts WHERE team = 'sre'; SELECT max(weight) AS weight_max, count(tags) AS tagged",
        )
        .env(
            "ASTROLABE_OVERLAY_ACTION",
            format!("mark=touch {};noop=true", marker.display()),
        )
        .env("ASTROLABE_OVERLAY_ACTION_TIMEOUT", "3s")
        .env("ASTROLABE_NO_COLLECTOR_HOST", "true")
        .env("ASTROLABE_COLLECTOR_INTERVAL", "1h")
        .env("ASTROLABE_COLLECTOR_TIMEOUT", "2s")
        .env("ASTROLABE_COLLECTOR_PROCESS_GROUP", "tests=config-[0-9a-f]{1,64};shells=^(ba|z)sh$")
        .env("ASTROLABE_COLLECTOR_APPLICATION_IMPORT", "a_total,b_bytes")
        .spawn();
    let mut metrics = String::new();
    let up = eventually(Duration::from_secs(15), || {
        metrics = http_get(web, "/metrics").unwrap_or_default();
        metrics.contains("astrolabe_zone_sre_hosts{zone_path=\"/\"} 1")
            && metrics.contains("astrolabe_zone_weight_max{zone_path=\"/\"} 5")
            && metrics.contains("astrolabe_zone_tagged{zone_path=\"/\"} 1")
    });
    // The host collectors are off: no host summary is computed.
    let no_host = !metrics.contains("astrolabe_zone_cpu_utilization_avg");
    let server = format!("http://127.0.0.1:{web}");
    let run = |command: &str| run_cli(&["command", "--server", &server, command], &[]);
    let noop = after_catch_up(|| run("noop"), |r| r.stderr.clone());
    let mark = run("mark");
    let zones = http_get(web, "/api/v1/zones").unwrap_or_default();
    agent.kill();
    assert!(
        up,
        "the variables' aggregates and attributes are not served:\n{metrics}"
    );
    assert!(
        no_host,
        "ASTROLABE_NO_COLLECTOR_HOST=true ran the host collectors"
    );
    assert!(mark.ok && noop.ok, "{} {}", mark.stderr, noop.stderr);
    assert!(
        marker.exists(),
        "the action from ASTROLABE_OVERLAY_ACTION did not run"
    );
    // The items came apart at `;` only: `tags` kept its comma.
    assert!(zones.contains("a,b"), "{zones}");
    let _ = std::fs::remove_dir_all(dir);
}

/// check-config reads the same variables: an item of a list variable that
/// is wrong is named by the variable's flag, the file's by its key.
#[test]
fn check_config_takes_the_variables_over_the_file() {
    let dir = temp_dir("config-env-check");
    let file = dir.join("a.toml");
    std::fs::write(&file, "zone = \"/a/b\"\n[attributes]\nrole = \"web\"\n").unwrap();
    let check = |variable: &str, value: &str| {
        run_cli(
            &[std::ffi::OsStr::new("check-config"), file.as_os_str()],
            &[(variable, value)],
        )
    };
    let bad = check("ASTROLABE_ATTRIBUTE", "team=sre;oops");
    assert!(!bad.ok);
    assert!(
        bad.stderr.contains("ASTROLABE_ATTRIBUTE") && bad.stderr.contains("\"oops\""),
        "{}",
        bad.stderr
    );
    let good = check(
        "ASTROLABE_AGGREGATE",
        "SELECT count(*) AS a; SELECT count(*) AS b",
    );
    assert!(good.ok, "{} {}", good.stdout, good.stderr);
    // Both aggregates came: 2 columns more than the file's defaults.
    let defaults = run_cli(
        &[std::ffi::OsStr::new("check-config"), file.as_os_str()],
        &[],
    );
    let columns = |out: &str| {
        out.split(" aggregate columns")
            .next()
            .and_then(|s| s.rsplit(' ').next())
            .and_then(|n| n.parse::<usize>().ok())
    };
    assert_eq!(
        columns(&good.stdout),
        columns(&defaults.stdout).map(|n| n + 2),
        "{} {}",
        good.stdout,
        defaults.stdout
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The keys serde knows in `section` (empty: the top level), from its own
/// refusal of an unknown key: `unknown field ..., expected one of ...`.
fn loader_keys(dir: &std::path::Path, section: &str) -> Option<Vec<String>> {
    let path = dir.join(format!("probe-{section}.toml"));
    let header = if section.is_empty() {
        String::new()
    } else {
        format!("[{section}]\n")
    };
    std::fs::write(&path, format!("{header}not_a_key_of_ours = 1\n")).unwrap();
    let (_, text) = check(&path);
    if !text.contains("unknown field") {
        return None;
    }
    // "expected one of `a`, `b`", "expected `a` or `b`", "expected `a`":
    // the keys are what the backticks hold.
    let listed = text.split("expected").nth(1)?;
    Some(
        listed
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect(),
    )
}

/// docs/astrolabe.toml is a working configuration that shows, with a
/// comment, every key the loader takes, and no key it does not.
#[test]
fn the_example_configuration_has_every_key_and_passes_check_config() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/astrolabe.toml");
    let (ok, text) = check(&example);
    assert!(ok, "{text}");
    // Keys written in the example, set or commented out, by section.
    let body = std::fs::read_to_string(&example).unwrap();
    let mut shown: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut section = String::new();
    let mut block_has_comment = false;
    for line in body.lines() {
        if line.trim().is_empty() {
            block_has_comment = false;
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            shown.entry(section.clone()).or_default();
            continue;
        }
        let setting = line.strip_prefix("# ").unwrap_or(line);
        let key = setting.split_once(" = ").map(|(k, _)| k).filter(|k| {
            !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        });
        match key {
            Some(k) => {
                assert!(
                    block_has_comment,
                    "{k} in [{section}] has no comment above it"
                );
                shown
                    .entry(section.clone())
                    .or_default()
                    .push(k.to_string());
            }
            None if line.starts_with('#') => block_has_comment = true,
            None => {}
        }
    }
    let dir = temp_dir("config-example");
    let top = loader_keys(&dir, "").expect("the top-level keys");
    for key in &top {
        match loader_keys(&dir, key) {
            // A section: each of its keys is in the example's section.
            Some(keys) => {
                let have = shown.get(key).cloned().unwrap_or_default();
                for k in &keys {
                    assert!(
                        have.contains(k),
                        "[{key}] {k} is not in docs/astrolabe.toml"
                    );
                }
                for k in &have {
                    assert!(
                        keys.contains(k),
                        "[{key}] {k} in docs/astrolabe.toml is not a key"
                    );
                }
            }
            // A top-level key, or a table of the user's names
            // (attributes, actions), shown with an entry.
            None => assert!(
                shown.get("").is_some_and(|t| t.contains(key))
                    || shown.get(key).is_some_and(|t| !t.is_empty()),
                "{key} is not in docs/astrolabe.toml"
            ),
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A second agent cannot take a gossip port an agent holds: it stops with
/// one line, as for a web port in use, and never joins through it.
#[test]
fn a_gossip_port_in_use_is_refused() {
    let dir = temp_dir("config-port-in-use");
    let first = Agent::builder("/p/first")
        .dir(&dir.join("a"))
        .arg("--no-collector.host")
        .spawn();
    assert!(
        eventually(Duration::from_secs(10), || first.get("/metrics").is_some()),
        "the first agent did not start"
    );
    let web = free_port();
    let second = run_cli(
        &[
            "agent",
            "--zone",
            "/p/second",
            "--no-collector.host",
            "--gossip.listen-address",
            &format!("127.0.0.1:{}", first.gossip),
            "--web.listen-address",
            &format!("127.0.0.1:{web}"),
        ],
        &[],
    );
    assert!(!second.ok, "the second agent started: {}", second.stderr);
    assert_eq!(
        second.stderr.trim(),
        format!(
            "astrolabe: cannot listen for gossip on 127.0.0.1:{}: Address already in use",
            first.gossip
        )
    );
    let zones = first.get("/api/v1/zones").unwrap_or_default();
    assert!(!zones.contains("/p/second"), "{zones}");
    let _ = std::fs::remove_dir_all(dir);
}
