//! The Prometheus text format (0.0.4) as node_exporter's textfile collector
//! reads it (prometheus/common's text parser): HELP and TYPE lines, and the
//! samples of counters, gauges, untyped metrics, summaries and histograms.
//!
//! HELP texts and label values are unescaped here, once, so that the
//! exposition writes them out exactly as the file said. The agent serves
//! every family in OpenMetrics as well, so what OpenMetrics cannot carry
//! (a negative counter, a fractional count, buckets that decrease) is
//! refused with its line and the reason instead of breaking the whole
//! exposition for a strict parser.

use std::collections::{HashMap, HashSet};

use crate::{CollectorError, Kind, MetricFamily, Sample};

pub(crate) fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

type Labels = Vec<(String, String)>;

/// One label set of a summary or a histogram: its quantiles or buckets,
/// its sum and its count.
struct Group {
    /// The labels in the file's order, without `quantile` or `le`.
    labels: Labels,
    /// (quantile or upper bound, value, line).
    points: Vec<(f64, f64, usize)>,
    sum: Option<(f64, usize)>,
    count: Option<(f64, usize)>,
}

/// A family as it is read, before the checks that need all its lines.
struct Draft {
    name: String,
    help: Option<String>,
    kind: Option<Kind>,
    plain: Vec<Sample>,
    groups: Vec<Group>,
    /// Label sets (sorted) already given, with the sample's suffix.
    series: HashSet<(&'static str, Labels)>,
}

impl Draft {
    fn new(name: &str) -> Draft {
        Draft {
            name: name.to_string(),
            help: None,
            kind: None,
            plain: Vec::new(),
            groups: Vec::new(),
            series: HashSet::new(),
        }
    }

    fn has_samples(&self) -> bool {
        !self.plain.is_empty() || !self.groups.is_empty()
    }

    fn group(&mut self, labels: Labels) -> &mut Group {
        let key = sorted(&labels);
        let at = match self.groups.iter().position(|g| sorted(&g.labels) == key) {
            Some(at) => at,
            None => {
                self.groups.push(Group {
                    labels,
                    points: Vec::new(),
                    sum: None,
                    count: None,
                });
                self.groups.len() - 1
            }
        };
        &mut self.groups[at]
    }
}

fn sorted(labels: &Labels) -> Labels {
    let mut key = labels.clone();
    key.sort();
    key
}

/// Which part of a summary or histogram a sample is.
#[derive(Clone, Copy, PartialEq)]
enum Part {
    Plain,
    Point,
    Sum,
    Count,
}

/// The family a sample named `name` belongs to, and which part of it the
/// sample is: the family of that exact name if there is one, else the
/// summary or histogram whose `_sum`, `_count` or `_bucket` it is.
fn route(families: &HashMap<String, Draft>, name: &str) -> Option<(String, Part)> {
    if let Some(f) = families.get(name) {
        // A histogram's own name is no sample of it; `add_sample` says so.
        let part = match f.kind {
            Some(Kind::Summary) => Part::Point,
            _ => Part::Plain,
        };
        return Some((name.to_string(), part));
    }
    for (suffix, part, kinds) in [
        ("_sum", Part::Sum, &[Kind::Summary, Kind::Histogram][..]),
        ("_count", Part::Count, &[Kind::Summary, Kind::Histogram][..]),
        ("_bucket", Part::Point, &[Kind::Histogram][..]),
    ] {
        if let Some(base) = name.strip_suffix(suffix) {
            if let Some(f) = families.get(base) {
                if f.kind.is_some_and(|k| kinds.contains(&k)) {
                    return Some((base.to_string(), part));
                }
            }
        }
    }
    None
}

fn parse_value(v: &str) -> Option<f64> {
    match v {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        v => v.parse::<f64>().ok(),
    }
}

/// A number as the exposition writes it in `le` and `quantile` labels.
fn label_number(v: f64) -> String {
    if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// `\\` and `\n` in a HELP text; any other backslash stays as it is, as
/// Prometheus reads it.
fn unescape_help(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('\\', Some('\\')) => {
                out.push('\\');
                chars.next();
            }
            ('\\', Some('n')) => {
                out.push('\n');
                chars.next();
            }
            (c, _) => out.push(c),
        }
    }
    out
}

