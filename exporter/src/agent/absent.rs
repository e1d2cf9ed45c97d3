//! Warns, once, about aggregates over an attribute that no row of the
//! leaf table has (`max(my-attr.x)`, which SQL reads as `my - x`): they
//! are valid SQL, so they are accepted, and would be null forever without
//! a word. Checked once this agent's row is whole (its first collection)
//! and its zone's rows have had ten gossip rounds to arrive (so that an
//! attribute only its siblings have is not taken for absent), for the
//! configured aggregates, and for each certificate installed or received.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::aggregate::AggregateSet;
use crate::engine::Engine;

/// Rounds the zone's rows are given to arrive before the first check.
const SETTLE_ROUNDS: u64 = 10;

pub struct AbsentAttributes {
    /// The configured aggregates, until they are checked.
    pending: Option<Vec<String>>,
    /// Certificates checked, by zone, name and issue time.
    checked: BTreeSet<(String, String, u64)>,
    /// (aggregate column, attribute) pairs already warned about.
    warned: BTreeSet<(Arc<str>, Arc<str>)>,
    collected: bool,
    /// Monotonic milliseconds from which the check may run.
    settled_ms: u64,
}

impl AbsentAttributes {
    /// The user's aggregates (the system ones read what the collectors
    /// give, on hosts that have it); `round_ms` is the gossip round.
    pub fn new(aggregates: &[String], round_ms: u64) -> AbsentAttributes {
        AbsentAttributes {
            pending: Some(aggregates.to_vec()),
            checked: BTreeSet::new(),
            warned: BTreeSet::new(),
            collected: false,
            settled_ms: SETTLE_ROUNDS.saturating_mul(round_ms),
        }
    }

    /// A fresh sample is this agent's row.
    pub fn collected(&mut self) {
        self.collected = true;
    }

    /// Checks what is pending, once the agent has collected and its zone
    /// has settled: the configured aggregates, then every certificate held
    /// and not checked yet. Called each round and at each install.
    pub fn due(&mut self, engine: &Engine, now_ms: u64) {
        if !self.collected || now_ms < self.settled_ms {
            return;
        }
        if let Some(sqls) = self.pending.take() {
            self.check("configured", &sqls, engine);
        }
        for cert in engine.certificates() {
            let key = (cert.zone.clone(), cert.name.clone(), cert.issued);
            if !self.checked.insert(key) {
                continue;
            }
            if let Some(sql) = &cert.sql {
                let origin = format!("certificate {} in {}", cert.name, cert.zone);
                self.check(&origin, std::slice::from_ref(sql), engine);
            }
        }
    }

    fn check(&mut self, origin: &str, sqls: &[String], engine: &Engine) {
        let Ok(set) = AggregateSet::compile(sqls) else {
            return;
        };
        let Some(leaf) = engine.tables().last() else {
            return;
        };
        for absent in set.absent_in(leaf.rows().map(|r| r.values())) {
            if !self
                .warned
                .insert((absent.column.clone(), absent.attribute.clone()))
            {
                continue;
            }
            let hint = match &absent.meant {
                Some(name) => format!(
                    "; a row has {name:?}: quote a name with - or . in the SQL, as {name:?}"
                ),
                None => String::new(),
            };
            tracing::warn!(
                aggregate = %absent.column,
                attribute = %absent.attribute,
                "aggregate {} ({origin}) reads attribute {:?}, which no row of this agent's zone has: it stays null until one does{hint}",
                absent.column,
                absent.attribute,
            );
        }
    }
}
