//! `astrolabe agent`: run one agent.
//!
//! Its settings are declared once, in `config::Settings`; this turns the
//! merged layers into the runtime's `AgentOptions`, checking each value and
//! naming the flag, variable or file key it came from when it is wrong.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use astrolabe_collectors::HostPaths;

use crate::agent::{id_from_zone, start, AgentOptions};
use crate::config::{CommandLine, Config};
use crate::engine::Limits;
use crate::zone::{Value, ZonePath};

pub use crate::config::{parse_duration, ENV_LIST_SEPARATOR};

/// What `--log.format` takes.
const LOG_FORMATS: [&str; 2] = ["text", "json"];

/// A setting the defaults layer always holds; `None` only if its default
/// went missing from the declaration, which a test rules out.
fn set<T: Clone>(config: &Config, id: &str, value: &Option<T>) -> anyhow::Result<T> {
    value
        .clone()
        .with_context(|| format!("{} has no value", config.named(id)))
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

/// The runtime's options from the merged settings; every value checked
/// here, so that an error names where it came from.
pub fn options(config: &Config) -> anyhow::Result<AgentOptions> {
    let s = &config.settings;
    let log_format = set(config, "log.format", &s.log.format)?;
    if !LOG_FORMATS.contains(&log_format.as_str()) {
        bail!(
            "{} {log_format:?}: use text or json",
            config.named("log.format")
        );
    }
    let zone_text = s
        .zone
        .clone()
        .unwrap_or_else(|| format!("/local/{}", hostname()));
    let zone = ZonePath::parse(&zone_text).with_context(|| config.named("zone"))?;
    if zone.is_root() {
        bail!(
            "{}: an agent's zone must be below the root, like /local/host1",
            config.named("zone")
        );
    }
    let mut attributes = Vec::new();
    for a in s.attributes.iter().flatten() {
        let Some((k, v)) = a.split_once('=') else {
            bail!("{} {a:?}: expected name=value", config.named("attributes"));
        };
        if k.is_empty() {
            bail!("{} {a:?}: the name is empty", config.named("attributes"));
        }
        attributes.push((k.to_string(), Value::parse_literal(v)));
    }
    crate::http::names::check_configured(attributes.iter().map(|(k, _)| k.as_str()))
        .map_err(|e| anyhow::anyhow!("{}: {e}", config.named("attributes")))?;
    let process_groups = s.collector.process_groups.clone().unwrap_or_default();
    for g in &process_groups {
        astrolabe_collectors::ProcessGroup::parse(g)
            .map_err(|e| anyhow::anyhow!("{}: {e}", config.named("collector.process_groups")))?;
    }
    let host_paths = host_paths(config)?;
    let mut actions = crate::overlay::actions::Actions {
        defined: Default::default(),
        timeout: set(config, "overlay.action_timeout", &s.overlay.action_timeout)?,
    };
    // The file's actions, then the flags' (which add to them).
    for (name, argv) in s.actions.iter().flatten() {
        if argv.is_empty() {
            bail!("{} {name}: the command is empty", config.named("actions"));
        }
        actions.defined.insert(name.clone(), argv.clone());
    }
    for a in s.overlay.action.iter().flatten() {
        let (name, argv) = crate::overlay::actions::parse_action(a)
            .map_err(|e| anyhow::anyhow!("{}: {e}", config.named("overlay.action")))?;
        actions.defined.insert(name, argv);
    }
    let seeds = s
        .gossip
        .seeds
        .iter()
        .flatten()
        .map(|seed| resolve_seed(seed).with_context(|| config.named("gossip.seeds")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let keyring_setting = if s.gossip.keyring_file.is_some() {
        "gossip.keyring_file"
    } else {
        "gossip.key"
    };
    let replay_window = set(config, "gossip.replay_window", &s.gossip.replay_window)?;
    let gossip_security = crate::transport::keyring::load_keyring(
        s.gossip.key.as_deref(),
        s.gossip.keyring_file.as_deref(),
    )
    .map_err(|e| anyhow::anyhow!("{}: {e}", config.named(keyring_setting)))?
    .map(|ring| {
        std::sync::Arc::new(crate::transport::keyring::GossipSecurity::new(
            ring,
            s.gossip.keyring_file.clone(),
            replay_window.as_millis() as u64,
        ))
    });
    let trusted_keys =
        crate::security::TrustedKeys::parse(s.security.trusted_keys.as_deref().unwrap_or(&[]))
            .map_err(|e| anyhow::anyhow!("{}: {e}", config.named("security.trusted_keys")))?;
    let l = &s.limits;
    Ok(AgentOptions {
        trusted_keys,
        signature_window: set(
            config,
            "security.signature_window",
            &s.security.signature_window,
        )?,
        id: s.agent_id.unwrap_or_else(|| id_from_zone(&zone)),
        zone,
        listen: set(config, "gossip.listen_address", &s.gossip.listen_address)?,
        advertise: s.gossip.advertise_address,
        seeds,
        interval: set(config, "gossip.interval", &s.gossip.interval)?,
        web_listen: set(config, "web.listen_address", &s.web.listen_address)?,
        textfile_directory: s.collector.textfile_directory.clone(),
        aggregates: s.aggregates.clone().unwrap_or_default(),
        attributes,
        collector_timeout: set(config, "collector.timeout", &s.collector.timeout)?,
        collector_interval: s.collector.interval,
        host_collectors: set(config, "collector.host", &s.collector.host)?,
        host_paths,
        application: s.collector.application_url.clone().map(|url| {
            (
                url,
                s.collector.application_import.clone().unwrap_or_default(),
            )
        }),
        process_groups,
        gossip_security,
        web_config: s.web.config_file.clone(),
        metrics_unauthenticated: set(
            config,
            "web.metrics_unauthenticated",
            &s.web.metrics_unauthenticated,
        )?,
        limits: Limits {
            rows_per_table: set(config, "limits.rows_per_table", &l.rows_per_table)?,
            zones_per_level: set(config, "limits.zones_per_level", &l.zones_per_level)?,
            attributes_per_row: set(config, "limits.attributes_per_row", &l.attributes_per_row)?,
            string_bytes: set(config, "limits.string_bytes", &l.string_bytes)?,
            list_length: set(config, "limits.list_length", &l.list_length)?,
            pending_queries: set(config, "limits.pending_queries", &l.pending_queries)?,
            http_requests: set(config, "web.max_requests", &s.web.max_requests)?,
            http_scrapes: set(config, "web.max_scrapes", &s.web.max_scrapes)?,
            http_read_timeout: set(config, "web.read_timeout", &s.web.read_timeout)?,
        },
        actions,
    })
}

/// `--path.procfs`, `--path.sysfs` and `--path.rootfs`; one the user set
/// is refused at start-up unless it is a directory: a mistyped host mount
/// would otherwise only show as collectors failing every round.
fn host_paths(config: &Config) -> anyhow::Result<HostPaths> {
    let defaults = HostPaths::default();
    let p = &config.settings.path;
    let paths = HostPaths {
        procfs: set(config, "path.procfs", &p.procfs)?,
        sysfs: set(config, "path.sysfs", &p.sysfs)?,
        rootfs: set(config, "path.rootfs", &p.rootfs)?,
    };
    for (id, path, default) in [
        ("path.procfs", &paths.procfs, &defaults.procfs),
        ("path.sysfs", &paths.sysfs, &defaults.sysfs),
        ("path.rootfs", &paths.rootfs, &defaults.rootfs),
    ] {
        // A default is not checked: a host (or sandbox) without /sys
        // still starts, as node_exporter does, and a collector that
        // cannot read its file says so when it runs.
        if path == default {
            continue;
        }
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => bail!("{} {}: not a directory", config.named(id), path.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("{} {}: no such directory", config.named(id), path.display())
            }
            Err(e) => bail!(
                "{} {}: {}",
                config.named(id),
                path.display(),
                crate::transport::os_reason(&e)
            ),
        }
    }
    Ok(paths)
}

/// The OTLP push, if an endpoint is configured; checked before start-up.
pub fn otlp_options(config: &Config) -> anyhow::Result<Option<crate::otel::OtlpOptions>> {
    let otlp = &config.settings.otlp;
    let Some(endpoint) = otlp.endpoint.as_deref().filter(|e| !e.trim().is_empty()) else {
        return Ok(None);
    };
    use crate::otel::OtlpError;
    // The OTLP errors name the flags; say the file's key where it came from.
    let protocol = set(config, "otlp.protocol", &otlp.protocol)?;
    let protocol: crate::otel::Protocol = protocol.parse().map_err(|e| match e {
        OtlpError::Protocol(p) => anyhow::anyhow!(
            "{} {p:?}: use grpc or http/protobuf",
            config.named("otlp.protocol")
        ),
        other => other.into(),
    })?;
    let interval = set(config, "otlp.interval", &otlp.interval)?;
    let opts = crate::otel::OtlpOptions::new(endpoint, protocol, interval);
    opts.signal_endpoint().map_err(|e| match e {
        OtlpError::Endpoint { endpoint, reason } => {
            anyhow::anyhow!("{} {endpoint:?}: {reason}", config.named("otlp.endpoint"))
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
    let mut given = CommandLine::from_environment()?;
    given.settings.config_file = Some(path.clone());
    let config = Config::load(&given)?;
    let opts = options(&config)?;
    otlp_options(&config)?;
    let set = crate::aggregate::AggregateSet::with_system(
        &[crate::agent::host_aggregates()],
        &opts.aggregates,
    )
    .map_err(|e| anyhow::anyhow!("{}: {e}", config.named("aggregates")))?;
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

/// `astrolabe agent`, with what its command line and environment gave.
pub fn run(given: CommandLine) -> anyhow::Result<()> {
    limit_malloc_arenas();
    let config = Config::load(&given)?;
    let opts = options(&config)?;
    init_logging(
        config.settings.log.format.as_deref().unwrap_or("text"),
        "info",
    )?;
    let otlp = otlp_options(&config)?;
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
                    let reloaded = Config::load(&given).and_then(|c| options(&c));
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

    /// What `agent` would make of `argv` (after the program name) and
    /// the environment, the file included.
    fn parsed(argv: &[&str]) -> Config {
        let _env = crate::config::ENVIRONMENT
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        layers(argv)
    }

    /// `parsed` for a caller that holds the environment.
    fn layers(argv: &[&str]) -> Config {
        let matches = crate::config::command()
            .try_get_matches_from(std::iter::once("agent").chain(argv.iter().copied()))
            .unwrap();
        Config::load(&CommandLine::from_matches(&matches).unwrap()).unwrap()
    }

    /// defaults < file < environment < flags, for settings of several
    /// kinds (a string, a duration, an address, a number, the inverted
    /// host switch), each layer added in turn over the ones below; and
    /// each error names the layer its value came from.
    #[test]
    fn each_layer_overrides_the_ones_below() {
        let _env = crate::config::ENVIRONMENT
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let dir = std::env::temp_dir().join(format!("astrolabe-layers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("agent.toml");
        std::fs::write(
            &file,
            "zone = \"/file/z\"\n[gossip]\ninterval = \"2s\"\n[web]\nlisten_address = \"127.0.0.1:1\"\n\
             [limits]\nrows_per_table = 10\n[collector]\nhost = false\n",
        )
        .unwrap();
        let path = file.to_str().unwrap();
        let environment = [
            ("ASTROLABE_ZONE", "/env/z"),
            ("ASTROLABE_GOSSIP_INTERVAL", "3s"),
            ("ASTROLABE_WEB_LISTEN_ADDRESS", "127.0.0.1:2"),
            ("ASTROLABE_NO_COLLECTOR_HOST", "false"),
        ];
        let flags = ["--zone", "/flag/z", "--gossip.interval", "4s"];
        let with_env = |argv: &[&str]| {
            for (k, v) in environment {
                std::env::set_var(k, v);
            }
            let config = layers(argv);
            for (k, _) in environment {
                std::env::remove_var(k);
            }
            config
        };
        let seen = |c: &Config| {
            let o = options(c).unwrap();
            (
                o.zone.to_string(),
                o.interval,
                o.web_listen.to_string(),
                o.limits.rows_per_table,
                o.host_collectors,
            )
        };
        let secs = Duration::from_secs;

        let defaults = layers(&["--zone", "/default/z"]);
        assert_eq!(
            seen(&defaults),
            (
                "/default/z".into(),
                secs(1),
                "0.0.0.0:9464".into(),
                4096,
                true
            )
        );
        assert_eq!(defaults.named("gossip.interval"), "--gossip.interval");

        let file_over_defaults = layers(&["--config.file", path]);
        assert_eq!(
            seen(&file_over_defaults),
            ("/file/z".into(), secs(2), "127.0.0.1:1".into(), 10, false)
        );
        assert_eq!(
            file_over_defaults.named("gossip.interval"),
            format!("{path}: [gossip] interval")
        );

        let env_over_file = with_env(&["--config.file", path]);
        assert_eq!(
            seen(&env_over_file),
            ("/env/z".into(), secs(3), "127.0.0.1:2".into(), 10, true)
        );
        assert_eq!(
            env_over_file.named("gossip.interval"),
            "ASTROLABE_GOSSIP_INTERVAL"
        );

        let flags_over_env = with_env(&[&["--config.file", path][..], &flags].concat());
        assert_eq!(
            seen(&flags_over_env),
            ("/flag/z".into(), secs(4), "127.0.0.1:2".into(), 10, true)
        );
        assert_eq!(flags_over_env.named("gossip.interval"), "--gossip.interval");
        assert_eq!(
            flags_over_env.named("limits.rows_per_table"),
            format!("{path}: [limits] rows_per_table")
        );
        // Settings no layer set keep their defaults under all of them.
        assert_eq!(options(&flags_over_env).unwrap().signature_window, secs(60));
        let _ = std::fs::remove_dir_all(dir);
    }

    fn fixture(sub: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../collectors/fixtures")
            .join(sub)
    }

    #[test]
    fn host_paths_default_to_the_hosts_own_and_follow_the_flags() {
        let args = parsed(&["--zone", "/t/a"]);
        assert_eq!(options(&args).unwrap().host_paths, HostPaths::default());
        let (proc, sys, root) = (fixture("proc"), fixture("sys"), fixture("rootfs"));
        let args = parsed(&[
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
        let command = crate::config::command();
        for (id, variable) in [
            ("path.procfs", "ASTROLABE_PATH_PROCFS"),
            ("path.sysfs", "ASTROLABE_PATH_SYSFS"),
            ("path.rootfs", "ASTROLABE_PATH_ROOTFS"),
        ] {
            let arg = command.get_arguments().find(|a| a.get_id() == id).unwrap();
            assert_eq!(arg.get_env().unwrap(), variable);
        }
    }

    #[test]
    fn a_host_path_that_is_not_a_directory_is_refused_in_one_line_naming_the_flag() {
        let args = parsed(&["--zone", "/t/a", "--path.procfs", "/nonexistent/proc"]);
        let e = format!("{:#}", options(&args).unwrap_err());
        assert_eq!(e, "--path.procfs /nonexistent/proc: no such directory");
        let file = fixture("proc/loadavg");
        let args = parsed(&["--zone", "/t/a", "--path.rootfs", file.to_str().unwrap()]);
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
        let args = parsed(&["--config.file", config]);
        let e = format!("{:#}", options(&args).unwrap_err());
        assert_eq!(
            e,
            format!("{config}: [path] sysfs /nonexistent/sys: no such directory")
        );
        // The flag wins over the file.
        let args = parsed(&["--config.file", config, "--path.sysfs", "/"]);
        let paths = options(&args).unwrap().host_paths;
        assert_eq!((paths.procfs, paths.sysfs), (proc, PathBuf::from("/")));
        let _ = std::fs::remove_dir_all(dir);
    }
}
