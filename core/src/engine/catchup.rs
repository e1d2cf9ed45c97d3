//! Catching up after a start: an agent publishes no zone row of its own
//! until its tables hold what its peers' tables hold.
//!
//! A freshly started (or restarted) agent computes its ancestors' rows from
//! tables that hold little more than itself, and those rows are the newest
//! of their zone: they carry its fresh heartbeat. Sent out, they beat the
//! rows its zone-mates computed from every member, and its zone shrinks to
//! one host at every agent that takes them (a rolling restart once showed a
//! root of 3 of 12). So until every table is caught up, its own zone rows
//! stay with it: its digests do not list them, it sends them to nobody,
//! pushes none, and the overlay treats it as not ready (see
//! docs/ALGORITHM.md, "Starting and restarting").
//!
//! A table is caught up when peers' digests of it, taken together, cover
//! every name and list none it lacks. Digests of a table may come in parts
//! over name ranges, hence the ranges kept here. A table no peer shares
//! (a zone of one) is never covered; the catch-up then ends after a few
//! rounds all the same, unless a copy of one of its own zones computed
//! elsewhere counted more members than its own: then it still lacks
//! zone-mates it has not found (a restarted agent knows nobody and finds
//! them through contacts, a level a round), and it waits for them, up to
//! a bound past the leaf expiry, after which such copies are stale.

use super::message::Name;

/// A range of names `[lo, hi)`; `None` bounds are open.
type NameRange = (Option<Name>, Option<Name>);

#[derive(Debug, Clone)]
pub(crate) struct Catchup {
    /// Per table: name ranges `[lo, hi)` that a peer's digest showed we
    /// hold (`None` bounds are open), or None once the whole table is.
    tables: Vec<Option<Vec<NameRange>>>,
    /// Per table: the most members a copy of our own entry in it,
    /// computed by another agent, counted.
    elsewhere: Vec<u64>,
    rounds_left: u64,
    bound_left: u64,
    done: bool,
}

impl Catchup {
    /// Ends after `rounds` rounds if nothing says a zone-mate is missing,
    /// after `bound` rounds whatever.
    pub(crate) fn new(tables: usize, rounds: u64, bound: u64) -> Catchup {
        Catchup {
            tables: vec![Some(Vec::new()); tables],
            elsewhere: vec![0; tables],
            rounds_left: rounds,
            bound_left: bound.max(rounds),
            done: false,
        }
    }

    /// Caught up: every table covered, or out of rounds.
    pub(crate) fn is_done(&self) -> bool {
        self.done
    }

    /// Another agent's copy of our own entry of table `k` counted `members`.
    pub(crate) fn seen_elsewhere(&mut self, k: usize, members: u64) {
        if let Some(m) = self.elsewhere.get_mut(k) {
            *m = (*m).max(members);
        }
    }

    /// A peer's digest part of table `k`, over `[lo, hi)`, listed no name
    /// this agent lacks.
    pub(crate) fn covered(&mut self, k: usize, lo: Option<&Name>, hi: Option<&Name>) {
        if self.is_done() {
            return;
        }
        let Some(Some(ranges)) = self.tables.get_mut(k) else {
            return;
        };
        ranges.push((lo.cloned(), hi.cloned()));
        if spans_everything(ranges) {
            self.tables[k] = None;
            self.done = self.tables.iter().all(Option::is_none);
        }
    }

    /// One gossip round passed; `own_members(k)` is what our own entry of
    /// table `k` counts now.
    pub(crate) fn round(&mut self, own_members: impl Fn(usize) -> u64) {
        if self.done {
            return;
        }
        self.rounds_left = self.rounds_left.saturating_sub(1);
        self.bound_left = self.bound_left.saturating_sub(1);
        let nothing_missing =
            (0..self.elsewhere.len()).all(|k| own_members(k) >= self.elsewhere[k]);
        self.done = self.bound_left == 0 || (self.rounds_left == 0 && nothing_missing);
    }
}

/// Whether the union of `[lo, hi)` ranges (None: unbounded) is every name.
fn spans_everything(ranges: &mut [NameRange]) -> bool {
    // None sorts first, which is what an open lower bound means.
    ranges.sort_by(|a, b| a.0.cmp(&b.0));
    // Everything below `reached` is covered; None in `reached` means
    // nothing yet, until a range open below is seen.
    let mut reached: Option<&Name> = None;
    let mut started = false;
    for (lo, hi) in ranges.iter() {
        let joins = match (lo, started) {
            (None, _) => true,
            (Some(_), false) => false,
            (Some(lo), true) => reached.is_some_and(|r| lo <= r),
        };
        if !joins {
            return false;
        }
        started = true;
        match hi {
            None => return true,
            Some(hi) => {
                if reached.is_none_or(|r| hi > r) {
                    reached = Some(hi);
                }
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Option<Name> {
        Some(Name::new(s))
    }

    #[test]
    fn a_whole_digest_catches_a_table_up_and_parts_must_join() {
        let mut c = Catchup::new(2, 5, 30);
        c.covered(0, None, None);
        assert!(!c.is_done());
        // Table 1 in three parts, given out of order, with a gap first.
        c.covered(1, n("m").as_ref(), None);
        c.covered(1, None, n("d").as_ref());
        assert!(!c.is_done(), "[d, m) is not covered yet");
        c.covered(1, n("c").as_ref(), n("n").as_ref());
        assert!(c.is_done());
    }

    #[test]
    fn a_table_nobody_shares_ends_the_catch_up_after_its_rounds() {
        let mut c = Catchup::new(1, 3, 30);
        c.round(|_| 1);
        c.round(|_| 1);
        assert!(!c.is_done());
        c.round(|_| 1);
        assert!(c.is_done());
    }

    #[test]
    fn a_bigger_copy_elsewhere_keeps_it_catching_up_until_the_bound() {
        let mut c = Catchup::new(2, 2, 6);
        c.seen_elsewhere(1, 16);
        for _ in 0..5 {
            c.round(|k| if k == 1 { 1 } else { 40 });
            assert!(!c.is_done());
        }
        c.round(|_| 1);
        assert!(c.is_done(), "the bound ends it");
        // Once its own count is up to the copy's, the rounds end it.
        let mut c = Catchup::new(1, 2, 60);
        c.seen_elsewhere(0, 16);
        c.round(|_| 16);
        c.round(|_| 16);
        assert!(c.is_done());
    }
}
