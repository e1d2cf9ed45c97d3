//! A mergeable quantile sketch (DDSketch, Masson et al., VLDB 2019).
//!
//! Every value x != 0 falls in bin `ceil(log_gamma |x|)` with
//! `gamma = (1 + ALPHA) / (1 - ALPHA)`; a bin's representative value is
//! within a relative error ALPHA of every value in it. Counts add, so merging
//! is exact, associative and commutative.
//!
//! To keep a row small each sign keeps at most `MAX_BINS` bins: the lowest
//! (smallest magnitudes) are folded into the lowest kept one. The kept range
//! depends only on the highest bin of the union, so folding early or late
//! gives the same sketch: merging stays associative. Quantiles above the
//! folded range (the p95 and p99 users ask for) keep the ALPHA guarantee.

use serde::{Deserialize, Serialize};

/// Relative accuracy of every quantile outside the folded low range.
pub const ALPHA: f64 = 0.02;
/// Most bins kept per sign.
pub const MAX_BINS: usize = 128;

fn gamma() -> f64 {
    (1.0 + ALPHA) / (1.0 - ALPHA)
}

fn index_of(magnitude: f64) -> i32 {
    (magnitude.ln() / gamma().ln()).ceil() as i32
}

/// Bins of finite values have indexes within about [-520, 17750]; a
/// store reaching beyond this was forged (a hostile peer's row or query
/// reply) and is not merged: its span would be allocated.
const INDEX_BOUND: i64 = 1 << 16;

fn value_of(index: i64) -> f64 {
    let index = index.clamp(-INDEX_BOUND, INDEX_BOUND) as i32;
    let g = gamma();
    2.0 * g.powi(index) / (g + 1.0)
}

/// Counts of consecutive bins starting at `offset`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Bins {
    /// Index of the first bin in `counts`.
    pub offset: i32,
    /// Values counted per bin, from `offset` up.
    pub counts: Vec<u64>,
}

impl Bins {
    fn total(&self) -> u64 {
        // Saturating: a forged count must not overflow (and panic).
        self.counts.iter().fold(0u64, |a, c| a.saturating_add(*c))
    }

    /// Bin indexes covered, `[lo, hi)`, in i64: forged offsets near the
    /// ends of i32 must not overflow.
    fn range(&self) -> (i64, i64) {
        let lo = self.offset as i64;
        (lo, lo + self.counts.len() as i64)
    }

    fn plausible(&self) -> bool {
        let (lo, hi) = self.range();
        lo >= -INDEX_BOUND && hi <= INDEX_BOUND
    }

    fn add(&mut self, index: i32, count: u64) {
        if self.counts.is_empty() {
            self.offset = index;
            self.counts.push(count);
            return;
        }
        if index < self.offset {
            let grow = (self.offset - index) as usize;
            let mut counts = vec![0; grow];
            counts.extend_from_slice(&self.counts);
            self.counts = counts;
            self.offset = index;
        }
        let at = (index - self.offset) as usize;
        if at >= self.counts.len() {
            self.counts.resize(at + 1, 0);
        }
        self.counts[at] = self.counts[at].saturating_add(count);
        self.collapse();
    }

    /// Adds another store's counts: one pass over the union of the ranges.
    fn merge(&mut self, other: &Bins) {
        if other.counts.is_empty() || !other.plausible() || !self.plausible() {
            return;
        }
        if self.counts.is_empty() {
            *self = other.clone();
            self.collapse();
            return;
        }
        let (self_lo, self_hi) = self.range();
        let (other_lo, other_hi) = other.range();
        let lo = self_lo.min(other_lo);
        let hi = self_hi.max(other_hi);
        if lo < self_lo || hi > self_hi {
            let mut counts = vec![0u64; (hi - lo) as usize];
            let at = (self_lo - lo) as usize;
            counts[at..at + self.counts.len()].copy_from_slice(&self.counts);
            self.counts = counts;
            self.offset = lo as i32;
        }
        let at = (other_lo - self.offset as i64) as usize;
        for (dst, src) in self.counts[at..].iter_mut().zip(&other.counts) {
            *dst = dst.saturating_add(*src);
        }
        self.collapse();
    }

    /// Adds many stores' counts at once: the union of all ranges is
    /// allocated once, instead of growing (and folding) once per store.
    /// The result equals merging them one by one: what is folded depends
    /// only on the highest bin of the union.
    fn merge_all<'a>(&mut self, others: impl Iterator<Item = &'a Bins> + Clone) {
        if !self.plausible() {
            return;
        }
        let usable = others.filter(|o| !o.counts.is_empty() && o.plausible());
        let mut range: Option<(i64, i64)> = (!self.counts.is_empty()).then(|| self.range());
        for o in usable.clone() {
            let (lo, hi) = o.range();
            range = Some(range.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
        }
        let Some((lo, hi)) = range else {
            return;
        };
        let mut counts = vec![0u64; (hi - lo) as usize];
        let mut add = |o: &Bins| {
            let at = (o.offset as i64 - lo) as usize;
            for (dst, src) in counts[at..].iter_mut().zip(&o.counts) {
                *dst = dst.saturating_add(*src);
            }
        };
        if !self.counts.is_empty() {
            add(self);
        }
        usable.for_each(add);
        self.counts = counts;
        self.offset = lo as i32;
        self.collapse();
    }

    /// Folds the lowest bins so that at most MAX_BINS remain.
    fn collapse(&mut self) {
        if self.counts.len() <= MAX_BINS {
            return;
        }
        let cut = self.counts.len() - MAX_BINS;
        let folded = self.counts[..=cut]
            .iter()
            .fold(0u64, |a, c| a.saturating_add(*c));
        self.counts.drain(..cut);
        self.counts[0] = folded;
        self.offset += cut as i32;
    }
}