fn whole(v: f64) -> bool {
    v >= 0.0 && v.is_finite() && v.fract() == 0.0
}

/// Parses the Prometheus text format. Timestamps are refused, as
/// node_exporter refuses them: a textfile sample is valid "now".
pub fn parse(file: &str, text: &str) -> Result<Vec<MetricFamily>, CollectorError> {
    let err = |line: usize, reason: String| CollectorError::Parse {
        file: file.to_string(),
        line,
        reason,
    };
    let mut order: Vec<String> = Vec::new();
    let mut families: HashMap<String, Draft> = HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim_start();
        if line.trim_end().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let rest = rest.trim_start_matches([' ', '\t']);
            let (keyword, rest) = rest.split_once([' ', '\t']).unwrap_or((rest, ""));
            if keyword != "HELP" && keyword != "TYPE" {
                continue;
            }
            let rest = rest.trim_start_matches([' ', '\t']);
            let (name, body) = rest.split_once([' ', '\t']).unwrap_or((rest, ""));
            if !valid_name(name) {
                return Err(err(n, format!("invalid metric name {name:?}")));
            }
            let body = body.trim_start_matches([' ', '\t']);
            if !families.contains_key(name) {
                order.push(name.to_string());
            }
            let f = families
                .entry(name.to_string())
                .or_insert_with(|| Draft::new(name));
            if keyword == "HELP" {
                if f.help.is_some() {
                    return Err(err(n, format!("second HELP line for {name}")));
                }
                f.help = Some(unescape_help(body));
                continue;
            }
            let kind = match body.trim_end() {
                "counter" => Kind::Counter,
                "gauge" => Kind::Gauge,
                "untyped" => Kind::Untyped,
                "summary" => Kind::Summary,
                "histogram" => Kind::Histogram,
                other => return Err(err(n, format!("unsupported type {other:?}"))),
            };
            if f.kind.is_some() {
                return Err(err(n, format!("second TYPE line for {name}")));
            }
            if f.has_samples() {
                return Err(err(n, format!("TYPE line for {name} after its samples")));
            }
            f.kind = Some(kind);
            continue;
        }
        let line = line.trim_end();
        let (name, labels, rest) = match line.find(['{', ' ', '\t']) {
            Some(at) if line.as_bytes()[at] == b'{' => {
                let close = find_label_end(&line[at..])
                    .ok_or_else(|| err(n, "unterminated label set".into()))?;
                let labels = parse_labels(&line[at + 1..at + close]).map_err(|r| err(n, r))?;
                (&line[..at], labels, &line[at + close + 1..])
            }
            Some(at) => (&line[..at], Vec::new(), &line[at..]),
            None => return Err(err(n, "a sample needs a value".into())),
        };
        if !valid_name(name) {
            return Err(err(n, format!("invalid metric name {name:?}")));
        }
        let mut fields = rest.split_whitespace();
        let value = fields
            .next()
            .ok_or_else(|| err(n, "a sample needs a value".into()))?;
        let value = parse_value(value).ok_or_else(|| err(n, format!("invalid value {value:?}")))?;
        if fields.next().is_some() {
            return Err(err(n, "timestamps are not allowed in textfiles".into()));
        }
        let (family, part) = match route(&families, name) {
            Some(found) => found,
            None => {
                order.push(name.to_string());
                families.insert(name.to_string(), Draft::new(name));
                (name.to_string(), Part::Plain)
            }
        };
        let Some(f) = families.get_mut(&family) else {
            continue;
        };
        add_sample(f, name, part, labels, value, n).map_err(|reason| err(n, reason))?;
    }
    let mut out = Vec::new();
    for name in order {
        let Some(draft) = families.remove(&name) else {
            continue;
        };
        if draft.has_samples() {
            out.push(finish(draft).map_err(|(line, reason)| err(line, reason))?);
        }
    }
    Ok(out)
}

