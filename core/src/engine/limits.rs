//! Limits against a hostile (or broken) peer: how much of what arrives an
//! agent takes in. Each exceeded limit refuses the offending row, query or
//! request and is counted in `astrolabe_limit_refusals_total{limit}`;
//! nothing that arrives can panic the agent or grow its memory unbounded.
//!
//! The datagram size (`max_datagram_bytes`) already bounds one row; these
//! bound what many datagrams add up to (rows and zone names per table,
//! pending overlay work, HTTP requests) and the shape of a row, whose
//! merged or finalized form must stay sane (string and list lengths,
//! sketches whose bins would span gigabytes when merged).
//!
//! The defaults are far above what a real cluster or the 10^5-agent
//! simulator (branching 32) produces, so they never change a result.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::aggregate::ddsketch::{Bins, DdSketch, MAX_BINS};
use crate::aggregate::hll::{Hll, REGISTERS};
use crate::aggregate::{State, States};
use crate::zone::{Attributes, Body, Row, Value};

use super::message::{Envelope, Message};
use super::table::Table;

/// Which limit refused something; the `limit` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Limit {
    /// A new row in a table already holding `rows_per_table` rows.
    RowsPerTable,
    /// A new zone name in a table already tracking `zones_per_level` names
    /// (rows held plus dropped rows remembered against resurrection).
    ZonesPerLevel,
    /// A row with more than `attributes_per_row` attributes or columns.
    AttributesPerRow,
    /// A string (value or attribute name) longer than `string_bytes`.
    StringLength,
    /// A list (value, top-n items, sketch bins) longer than `list_length`.
    ListLength,
    /// An aggregate state no honest agent produces: sketch bins outside any
    /// finite value's range, or counts whose sum overflows.
    StateRange,
    /// An overlay ask or reply assembly beyond `pending_queries` in flight.
    PendingQueries,
    /// An HTTP request beyond `http_requests` served at once (503).
    HttpRequests,
    /// A scrape or health check beyond `http_scrapes` served at once (503).
    HttpScrapes,
    /// A request whose headers or body did not arrive within
    /// `http_read_timeout` (cut: 408 or the connection closed).
    HttpReadTimeout,
}

impl Limit {
    /// Every limit, in the order of its counter index (`Limit as usize`).
    pub const ALL: [Limit; 10] = [
        Limit::RowsPerTable,
        Limit::ZonesPerLevel,
        Limit::AttributesPerRow,
        Limit::StringLength,
        Limit::ListLength,
        Limit::StateRange,
        Limit::PendingQueries,
        Limit::HttpRequests,
        Limit::HttpScrapes,
        Limit::HttpReadTimeout,
    ];

    /// The limit's `limit` label in `astrolabe_limit_refusals_total`.
    pub fn label(self) -> &'static str {
        match self {
            Limit::RowsPerTable => "rows_per_table",
            Limit::ZonesPerLevel => "zones_per_level",
            Limit::AttributesPerRow => "attributes_per_row",
            Limit::StringLength => "string_length",
            Limit::ListLength => "list_length",
            Limit::StateRange => "state_range",
            Limit::PendingQueries => "pending_queries",
            Limit::HttpRequests => "http_requests",
            Limit::HttpScrapes => "http_scrapes",
            Limit::HttpReadTimeout => "http_read_timeout",
        }
    }
}

/// DDSketch bin indexes of finite values lie within about [-520, 17750]
/// (`ln(1e-9)` and `ln(f64::MAX)` over `ln(gamma)`); anything far outside
/// is forged, and merging two forged offsets would allocate the span.
const SKETCH_INDEX_BOUND: i64 = 1 << 16;

