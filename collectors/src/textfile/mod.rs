//! The textfile collector: `*.prom` files in a directory, in the Prometheus
//! text format, as node_exporter's `--collector.textfile.directory` reads
//! them. Every file is parsed on its own; a bad file is reported with its
//! name and line and the others still count.

mod parse;

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use parse::parse;

use crate::{Collector, CollectorError, Kind, MetricFamily};

pub struct TextfileCollector {
    pub directory: PathBuf,
    /// For each file (or the directory) with a problem, a fingerprint of
    /// its content and of what was wrong, as last logged: a bad file is
    /// logged once per change, not at every collection.
    reported: Mutex<HashMap<String, u64>>,
}

/// What is wrong with one file (or the directory) in one collection.
struct Problem {
    path: String,
    message: String,
    /// Of the file's content (or metadata) and the message.
    fingerprint: u64,
}

fn fingerprint(parts: &[&[u8]]) -> u64 {
    let mut h = DefaultHasher::new();
    parts.hash(&mut h);
    h.finish()
}

/// One collection: the families of every good file, merged by name.
struct Reading {
    families: Vec<MetricFamily>,
    /// The files each family was read from, for its default HELP.
    sources: Vec<Vec<String>>,
    mtimes: MetricFamily,
    problems: Vec<Problem>,
}

impl Reading {
    /// Takes in a file's family, or says why it conflicts with the same
    /// family of a file read before.
    fn merge(&mut self, family: MetricFamily, path: &str) -> Result<(), String> {
        let Some(at) = self.families.iter().position(|f| f.name == family.name) else {
            self.families.push(family);
            self.sources.push(vec![path.to_string()]);
            return Ok(());
        };
        let first = &self.sources[at][0];
        let held = &mut self.families[at];
        if held.kind != family.kind {
            return Err(format!(
                "{} is {} here but {} in {first}",
                family.name,
                family.kind.as_str(),
                held.kind.as_str()
            ));
        }
        if !held.help.is_empty() && !family.help.is_empty() && held.help != family.help {
            return Err(format!(
                "{} has the HELP {:?} here but {:?} in {first}",
                family.name, family.help, held.help
            ));
        }
        let series = |s: &crate::Sample| {
            let mut labels = s.labels.clone();
            labels.sort();
            (s.suffix, labels)
        };
        let given: HashSet<_> = held.samples.iter().map(series).collect();
        if let Some(dup) = family.samples.iter().find(|s| given.contains(&series(s))) {
            return Err(format!(
                "{}{} with labels {:?} is given by {first} already",
                family.name, dup.suffix, dup.labels
            ));
        }
        if held.help.is_empty() {
            held.help = family.help;
        }
        held.samples.extend(family.samples);
        self.sources[at].push(path.to_string());
        Ok(())
    }
}

impl TextfileCollector {
    pub fn new(directory: PathBuf) -> TextfileCollector {
        TextfileCollector {
            directory,
            reported: Mutex::new(HashMap::new()),
        }
    }

