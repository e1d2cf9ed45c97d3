//! A mergeable distinct counter (HyperLogLog, Flajolet et al. 2007).
//!
//! 2^PRECISION registers; the standard error of the estimate is
//! `1.04 / sqrt(2^PRECISION)` = 6.5%. Registers merge by maximum, so merging
//! is exact, associative and commutative. Small sets are kept sparse (only
//! the registers that are set), so a row with few distinct values stays small.

use serde::{Deserialize, Serialize};

/// Bits of the hash that pick a register.
pub const PRECISION: u32 = 8;
/// Number of registers, 2^PRECISION = 256.
pub const REGISTERS: usize = 1 << PRECISION;
/// Standard error of the estimate, 1.04 / sqrt(REGISTERS) = 6.5%.
pub const STANDARD_ERROR: f64 = 1.04 / 16.0;

/// A HyperLogLog's registers, sparse while few are set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Hll {
    /// (register, rank) for the registers that are set, sorted.
    Sparse(Vec<(u8, u8)>),
    /// All `REGISTERS` registers; the form past half full, where it is smaller.
    Dense(Vec<u8>),
}

impl Default for Hll {
    fn default() -> Self {
        Hll::Sparse(Vec::new())
    }
}

impl Hll {
    /// Counts a value by its 64-bit hash (see `value_hash`).
    pub fn add_hash(&mut self, hash: u64) {
        let register = (hash >> (64 - PRECISION)) as u8;
        let rest = hash << PRECISION;
        let rank = (rest.leading_zeros() + 1).min(64 - PRECISION + 1) as u8;
        self.set(register, rank);
    }

    fn set(&mut self, register: u8, rank: u8) {
        match self {
            Hll::Dense(regs) => {
                // An honest dense form has REGISTERS registers; one from a
                // peer's reply may have any number (found by fuzzing
                // `overlay_reply`): made whole before indexing.
                if regs.len() != REGISTERS {
                    regs.resize(REGISTERS, 0);
                }
                let r = &mut regs[register as usize];
                *r = (*r).max(rank);
            }
            Hll::Sparse(items) => {
                match items.binary_search_by_key(&register, |(r, _)| *r) {
                    Ok(i) => items[i].1 = items[i].1.max(rank),
                    Err(i) => items.insert(i, (register, rank)),
                }
                // Past half full, the dense form is smaller.
                if items.len() > REGISTERS / 2 {
                    let mut regs = vec![0u8; REGISTERS];
                    for (r, k) in items.iter() {
                        regs[*r as usize] = *k;
                    }
                    *self = Hll::Dense(regs);
                }
            }
        }
    }

    fn registers(&self) -> Vec<u8> {
        match self {
            Hll::Dense(regs) => regs.clone(),
            Hll::Sparse(items) => {
                let mut regs = vec![0u8; REGISTERS];
                for (r, k) in items {
                    regs[*r as usize] = *k;
                }
                regs
            }
        }
    }

    /// Takes the maximum of each register with `other`'s: the union of the two
    /// sets.
    pub fn merge(&mut self, other: &Hll) {
        match other {
            Hll::Sparse(items) => {
                for (r, k) in items {
                    self.set(*r, *k);
                }
            }
            Hll::Dense(regs) => {
                for (r, k) in regs.iter().enumerate() {
                    if *k > 0 {
                        self.set(r as u8, *k);
                    }
                }
            }
        }
    }

    /// The estimated number of distinct values (with the small-range
    /// correction).
    pub fn estimate(&self) -> u64 {
        let regs = self.registers();
        let m = REGISTERS as f64;
        let sum: f64 = regs.iter().map(|r| 2f64.powi(-(*r as i32))).sum();
        let raw = 0.7213 / (1.0 + 1.079 / m) * m * m / sum;
        let zeros = regs.iter().filter(|r| **r == 0).count();
        let estimate = if raw <= 2.5 * m && zeros > 0 {
            // Linear counting is exact enough for small sets.
            m * (m / zeros as f64).ln()
        } else {
            raw
        };
        estimate.round() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(i: u64) -> u64 {
        crate::zone::fnv1a64(&i.to_le_bytes()).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }

    #[test]
    fn estimates_within_four_standard_errors() {
        for n in [1u64, 10, 100, 1000, 5000, 50_000] {
            let mut h = Hll::default();
            for i in 0..n {
                h.add_hash(hash(i));
                h.add_hash(hash(i));
            }
            let e = h.estimate() as f64;
            let err = (e - n as f64).abs() / n as f64;
            assert!(err <= 4.0 * STANDARD_ERROR, "n={n} estimate {e}");
        }
    }

    #[test]
    fn small_sets_stay_small_on_the_wire() {
        let mut h = Hll::default();
        for i in 0..5 {
            h.add_hash(hash(i));
        }
        assert!(postcard::to_allocvec(&h).unwrap().len() < 16);
    }

    /// Regression (fuzz `overlay_reply`): a peer's dense form of the wrong
    /// length became the accumulator of a query's groups, and the next
    /// honest state merged into it indexed past its end.
    #[test]
    fn a_forged_dense_form_of_any_length_merges_without_panic() {
        for len in [0, 1, 255, 257, 1000] {
            let mut forged = Hll::Dense(vec![1; len]);
            let mut honest = Hll::default();
            for i in 0..600u64 {
                honest.add_hash(hash(i));
            }
            forged.merge(&honest);
            assert!(forged.estimate() > 0);
            let mut into_honest = honest.clone();
            into_honest.merge(&Hll::Dense(vec![3; len]));
            assert!(into_honest.estimate() > 0);
        }
    }
}
