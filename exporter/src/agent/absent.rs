//! Warns, once, about aggregates over an attribute that no row of the
//! leaf table has (`max(my-attr.x)`, which SQL reads as `my - x`): they
//! are valid SQL, so they are accepted, and would be null forever without
//! a word. Checked after the first collection (when this agent's row is
//! whole) for the configured aggregates, and when a certificate arrives.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::aggregate::AggregateSet;
use crate::engine::Engine;

#[derive(Default)]
pub struct AbsentAttributes {
    /// The configured aggregates, until they are checked.
    pending: Option<Vec<String>>,
    /// Certificates checked, by zone, name and issue time.
    checked: BTreeSet<(String, String, u64)>,
    /// (aggregate column, attribute) pairs already warned about.
    warned: BTreeSet<(Arc<str>, Arc<str>)>,
    collected: bool,
}

impl AbsentAttributes {
    /// The user's aggregates (the system ones read what the collectors
    /// give, on hosts that have it), checked at the first collection.
    pub fn new(aggregates: &[String]) -> AbsentAttributes {
        AbsentAttributes {
            pending: Some(aggregates.to_vec()),
            ..Default::default()
        }
    }

    /// A fresh sample is this agent's row: check what is pending.
    pub fn collected(&mut self, engine: &Engine) {
        self.collected = true;
        if let Some(sqls) = self.pending.take() {
            self.check("configured", &sqls, engine);
        }
        self.certificates(engine);
    }

    /// Checks the certificates held and not checked yet (installed here
    /// or received by gossip); after the first collection only.
    pub fn certificates(&mut self, engine: &Engine) {
        if !self.collected {
            return;
        }
        for cert in engine.certificates() {
            let key = (cert.zone.clone(), cert.name.clone(), cert.issued);
            if self.checked.contains(&key) {
                continue;
            }
            self.checked.insert(key);
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
