//! OTLP export against an in-process OTLP receiver: a tonic server built
//! from opentelemetry-proto's generated MetricsService (gRPC), and an axum
//! route decoding the same protobuf (HTTP). The data points received must
//! equal what `/metrics` serves from the same snapshot, and an agent started
//! with `--otlp.*` flags (or `ASTROLABE_OTLP_*`) must push on its own.
//!
//! Multi-thread runtimes throughout: the SDK's exporters and an in-process
//! receiver on a current-thread runtime can wait on each other.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use astrolabe::agent::{start, AgentOptions, RunningAgent};
use astrolabe::otel::{DropReason, Identity, OtlpExporter, OtlpOptions, Protocol};
use astrolabe::view::ViewCell;
use astrolabe::zone::{Value, ZonePath};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use prost::Message;
use tokio::sync::mpsc;

use common::*;

/// Received requests, from either transport.
type Inbox = mpsc::UnboundedReceiver<ExportMetricsServiceRequest>;

struct Receiver(mpsc::UnboundedSender<ExportMetricsServiceRequest>);

#[tonic::async_trait]
impl MetricsService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let _ = self.0.send(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

async fn grpc_receiver() -> (SocketAddr, Inbox) {
    let (tx, rx) = mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(MetricsServiceServer::new(Receiver(tx)))
            .serve_with_incoming(incoming)
            .await;
    });
    (addr, rx)
}

async fn http_receiver() -> (SocketAddr, Inbox) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/v1/metrics",
        axum::routing::post(move |body: axum::body::Bytes| {
            let tx = tx.clone();
            async move {
                match ExportMetricsServiceRequest::decode(body) {
                    Ok(req) => {
                        let _ = tx.send(req);
                        let resp = ExportMetricsServiceResponse {
                            partial_success: None,
                        };
                        (
                            axum::http::StatusCode::OK,
                            [("content-type", "application/x-protobuf")],
                            resp.encode_to_vec(),
                        )
                    }
                    Err(_) => (
                        axum::http::StatusCode::BAD_REQUEST,
                        [("content-type", "text/plain")],
                        b"not an ExportMetricsServiceRequest".to_vec(),
                    ),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, rx)
}

/// One served value: metric name, sorted labels, value as rendered.
type Point = (String, Vec<(String, String)>, String);

fn sorted_labels(
    attributes: &[opentelemetry_proto::tonic::common::v1::KeyValue],
    extra: Option<(&str, String)>,
) -> Vec<(String, String)> {
    let mut labels: Vec<(String, String)> = attributes
        .iter()
        .map(|kv| (kv.key.clone(), string_of(kv.value.as_ref())))
        .chain(extra.map(|(k, v)| (k.to_string(), v)))
        .collect();
    labels.sort();
    labels
}

/// The data points of one request as the samples `/metrics` serves for
/// them: monotonic sums get `_total` back, summaries give their quantiles
/// and `_count`, histograms their cumulative `_bucket`s, `_sum` and
/// `_count`. (A summary's `_sum` is checked by the unit tests: zone
/// summaries serve none.)
fn points_of(req: &ExportMetricsServiceRequest) -> BTreeSet<Point> {
    use astrolabe::http::exposition::format_value;
    let mut out = BTreeSet::new();
    let mut add = |name: String, labels, v: f64| out.insert((name, labels, format_value(v)));
    for m in metrics_of(req) {
        match &m.data {
            Some(metric::Data::Gauge(g)) => {
                for dp in &g.data_points {
                    add(
                        m.name.clone(),
                        sorted_labels(&dp.attributes, None),
                        value_of(dp),
                    );
                }
            }
            Some(metric::Data::Sum(s)) => {
                assert!(s.is_monotonic, "{} should be a counter", m.name);
                for dp in &s.data_points {
                    let labels = sorted_labels(&dp.attributes, None);
                    add(format!("{}_total", m.name), labels, value_of(dp));
                }
            }
            Some(metric::Data::Summary(s)) => {
                for dp in &s.data_points {
                    for q in &dp.quantile_values {
                        let quantile = Some(("quantile", format_value(q.quantile)));
                        add(
                            m.name.clone(),
                            sorted_labels(&dp.attributes, quantile),
                            q.value,
                        );
                    }
                    let labels = sorted_labels(&dp.attributes, None);
                    add(format!("{}_count", m.name), labels, dp.count as f64);
                }
            }
            Some(metric::Data::Histogram(h)) => {
                for dp in &h.data_points {
                    assert_eq!(dp.bucket_counts.len(), dp.explicit_bounds.len() + 1);
                    let mut cumulative = 0;
                    let bounds = dp.explicit_bounds.iter().chain([&f64::INFINITY]);
                    for (bound, count) in bounds.zip(&dp.bucket_counts) {
                        cumulative += count;
                        let le = Some(("le", format_value(*bound)));
                        let labels = sorted_labels(&dp.attributes, le);
                        add(format!("{}_bucket", m.name), labels, cumulative as f64);
                    }
                    assert_eq!(
                        cumulative, dp.count,
                        "{}: buckets add up to the count",
                        m.name
                    );
                    let labels = sorted_labels(&dp.attributes, None);
                    add(format!("{}_count", m.name), labels.clone(), dp.count as f64);
                    if let Some(sum) = dp.sum {
                        add(format!("{}_sum", m.name), labels, sum);
                    }
                }
            }
            other => panic!("unexpected data for {}: {other:?}", m.name),
        };
    }
    out
}

fn metrics_of(
    req: &ExportMetricsServiceRequest,
) -> impl Iterator<Item = &opentelemetry_proto::tonic::metrics::v1::Metric> {
    req.resource_metrics
        .iter()
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
}

fn metric_named<'a>(
    req: &'a ExportMetricsServiceRequest,
    name: &str,
) -> &'a opentelemetry_proto::tonic::metrics::v1::Metric {
    metrics_of(req)
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("no metric {name} in the export"))
}