/// How much of what peers and clients send an agent takes in; the defaults are
/// far above any honest cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Rows a table holds at most (default 4096: a flat zone of 4096 hosts).
    pub rows_per_table: usize,
    /// Zone names a table tracks, rows held plus dropped rows remembered
    /// (default 8192).
    pub zones_per_level: usize,
    /// Attributes of a leaf row, or columns of a zone row (default 256).
    pub attributes_per_row: usize,
    /// Longest string value or attribute name, in bytes (default 1024).
    pub string_bytes: usize,
    /// Longest list value, top-n list or sketch bin list (default 256).
    pub list_length: usize,
    /// Overlay tasks, and separately reply assemblies, held at once.
    pub pending_queries: usize,
    /// HTTP requests other than scrapes served at once; more are
    /// answered 503.
    pub http_requests: usize,
    /// `/metrics`, `/-/healthy` and `/-/ready` served at once, apart from
    /// `http_requests`; more are answered 503.
    pub http_scrapes: usize,
    /// Longest a request's headers, and apart its body, may take to arrive.
    pub http_read_timeout: std::time::Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // A flat zone of 4096 hosts still fits; the simulator's
            // tables hold at most its branching (32).
            rows_per_table: 4096,
            zones_per_level: 8192,
            // One row must fit a 1400-byte datagram: ~60 real attributes.
            attributes_per_row: 256,
            string_bytes: 1024,
            list_length: 256,
            pending_queries: 4096,
            http_requests: 64,
            // Prometheus scrapes one target at a time; a few servers and
            // probes at once are plenty, and each scrape takes milliseconds.
            http_scrapes: 16,
            // A scrape or API request sends its few hundred bytes in well
            // under a second, even across a continent.
            http_read_timeout: std::time::Duration::from_secs(10),
        }
    }
}

impl Limits {
    /// Whether a table may take a row named `name` in: a name it holds
    /// always; a new one while the table is below both bounds.
    pub fn admit(&self, table: &Table, name: &str) -> Result<(), Limit> {
        let rows = table.len();
        let names = rows + table.remembered();
        if rows < self.rows_per_table && names < self.zones_per_level {
            return Ok(());
        }
        if table.find(name).is_ok() {
            return Ok(());
        }
        if rows >= self.rows_per_table {
            return Err(Limit::RowsPerTable);
        }
        if table.remembers(name) {
            // Taking it in forgets the remembered copy: no new name.
            return Ok(());
        }
        Err(Limit::ZonesPerLevel)
    }

    /// Removes the rows of a received message whose shape exceeds a limit,
    /// before the engine sees them; returns what each refusal was.
    pub fn screen(&self, envelope: &mut Envelope) -> Vec<Limit> {
        let mut refused = Vec::new();
        if let Message::Rows(rows) | Message::Push(rows) = &mut envelope.message {
            rows.retain(|row| match self.check_row(row) {
                Ok(()) => true,
                Err(limit) => {
                    refused.push(limit);
                    false
                }
            });
        }
        refused
    }

    /// Whether a row's body is within the limits (a tombstone always is).
    /// The verdict is kept with the body for the same shape limits, so a
    /// body shared by many receivers (the simulator's `Wire::Shared`) is
    /// walked once; every body the agent decodes is new and walked.
    pub fn check_row(&self, row: &Row) -> Result<(), Limit> {
        let params = [
            self.attributes_per_row as u64,
            self.string_bytes as u64,
            self.list_length as u64,
        ];
        let verdict = row
            .body
            .verdict(params, |body| match self.check_body(body) {
                Ok(()) => 0,
                Err(limit) => limit as u8 + 1,
            });
        match verdict {
            0 => Ok(()),
            code => Err(Limit::ALL[usize::from(code - 1)]),
        }
    }

    /// `check_row` without the kept verdict: only `attributes_per_row`,
    /// `string_bytes` and `list_length` decide it (`check_row` keys its
    /// verdict by these three).
    fn check_body(&self, body: &Body) -> Result<(), Limit> {
        match body {
            Body::Leaf(attrs) => self.check_attributes(attrs),
            Body::Zone(states) => self.check_states(states),
            Body::Tombstone => Ok(()),
        }
    }

