//! Placing simulated agents as the leaves of a balanced tree of zones.

use crate::zone::ZonePath;

/// Number of zone levels above the leaves: the smallest L with B^L >= N.
pub(crate) fn levels(agents: usize, branching: usize) -> usize {
    let mut levels = 1;
    let mut capacity = branching;
    while capacity < agents {
        levels += 1;
        capacity = capacity.saturating_mul(branching);
    }
    levels
}

/// The zone of agent `index`: its index written in base `branching`, one
/// digit per level, so every zone has at most `branching` children and the
/// tree is as full as it can be from the leaves up.
pub fn leaf_path(index: usize, agents: usize, branching: usize) -> ZonePath {
    let levels = levels(agents, branching);
    let mut digits = Vec::with_capacity(levels);
    let mut rest = index;
    for _ in 0..levels - 1 {
        rest /= branching;
        digits.push(rest % branching);
    }
    digits.reverse();
    let mut path = String::new();
    for d in digits {
        path.push_str(&format!("/z{d}"));
    }
    path.push_str(&format!("/h{index}"));
    ZonePath::parse(&path).unwrap_or_else(|_| ZonePath::root())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_shape() {
        assert_eq!(levels(10, 16), 1);
        assert_eq!(levels(10_000, 16), 4);
        assert_eq!(levels(100_000, 32), 4);
        assert_eq!(leaf_path(5, 10, 16).as_str(), "/h5");
        assert_eq!(leaf_path(17, 100, 4).as_str(), "/z0/z1/z0/h17");
        let mut children = std::collections::BTreeMap::<String, usize>::new();
        for i in 0..1000 {
            let p = leaf_path(i, 1000, 10);
            assert_eq!(p.depth(), 3);
            for d in 0..3 {
                let parent = p.ancestor(d).unwrap().to_string();
                *children
                    .entry(format!("{parent}>{}", p.ancestor(d + 1).unwrap()))
                    .or_default() += 1;
            }
        }
        let mut per_zone = std::collections::BTreeMap::<String, usize>::new();
        for key in children.keys() {
            *per_zone
                .entry(key.split('>').next().unwrap().to_string())
                .or_default() += 1;
        }
        assert!(per_zone.values().all(|c| *c <= 10));
    }
}