fn value_of(dp: &opentelemetry_proto::tonic::metrics::v1::NumberDataPoint) -> f64 {
    match dp.value {
        Some(number_data_point::Value::AsDouble(d)) => d,
        Some(number_data_point::Value::AsInt(i)) => i as f64,
        None => panic!("a data point without a value"),
    }
}

fn string_of(v: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        other => format!("{other:?}"),
    }
}

fn resource_of(req: &ExportMetricsServiceRequest) -> BTreeMap<String, String> {
    req.resource_metrics
        .iter()
        .filter_map(|rm| rm.resource.as_ref())
        .flat_map(|r| r.attributes.iter())
        .map(|kv| (kv.key.clone(), string_of(kv.value.as_ref())))
        .collect()
}

/// The families of a text exposition (0.0.4) of one `# TYPE`.
fn families_of_type(text: &str, kind: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(&format!(" {kind}")))
        .map(str::to_string)
        .collect()
}

/// Parses a text exposition (0.0.4) into points, unescaping label values.
/// Summaries' `_sum` samples are left out, as in [`points_of`].
fn points_of_text(text: &str) -> BTreeSet<Point> {
    let summaries = families_of_type(text, "summary");
    let mut out = BTreeSet::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), Vec::new()),
            Some((name, rest)) => (name.to_string(), parse_labels(rest.trim_end_matches('}'))),
        };
        if name
            .strip_suffix("_sum")
            .is_some_and(|family| summaries.contains(family))
        {
            continue;
        }
        let mut labels = labels;
        labels.sort();
        let v: f64 = match value {
            "NaN" => f64::NAN,
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap(),
        };
        out.insert((name, labels, astrolabe::http::exposition::format_value(v)));
    }
    out
}

