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

fn value_of(index: i32) -> f64 {
    let g = gamma();
    2.0 * g.powi(index) / (g + 1.0)
}

/// Counts of consecutive bins starting at `offset`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Bins {
    pub offset: i32,
    pub counts: Vec<u64>,
}

impl Bins {
    fn total(&self) -> u64 {
        self.counts.iter().sum()
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
        self.counts[at] += count;
        self.collapse();
    }

    /// Adds another store's counts: one pass over the union of the ranges.
    fn merge(&mut self, other: &Bins) {
        if other.counts.is_empty() {
            return;
        }
        if self.counts.is_empty() {
            *self = other.clone();
            return;
        }
        let lo = self.offset.min(other.offset);
        let hi =
            (self.offset + self.counts.len() as i32).max(other.offset + other.counts.len() as i32);
        if lo < self.offset || hi > self.offset + self.counts.len() as i32 {
            let mut counts = vec![0u64; (hi - lo) as usize];
            let at = (self.offset - lo) as usize;
            counts[at..at + self.counts.len()].copy_from_slice(&self.counts);
            self.counts = counts;
            self.offset = lo;
        }
        let at = (other.offset - self.offset) as usize;
        for (dst, src) in self.counts[at..].iter_mut().zip(&other.counts) {
            *dst += src;
        }
        self.collapse();
    }

    /// Folds the lowest bins so that at most MAX_BINS remain.
    fn collapse(&mut self) {
        if self.counts.len() <= MAX_BINS {
            return;
        }
        let cut = self.counts.len() - MAX_BINS;
        let folded: u64 = self.counts[..=cut].iter().sum();
        self.counts.drain(..cut);
        self.counts[0] = folded;
        self.offset += cut as i32;
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DdSketch {
    pub positive: Bins,
    pub negative: Bins,
    pub zeros: u64,
}

impl DdSketch {
    pub fn count(&self) -> u64 {
        self.positive.total() + self.negative.total() + self.zeros
    }

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

    pub fn merge(&mut self, other: &DdSketch) {
        self.positive.merge(&other.positive);
        self.negative.merge(&other.negative);
        self.zeros += other.zeros;
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
            seen += c;
            if seen > rank {
                return Some(-value_of(self.negative.offset + i as i32));
            }
        }
        seen += self.zeros;
        if seen > rank {
            return Some(0.0);
        }
        for (i, c) in self.positive.counts.iter().enumerate() {
            seen += c;
            if seen > rank {
                return Some(value_of(self.positive.offset + i as i32));
            }
        }
        Some(value_of(
            self.positive.offset + self.positive.counts.len() as i32 - 1,
        ))
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
