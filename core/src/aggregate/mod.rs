//! The SQL aggregate language (Astrolabe's aggregation functions).
//!
//! `SELECT count(*) AS hosts, avg(load) AS load_avg, quantile(0.99, load) AS
//! load_p99 WHERE role = 'web'` is compiled once; every leaf contributes a
//! partial state per column (`leaf_states`), and every zone merges its
//! children's states (`merge`). The same declarations apply at every level,
//! so a zone's value is the function over all the leaves below it, not an
//! average of averages. Quantiles come from a DDSketch (relative error
//! `ddsketch::ALPHA`), distinct counts from a HyperLogLog (standard error
//! `hll::STANDARD_ERROR`); everything else is exact.

pub mod ddsketch;
mod expr;
pub mod hll;
mod parse;
mod reads;
mod state;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

pub use expr::{compare, BinOp, Expr};
pub use parse::{Column, Func, Select, MAX_ITEMS};
// The on-demand query language (overlay) plans its WHERE and aggregate
// functions with the same code, so both languages agree.
pub(crate) use parse::{bare_keyword_column, plan_expr, plan_function};
pub use reads::{Absent, Reads};
pub use state::{value_hash, State};

use crate::zone::{Attributes, Value, ATTR_CONTACTS, ATTR_MEMBERS};

/// Partial states of every aggregate column of a zone, by output name.
pub type States = BTreeMap<Arc<str>, State>;

/// The aggregates every agent runs: the zone's size and its contacts, the
/// five agents with the lowest ids (the same choice everywhere). The first
/// three represent the zone in gossip; on-demand queries may ask all five,
/// so a zone stays reachable until five of its hosts are dead at once and
/// not yet expired (with three, one zone in 8,000 at 5% dead).
pub const DEFAULT_AGGREGATES: &str =
    "SELECT count(*) AS members, first(5, addr ORDER BY id) AS contacts";

/// A compile error: what is wrong, which statement, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregateError {
    /// What is wrong, in words for the person who wrote the SQL.
    pub message: String,
    /// 1-based index among the statements compiled together.
    pub statement: Option<usize>,
    /// 1-based line in the statement's text, when the parser knows it.
    pub line: Option<u64>,
    /// 1-based column in that line, when the parser knows it.
    pub column: Option<u64>,
}

impl AggregateError {
    /// An error with only a message; position and statement are added where
    /// they are known.
    pub fn new(message: impl Into<String>) -> Self {
        AggregateError {
            message: message.into(),
            statement: None,
            line: None,
            column: None,
        }
    }

    fn at(mut self, line: u64, column: u64) -> Self {
        if line > 0 {
            self.line = Some(line);
            self.column = Some(column);
        }
        self
    }

    fn in_statement(mut self, index: usize) -> Self {
        self.statement = Some(index);
        self
    }
}

impl fmt::Display for AggregateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(s) = self.statement {
            write!(f, "aggregate {s}: ")?;
        }
        f.write_str(&self.message)?;
        if let (Some(l), Some(c)) = (self.line, self.column) {
            write!(f, " at line {l}, column {c}")?;
        }
        Ok(())
    }
}

impl std::error::Error for AggregateError {}

/// A compiled set of aggregate declarations, applied at every level.
#[derive(Debug, Clone)]
pub struct AggregateSet {
    /// Unique per compiled set, so per-row caches know which set they hold.
    id: u64,
    selects: Vec<Select>,
    columns: Vec<Arc<str>>,
    sources: Vec<String>,
}

impl AggregateSet {
    /// The default set plus the given SELECT statements (one per string).
    /// User aggregates may not define `members` or `contacts`.
    pub fn with_defaults<S: AsRef<str>>(extra: &[S]) -> Result<AggregateSet, AggregateError> {
        Self::with_system(&[] as &[&str], extra)
    }