fn parse_labels(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            return out;
        }
        assert_eq!(chars.next(), Some('"'));
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(o) => value.push(o),
                    None => {}
                },
                '"' => break,
                c => value.push(c),
            }
        }
        out.push((key.trim_start_matches(',').to_string(), value));
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
}

async fn next_request(inbox: &mut Inbox) -> ExportMetricsServiceRequest {
    tokio::time::timeout(Duration::from_secs(30), inbox.recv())
        .await
        .expect("no OTLP request within 30 s")
        .expect("receiver gone")
}

fn options(zone: &str, seeds: Vec<SocketAddr>, work: i64) -> AgentOptions {
    AgentOptions {
        zone: ZonePath::parse(zone).unwrap(),
        id: astrolabe::agent::id_from_zone(&ZonePath::parse(zone).unwrap()),
        listen: "127.0.0.1:0".parse().unwrap(),
        advertise: None,
        seeds,
        interval: Duration::from_millis(200),
        web_listen: "127.0.0.1:0".parse().unwrap(),
        textfile_directory: None,
        aggregates: vec![
            "SELECT sum(work) AS work_summed, max(work) AS work_peak, quantile(0.9, work) AS work_p90"
                .into(),
        ],
        attributes: vec![("work".into(), Value::Int(work))],
        collector_timeout: Duration::from_secs(5),
        collector_interval: None,
        host_collectors: true,
        host_paths: Default::default(),
        application: None,
        process_groups: Vec::new(),
        gossip_security: None,
        web_config: None,
        metrics_unauthenticated: false,
        limits: Default::default(),
        actions: Default::default(),
        trusted_keys: Default::default(),
        signature_window: Duration::from_secs(60),
    }
}