    fn read(&self) -> Reading {
        let mut reading = Reading {
            families: Vec::new(),
            sources: Vec::new(),
            mtimes: MetricFamily::new(
                "node_textfile_mtime_seconds",
                "Unixtime mtime of textfiles successfully read.",
                Kind::Gauge,
            ),
            problems: Vec::new(),
        };
        let dir = match std::fs::read_dir(&self.directory) {
            Ok(dir) => dir,
            Err(e) => {
                let message = format!("reading {}: {e}", self.directory.display());
                reading.problems.push(Problem {
                    path: self.directory.display().to_string(),
                    fingerprint: fingerprint(&[message.as_bytes()]),
                    message,
                });
                return reading;
            }
        };
        let mut paths: Vec<PathBuf> = dir
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "prom"))
            .collect();
        paths.sort();
        for path in paths {
            let shown = path.display().to_string();
            let file = match read_one(&path) {
                Ok(file) => file,
                Err(problem) => {
                    reading.problems.push(problem);
                    continue;
                }
            };
            let mut conflicts = Vec::new();
            for family in file.families {
                if let Err(reason) = reading.merge(family, &shown) {
                    conflicts.push(format!("{shown}: {reason}"));
                }
            }
            if !conflicts.is_empty() {
                let message = conflicts.join("; ");
                reading.problems.push(Problem {
                    path: shown.clone(),
                    fingerprint: fingerprint(&[file.text.as_bytes(), message.as_bytes()]),
                    message,
                });
            }
            reading.mtimes.push(&[("file", &shown)], file.mtime);
        }
        for (family, sources) in reading.families.iter_mut().zip(&reading.sources) {
            if family.help.is_empty() {
                family.help = format!("Metric read from {}", sources.join(", "));
            }
        }
        reading
    }

    /// Logs the problems not logged before for the same content, and
    /// forgets files that are good again; what it logged.
    fn report<'a>(&self, problems: &'a [Problem]) -> Vec<&'a str> {
        let mut logged = Vec::new();
        let mut by_path: BTreeMap<&str, (u64, Vec<&str>)> = BTreeMap::new();
        for p in problems {
            let entry = by_path.entry(&p.path).or_insert((0, Vec::new()));
            entry.0 = entry.0.rotate_left(7) ^ p.fingerprint;
            entry.1.push(&p.message);
        }
        let mut reported = self.reported.lock().unwrap_or_else(|p| p.into_inner());
        let mut now = HashMap::new();
        for (path, (print, messages)) in by_path {
            if reported.get(path) != Some(&print) {
                for m in messages {
                    tracing::warn!(file = path, error = %m, "textfile collector: skipped until the file changes");
                    logged.push(m);
                }
            }
            now.insert(path.to_string(), print);
        }
        *reported = now;
        logged
    }
}

/// One file as read.
struct ReadFile {
    text: String,
    families: Vec<MetricFamily>,
    /// Whole seconds, as node_exporter gives it.
    mtime: f64,
}

/// Reads and parses one file; or what is wrong with it.
fn read_one(path: &Path) -> Result<ReadFile, Problem> {
    let shown = path.display().to_string();
    let problem = |error: CollectorError, content: &[u8]| {
        let message = error.to_string();
        Problem {
            path: shown.clone(),
            fingerprint: fingerprint(&[content, message.as_bytes()]),
            message,
        }
    };
    let io = |e| CollectorError::Io {
        what: shown.clone(),
        source: e,
    };
    let text = std::fs::read_to_string(path).map_err(|e| problem(io(e), &[]))?;
    let families = parse(&shown, &text).map_err(|e| problem(e, text.as_bytes()))?;
    // Stat only once the file parsed, so that a failure does not look fresh.
    let mtime = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map(|t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as f64)
                .unwrap_or(0.0)
        })
        .map_err(|e| problem(io(e), text.as_bytes()))?;
    Ok(ReadFile {
        text,
        families,
        mtime,
    })
}