/// A DDSketch: bins of positive and of negative values by magnitude, plus a
/// count of zeros. Merged by adding counts; quantiles within `ALPHA` relative
/// error.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DdSketch {
    /// Bins of the values above zero.
    pub positive: Bins,
    /// Bins of the magnitudes of the values below zero.
    pub negative: Bins,
    /// Values with magnitude below 1e-9, counted as zero.
    pub zeros: u64,
}

impl DdSketch {
    /// Values counted (saturating, so a forged sketch cannot overflow).
    pub fn count(&self) -> u64 {
        self.positive
            .total()
            .saturating_add(self.negative.total())
            .saturating_add(self.zeros)
    }

    /// Counts `x`; NaN and infinities are ignored.
    pub fn add(&mut self, x: f64) {
        if !x.is_finite() {
            return;
        }
        // Magnitudes below this are counted as zero: their bin index would
        // be far below every other and waste the bin budget.
        if x.abs() < 1e-9 {
            self.zeros += 1;
        } else if x > 0.0 {
            self.positive.add(index_of(x), 1);
        } else {
            self.negative.add(index_of(-x), 1);
        }
    }

    /// Merges many sketches at once (see `Bins::merge_all`).
    pub fn merge_all(&mut self, others: &[&DdSketch]) {
        self.positive.merge_all(others.iter().map(|o| &o.positive));
        self.negative.merge_all(others.iter().map(|o| &o.negative));
        for o in others {
            self.zeros = self.zeros.saturating_add(o.zeros);
        }
    }

    /// Adds `other`'s counts to this sketch's.
    pub fn merge(&mut self, other: &DdSketch) {
        self.positive.merge(&other.positive);
        self.negative.merge(&other.negative);
        self.zeros = self.zeros.saturating_add(other.zeros);
    }

    /// The q-quantile (0 <= q <= 1), or None if empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * (n - 1) as f64).round() as u64;
        let mut seen = 0u64;
        // Negative values, most negative (largest magnitude) first.
        for (i, c) in self.negative.counts.iter().enumerate().rev() {
            seen = seen.saturating_add(*c);
            if seen > rank {
                return Some(-value_of(self.negative.offset as i64 + i as i64));
            }
        }
        seen = seen.saturating_add(self.zeros);
        if seen > rank {
            return Some(0.0);
        }
        for (i, c) in self.positive.counts.iter().enumerate() {
            seen = seen.saturating_add(*c);
            if seen > rank {
                return Some(value_of(self.positive.offset as i64 + i as i64));
            }
        }
        Some(value_of(self.positive.range().1 - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_within_alpha() {
        let mut s = DdSketch::default();
        let values: Vec<f64> = (1..=10_000).map(|i| i as f64 * 0.37).collect();
        for v in &values {
            s.add(*v);
        }
        for q in [0.5, 0.9, 0.95, 0.99] {
            let exact = values[(q * (values.len() - 1) as f64).round() as usize];
            let got = s.quantile(q).unwrap();
            assert!(
                (got - exact).abs() <= ALPHA * exact * 1.0001,
                "q{q}: {got} vs {exact}"
            );
        }
    }

    /// What a hostile peer can put in a row or a query reply: offsets at
    /// the ends of i32 and counts that overflow. Merging and reading such
    /// sketches neither panics nor allocates their span.
    #[test]
    fn forged_sketches_neither_panic_nor_allocate() {
        let mut honest = DdSketch::default();
        for v in [1.0, 2.0, 3.0] {
            honest.add(v);
        }
        let forged = |offset: i32, counts: Vec<u64>| DdSketch {
            positive: Bins { offset, counts },
            negative: Bins {
                offset: i32::MIN,
                counts: vec![u64::MAX; 3],
            },
            zeros: u64::MAX,
        };
        for f in [
            forged(i32::MAX, vec![u64::MAX, 1]),
            forged(i32::MIN, vec![1; 5]),
            forged(-3, vec![u64::MAX; 200]),
        ] {
            let _ = f.count();
            let _ = f.quantile(0.5);
            let _ = f.quantile(1.0);
            let mut merged = honest.clone();
            merged.merge(&f);
            assert!(merged.positive.counts.len() <= MAX_BINS);
            let mut into_forged = f.clone();
            into_forged.merge(&honest);
            let _ = into_forged.quantile(0.95);
        }
        // An implausible store is not merged: the honest sketch stays.
        let mut merged = honest.clone();
        merged.merge(&forged(i32::MAX, vec![1]));
        assert_eq!(merged.positive, honest.positive);
    }

    #[test]
    fn negative_and_zero_values() {
        let mut s = DdSketch::default();
        for v in [-5.0, -1.0, 0.0, 0.0, 2.0] {
            s.add(v);
        }
        assert!((s.quantile(0.0).unwrap() + 5.0).abs() <= 5.0 * ALPHA);
        assert_eq!(s.quantile(0.5).unwrap(), 0.0);
        assert!((s.quantile(1.0).unwrap() - 2.0).abs() <= 2.0 * ALPHA);
    }

    #[test]
    fn bins_stay_bounded() {
        let mut s = DdSketch::default();
        for i in 0..100_000 {
            s.add(1.0 + i as f64 * 10_000.0);
        }
        assert!(s.positive.counts.len() <= MAX_BINS);
        assert_eq!(s.count(), 100_000);
        let bytes = postcard::to_allocvec(&s).unwrap();
        assert!(bytes.len() < 1000, "{}", bytes.len());
    }
}