/// Three in-process agents in two zones, converged.
async fn small_cluster() -> Vec<RunningAgent> {
    let first = start(options("/z0/h0", Vec::new(), 1)).await.unwrap();
    let seed = first.gossip_addr;
    let mut agents = vec![first];
    for (i, zone) in ["/z0/h1", "/z1/h2"].iter().enumerate() {
        agents.push(
            start(options(zone, vec![seed], i as i64 + 2))
                .await
                .unwrap(),
        );
    }
    let converged = async {
        loop {
            let view = agents[0].view.get();
            let root = view.zones.first().map(|z| z.row.clone());
            let done = root.is_some_and(|r| {
                r.members() == 3 && r.value("work_summed").and_then(Value::as_i64) == Some(6)
            }) && !view.host.is_empty();
            if done {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), converged)
        .await
        .expect("in-process cluster did not converge");
    agents
}

async fn scrape(port: u16) -> String {
    tokio::task::spawn_blocking(move || http_get(port, "/metrics"))
        .await
        .unwrap()
        .expect("/metrics")
}

/// Freezes one snapshot of a live agent, serves it on the real `/metrics`
/// handler and exports it through the real OTLP exporter: same numbers.
async fn same_numbers_over(protocol: Protocol) {
    let agents = small_cluster().await;
    let (addr, mut inbox) = match protocol {
        Protocol::Grpc => grpc_receiver().await,
        Protocol::HttpProtobuf => http_receiver().await,
    };
    let frozen = Arc::new(ViewCell::default());
    frozen.set((*agents[0].view.get()).clone());
    let (web, _server) = astrolabe::http::serve("127.0.0.1:0".parse().unwrap(), frozen.clone())
        .await
        .unwrap();
    let opts = OtlpOptions::new(&format!("http://{addr}"), protocol, Duration::from_secs(5));
    let identity = Identity {
        host_name: "test-host".into(),
        zone_path: "/z0/h0".into(),
        agent_id: 7,
    };
    let mut exporter = OtlpExporter::new(&opts, &identity).unwrap();
    let sent = exporter.export(&frozen.get()).await.unwrap();
    let received = next_request(&mut inbox).await;
    let exposition = scrape(web.port()).await;
    let served = points_of_text(&exposition);
    let pushed = points_of(&received);
    // Figures for BENCHMARKS.md (printed, never asserted).
    eprintln!(
        "{protocol}: one export of a 3-agent snapshot: {sent} data points, {} bytes of protobuf",
        received.encoded_len()
    );
    let data_points: usize = metrics_of(&received)
        .map(|m| match &m.data {
            Some(metric::Data::Gauge(g)) => g.data_points.len(),
            Some(metric::Data::Sum(s)) => s.data_points.len(),
            Some(metric::Data::Summary(s)) => s.data_points.len(),
            Some(metric::Data::Histogram(h)) => h.data_points.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(sent, data_points, "points sent vs received");
    let only_served: Vec<_> = served.difference(&pushed).take(10).collect();
    let only_pushed: Vec<_> = pushed.difference(&served).take(10).collect();
    assert!(
        only_served.is_empty() && only_pushed.is_empty(),
        "{protocol}: served but not pushed: {only_served:?}\npushed but not served: {only_pushed:?}"
    );
    // The ground truth is in there, not just two equal empty sets.
    let zone = |name: &str, z: &str| -> Option<String> {
        pushed
            .iter()
            .find(|(n, l, _)| n == name && l == &vec![("zone_path".to_string(), z.to_string())])
            .map(|(_, _, v)| v.clone())
    };
    assert_eq!(zone("astrolabe_zone_members", "/").as_deref(), Some("3"));
    assert_eq!(
        zone("astrolabe_zone_work_summed", "/").as_deref(),
        Some("6")
    );
    assert_eq!(
        zone("astrolabe_zone_work_summed", "/z0").as_deref(),
        Some("3")
    );
    assert_eq!(
        zone("astrolabe_zone_work_peak", "/z1").as_deref(),
        Some("3")
    );
    assert!(pushed
        .iter()
        .any(|(n, _, _)| n == "astrolabe_gossip_rounds_total"));
    assert!(pushed.iter().any(|(n, _, _)| n == "node_cpu_seconds_total"));
    // The data model a Collector user sees: units from the name's suffix,
    // zone quantiles as Summary points, the query histogram as a Histogram.
    for (name, unit) in [
        ("node_cpu_seconds", "s"),
        ("astrolabe_zone_age_seconds", "s"),
        ("node_memory_MemTotal_bytes", "By"),
        ("astrolabe_query_duration_seconds", "s"),
        ("astrolabe_gossip_rounds", ""),
    ] {
        assert_eq!(metric_named(&received, name).unit, unit, "{name}");
    }
    let p90 = metric_named(&received, "astrolabe_zone_work_p90");
    let Some(metric::Data::Summary(summary)) = &p90.data else {
        panic!("zone quantiles should be a Summary: {p90:?}");
    };
    let root = summary
        .data_points
        .iter()
        .find(|dp| sorted_labels(&dp.attributes, None) == [("zone_path".into(), "/".into())])
        .expect("the root's p90");
    assert_eq!(root.count, 3, "three leaves under the root");
    assert_eq!(root.quantile_values.len(), 1);
    assert_eq!(root.quantile_values[0].quantile, 0.9);
    let queries = metric_named(&received, "astrolabe_query_duration_seconds");
    assert!(
        matches!(queries.data, Some(metric::Data::Histogram(_))),
        "{queries:?}"
    );
    let resource = resource_of(&received);
    assert_eq!(
        resource.get("service.name").map(String::as_str),
        Some("astrolabe")
    );
    assert_eq!(
        resource.get("host.name").map(String::as_str),
        Some("test-host")
    );
    assert_eq!(
        resource.get("astrolabe.zone_path").map(String::as_str),
        Some("/z0/h0")
    );

    // A second export of a later snapshot carries the later numbers.
    frozen.set((*agents[0].view.get()).clone());
    exporter.export(&frozen.get()).await.unwrap();
    let again = points_of(&next_request(&mut inbox).await);
    assert_eq!(again, points_of_text(&scrape(web.port()).await));

    // Rows and families that vanish (expired zones, a removed textfile)
    // vanish from the next export too: no stale points kept by the SDK.
    let mut smaller = (*agents[0].view.get()).clone();
    smaller.zones.truncate(2);
    smaller.host = Arc::new(Vec::new());
    frozen.set(smaller);
    exporter.export(&frozen.get()).await.unwrap();
    let after = points_of(&next_request(&mut inbox).await);
    let served = points_of_text(&scrape(web.port()).await);
    assert!(!after.iter().any(|(n, _, _)| n.starts_with("node_")));
    assert_eq!(after, served);
    exporter.shutdown();
    for a in agents {
        a.leave().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_points_equal_what_metrics_serves() {
    same_numbers_over(Protocol::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_protobuf_points_equal_what_metrics_serves() {
    same_numbers_over(Protocol::HttpProtobuf).await;
}

/// Zone rows of one request: zone_path -> members.
fn members_by_zone(req: &ExportMetricsServiceRequest) -> BTreeMap<String, String> {
    points_of(req)
        .into_iter()
        .filter(|(n, _, _)| n == "astrolabe_zone_members")
        .filter_map(|(_, l, v)| {
            l.into_iter()
                .find(|(k, _)| k == "zone_path")
                .map(|(_, z)| (z, v))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_push_when_configured_by_flag_environment_or_file() {
    let (grpc, mut grpc_inbox) = grpc_receiver().await;
    let (http, mut http_inbox) = http_receiver().await;
    let dir = temp_dir("otlp-agents");
    // By the file's [otlp] section, over gRPC.
    let file = dir.join("c.toml");
    std::fs::write(
        &file,
        format!(
            "[otlp]\nendpoint = \"http://{grpc}\"\nprotocol = \"grpc\"\ninterval = \"300ms\"\n"
        ),
    )
    .unwrap();
    // Started, not waited for: the pushes they make are the wait.
    let children = Cluster::builder("otlp-agents-cluster")
        .zones(["/otlp/a", "/otlp/b", "/otlp/c"])
        .arg("--no-collector.host")
        .each(move |i, agent| match i {
            // By flags, over gRPC.
            0 => agent
                .args(["--otlp.endpoint", &format!("http://{grpc}")])
                .args(["--otlp.protocol", "grpc", "--otlp.interval", "300ms"]),
            // By environment, over HTTP/protobuf.
            1 => agent
                .env("ASTROLABE_OTLP_ENDPOINT", format!("http://{http}"))
                .env("ASTROLABE_OTLP_PROTOCOL", "http/protobuf")
                .env("ASTROLABE_OTLP_INTERVAL", "300ms"),
            _ => agent.args(["--config.file", file.to_str().unwrap()]),
        })
        .unready()
        .spawn();

    // Each pusher eventually reports the whole cluster, under its own resource.
    let mut seen: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let collect = async {
        loop {
            tokio::select! {
                Some(r) = grpc_inbox.recv() => {
                    let zone = resource_of(&r).get("astrolabe.zone_path").cloned().unwrap_or_default();
                    seen.insert(format!("grpc {zone}"), members_by_zone(&r));
                }
                Some(r) = http_inbox.recv() => {
                    let zone = resource_of(&r).get("astrolabe.zone_path").cloned().unwrap_or_default();
                    seen.insert(format!("http {zone}"), members_by_zone(&r));
                }
            }
            let whole = |k: &str| {
                seen.get(k).is_some_and(|m| {
                    m.get("/").map(String::as_str) == Some("3")
                        && m.get("/otlp").map(String::as_str) == Some("3")
                })
            };
            if whole("grpc /otlp/a") && whole("http /otlp/b") && whole("grpc /otlp/c") {
                return;
            }
        }
    };
    let done = tokio::time::timeout(Duration::from_secs(40), collect).await;
    drop(children);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        done.is_ok(),
        "not every agent pushed the whole cluster: {seen:?}"
    );
}

#[test]
fn bad_otlp_settings_stop_start_up_with_one_line() {
    for (flags, needle) in [
        (
            vec!["--otlp.endpoint", "https://collector:4317"],
            "https is not supported",
        ),
        (vec!["--otlp.endpoint", "collector:4317"], "expected a URL"),
        (
            vec!["--otlp.endpoint", "http://c:4317", "--otlp.protocol", "udp"],
            "use grpc or http/protobuf",
        ),
        (
            vec!["--otlp.endpoint", "http://c:4317", "--otlp.interval", "0s"],
            "must be positive",
        ),
    ] {
        let args = [
            &["agent", "--zone", "/a/b", "--no-collector.host"][..],
            &["--gossip.listen-address", "127.0.0.1:0"],
            &["--web.listen-address", "127.0.0.1:0"],
            &flags,
        ]
        .concat();
        let out = run_cli(&args, &[]);
        assert!(!out.ok, "{flags:?} should fail");
        let err = out.stderr.trim().to_string();
        assert!(err.contains(needle), "{flags:?}: {err}");
        assert!(err.lines().count() <= 3, "{flags:?}: short, got {err}");
    }
}

#[test]
fn check_config_refuses_a_bad_otlp_section() {
    let dir = temp_dir("otlp-check");
    for (text, needle) in [
        (
            "zone = \"/a/b\"\n[otlp]\nendpoint = \"http://c:4317\"\nprotocol = \"udp\"\n",
            "use grpc or http/protobuf",
        ),
        (
            "zone = \"/a/b\"\n[otlp]\nendpiont = \"http://c:4317\"\n",
            "unknown field `endpiont`",
        ),
        (
            "zone = \"/a/b\"\n[otlp]\nendpoint = \"http://c:4317\"\ninterval = \"soon\"\n",
            "[otlp] interval",
        ),
    ] {
        let file = dir.join("bad.toml");
        std::fs::write(&file, text).unwrap();
        let out = run_cli(&["check-config", file.to_str().unwrap()], &[]);
        let err = out.stderr;
        assert!(!out.ok, "{text} passed");
        assert!(
            err.contains(needle) && err.contains("bad.toml"),
            "{text}: {err}"
        );
    }
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        "zone = \"/a/b\"\n[otlp]\nendpoint = \"http://c:4318\"\nprotocol = \"http/protobuf\"\ninterval = \"30s\"\n",
    )
    .unwrap();
    run_ok(&[std::ffi::OsStr::new("check-config"), good.as_os_str()]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Series the rules say to leave out (a summary without `_count`) and
/// exports that fail are counted in `astrolabe_otlp_dropped_points_total`,
/// served on `/metrics`, and the rest still goes out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_left_out_is_counted_and_served() {
    use astrolabe_collectors::{Kind, MetricFamily};
    let (addr, mut inbox) = grpc_receiver().await;
    let mut no_count = MetricFamily::new("rpc_latency_seconds", "Latency.", Kind::Summary);
    no_count.push(&[("quantile", "0.5")], 0.2);
    let mut fine = MetricFamily::new("rpc_size_bytes", "Size.", Kind::Summary);
    fine.push(&[("quantile", "0.5")], 10.0);
    fine.push_suffixed("_sum", &[], 40.0);
    fine.push_suffixed("_count", &[], 4.0);
    let view = astrolabe::view::View {
        host: Arc::new(vec![no_count, fine]),
        ..Default::default()
    };
    let identity = Identity {
        host_name: "h".into(),
        zone_path: "/a/b".into(),
        agent_id: 1,
    };
    let opts = OtlpOptions::new(
        &format!("http://{addr}"),
        Protocol::Grpc,
        Duration::from_secs(5),
    );
    let mut exporter = OtlpExporter::new(&opts, &identity).unwrap();
    let sent = exporter.export(&view).await.unwrap();
    let received = next_request(&mut inbox).await;
    let size = metric_named(&received, "rpc_size_bytes");
    let Some(metric::Data::Summary(s)) = &size.data else {
        panic!("{size:?}")
    };
    assert_eq!((s.data_points[0].count, s.data_points[0].sum), (4, 40.0));
    assert_eq!(size.unit, "By");
    assert!(!metrics_of(&received).any(|m| m.name == "rpc_latency_seconds"));
    let counters = exporter.counters().clone();
    assert_eq!(counters.dropped_total(DropReason::MissingCount), 1);

    // A receiver that is gone: the whole export counts as failed.
    let gone = format!("http://127.0.0.1:{}", free_port());
    let opts = OtlpOptions::new(&gone, Protocol::HttpProtobuf, Duration::from_secs(2));
    let mut lost = OtlpExporter::new(&opts, &identity)
        .unwrap()
        .with_counters(counters.clone());
    assert!(lost.export(&view).await.is_err());
    assert_eq!(
        counters.dropped_total(DropReason::ExportFailed),
        sent as u64
    );
    // Each export leaves the summary out again.
    assert_eq!(counters.dropped_total(DropReason::MissingCount), 2);

    // Served on /metrics from the snapshot that carries the counters.
    let cell = Arc::new(ViewCell::default());
    cell.set(astrolabe::view::View {
        otlp: counters,
        ..view
    });
    let (web, _server) = astrolabe::http::serve("127.0.0.1:0".parse().unwrap(), cell)
        .await
        .unwrap();
    let text = scrape(web.port()).await;
    for (reason, n) in [
        ("missing_count", 2),
        ("export_failed", sent),
        ("rejected", 0),
    ] {
        let line = format!("astrolabe_otlp_dropped_points_total{{reason=\"{reason}\"}} {n}\n");
        let otlp: Vec<&str> = text.lines().filter(|l| l.contains("otlp")).collect();
        assert!(text.contains(&line), "{line} not in {otlp:?}");
    }
    assert!(text.contains(&format!("astrolabe_otlp_exported_points_total {sent}\n")));
}

/// A helper process, killed when the test ends, whether it passes or not.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The agent binary against the OpenTelemetry project's own Python
/// decoder: names that are no valid instrument names, NaN and infinities
/// arrive as served; units, summaries and histograms as the rules say.
#[test]
fn a_python_otlp_receiver_sees_the_data_model_the_rules_give() {
    if !require(
        "a_python_otlp_receiver_sees_the_data_model_the_rules_give",
        "python3 with opentelemetry-proto (pip install opentelemetry-proto)",
        python_modules(&["opentelemetry.proto.collector.metrics.v1.metrics_service_pb2"]),
    ) {
        return;
    }
    let dir = temp_dir("otlp-python");
    std::fs::write(
        dir.join("odd.prom"),
        "recording:rule:rate5m 1.5\n_leading_underscore 2\nodd_nan NaN\nodd_inf +Inf\nodd_minus_inf -Inf\n\
         # TYPE files_size_bytes gauge\nfiles_size_bytes 1024\n\
         # TYPE job_runs_seconds_total counter\njob_runs_seconds_total 12\n",
    )
    .unwrap();
    let port = free_port();
    let mut receiver = ChildGuard(
        std::process::Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/otlp_receiver.py"
            ))
            .args(["--http", &port.to_string()])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let (line_tx, lines) = std::sync::mpsc::channel();
    let stdout = receiver.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
            if line_tx.send(line).is_err() {
                return;
            }
        }
    });
    let first = lines.recv_timeout(Duration::from_secs(20));
    assert!(
        first.is_ok_and(|l| l.contains("listening")),
        "the receiver did not start"
    );
    let agent = Agent::builder("/py/h1")
        .dir(&dir)
        .args([
            "--no-collector.host",
            "--attribute",
            "work=5",
            "--aggregate",
            "SELECT quantile(0.5, work) AS work_p50",
            "--otlp.endpoint",
            &format!("http://127.0.0.1:{port}"),
            "--otlp.protocol",
            "http/protobuf",
            "--otlp.interval",
            "300ms",
        ])
        .spawn();
    // A second agent whose receiver is not there: its exports are counted lost.
    let lost = Agent::builder("/py/h2")
        .seeds(&[agent.gossip])
        .dir(&dir)
        .args([
            "--otlp.endpoint",
            &format!("http://127.0.0.1:{}", free_port()),
            "--otlp.interval",
            "300ms",
        ])
        .spawn();
    let mut last = serde_json::Value::Null;
    let found = eventually(Duration::from_secs(30), || {
        let Ok(line) = lines.recv_timeout(Duration::from_secs(1)) else {
            return false;
        };
        last = serde_json::from_str(&line).unwrap();
        line.contains("recording:rule:rate5m") && line.contains("astrolabe_zone_work_p50")
    });
    assert!(
        found,
        "no export with the textfile and the zone summary: {last}"
    );
    let metrics: Vec<&serde_json::Value> = last["resource_metrics"][0]["scope_metrics"][0]
        ["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    let named = |name: &str| -> &serde_json::Value {
        metrics
            .iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {last}"))
    };
    let gauge_value = |name: &str| named(name)["gauge"]["data_points"][0]["as_double"].clone();
    assert_eq!(gauge_value("recording:rule:rate5m"), 1.5);
    assert_eq!(gauge_value("_leading_underscore"), 2.0);
    assert_eq!(gauge_value("odd_nan"), "NaN");
    assert_eq!(gauge_value("odd_inf"), "Infinity");
    assert_eq!(gauge_value("odd_minus_inf"), "-Infinity");
    assert_eq!(named("files_size_bytes")["unit"], "By");
    let runs = named("job_runs_seconds");
    assert_eq!(runs["unit"], "s");
    assert_eq!(runs["sum"]["is_monotonic"], true);
    assert_eq!(
        runs["sum"]["aggregation_temporality"],
        "AGGREGATION_TEMPORALITY_CUMULATIVE"
    );
    let p50 = named("astrolabe_zone_work_p50");
    let leaf = p50["summary"]["data_points"]
        .as_array()
        .unwrap()
        .iter()
        .find(|dp| dp["attributes"][0]["value"]["string_value"] == "/py")
        .unwrap_or_else(|| panic!("no summary point of /py: {p50}"));
    // Only h1 has `work`: the zone's sketch holds one value.
    assert_eq!(leaf["count"], "1", "{leaf}");
    assert_eq!(leaf["quantile_values"][0]["quantile"], 0.5);
    // The sketch's relative error is 2%.
    let p50_value = leaf["quantile_values"][0]["value"].as_f64().unwrap();
    assert!((p50_value - 5.0).abs() < 0.1, "{leaf}");
    let queries = named("astrolabe_query_duration_seconds");
    assert_eq!(queries["unit"], "s");
    assert!(queries["histogram"]["data_points"][0]["explicit_bounds"].is_array());
    assert_eq!(
        named("astrolabe_gossip_rounds")["metadata"][0]["value"]["string_value"],
        "counter"
    );

    let served = |a: &Agent, metric: &str| -> f64 {
        a.get("/metrics")
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix(metric)?.trim().parse::<f64>().ok())
            })
            .unwrap_or(0.0)
    };
    assert!(eventually(Duration::from_secs(10), || served(
        &agent,
        "astrolabe_otlp_exported_points_total"
    ) > 0.0));
    assert!(
        eventually(Duration::from_secs(20), || served(
            &lost,
            "astrolabe_otlp_dropped_points_total{reason=\"export_failed\"}"
        ) > 0.0),
        "the lost exports were not counted"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
