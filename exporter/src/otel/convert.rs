//! Served families to OTLP metrics, by the OpenTelemetry rules for
//! Prometheus data: counters are monotonic cumulative sums, gauges and
//! untyped families are gauges, summaries are Summary points (quantiles,
//! `_count`, `_sum`), histograms are Histogram points (explicit bounds from
//! `le`). Names are kept as `/metrics` serves them (the spec says not to
//! alter them; OTLP carries any name, `recording:rule:rate5m` included),
//! NaN and ±Inf go out as they are (OTLP doubles carry them), and units come
//! from the name's unit suffix.
//!
//! The points are built straight from the snapshot's families, with no
//! SDK aggregation in between: the agent already holds every data point,
//! and an SDK instrument's state (its cardinality-sized tables) would cost
//! more memory than the whole agent.

use std::collections::{BTreeMap, HashMap, HashSet};

use astrolabe_collectors::{Kind, MetricFamily, Sample};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, summary_data_point::ValueAtQuantile, AggregationTemporality, Gauge,
    Histogram, HistogramDataPoint, Metric, NumberDataPoint, Sum, Summary, SummaryDataPoint,
};

use super::counters::DropReason;
use super::units::unit_of;

/// The OTLP name of a served family: counters lose `_total`, which
/// Prometheus-bound converters (the Collector's exporters, Prometheus'
/// OTLP receiver) add back, so a round trip through a Collector gives the
/// names `/metrics` serves.
pub fn otlp_name(prometheus_name: &str, kind: Kind) -> &str {
    match kind {
        Kind::Counter => prometheus_name
            .strip_suffix("_total")
            .unwrap_or(prometheus_name),
        _ => prometheus_name,
    }
}

/// When the points were taken, and since when cumulative ones count.
#[derive(Debug, Clone, Copy)]
pub struct Times {
    pub start_unix_nano: u64,
    pub now_unix_nano: u64,
}

/// Series of one family left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeftOut {
    pub family: String,
    pub reason: DropReason,
    pub points: usize,
}

#[derive(Debug, Default)]
pub struct Converted {
    pub metrics: Vec<Metric>,
    /// Data points in `metrics` (a summary or histogram series is one).
    pub points: usize,
    pub left_out: Vec<LeftOut>,
}

/// Converts every family, merged by name and first-wins on a repeated
/// series, exactly as `/metrics` renders them.
pub fn convert(families: &[MetricFamily], times: Times) -> Converted {
    let mut merged: BTreeMap<&str, (&MetricFamily, Vec<&Sample>)> = BTreeMap::new();
    for f in families {
        merged
            .entry(f.name.as_str())
            .or_insert_with(|| (f, Vec::new()))
            .1
            .extend(&f.samples);
    }
    let mut out = Converted::default();
    for (name, (family, samples)) in merged {
        let mut seen = HashSet::new();
        let samples: Vec<&Sample> = samples
            .into_iter()
            .filter(|s| seen.insert((s.suffix, &s.labels)))
            .collect();
        if samples.is_empty() {
            continue;
        }
        let mut left_out = |reason, points| {
            out.left_out.push(LeftOut {
                family: name.to_string(),
                reason,
                points,
            })
        };
        let data = match family.kind {
            Kind::Counter => metric::Data::Sum(Sum {
                data_points: number_points(&samples, times),
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            }),
            Kind::Gauge | Kind::Untyped => metric::Data::Gauge(Gauge {
                data_points: number_points(&samples, times),
            }),
            Kind::Summary => metric::Data::Summary(Summary {
                data_points: summary_points(&samples, times, &mut left_out),
            }),
            Kind::Histogram => metric::Data::Histogram(Histogram {
                data_points: histogram_points(&samples, times, &mut left_out),
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            }),
        };
        let points = match &data {
            metric::Data::Sum(s) => s.data_points.len(),
            metric::Data::Gauge(g) => g.data_points.len(),
            metric::Data::Summary(s) => s.data_points.len(),
            metric::Data::Histogram(h) => h.data_points.len(),
            _ => 0,
        };
        if points == 0 {
            continue;
        }
        out.points += points;
        out.metrics.push(Metric {
            name: otlp_name(name, family.kind).to_string(),
            description: family.help.clone(),
            unit: unit_of(name, family.kind),
            metadata: vec![attribute("prometheus.type", prometheus_type(family.kind))],
            data: Some(data),
        });
    }
    out
}