/// Adds one sample to its family; the reason if the family cannot take it.
fn add_sample(
    f: &mut Draft,
    name: &str,
    part: Part,
    mut labels: Labels,
    value: f64,
    line: usize,
) -> Result<(), String> {
    let kind = f.kind.unwrap_or(Kind::Untyped);
    let special = match (kind, part) {
        (Kind::Histogram, Part::Plain) => {
            return Err(format!(
                "histogram {0}: a sample must be {0}_bucket, {0}_sum or {0}_count",
                f.name
            ))
        }
        (Kind::Summary, Part::Point) => Some("quantile"),
        (Kind::Histogram, Part::Point) => Some("le"),
        _ => None,
    };
    let suffix = match part {
        Part::Plain => "",
        Part::Point if kind == Kind::Histogram => "_bucket",
        Part::Point => "",
        Part::Sum => "_sum",
        Part::Count => "_count",
    };
    if !f.series.insert((suffix, sorted(&labels))) {
        return Err(format!("{name}{} is given twice", render_labels(&labels)));
    }
    if part == Part::Plain {
        if kind == Kind::Counter && (value.is_nan() || value < 0.0) {
            return Err(format!("counter {name} cannot be {value}"));
        }
        f.plain.push(Sample {
            labels,
            value,
            suffix: "",
        });
        return Ok(());
    }
    let point = match special {
        Some(label) => {
            let at = labels.iter().position(|(k, _)| k == label).ok_or_else(|| {
                format!(
                    "{name} needs a {label} label, as a sample of the {} {}",
                    kind.as_str(),
                    f.name
                )
            })?;
            let (_, text) = labels.remove(at);
            let x = parse_value(&text)
                .filter(|x| !x.is_nan())
                .ok_or_else(|| format!("{name}: {label}={text:?} is not a number"))?;
            if label == "quantile" && !(0.0..=1.0).contains(&x) {
                return Err(format!("{name}: quantile {text} is not between 0 and 1"));
            }
            Some(x)
        }
        None => None,
    };
    let g = f.group(labels);
    match (part, point) {
        (Part::Point, Some(x)) => g.points.push((x, value, line)),
        (Part::Sum, _) => g.sum = Some((value, line)),
        (Part::Count, _) => g.count = Some((value, line)),
        _ => {}
    }
    Ok(())
}

fn render_labels(labels: &Labels) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", inner.join(","))
}

/// The family as served, after the checks that need all its samples.
fn finish(draft: Draft) -> Result<MetricFamily, (usize, String)> {
    let kind = draft.kind.unwrap_or(Kind::Untyped);
    let mut family = MetricFamily::new(&draft.name, draft.help.as_deref().unwrap_or(""), kind);
    family.samples = draft.plain;
    let name = &draft.name;
    for mut g in draft.groups {
        g.points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let with = |label: &str, x: f64| {
            let mut labels = g.labels.clone();
            labels.push((label.to_string(), label_number(x)));
            labels
        };
        let (sum, sum_line) = g.sum.unwrap_or((0.0, 0));
        if sum.is_nan() || sum < 0.0 {
            return Err((sum_line, format!("{name}_sum cannot be {sum}")));
        }
        let count_of = |v: f64, line: usize| {
            if whole(v) {
                Ok(v)
            } else {
                Err((
                    line,
                    format!("{name}: a count must be a whole number, not {v}"),
                ))
            }
        };
        let mut samples = Vec::new();
        if let Some(w) = g.points.windows(2).find(|w| w[0].0 == w[1].0) {
            let (label, suffix) = if kind == Kind::Summary {
                ("quantile", "")
            } else {
                ("le", "_bucket")
            };
            return Err((
                w[1].2,
                format!(
                    "{name}{suffix}: {label}={} is given twice",
                    label_number(w[1].0)
                ),
            ));
        }
        let count = if kind == Kind::Summary {
            for &(q, v, line) in &g.points {
                if v < 0.0 {
                    return Err((line, format!("{name}: quantile {q} cannot be {v}")));
                }
                samples.push(Sample {
                    labels: with("quantile", q),
                    value: v,
                    suffix: "",
                });
            }
            match g.count {
                Some((c, line)) => count_of(c, line)?,
                None => 0.0,
            }
        } else {
            let inf = g
                .points
                .last()
                .filter(|p| p.0 == f64::INFINITY)
                .map(|p| (p.1, p.2));
            let count = match (g.count, inf) {
                (Some((c, line)), Some((i, _))) if c != i => {
                    return Err((
                        line,
                        format!("{name}_count is {c} but its +Inf bucket is {i}"),
                    ))
                }
                (Some((c, line)), _) => count_of(c, line)?,
                (None, Some((i, line))) => count_of(i, line)?,
                (None, None) => 0.0,
            };
            if inf.is_none() {
                g.points
                    .push((f64::INFINITY, count, g.count.map_or(0, |c| c.1)));
            }
            let mut previous: Option<(f64, f64)> = None;
            for &(le, v, line) in &g.points {
                count_of(v, line)?;
                if let Some((ple, pv)) = previous {
                    if v < pv {
                        return Err((
                            line,
                            format!(
                                "{name}_bucket: counts must not decrease, le={} has {v} after le={} had {pv}",
                                label_number(le),
                                label_number(ple)
                            ),
                        ));
                    }
                }
                previous = Some((le, v));
                samples.push(Sample {
                    labels: with("le", le),
                    value: v,
                    suffix: "_bucket",
                });
            }
            count
        };
        for (suffix, value) in [("_sum", sum), ("_count", count)] {
            samples.push(Sample {
                labels: g.labels.clone(),
                value,
                suffix,
            });
        }
        family.samples.extend(samples);
    }
    Ok(family)
}

