//! Mergeable partial states, one per aggregate column of a zone row.
//!
//! Each state carries what its final value needs (q, n, order) so that any
//! agent can finalize or merge it, whatever aggregates it runs itself.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use super::ddsketch::DdSketch;
use super::expr::compare;
use super::hll::Hll;
use crate::zone::{fnv1a64, Value};

/// The partial state of one aggregate column: what leaves contribute and zones
/// merge, finalized into the column's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum State {
    /// Rows counted (`count(*)`), or rows where the argument is not null.
    Count(u64),
    /// Integers are summed exactly; floats apart, so an all-integer sum
    /// stays an integer. `any` tells an empty sum (NULL) from zero.
    Sum {
        /// Sum of the integer values (saturating).
        int: i64,
        /// Sum of the float values.
        float: f64,
        /// Whether any value was a float (the result is then a float).
        floats: bool,
        /// Whether any value was summed at all.
        any: bool,
    },
    /// Sum and count of the values, divided at finalize.
    Avg {
        /// Sum of the values.
        sum: f64,
        /// Number of values.
        count: u64,
    },
    /// The least value so far.
    Min(Option<Value>),
    /// The greatest value so far.
    Max(Option<Value>),
    /// A quantile of the values, from their sketch.
    Quantile {
        /// The quantile asked for, 0 < q < 1.
        q: f64,
        /// The sketch of the values.
        sketch: DdSketch,
    },
    /// The `n` (key, value) items with the smallest keys (largest if
    /// `desc`), ties broken by the value.
    First {
        /// How many items are kept.
        n: u32,
        /// Largest keys first.
        desc: bool,
        /// The (key, value) items kept, in order.
        items: Vec<(Value, Value)>,
    },
    /// A deterministic sample: the `n` values with the smallest hash.
    Random {
        /// How many values are kept.
        n: u32,
        /// The (hash, value) items with the smallest hashes.
        items: Vec<(u64, Value)>,
    },
    /// The `n` (name, value) pairs with the largest values.
    TopK {
        /// How many pairs are kept.
        n: u32,
        /// The (name, value) pairs, largest value first.
        items: Vec<(Value, f64)>,
    },
    /// Bitwise OR of the integer values; `None` before the first.
    BitOr(Option<i64>),
    /// Bitwise AND of the integer values; `None` before the first.
    BitAnd(Option<i64>),
    /// An estimate of the number of distinct values.
    Distinct(Hll),
}

/// The hash a value is sampled (`random`) and counted (`count_distinct`) by:
/// FNV-1a of its postcard encoding, mixed, so every agent and release agrees.
pub fn value_hash(v: &Value) -> u64 {
    let bytes = postcard::to_allocvec(v).unwrap_or_default();
    // FNV alone mixes the high bits poorly for HyperLogLog; one
    // multiply-xorshift round fixes that.
    let mut h = fnv1a64(&bytes);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h
}

fn first_order(desc: bool, a: &(Value, Value), b: &(Value, Value)) -> Ordering {
    let key = compare(&a.0, &b.0);
    let key = if desc { key.reverse() } else { key };
    key.then_with(|| compare(&a.1, &b.1))
}

fn top_order(a: &(Value, f64), b: &(Value, f64)) -> Ordering {
    b.1.total_cmp(&a.1).then_with(|| compare(&a.0, &b.0))
}

impl State {
    /// Whether two states are of the same function with the same parameters.
    fn same_kind(&self, other: &State) -> bool {
        match (self, other) {
            (State::Quantile { q: a, .. }, State::Quantile { q: b, .. }) => a == b,
            (State::First { n: a, desc: x, .. }, State::First { n: b, desc: y, .. }) => {
                a == b && x == y
            }
            (State::Random { n: a, .. }, State::Random { n: b, .. }) => a == b,
            (State::TopK { n: a, .. }, State::TopK { n: b, .. }) => a == b,
            _ => std::mem::discriminant(self) == std::mem::discriminant(other),
        }
    }