fn prometheus_type(kind: Kind) -> &'static str {
    match kind {
        Kind::Untyped => "unknown",
        k => k.as_str(),
    }
}

pub fn attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

fn attributes<'a>(labels: impl IntoIterator<Item = &'a (String, String)>) -> Vec<KeyValue> {
    labels.into_iter().map(|(k, v)| attribute(k, v)).collect()
}

fn number_points(samples: &[&Sample], times: Times) -> Vec<NumberDataPoint> {
    samples
        .iter()
        .map(|s| NumberDataPoint {
            attributes: attributes(&s.labels),
            start_time_unix_nano: times.start_unix_nano,
            time_unix_nano: times.now_unix_nano,
            value: Some(number_data_point::Value::AsDouble(s.value)),
            ..Default::default()
        })
        .collect()
}

/// The samples of one summary or histogram series (one data point): its
/// labels but the one that tells its parts apart (`quantile`, `le`).
struct Series<'a> {
    labels: Vec<&'a (String, String)>,
    /// (value of the distinguishing label, sample value)
    parts: Vec<(&'a str, f64)>,
    sum: Option<f64>,
    count: Option<f64>,
    /// A sample this series cannot hold (no distinguishing label, say).
    stray: bool,
}

/// Groups samples into series by their labels without `part_label`, in the
/// order the series first appear.
fn series<'a>(samples: &[&'a Sample], part_label: &str) -> Vec<Series<'a>> {
    let mut out: Vec<Series<'a>> = Vec::new();
    let mut index: HashMap<Vec<&'a (String, String)>, usize> = HashMap::new();
    for s in samples {
        let labels: Vec<&(String, String)> =
            s.labels.iter().filter(|(k, _)| k != part_label).collect();
        let part = s
            .labels
            .iter()
            .find(|(k, _)| k == part_label)
            .map(|(_, v)| v.as_str());
        let at = *index.entry(labels.clone()).or_insert_with(|| {
            out.push(Series {
                labels,
                parts: Vec::new(),
                sum: None,
                count: None,
                stray: false,
            });
            out.len() - 1
        });
        let series = &mut out[at];
        match (s.suffix, part) {
            ("_sum", _) => series.sum = Some(s.value),
            ("_count", _) => series.count = Some(s.value),
            ("" | "_bucket", Some(p)) => series.parts.push((p, s.value)),
            _ => series.stray = true,
        }
    }
    out
}

/// The series that have a `_count`, with it; the rules drop the others.
fn counted_series<'a>(
    samples: &[&'a Sample],
    part_label: &str,
    left_out: &mut impl FnMut(DropReason, usize),
) -> Vec<(Series<'a>, f64)> {
    series(samples, part_label)
        .into_iter()
        .filter_map(|s| match s.count {
            Some(count) => Some((s, count)),
            None => {
                left_out(DropReason::MissingCount, 1);
                None
            }
        })
        .collect()
}

/// A `_count` as OTLP wants it: a whole number of observations.
fn whole_count(count: f64) -> Option<u64> {
    (count.is_finite() && count >= 0.0 && count.fract() == 0.0).then_some(count as u64)
}

/// A `quantile` or `le` label value as the text formats write it.
fn bound(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        t => t.parse::<f64>().ok().filter(|v| !v.is_nan()),
    }
}

fn summary_points(
    samples: &[&Sample],
    times: Times,
    left_out: &mut impl FnMut(DropReason, usize),
) -> Vec<SummaryDataPoint> {
    let mut points = Vec::new();
    for (s, count) in counted_series(samples, "quantile", left_out) {
        let quantiles: Option<Vec<ValueAtQuantile>> = s
            .parts
            .iter()
            .map(|(q, value)| {
                bound(q)
                    .filter(|q| (0.0..=1.0).contains(q))
                    .map(|quantile| ValueAtQuantile {
                        quantile,
                        value: *value,
                    })
            })
            .collect();
        let (Some(count), Some(mut quantiles), false) = (whole_count(count), quantiles, s.stray)
        else {
            left_out(DropReason::Malformed, 1);
            continue;
        };
        quantiles.sort_by(|a, b| a.quantile.total_cmp(&b.quantile));
        points.push(SummaryDataPoint {
            attributes: attributes(s.labels),
            start_time_unix_nano: times.start_unix_nano,
            time_unix_nano: times.now_unix_nano,
            count,
            // The rules: a summary without `_sum` has a sum of zero.
            sum: s.sum.unwrap_or(0.0),
            quantile_values: quantiles,
            flags: 0,
        });
    }
    points
}