fn find_label_end(s: &str) -> Option<usize> {
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '}' if !in_quotes => return Some(i),
            _ => {}
        }
    }
    None
}

fn parse_labels(s: &str) -> Result<Labels, String> {
    let mut labels: Labels = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let eq = rest.find('=').ok_or("a label needs name=\"value\"")?;
        let name = rest[..eq].trim();
        if !valid_name(name) || name.contains(':') {
            return Err(format!("invalid label name {name:?}"));
        }
        if labels.iter().any(|(k, _)| k == name) {
            return Err(format!("label {name} is given twice"));
        }
        let after = rest[eq + 1..].trim_start();
        let body = after
            .strip_prefix('"')
            .ok_or("a label value must be quoted")?;
        let mut value = String::new();
        let mut chars = body.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    _ => return Err("bad escape in label value".into()),
                },
                '"' => {
                    end = Some(i);
                    break;
                }
                c => value.push(c),
            }
        }
        let end = end.ok_or("unterminated label value")?;
        labels.push((name.to_string(), value));
        rest = body[end + 1..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str, name: &str) -> MetricFamily {
        parse("t.prom", text)
            .unwrap()
            .into_iter()
            .find(|f| f.name == name)
            .unwrap()
    }

    fn err(text: &str) -> String {
        parse("f.prom", text).unwrap_err().to_string()
    }

    #[test]
    fn parses_help_type_labels_and_escapes() {
        let text = "# HELP app_requests_total Requests.\n# TYPE app_requests_total counter\napp_requests_total{code=\"200\",path=\"/a\\\"b\"} 12\napp_requests_total{code=\"500\"} 1\n# just a comment\nqueue_depth 7.5\n";
        let req = one(text, "app_requests_total");
        assert_eq!(req.kind, Kind::Counter);
        assert_eq!(req.help, "Requests.");
        assert_eq!(req.samples.len(), 2);
        assert_eq!(
            req.samples[0].labels[1],
            ("path".to_string(), "/a\"b".to_string())
        );
        assert_eq!(one(text, "queue_depth").unlabeled(), Some(7.5));
    }

    #[test]
    fn help_is_unescaped_once_as_prometheus_reads_it() {
        let f = one(
            "# HELP m Backslash \\\\ and newline \\n, a \"quote\" and \\q kept\nm 1\n",
            "m",
        );
        assert_eq!(
            f.help,
            "Backslash \\ and newline \n, a \"quote\" and \\q kept"
        );
        let f = one("m{v=\"a\\\\b\\nc\\\"d\"} 1\n", "m");
        assert_eq!(f.samples[0].labels[0].1, "a\\b\nc\"d");
    }

    #[test]
    fn summaries_group_quantiles_sum_and_count_per_label_set() {
        let f = one(
            "# TYPE rpc summary\nrpc{svc=\"a\",quantile=\"0.9\"} 3\nrpc{svc=\"b\",quantile=\"0.5\"} 1\nrpc_sum{svc=\"a\"} 10\nrpc{quantile=\"0.5\",svc=\"a\"} 2\nrpc_count{svc=\"a\"} 4\n",
            "rpc",
        );
        assert_eq!(f.kind, Kind::Summary);
        let got: Vec<(String, String, f64)> = f
            .samples
            .iter()
            .map(|s| {
                let labels: Vec<String> =
                    s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                (s.suffix.to_string(), labels.join(","), s.value)
            })
            .collect();
        let want = [
            ("", "svc=a,quantile=0.5", 2.0),
            ("", "svc=a,quantile=0.9", 3.0),
            ("_sum", "svc=a", 10.0),
            ("_count", "svc=a", 4.0),
            ("", "svc=b,quantile=0.5", 1.0),
            ("_sum", "svc=b", 0.0),
            ("_count", "svc=b", 0.0),
        ];
        let want: Vec<(String, String, f64)> = want
            .iter()
            .map(|(a, b, c)| (a.to_string(), b.to_string(), *c))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn histograms_sort_buckets_and_get_their_inf_bucket() {
        let f = one(
            "# TYPE lat histogram\nlat_bucket{le=\"1\"} 2\nlat_bucket{le=\"0.5\"} 1\nlat_sum 3.5\nlat_count 4\n",
            "lat",
        );
        let got: Vec<(&str, String, f64)> = f
            .samples
            .iter()
            .map(|s| {
                let le = s
                    .labels
                    .iter()
                    .find(|(k, _)| k == "le")
                    .map(|(_, v)| v.clone());
                (s.suffix, le.unwrap_or_default(), s.value)
            })
            .collect();
        assert_eq!(
            got,
            [
                ("_bucket", "0.5".to_string(), 1.0),
                ("_bucket", "1".to_string(), 2.0),
                ("_bucket", "+Inf".to_string(), 4.0),
                ("_sum", String::new(), 3.5),
                ("_count", String::new(), 4.0),
            ]
        );
    }

    #[test]
    fn what_openmetrics_cannot_carry_is_refused_with_its_line() {
        for (text, reason) in [
            ("# TYPE c counter\nc -1\n", "counter c cannot be -1"),
            ("# TYPE s summary\ns 1\n", "needs a quantile label"),
            (
                "# TYPE s summary\ns{quantile=\"2\"} 1\n",
                "not between 0 and 1",
            ),
            ("# TYPE s summary\ns{quantile=\"0.5\"} -1\n", "cannot be -1"),
            ("# TYPE s summary\ns_count 1.5\n", "whole number"),
            ("# TYPE h histogram\nh 1\n", "must be h_bucket"),
            ("# TYPE h histogram\nh_bucket 1\n", "needs a le label"),
            (
                "# TYPE h histogram\nh_bucket{le=\"1\"} 3\nh_bucket{le=\"2\"} 2\nh_count 3\n",
                "must not decrease",
            ),
            (
                "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 3\nh_count 4\n",
                "+Inf bucket is 3",
            ),
            ("m 1\nm 2\n", "m is given twice"),
            ("m{a=\"1\",a=\"2\"} 1\n", "label a is given twice"),
            ("# TYPE m gauge\n# TYPE m counter\nm 1\n", "second TYPE"),
            ("# HELP m a\n# HELP m b\nm 1\n", "second HELP"),
            ("m 1\n# TYPE m gauge\n", "after its samples"),
            ("# TYPE m stateset\nm 1\n", "unsupported type"),
        ] {
            let e = err(text);
            assert!(e.starts_with("f.prom:"), "{e}");
            assert!(e.contains(reason), "{text:?}: {e}");
        }
    }

    #[test]
    fn bad_input_names_the_file_and_line() {
        for (text, line, reason) in [
            ("ok 1\nbad{x=\"1\" 2\n", 2, "unterminated"),
            ("ok 1\nm 1 1700000000\n", 2, "timestamps"),
            ("9bad 1\n", 1, "invalid metric name"),
            ("m abc\n", 1, "invalid value"),
            ("m{x=1} 2\n", 1, "quoted"),
            ("m\n", 1, "needs a value"),
            (
                "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"2\"} 0.5\n",
                3,
                "whole number",
            ),
        ] {
            let e = err(text);
            assert!(e.starts_with(&format!("f.prom:{line}:")), "{e}");
            assert!(e.contains(reason), "{text:?}: {e}");
        }
    }
}