impl Collector for TextfileCollector {
    fn name(&self) -> &'static str {
        "textfile"
    }

    /// Never fails: like node_exporter, a missing directory or a bad file
    /// is logged and shows in `node_textfile_scrape_error`.
    fn collect(&self) -> Result<Vec<MetricFamily>, CollectorError> {
        let reading = self.read();
        self.report(&reading.problems);
        let mut families = reading.families;
        if !reading.mtimes.samples.is_empty() {
            families.push(reading.mtimes);
        }
        families.push(MetricFamily::gauge(
            "node_textfile_scrape_error",
            "1 if there was an error opening or reading a file, 0 otherwise",
            if reading.problems.is_empty() {
                0.0
            } else {
                1.0
            },
        ));
        Ok(families)
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("astrolabe-textfile-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn scrape_error(fams: &[MetricFamily]) -> Option<f64> {
        fams.iter()
            .find(|f| f.name == "node_textfile_scrape_error")
            .and_then(MetricFamily::unlabeled)
    }

    #[test]
    fn reads_a_directory_and_reports_bad_files() {
        let dir = dir("read");
        std::fs::write(dir.join("good.prom"), "value_a 3\n").unwrap();
        std::fs::write(dir.join("bad.prom"), "value_b\n").unwrap();
        std::fs::write(dir.join("ignored.txt"), "value_c 1\n").unwrap();
        let c = TextfileCollector::new(dir.clone());
        let fams = c.collect().unwrap();
        let a = fams.iter().find(|f| f.name == "value_a").unwrap();
        assert_eq!(a.unlabeled(), Some(3.0));
        let good = dir.join("good.prom").display().to_string();
        assert_eq!(a.help, format!("Metric read from {good}"));
        assert!(!fams.iter().any(|f| f.name == "value_c"));
        assert_eq!(scrape_error(&fams), Some(1.0));
        // As node_exporter: the path as the directory was given, whole
        // seconds, and only for files that were read.
        let mtimes = fams
            .iter()
            .find(|f| f.name == "node_textfile_mtime_seconds")
            .unwrap();
        assert_eq!(mtimes.samples.len(), 1);
        assert_eq!(mtimes.samples[0].labels, [("file".to_string(), good)]);
        assert_eq!(mtimes.samples[0].value.fract(), 0.0);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_bad_file_is_logged_once_per_change() {
        let dir = dir("once");
        let bad = dir.join("bad.prom");
        std::fs::write(&bad, "# TYPE x counter\nx -1\n").unwrap();
        let c = TextfileCollector::new(dir.clone());
        let logged = |c: &TextfileCollector| {
            let reading = c.read();
            let n = c.report(&reading.problems).len();
            (n, reading.problems.len())
        };
        assert_eq!(logged(&c), (1, 1));
        assert_eq!(logged(&c), (0, 1), "the same problem is not logged again");
        std::fs::write(&bad, "# TYPE x counter\nx -2\n").unwrap();
        assert_eq!(logged(&c), (1, 1), "a change of the file is");
        std::fs::write(&bad, "# TYPE x counter\nx 2\n").unwrap();
        assert_eq!(logged(&c), (0, 0));
        std::fs::write(&bad, "# TYPE x counter\nx -2\n").unwrap();
        assert_eq!(logged(&c), (1, 1), "bad again after being good");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn families_of_several_files_merge_or_conflict() {
        let dir = dir("merge");
        std::fs::write(
            dir.join("a.prom"),
            "# TYPE jobs counter\njobs{q=\"a\"} 1\nt 1\n",
        )
        .unwrap();
        std::fs::write(dir.join("b.prom"), "jobs{q=\"b\"} 2\n").unwrap();
        std::fs::write(dir.join("c.prom"), "# TYPE jobs counter\njobs{q=\"c\"} 3\n").unwrap();
        std::fs::write(
            dir.join("d.prom"),
            "# TYPE jobs counter\njobs{q=\"a\"} 4\nu 1\n",
        )
        .unwrap();
        let c = TextfileCollector::new(dir.clone());
        let reading = c.read();
        let jobs = reading.families.iter().find(|f| f.name == "jobs").unwrap();
        let values: Vec<f64> = jobs.samples.iter().map(|s| s.value).collect();
        assert_eq!(
            values,
            [1.0, 3.0],
            "b's untyped jobs and d's duplicate are refused"
        );
        let messages: Vec<&str> = reading
            .problems
            .iter()
            .map(|p| p.message.as_str())
            .collect();
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert!(
            messages[0].contains("b.prom: jobs is untyped here but counter in"),
            "{messages:?}"
        );
        assert!(
            messages[1].contains("d.prom: jobs with labels"),
            "{messages:?}"
        );
        // The rest of a conflicting file still counts, as node_exporter has it.
        assert!(reading.families.iter().any(|f| f.name == "u"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_missing_directory_is_a_scrape_error_not_a_failure() {
        let c = TextfileCollector::new(PathBuf::from("/nonexistent/astrolabe-textfiles"));
        let fams = c.collect().unwrap();
        assert_eq!(scrape_error(&fams), Some(1.0));
    }
}
