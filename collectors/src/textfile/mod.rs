//! The textfile collector: `*.prom` files in a directory, in the Prometheus
//! text format, as node_exporter's `--collector.textfile.directory` reads
//! them. Every file is parsed on its own; a bad file is reported with its
//! name and line and the others still count.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::{Collector, CollectorError, Kind, MetricFamily, Sample};

pub struct TextfileCollector {
    pub directory: PathBuf,
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parses the Prometheus text format. Timestamps are refused, as
/// node_exporter refuses them: a textfile sample is valid "now".
pub fn parse(file: &str, text: &str) -> Result<Vec<MetricFamily>, CollectorError> {
    let err = |line: usize, reason: String| CollectorError::Parse {
        file: file.to_string(),
        line,
        reason,
    };
    let mut families: BTreeMap<String, MetricFamily> = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let mut parts = rest.trim_start().splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("HELP"), Some(name), help) => {
                    let f = families
                        .entry(name.to_string())
                        .or_insert_with(|| MetricFamily::new(name, "", Kind::Untyped));
                    f.help = help.unwrap_or("").to_string();
                }
                (Some("TYPE"), Some(name), Some(kind)) => {
                    let kind = match kind.trim() {
                        "counter" => Kind::Counter,
                        "gauge" => Kind::Gauge,
                        "untyped" => Kind::Untyped,
                        other => return Err(err(n, format!("unsupported type {other:?}"))),
                    };
                    families
                        .entry(name.to_string())
                        .or_insert_with(|| MetricFamily::new(name, "", kind))
                        .kind = kind;
                }
                _ => {}
            }
            continue;
        }
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
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v
                .parse::<f64>()
                .map_err(|_| err(n, format!("invalid value {v:?}")))?,
        };
        if fields.next().is_some() {
            return Err(err(n, "timestamps are not allowed in textfiles".into()));
        }
        families
            .entry(name.to_string())
            .or_insert_with(|| MetricFamily::new(name, "", Kind::Untyped))
            .samples
            .push(Sample {
                labels,
                value,
                suffix: "",
            });
    }
    Ok(families
        .into_values()
        .filter(|f| !f.samples.is_empty())
        .collect())
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

fn parse_labels(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut labels = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let eq = rest.find('=').ok_or("a label needs name=\"value\"")?;
        let name = rest[..eq].trim();
        if !valid_name(name) || name.contains(':') {
            return Err(format!("invalid label name {name:?}"));
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

impl TextfileCollector {
    fn read(&self) -> Result<(Vec<MetricFamily>, Vec<String>, MetricFamily), CollectorError> {
        let dir = std::fs::read_dir(&self.directory).map_err(|e| CollectorError::Io {
            what: self.directory.display().to_string(),
            source: e,
        })?;
        let mut paths: Vec<PathBuf> = dir
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "prom"))
            .collect();
        paths.sort();
        let mut families = Vec::new();
        let mut errors = Vec::new();
        let mut mtimes = MetricFamily::new(
            "node_textfile_mtime_seconds",
            "Unixtime mtime of textfiles successfully read.",
            Kind::Gauge,
        );
        for path in paths {
            match read_one(&path) {
                Ok((fams, mtime)) => {
                    families.extend(fams);
                    let name = path
                        .file_name()
                        .map(|n| n.to_string_lossy().to_string())
                        .unwrap_or_default();
                    mtimes.push(&[("file", &name)], mtime);
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        Ok((families, errors, mtimes))
    }
}

fn read_one(path: &Path) -> Result<(Vec<MetricFamily>, f64), CollectorError> {
    let io = |e| CollectorError::Io {
        what: path.display().to_string(),
        source: e,
    };
    let text = std::fs::read_to_string(path).map_err(io)?;
    let mtime = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map(|t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0)
        })
        .map_err(io)?;
    let file = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    Ok((parse(&file, &text)?, mtime))
}

impl Collector for TextfileCollector {
    fn name(&self) -> &'static str {
        "textfile"
    }

    fn collect(&self) -> Result<Vec<MetricFamily>, CollectorError> {
        let (mut families, errors, mtimes) = self.read()?;
        for e in &errors {
            tracing::warn!(error = %e, "textfile collector: file skipped");
        }
        families.push(mtimes);
        families.push(MetricFamily::gauge(
            "node_textfile_scrape_error",
            "1 if there was an error opening or reading a file, 0 otherwise",
            if errors.is_empty() { 0.0 } else { 1.0 },
        ));
        Ok(families)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_help_type_labels_and_escapes() {
        let text = "# HELP app_requests_total Requests.\n# TYPE app_requests_total counter\napp_requests_total{code=\"200\",path=\"/a\\\"b\"} 12\napp_requests_total{code=\"500\"} 1\n# just a comment\nqueue_depth 7.5\n";
        let fams = parse("app.prom", text).unwrap();
        let req = fams
            .iter()
            .find(|f| f.name == "app_requests_total")
            .unwrap();
        assert_eq!(req.kind, Kind::Counter);
        assert_eq!(req.help, "Requests.");
        assert_eq!(req.samples.len(), 2);
        assert_eq!(
            req.samples[0].labels[1],
            ("path".to_string(), "/a\"b".to_string())
        );
        let q = fams.iter().find(|f| f.name == "queue_depth").unwrap();
        assert_eq!(q.unlabeled(), Some(7.5));
    }

    #[test]
    fn bad_input_names_the_file_and_line() {
        for (text, reason) in [
            ("ok 1\nbad{x=\"1\" 2\n", "unterminated"),
            ("ok 1\nm 1 1700000000\n", "timestamps"),
            ("9bad 1\n", "invalid metric name"),
            ("m abc\n", "invalid value"),
            ("m{x=1} 2\n", "quoted"),
            ("m\n", "needs a value"),
        ] {
            let e = parse("f.prom", text).unwrap_err().to_string();
            assert!(e.starts_with("f.prom:"), "{e}");
            assert!(e.contains(reason), "{text:?}: {e}");
        }
    }

    #[test]
    fn reads_a_directory_and_reports_bad_files() {
        let dir = std::env::temp_dir().join(format!("astrolabe-textfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("good.prom"), "value_a 3\n").unwrap();
        std::fs::write(dir.join("bad.prom"), "value_b\n").unwrap();
        std::fs::write(dir.join("ignored.txt"), "value_c 1\n").unwrap();
        let c = TextfileCollector {
            directory: dir.clone(),
        };
        let fams = c.collect().unwrap();
        assert!(fams
            .iter()
            .any(|f| f.name == "value_a" && f.unlabeled() == Some(3.0)));
        assert!(!fams.iter().any(|f| f.name == "value_c"));
        let err = fams
            .iter()
            .find(|f| f.name == "node_textfile_scrape_error")
            .unwrap();
        assert_eq!(err.unlabeled(), Some(1.0));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