fn histogram_points(
    samples: &[&Sample],
    times: Times,
    left_out: &mut impl FnMut(DropReason, usize),
) -> Vec<HistogramDataPoint> {
    let mut points = Vec::new();
    for (s, count) in counted_series(samples, "le", left_out) {
        match buckets(&s, count) {
            Some((count, explicit_bounds, bucket_counts)) => points.push(HistogramDataPoint {
                attributes: attributes(s.labels),
                start_time_unix_nano: times.start_unix_nano,
                time_unix_nano: times.now_unix_nano,
                count,
                sum: s.sum,
                bucket_counts,
                explicit_bounds,
                ..Default::default()
            }),
            None => left_out(DropReason::Malformed, 1),
        }
    }
    points
}

/// Cumulative `le` buckets to OTLP's explicit bounds and per-bucket counts
/// (the +Inf bound dropped, its bucket holding the rest of `_count`).
fn buckets(s: &Series<'_>, count: f64) -> Option<(u64, Vec<f64>, Vec<u64>)> {
    if s.stray {
        return None;
    }
    let count = whole_count(count)?;
    let mut cumulative: Vec<(f64, u64)> = s
        .parts
        .iter()
        .map(|(le, v)| Some((bound(le)?, whole_count(*v)?)))
        .collect::<Option<_>>()?;
    cumulative.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut bounds = Vec::new();
    let mut counts = Vec::new();
    let mut below = 0u64;
    for (le, c) in cumulative.iter().filter(|(le, _)| le.is_finite()) {
        counts.push(c.checked_sub(below)?);
        bounds.push(*le);
        below = *c;
    }
    counts.push(count.checked_sub(below)?);
    Some((count, bounds, counts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;

    const TIMES: Times = Times {
        start_unix_nano: 1,
        now_unix_nano: 2,
    };

    /// (suffix, labels, value)
    type Spec<'a> = (&'static str, &'a [(&'a str, &'a str)], f64);

    fn family(name: &str, kind: Kind, samples: &[Spec<'_>]) -> MetricFamily {
        let mut f = MetricFamily::new(name, "Help.", kind);
        for (suffix, labels, value) in samples {
            f.push_suffixed(suffix, labels, *value);
        }
        f
    }

    fn only(c: &Converted) -> &Metric {
        assert_eq!(c.metrics.len(), 1, "{c:?}");
        &c.metrics[0]
    }

    #[test]
    fn counters_gauges_and_untyped_keep_names_values_and_units() {
        let c = convert(
            &[
                family(
                    "node_cpu_seconds_total",
                    Kind::Counter,
                    &[("", &[("cpu", "0")], 1.5)],
                ),
                family(
                    "recording:rule:rate5m",
                    Kind::Untyped,
                    &[("", &[], f64::NAN)],
                ),
                family(
                    "_leading_underscore",
                    Kind::Gauge,
                    &[("", &[], f64::INFINITY)],
                ),
                family("x_ratio", Kind::Gauge, &[("", &[], f64::NEG_INFINITY)]),
            ],
            TIMES,
        );
        assert_eq!(c.points, 4);
        assert!(c.left_out.is_empty());
        let by_name: HashMap<&str, &Metric> =
            c.metrics.iter().map(|m| (m.name.as_str(), m)).collect();
        let cpu = by_name["node_cpu_seconds"];
        assert_eq!(cpu.unit, "s");
        let Some(Data::Sum(sum)) = &cpu.data else {
            panic!("{cpu:?}")
        };
        assert!(sum.is_monotonic);
        assert_eq!(
            sum.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        assert_eq!(sum.data_points[0].start_time_unix_nano, 1);
        let value = |m: &Metric| match &m.data {
            Some(Data::Gauge(g)) => match g.data_points[0].value {
                Some(number_data_point::Value::AsDouble(v)) => v,
                _ => panic!(),
            },
            other => panic!("{other:?}"),
        };
        assert!(value(by_name["recording:rule:rate5m"]).is_nan());
        assert_eq!(value(by_name["_leading_underscore"]), f64::INFINITY);
        assert_eq!(value(by_name["x_ratio"]), f64::NEG_INFINITY);
        assert_eq!(by_name["x_ratio"].unit, "1");
        assert_eq!(
            by_name["recording:rule:rate5m"].metadata,
            vec![attribute("prometheus.type", "unknown")]
        );
    }

    #[test]
    fn summaries_are_summary_points() {
        let c = convert(
            &[family(
                "rpc_duration_seconds",
                Kind::Summary,
                &[
                    ("", &[("quantile", "0.99"), ("m", "get")], 9.0),
                    ("", &[("m", "get"), ("quantile", "0.5")], 5.0),
                    ("_sum", &[("m", "get")], 70.0),
                    ("_count", &[("m", "get")], 12.0),
                    // No _count: dropped, as the rules say.
                    ("", &[("m", "put"), ("quantile", "0.5")], 1.0),
                    ("_count", &[("m", "del")], 3.0),
                    ("", &[("m", "bad"), ("quantile", "high")], 1.0),
                    ("_count", &[("m", "bad")], 1.0),
                ],
            )],
            TIMES,
        );
        let m = only(&c);
        assert_eq!(m.unit, "s");
        let Some(Data::Summary(s)) = &m.data else {
            panic!("{m:?}")
        };
        assert_eq!(s.data_points.len(), 2);
        let get = &s.data_points[0];
        assert_eq!(get.attributes, vec![attribute("m", "get")]);
        assert_eq!((get.count, get.sum), (12, 70.0));
        let q: Vec<(f64, f64)> = get
            .quantile_values
            .iter()
            .map(|q| (q.quantile, q.value))
            .collect();
        assert_eq!(q, vec![(0.5, 5.0), (0.99, 9.0)]);
        let del = &s.data_points[1];
        assert_eq!((del.count, del.sum, del.quantile_values.len()), (3, 0.0, 0));
        assert_eq!(
            c.left_out,
            vec![
                LeftOut {
                    family: "rpc_duration_seconds".into(),
                    reason: DropReason::MissingCount,
                    points: 1
                },
                LeftOut {
                    family: "rpc_duration_seconds".into(),
                    reason: DropReason::Malformed,
                    points: 1
                },
            ]
        );
        assert_eq!(c.points, 2);
    }

    #[test]
    fn histograms_are_histogram_points_with_per_bucket_counts() {
        let c = convert(
            &[family(
                "astrolabe_query_duration_seconds",
                Kind::Histogram,
                &[
                    ("_bucket", &[("le", "1")], 4.0),
                    ("_bucket", &[("le", "0.1")], 1.0),
                    ("_bucket", &[("le", "+Inf")], 6.0),
                    ("_sum", &[], 3.5),
                    ("_count", &[], 6.0),
                    ("_bucket", &[("le", "1"), ("q", "x")], 4.0),
                    ("_bucket", &[("le", "2"), ("q", "x")], 3.0),
                    ("_count", &[("q", "x")], 5.0),
                    ("_bucket", &[("le", "1"), ("q", "y")], 1.0),
                ],
            )],
            TIMES,
        );
        let m = only(&c);
        let Some(Data::Histogram(h)) = &m.data else {
            panic!("{m:?}")
        };
        assert_eq!(
            h.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        assert_eq!(h.data_points.len(), 1);
        let p = &h.data_points[0];
        assert_eq!(p.explicit_bounds, vec![0.1, 1.0]);
        assert_eq!(p.bucket_counts, vec![1, 3, 2]);
        assert_eq!((p.count, p.sum), (6, Some(3.5)));
        let mut reasons: Vec<DropReason> = c.left_out.iter().map(|l| l.reason).collect();
        reasons.sort();
        // q=x: buckets not cumulative; q=y: no _count.
        assert_eq!(
            reasons,
            vec![DropReason::MissingCount, DropReason::Malformed]
        );
    }

    #[test]
    fn families_merge_by_name_first_series_wins() {
        let c = convert(
            &[
                family("t", Kind::Gauge, &[("", &[("a", "1")], 1.0)]),
                family(
                    "t",
                    Kind::Counter,
                    &[("", &[("a", "1")], 2.0), ("", &[("a", "2")], 3.0)],
                ),
                family("empty", Kind::Gauge, &[]),
            ],
            TIMES,
        );
        let m = only(&c);
        let Some(Data::Gauge(g)) = &m.data else {
            panic!("{m:?}")
        };
        let values: Vec<_> = g.data_points.iter().map(|p| p.value).collect();
        assert_eq!(
            values,
            vec![
                Some(number_data_point::Value::AsDouble(1.0)),
                Some(number_data_point::Value::AsDouble(3.0))
            ]
        );
    }
}
