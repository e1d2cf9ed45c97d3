//! The SQL aggregate language (Astrolabe's aggregation functions).
//!
//! INTERFACE STUB: only `count(*)` and `first(n, x ORDER BY y)` of the
//! default set work here; the full language replaces this file.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::zone::{Attributes, Value, ATTR_ADDR, ATTR_CONTACTS, ATTR_ID, ATTR_MEMBERS};

/// Partial states of every aggregate column of a zone, by output name.
pub type States = BTreeMap<Arc<str>, State>;

/// A mergeable partial state of one aggregate column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum State {
    Count(u64),
    /// The `n` items with the smallest keys: (key, value), sorted by key.
    First { n: u32, items: Vec<(Value, Value)> },
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct AggregateError {
    pub message: String,
}

impl State {
    pub fn merge(&mut self, other: &State) {
        match (self, other) {
            (State::Count(a), State::Count(b)) => *a += b,
            (State::First { n, items }, State::First { items: more, .. }) => {
                items.extend(more.iter().cloned());
                items.sort_by(|a, b| {
                    a.0.as_f64()
                        .partial_cmp(&b.0.as_f64())
                        .unwrap_or(std::cmp::Ordering::Equal)
                });
                items.dedup();
                items.truncate(*n as usize);
            }
            _ => {}
        }
    }

    pub fn finalize(&self) -> Value {
        match self {
            State::Count(c) => Value::Int(*c as i64),
            State::First { items, .. } => {
                Value::List(items.iter().map(|(_, v)| v.clone()).collect())
            }
        }
    }
}

/// A compiled set of aggregate declarations, applied at every level.
#[derive(Debug, Clone)]
pub struct AggregateSet {
    columns: Vec<Arc<str>>,
}

impl AggregateSet {
    /// The default set (`count(*) AS members`, contacts = the 3 lowest ids)
    /// plus the given SELECT statements.
    pub fn with_defaults<S: AsRef<str>>(extra: &[S]) -> Result<AggregateSet, AggregateError> {
        if !extra.is_empty() {
            return Err(AggregateError {
                message: "stub: user aggregates not supported yet".into(),
            });
        }
        Ok(AggregateSet {
            columns: vec![ATTR_MEMBERS.into(), ATTR_CONTACTS.into()],
        })
    }

    pub fn columns(&self) -> &[Arc<str>] {
        &self.columns
    }

    /// The states one leaf contributes.
    pub fn leaf_states(&self, attrs: &Attributes) -> States {
        let mut states = States::new();
        states.insert(ATTR_MEMBERS.into(), State::Count(1));
        let key = attrs.get(ATTR_ID).cloned().unwrap_or(Value::Null);
        let addr = attrs.get(ATTR_ADDR).cloned().unwrap_or(Value::Null);
        states.insert(
            ATTR_CONTACTS.into(),
            State::First {
                n: 3,
                items: vec![(key, addr)],
            },
        );
        states
    }

    /// Merge the children's states into their parent's.
    pub fn merge<'a>(&self, children: impl IntoIterator<Item = &'a States>) -> States {
        let mut out = States::new();
        for child in children {
            for (name, state) in child {
                match out.get_mut(name) {
                    Some(acc) => acc.merge(state),
                    None => {
                        out.insert(name.clone(), state.clone());
                    }
                }
            }
        }
        out
    }
}