    /// The defaults, then `system` statements the program itself adds (the
    /// host summaries), then the user's; errors number the user's
    /// statements from 1, as the user wrote them.
    pub fn with_system<S: AsRef<str>, U: AsRef<str>>(
        system: &[S],
        extra: &[U],
    ) -> Result<AggregateSet, AggregateError> {
        let mut set = Self::compile(&[DEFAULT_AGGREGATES])?;
        for sql in system {
            let select = parse::parse_select(sql.as_ref())?;
            set.add(select, sql.as_ref())?;
        }
        for (i, sql) in extra.iter().enumerate() {
            let select = parse::parse_select(sql.as_ref()).map_err(|e| e.in_statement(i + 1))?;
            for c in &select.columns {
                if &*c.name == ATTR_MEMBERS || &*c.name == ATTR_CONTACTS {
                    return Err(AggregateError::new(format!(
                        "{:?} is reserved for the system aggregates; choose another name",
                        &*c.name
                    ))
                    .in_statement(i + 1));
                }
            }
            set.add(select, sql.as_ref())
                .map_err(|e| e.in_statement(i + 1))?;
        }
        Ok(set)
    }

    /// Exactly the given statements, without the defaults.
    pub fn compile<S: AsRef<str>>(sqls: &[S]) -> Result<AggregateSet, AggregateError> {
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let mut set = AggregateSet {
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            selects: Vec::new(),
            columns: Vec::new(),
            sources: Vec::new(),
        };
        for (i, sql) in sqls.iter().enumerate() {
            let select = parse::parse_select(sql.as_ref()).map_err(|e| e.in_statement(i + 1))?;
            set.add(select, sql.as_ref())
                .map_err(|e| e.in_statement(i + 1))?;
        }
        Ok(set)
    }

    fn add(&mut self, select: Select, source: &str) -> Result<(), AggregateError> {
        for c in &select.columns {
            if c.name.is_empty() {
                return Err(AggregateError::new("a column needs a name: add AS name"));
            }
            if self.columns.contains(&c.name) {
                return Err(AggregateError::new(format!(
                    "column {:?} is defined twice",
                    &*c.name
                )));
            }
            self.columns.push(c.name.clone());
        }
        self.selects.push(select);
        self.sources.push(source.to_string());
        Ok(())
    }

    /// Unique per compiled set (taken from a process-wide counter), so per-row
    /// caches of leaf states know which set they were computed under.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Output column names of every statement, in declaration order (with
    /// the defaults, `members` and `contacts` come first).
    pub fn columns(&self) -> &[Arc<str>] {
        &self.columns
    }

    /// The SQL statements this set was compiled from (defaults included).
    pub fn sources(&self) -> &[String] {
        &self.sources
    }

    /// One empty state per column: what a zone with no selected leaf holds.
    pub fn empty_states(&self) -> States {
        self.selects
            .iter()
            .flat_map(|s| &s.columns)
            .map(|c| (c.name.clone(), empty_state(&c.func)))
            .collect()
    }

    /// The states one leaf contributes. A leaf that a SELECT's WHERE does
    /// not select contributes that SELECT's empty states.
    pub fn leaf_states(&self, attrs: &Attributes) -> States {
        let mut states = States::new();
        for select in &self.selects {
            let selected = select.filter.as_ref().is_none_or(|f| f.is_true(attrs));
            for c in &select.columns {
                let state = if selected {
                    leaf_state(&c.func, attrs)
                } else {
                    empty_state(&c.func)
                };
                states.insert(c.name.clone(), state);
            }
        }
        states
    }

    /// Merges the children's states into their parent's. Only the set's own
    /// columns; a child missing a column contributes nothing to it.
    pub fn merge<'a>(&self, children: impl IntoIterator<Item = &'a States>) -> States {
        let mut out = self.empty_states();
        // All maps are sorted by name, and a child's columns are nearly
        // always the same Arc'd names as ours: one walk through all of
        // them, comparing pointers first, instead of a tree lookup with
        // string comparisons per column. Column by column, so each column
        // is merged from all children at once (`State::merge_all`).
        let mut theirs: Vec<_> = children
            .into_iter()
            .map(|child| child.iter().peekable())
            .collect();
        let mut column: Vec<&State> = Vec::with_capacity(theirs.len());
        for (name, acc) in out.iter_mut() {
            column.clear();
            for child in theirs.iter_mut() {
                while let Some((n, state)) = child.peek() {
                    if Arc::ptr_eq(n, name) || *n == name {
                        column.push(state);
                        child.next();
                        break;
                    }
                    if n.as_ref() > name.as_ref() {
                        break;
                    }
                    child.next();
                }
            }
            acc.merge_all(&column);
        }
        out
    }

    /// Final values of merged states.
    pub fn finalize(states: &States) -> Attributes {
        states
            .iter()
            .map(|(name, s)| (name.clone(), s.finalize()))
            .collect()
    }
}

