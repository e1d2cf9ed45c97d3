//! Metric names from attribute names, and the attributes that would lose
//! one another by becoming the same metric (`a.b` and `a_b` both become
//! `astrolabe_zone_a_b`). Configured attributes that collide stop
//! start-up; a collision in what arrives by gossip or from a textfile is
//! counted once and logged once, and the attribute whose name is already
//! a metric name is the one served.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use astrolabe_collectors::MetricFamily;

/// Prefix of every zone attribute's metric.
pub const ZONE_PREFIX: &str = "astrolabe_zone_";

/// Metrics the agent serves beside each zone's attributes, as the
/// attribute names that would become them.
const SERVED_BY_THE_AGENT: [&str; 2] = ["members", "age_seconds"];

/// A metric name from an attribute name: `[a-zA-Z0-9_]`, not starting
/// with a digit. Borrowed when the name is one already.
pub fn sanitize(name: &str) -> Cow<'_, str> {
    let clean = |c: char| c.is_ascii_alphanumeric() || c == '_';
    if name.chars().all(clean) && !name.starts_with(|c: char| c.is_ascii_digit()) {
        return Cow::Borrowed(name);
    }
    let mut out: String = name
        .chars()
        .map(|c| if clean(c) { c } else { '_' })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    Cow::Owned(out)
}

pub fn zone_metric(attribute: &str) -> String {
    format!("{ZONE_PREFIX}{}", sanitize(attribute))
}

/// Why two attributes cannot both be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameCollision {
    #[error("attributes {first} and {second} both become the metric {metric}")]
    Attributes {
        first: String,
        second: String,
        metric: String,
    },
    #[error("attribute {attribute} becomes the metric {metric}, which the agent serves itself")]
    Reserved { attribute: String, metric: String },
    #[error("attribute {0} is given twice")]
    Twice(String),
}

impl NameCollision {
    pub fn metric(&self) -> String {
        match self {
            NameCollision::Attributes { metric, .. } | NameCollision::Reserved { metric, .. } => {
                metric.clone()
            }
            NameCollision::Twice(name) => zone_metric(name),
        }
    }
}

fn reserved(sanitized: &str) -> bool {
    SERVED_BY_THE_AGENT.contains(&sanitized)
}

/// The first collision among configured attribute names, in their order.
pub fn check_configured<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<(), NameCollision> {
    let mut seen: HashMap<Cow<'a, str>, &'a str> = HashMap::new();
    for name in names {
        let metric = sanitize(name);
        if reserved(&metric) {
            return Err(NameCollision::Reserved {
                attribute: name.to_string(),
                metric: zone_metric(name),
            });
        }
        if let Some(first) = seen.get(&metric) {
            return Err(if *first == name {
                NameCollision::Twice(name.to_string())
            } else {
                NameCollision::Attributes {
                    first: first.to_string(),
                    second: name.to_string(),
                    metric: zone_metric(name),
                }
            });
        }
        seen.insert(metric, name);
    }
    Ok(())
}

/// The attribute of `row` that `name` would collide with as a metric, if
/// any: one already named like the metric `name` becomes, or one of
/// `renamed` (clean name, attribute) that becomes it too. `served` says
/// which of the row's attributes become metrics at all.
pub fn collides_in<V>(
    row: &BTreeMap<std::sync::Arc<str>, V>,
    renamed: &[(String, String)],
    name: &str,
    served: impl Fn(&V) -> bool,
) -> Option<NameCollision> {
    let metric = sanitize(name);
    if reserved(&metric) {
        return Some(NameCollision::Reserved {
            attribute: name.to_string(),
            metric: zone_metric(name),
        });
    }
    let other = match &metric {
        Cow::Owned(clean) => row
            .get_key_value(clean.as_str())
            .filter(|(_, v)| served(v))
            .map(|(k, _)| &**k),
        Cow::Borrowed(_) => None,
    }
    .or_else(|| {
        renamed
            .iter()
            .find(|(clean, other)| *clean == *metric && other != name)
            .map(|(_, other)| other.as_str())
    })?;
    Some(NameCollision::Attributes {
        first: other.to_string(),
        second: name.to_string(),
        metric: zone_metric(name),
    })
}

/// Collisions in what arrived by gossip or from a textfile: each is
/// counted and logged the first time it is seen.
#[derive(Debug, Default)]
pub struct NameCollisions {
    seen: Mutex<BTreeSet<(String, String)>>,
    count: AtomicU64,
}

impl NameCollisions {
    /// Notes a collision from `source` (`gossip`, `textfile`); the
    /// attribute `dropped` is not served.
    pub fn note(&self, collision: &NameCollision, dropped: &str, source: &str) {
        let key = (collision.metric(), dropped.to_string());
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.insert(key) {
            self.count.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                source,
                not_served = dropped,
                "{collision}; {dropped} is not served"
            );
        }
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn family(&self) -> MetricFamily {
        let mut f = MetricFamily::new(
            "astrolabe_metric_name_collisions_total",
            "Attributes from gossip or textfiles not served because another attribute of the same row becomes the same metric name; each collision counted once.",
            astrolabe_collectors::Kind::Counter,
        );
        f.push(&[], self.count() as f64);
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sanitized() {
        assert_eq!(sanitize("cpu.util-ratio"), "cpu_util_ratio");
        assert_eq!(sanitize("9lives"), "_9lives");
        assert!(matches!(sanitize("load1"), Cow::Borrowed("load1")));
    }

    #[test]
    fn configured_collisions_name_both_attributes() {
        assert_eq!(
            check_configured(["role", "a.b", "x", "a_b"])
                .unwrap_err()
                .to_string(),
            "attributes a.b and a_b both become the metric astrolabe_zone_a_b"
        );
        assert_eq!(
            check_configured(["age-seconds"]).unwrap_err().to_string(),
            "attribute age-seconds becomes the metric astrolabe_zone_age_seconds, which the agent serves itself"
        );
        assert_eq!(
            check_configured(["a", "a"]).unwrap_err().to_string(),
            "attribute a is given twice"
        );
        assert!(check_configured(["a.b", "a_c", "b"]).is_ok());
    }

    #[test]
    fn a_collision_in_a_row_is_found_from_either_side() {
        let row: BTreeMap<std::sync::Arc<str>, f64> = [("a.b".into(), 1.0), ("a_b".into(), 2.0)]
            .into_iter()
            .collect();
        let served = |_: &f64| true;
        let c = collides_in(&row, &[], "a.b", served).unwrap();
        assert_eq!(c.metric(), "astrolabe_zone_a_b");
        // Seen from a_b, only through the names already renamed.
        assert!(collides_in(&row, &[], "a_b", served).is_none());
        let renamed = [("a_b".to_string(), "a.b".to_string())];
        assert!(collides_in(&row, &renamed, "a_b", served).is_some());
        assert!(collides_in(&row, &[], "a.b", |_| false).is_none());
    }

    #[test]
    fn each_collision_is_counted_once() {
        let c = NameCollisions::default();
        let x = check_configured(["a.b", "a_b"]).unwrap_err();
        c.note(&x, "a.b", "gossip");
        c.note(&x, "a.b", "gossip");
        assert_eq!(c.count(), 1);
    }
}