    /// Merges many states in at once; the same result as merging them one
    /// by one. Sketches are merged into one allocation, and of the kept
    /// items (`first`, `random`, `topk`) only the `n` that stay are cloned.
    /// A zone row is the merge of a whole table, so this is the common case.
    pub fn merge_all(&mut self, others: &[&State]) {
        fn keep<T: Clone>(
            mine: &mut Vec<T>,
            more: Vec<&T>,
            n: u32,
            order: impl Fn(&T, &T) -> Ordering,
        ) {
            let mut all: Vec<&T> = mine.iter().chain(more).collect();
            all.sort_by(|a, b| order(a, b));
            all.truncate(n as usize);
            let kept: Vec<T> = all.into_iter().cloned().collect();
            *mine = kept;
        }
        let same: Vec<&State> = others
            .iter()
            .copied()
            .filter(|o| self.same_kind(o))
            .collect();
        let others = same.into_iter();
        match self {
            State::Quantile { sketch, .. } => {
                let sketches: Vec<&DdSketch> = others
                    .filter_map(|o| match o {
                        State::Quantile { sketch, .. } => Some(sketch),
                        _ => None,
                    })
                    .collect();
                sketch.merge_all(&sketches);
            }
            State::First { n, desc, items } => {
                let more: Vec<&(Value, Value)> = others
                    .flat_map(|o| match o {
                        State::First { items, .. } => items.as_slice(),
                        _ => &[],
                    })
                    .collect();
                let desc = *desc;
                keep(items, more, *n, |a, b| first_order(desc, a, b));
            }
            State::Random { n, items } => {
                let more: Vec<&(u64, Value)> = others
                    .flat_map(|o| match o {
                        State::Random { items, .. } => items.as_slice(),
                        _ => &[],
                    })
                    .collect();
                keep(items, more, *n, |a, b| {
                    a.0.cmp(&b.0).then_with(|| compare(&a.1, &b.1))
                });
            }
            State::TopK { n, items } => {
                let more: Vec<&(Value, f64)> = others
                    .flat_map(|o| match o {
                        State::TopK { items, .. } => items.as_slice(),
                        _ => &[],
                    })
                    .collect();
                keep(items, more, *n, top_order);
            }
            _ => {
                for o in others {
                    self.merge(o);
                }
            }
        }
    }

    /// Merges `other` in. A state of another kind is ignored: that happens
    /// only while agents disagree on an aggregate's definition.
    pub fn merge(&mut self, other: &State) {
        if !self.same_kind(other) {
            return;
        }
        match (self, other) {
            (State::Count(a), State::Count(b)) => *a = a.saturating_add(*b),
            (
                State::Sum {
                    int,
                    float,
                    floats,
                    any,
                },
                State::Sum {
                    int: i2,
                    float: f2,
                    floats: fl2,
                    any: a2,
                },
            ) => {
                *int = int.saturating_add(*i2);
                *float += f2;
                *floats |= fl2;
                *any |= a2;
            }
            (State::Avg { sum, count }, State::Avg { sum: s2, count: c2 }) => {
                *sum += s2;
                *count = count.saturating_add(*c2);
            }
            (State::Min(a), State::Min(Some(b)))
                if a.as_ref().is_none_or(|a| compare(b, a) == Ordering::Less) =>
            {
                *a = Some(b.clone());
            }
            (State::Max(a), State::Max(Some(b)))
                if a.as_ref()
                    .is_none_or(|a| compare(b, a) == Ordering::Greater) =>
            {
                *a = Some(b.clone());
            }
            (State::Quantile { sketch, .. }, State::Quantile { sketch: s2, .. }) => {
                sketch.merge(s2)
            }
            (State::First { n, desc, items }, State::First { items: more, .. }) => {
                let desc = *desc;
                items.extend(more.iter().cloned());
                items.sort_by(|a, b| first_order(desc, a, b));
                items.truncate(*n as usize);
            }
            (State::Random { n, items }, State::Random { items: more, .. }) => {
                items.extend(more.iter().cloned());
                items.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| compare(&a.1, &b.1)));
                items.truncate(*n as usize);
            }
            (State::TopK { n, items }, State::TopK { items: more, .. }) => {
                items.extend(more.iter().cloned());
                items.sort_by(top_order);
                items.truncate(*n as usize);
            }
            (State::BitOr(a), State::BitOr(Some(b))) => *a = Some(a.map_or(*b, |a| a | b)),
            (State::BitAnd(a), State::BitAnd(Some(b))) => *a = Some(a.map_or(*b, |a| a & b)),
            (State::Distinct(a), State::Distinct(b)) => a.merge(b),
            _ => {}
        }
    }

    /// The column's value: a number, a list, or `Null` for no input.
    pub fn finalize(&self) -> Value {
        match self {
            State::Count(c) => Value::Int(*c as i64),
            State::Sum {
                int,
                float,
                floats,
                any,
            } => {
                if !any {
                    Value::Null
                } else if *floats {
                    Value::Float(*int as f64 + float)
                } else {
                    Value::Int(*int)
                }
            }
            State::Avg { sum, count } => {
                if *count == 0 {
                    Value::Null
                } else {
                    Value::Float(sum / *count as f64)
                }
            }
            State::Min(v) | State::Max(v) => v.clone().unwrap_or(Value::Null),
            State::Quantile { q, sketch } => sketch.quantile(*q).map_or(Value::Null, Value::Float),
            State::First { items, .. } => {
                Value::List(items.iter().map(|(_, v)| v.clone()).collect())
            }
            State::Random { items, .. } => {
                Value::List(items.iter().map(|(_, v)| v.clone()).collect())
            }
            State::TopK { items, .. } => Value::List(
                items
                    .iter()
                    .map(|(name, v)| Value::List(vec![name.clone(), Value::Float(*v)]))
                    .collect(),
            ),
            State::BitOr(v) | State::BitAnd(v) => v.map_or(Value::Null, Value::Int),
            State::Distinct(h) => Value::Int(h.estimate() as i64),
        }
    }
}