pub(crate) fn empty_state(func: &Func) -> State {
    match func {
        Func::Count(_) => State::Count(0),
        Func::Sum(_) => State::Sum {
            int: 0,
            float: 0.0,
            floats: false,
            any: false,
        },
        Func::Avg(_) => State::Avg { sum: 0.0, count: 0 },
        Func::Min(_) => State::Min(None),
        Func::Max(_) => State::Max(None),
        Func::Quantile(q, _) => State::Quantile {
            q: *q,
            sketch: Default::default(),
        },
        Func::First { n, desc, .. } => State::First {
            n: *n,
            desc: *desc,
            items: Vec::new(),
        },
        Func::Random(n, _) => State::Random {
            n: *n,
            items: Vec::new(),
        },
        Func::TopK(n, _, _) => State::TopK {
            n: *n,
            items: Vec::new(),
        },
        Func::BitOr(_) => State::BitOr(None),
        Func::BitAnd(_) => State::BitAnd(None),
        Func::CountDistinct(_) => State::Distinct(Default::default()),
    }
}

/// Values that aggregate: nulls and lists are skipped, as SQL skips nulls.
fn present(v: Value) -> Option<Value> {
    match v {
        Value::Null | Value::List(_) => None,
        v => Some(v),
    }
}

pub(crate) fn leaf_state(func: &Func, attrs: &Attributes) -> State {
    let mut state = empty_state(func);
    match (func, &mut state) {
        (Func::Count(None), State::Count(c)) => *c = 1,
        (Func::Count(Some(e)), State::Count(c)) => *c = present(e.eval(attrs)).is_some() as u64,
        (
            Func::Sum(e),
            State::Sum {
                int,
                float,
                floats,
                any,
            },
        ) => match e.eval(attrs) {
            Value::Int(i) => {
                *int = i;
                *any = true;
            }
            v => {
                if let Some(f) = v.as_f64().filter(|f| f.is_finite()) {
                    *float = f;
                    *floats = true;
                    *any = true;
                }
            }
        },
        (Func::Avg(e), State::Avg { sum, count }) => {
            if let Some(f) = e.eval(attrs).as_f64().filter(|f| f.is_finite()) {
                *sum = f;
                *count = 1;
            }
        }
        (Func::Min(e), State::Min(v)) | (Func::Max(e), State::Max(v)) => {
            *v = present(e.eval(attrs)).filter(|v| !matches!(v, Value::Float(f) if !f.is_finite()));
        }
        (Func::Quantile(_, e), State::Quantile { sketch, .. }) => {
            if let Some(f) = e.eval(attrs).as_f64() {
                sketch.add(f);
            }
        }
        (Func::First { value, key, .. }, State::First { items, .. }) => {
            if let (Some(k), Some(v)) = (present(key.eval(attrs)), present(value.eval(attrs))) {
                items.push((k, v));
            }
        }
        (Func::Random(_, e), State::Random { items, .. }) => {
            if let Some(v) = present(e.eval(attrs)) {
                items.push((value_hash(&v), v));
            }
        }
        (Func::TopK(_, name, value), State::TopK { items, .. }) => {
            let v = value.eval(attrs).as_f64().filter(|f| f.is_finite());
            if let (Some(n), Some(v)) = (present(name.eval(attrs)), v) {
                items.push((n, v));
            }
        }
        (Func::BitOr(e), State::BitOr(v)) | (Func::BitAnd(e), State::BitAnd(v)) => {
            *v = e.eval(attrs).as_i64();
        }
        (Func::CountDistinct(e), State::Distinct(h)) => {
            if let Some(v) = present(e.eval(attrs)) {
                h.add_hash(value_hash(&v));
            }
        }
        _ => {}
    }
    state
}

#[cfg(test)]
mod tests;