    /// Whether a leaf's attributes are within the count, string and list
    /// limits.
    pub fn check_attributes(&self, attrs: &Attributes) -> Result<(), Limit> {
        if attrs.len() > self.attributes_per_row {
            return Err(Limit::AttributesPerRow);
        }
        for (name, value) in attrs {
            self.check_string(name)?;
            self.check_value(value)?;
        }
        Ok(())
    }

    /// Whether a zone's states are within the count, string and list limits,
    /// and plausible (sketch ranges, HLL sizes).
    pub fn check_states(&self, states: &States) -> Result<(), Limit> {
        if states.len() > self.attributes_per_row {
            return Err(Limit::AttributesPerRow);
        }
        for (name, state) in states {
            self.check_string(name)?;
            self.check_state(state)?;
        }
        Ok(())
    }

    fn check_string(&self, s: &str) -> Result<(), Limit> {
        if s.len() > self.string_bytes {
            return Err(Limit::StringLength);
        }
        Ok(())
    }

    fn check_list_len(&self, len: usize) -> Result<(), Limit> {
        if len > self.list_length {
            return Err(Limit::ListLength);
        }
        Ok(())
    }

    /// Whether a value's strings and lists, nested ones included, are within
    /// the limits.
    pub fn check_value(&self, value: &Value) -> Result<(), Limit> {
        match value {
            Value::Str(s) => self.check_string(s),
            Value::List(items) => {
                self.check_list_len(items.len())?;
                items.iter().try_for_each(|v| self.check_value(v))
            }
            Value::Null | Value::Bool(_) | Value::Int(_) | Value::Float(_) => Ok(()),
        }
    }

    fn check_state(&self, state: &State) -> Result<(), Limit> {
        match state {
            State::Min(Some(v)) | State::Max(Some(v)) => self.check_value(v),
            State::First { items, .. } => {
                self.check_list_len(items.len())?;
                items.iter().try_for_each(|(k, v)| {
                    self.check_value(k)?;
                    self.check_value(v)
                })
            }
            State::Random { items, .. } => {
                self.check_list_len(items.len())?;
                items.iter().try_for_each(|(_, v)| self.check_value(v))
            }
            State::TopK { items, .. } => {
                self.check_list_len(items.len())?;
                items.iter().try_for_each(|(k, _)| self.check_value(k))
            }
            State::Quantile { sketch, .. } => check_sketch(sketch),
            State::Distinct(Hll::Dense(registers)) if registers.len() != REGISTERS => {
                Err(Limit::StateRange)
            }
            State::Distinct(Hll::Sparse(items)) if items.len() > REGISTERS => {
                Err(Limit::ListLength)
            }
            State::Count(_)
            | State::Sum { .. }
            | State::Avg { .. }
            | State::Min(None)
            | State::Max(None)
            | State::BitOr(_)
            | State::BitAnd(_)
            | State::Distinct(_) => Ok(()),
        }
    }
}

/// A sketch as an honest agent makes it: at most `MAX_BINS` bins per sign,
/// at indexes a finite value can have, with a total that fits a u64.
fn check_sketch(sketch: &DdSketch) -> Result<(), Limit> {
    let bins = |b: &Bins| -> Result<u64, Limit> {
        if b.counts.len() > MAX_BINS {
            return Err(Limit::ListLength);
        }
        let lo = b.offset as i64;
        let hi = lo + b.counts.len() as i64;
        if lo < -SKETCH_INDEX_BOUND || hi > SKETCH_INDEX_BOUND {
            return Err(Limit::StateRange);
        }
        b.counts
            .iter()
            .try_fold(0u64, |sum, c| sum.checked_add(*c))
            .ok_or(Limit::StateRange)
    };
    let positive = bins(&sketch.positive)?;
    let negative = bins(&sketch.negative)?;
    positive
        .checked_add(negative)
        .and_then(|n| n.checked_add(sketch.zeros))
        .map(|_| ())
        .ok_or(Limit::StateRange)
}

/// Refusals counted outside the engine (the agent's receive path, the
/// overlay, HTTP), shared with the snapshot that `/metrics` reads.
#[derive(Debug, Default)]
pub struct LimitCounters([AtomicU64; Limit::ALL.len()]);

impl LimitCounters {
    /// Counts one refusal by `limit`.
    pub fn count(&self, limit: Limit) {
        self.0[limit as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts `n` refusals by `limit`.
    pub fn add(&self, limit: Limit, n: u64) {
        self.0[limit as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// For a count kept elsewhere (the overlay's own stats).
    pub fn set(&self, limit: Limit, n: u64) {
        self.0[limit as usize].store(n, Ordering::Relaxed);
    }

    /// Refusals by `limit` so far.
    pub fn get(&self, limit: Limit) -> u64 {
        self.0[limit as usize].load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zone::{Freshness, ZonePath};
    use std::sync::Arc;

    fn leaf(attrs: Attributes) -> Row {
        Row::new(
            ZonePath::parse("/a/h").unwrap(),
            Freshness::default(),
            1,
            Body::Leaf(attrs),
        )
    }

    fn attrs(n: usize, value: Value) -> Attributes {
        (0..n)
            .map(|i| (Arc::from(format!("a{i}").as_str()), value.clone()))
            .collect()
    }

    #[test]
    fn row_shapes_beyond_the_limits_are_refused_by_which_limit() {
        let l = Limits {
            attributes_per_row: 4,
            string_bytes: 8,
            list_length: 3,
            ..Limits::default()
        };
        assert_eq!(l.check_row(&leaf(attrs(4, Value::Int(1)))), Ok(()));
        assert_eq!(
            l.check_row(&leaf(attrs(5, Value::Int(1)))),
            Err(Limit::AttributesPerRow)
        );
        assert_eq!(
            l.check_row(&leaf(attrs(1, Value::str("123456789")))),
            Err(Limit::StringLength)
        );
        let mut long_name = Attributes::new();
        long_name.insert(Arc::from("n".repeat(9).as_str()), Value::Null);
        assert_eq!(l.check_row(&leaf(long_name)), Err(Limit::StringLength));
        let list = |n: usize| Value::List(vec![Value::Int(0); n]);
        assert_eq!(l.check_row(&leaf(attrs(1, list(3)))), Ok(()));
        assert_eq!(
            l.check_row(&leaf(attrs(1, list(4)))),
            Err(Limit::ListLength)
        );
        // Nested: the inner string is checked too.
        let nested = Value::List(vec![Value::List(vec![Value::str("123456789")])]);
        assert_eq!(
            l.check_row(&leaf(attrs(1, nested))),
            Err(Limit::StringLength)
        );
    }

    fn zone_row(state: State) -> Row {
        let mut states = States::new();
        states.insert(Arc::from("p95"), state);
        Row::new(
            ZonePath::parse("/a").unwrap(),
            Freshness::default(),
            1,
            Body::Zone(states),
        )
    }

    #[test]
    fn forged_sketches_are_refused_and_honest_ones_pass() {
        let l = Limits::default();
        let mut honest = DdSketch::default();
        for x in [1e-8, 0.5, 3.0, 1e300, -2.0, 0.0] {
            honest.add(x);
        }
        let q = |sketch| State::Quantile { q: 0.95, sketch };
        assert_eq!(l.check_row(&zone_row(q(honest.clone()))), Ok(()));
        let mut far = honest.clone();
        far.positive.offset = i32::MAX - 1;
        assert_eq!(l.check_row(&zone_row(q(far))), Err(Limit::StateRange));
        let mut overflow = honest.clone();
        overflow.positive.counts = vec![u64::MAX, 1];
        assert_eq!(l.check_row(&zone_row(q(overflow))), Err(Limit::StateRange));
        let mut wide = honest;
        wide.negative.counts = vec![1; MAX_BINS + 1];
        assert_eq!(l.check_row(&zone_row(q(wide))), Err(Limit::ListLength));
        let top = State::TopK {
            n: 3,
            items: vec![(Value::str("x"), 1.0); 300],
        };
        assert_eq!(l.check_row(&zone_row(top)), Err(Limit::ListLength));
        let short = State::Distinct(Hll::Dense(vec![1]));
        assert_eq!(l.check_row(&zone_row(short)), Err(Limit::StateRange));
        let whole = State::Distinct(Hll::Dense(vec![1; REGISTERS]));
        assert_eq!(l.check_row(&zone_row(whole)), Ok(()));
    }

    #[test]
    fn screening_keeps_the_good_rows_of_a_message() {
        let l = Limits {
            attributes_per_row: 2,
            ..Limits::default()
        };
        let good = Arc::new(leaf(attrs(2, Value::Int(1))));
        let bad = Arc::new(leaf(attrs(3, Value::Int(1))));
        let mut envelope = Envelope {
            sender: 9,
            sender_zone: ZonePath::parse("/a/x").unwrap(),
            message: Message::Push(vec![bad.clone(), good.clone(), bad]),
        };
        assert_eq!(
            l.screen(&mut envelope),
            vec![Limit::AttributesPerRow, Limit::AttributesPerRow]
        );
        match envelope.message {
            Message::Push(rows) => {
                assert_eq!(rows.len(), 1);
                assert!(Arc::ptr_eq(&rows[0], &good));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_kept_verdict_holds_only_for_the_limits_it_was_made_under() {
        let tight = Limits {
            attributes_per_row: 2,
            ..Limits::default()
        };
        let short = Limits {
            string_bytes: 3,
            ..Limits::default()
        };
        let row = leaf(attrs(3, Value::Str("long".into())));
        // The first verdict is kept with the body; the same limits again
        // get it, and other limits get their own, each time.
        assert_eq!(tight.check_row(&row), Err(Limit::AttributesPerRow));
        assert_eq!(tight.check_row(&row), Err(Limit::AttributesPerRow));
        assert_eq!(Limits::default().check_row(&row), Ok(()));
        assert_eq!(short.check_row(&row), Err(Limit::StringLength));
        assert_eq!(tight.check_row(&row.clone()), Err(Limit::AttributesPerRow));

        let fresh = leaf(attrs(3, Value::Str("long".into())));
        assert_eq!(Limits::default().check_row(&fresh), Ok(()));
        assert_eq!(tight.check_row(&fresh), Err(Limit::AttributesPerRow));
        // Every limit round-trips through the kept code.
        for (i, limit) in Limit::ALL.iter().enumerate() {
            assert_eq!(*limit as usize, i);
        }
    }

    #[test]
    fn a_full_table_takes_no_new_name_but_keeps_refreshing_its_own() {
        let l = Limits {
            rows_per_table: 2,
            zones_per_level: 3,
            ..Limits::default()
        };
        let mut table = Table::new(ZonePath::parse("/a").unwrap(), 1, "h0".into());
        let row = |name: &str| {
            Arc::new(Row {
                zone: ZonePath::parse(&format!("/a/{name}")).unwrap(),
                ..leaf(Attributes::new())
            })
        };
        for name in ["h0", "h1"] {
            assert_eq!(l.admit(&table, name), Ok(()));
            table.offer(name, row(name), 0, false);
        }
        assert_eq!(l.admit(&table, "h1"), Ok(()), "a held name");
        assert_eq!(l.admit(&table, "h2"), Err(Limit::RowsPerTable));
        // h1 expires: remembered, so one slot of rows but not of names.
        table.expire(1_000, 10, 1_000_000);
        assert_eq!(table.len(), 1);
        assert_eq!(l.admit(&table, "h2"), Ok(()));
        table.offer("h2", row("h2"), 1_000, false);
        assert_eq!(l.admit(&table, "h3"), Err(Limit::RowsPerTable));
        table.expire(2_000, 10, 1_000_000);
        // Rows: h0 (own). Names: h0 + remembered h1, h2 = 3.
        assert_eq!(l.admit(&table, "h3"), Err(Limit::ZonesPerLevel));
        assert_eq!(l.admit(&table, "h1"), Ok(()), "a remembered name");
    }
}
