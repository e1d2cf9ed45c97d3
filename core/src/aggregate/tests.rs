//! The aggregate algebra: every function, every error, and the property that
//! a tree of merges equals the direct computation over the leaves.

use proptest::prelude::*;

use super::*;
use crate::zone::Value;

const EXAMPLE: &str = "SELECT count(*) AS hosts, sum(x) AS x_sum, avg(x) AS x_avg, min(x) AS x_min, max(x) AS x_max, quantile(0.99, x) AS x_p99, first(3, addr ORDER BY load) AS firsts, random(2, addr) AS sample, topk(5, name, cpu) AS top_cpu, bit_or(flags) AS flags_any, bit_and(flags) AS flags_all, count_distinct(version) AS versions WHERE role = 'web'";

fn leaf(i: i64, x: f64, role: &str) -> Attributes {
    let mut a = Attributes::new();
    a.insert("id".into(), Value::Int(i));
    a.insert("addr".into(), Value::str(&format!("10.0.0.{i}:7946")));
    a.insert("name".into(), Value::str(&format!("h{i}")));
    a.insert("x".into(), Value::Float(x));
    a.insert("load".into(), Value::Float((i % 7) as f64));
    a.insert("cpu".into(), Value::Float(x * 2.0));
    a.insert("flags".into(), Value::Int(1 << (i % 4)));
    a.insert("version".into(), Value::str(&format!("v{}", i % 5)));
    a.insert("role".into(), Value::str(role));
    a
}

fn direct(set: &AggregateSet, leaves: &[Attributes]) -> Attributes {
    let states: Vec<States> = leaves.iter().map(|l| set.leaf_states(l)).collect();
    AggregateSet::finalize(&set.merge(states.iter()))
}

#[test]
fn the_example_from_the_issue_compiles_and_computes() {
    let set = AggregateSet::with_defaults(&[EXAMPLE]).unwrap();
    assert!(set.columns().iter().any(|c| &**c == "members"));
    let leaves: Vec<_> = (0..20)
        .map(|i| leaf(i, i as f64, if i % 2 == 0 { "web" } else { "db" }))
        .collect();
    let v = direct(&set, &leaves);
    assert_eq!(v["members"], Value::Int(20));
    assert_eq!(v["hosts"], Value::Int(10));
    assert_eq!(v["x_sum"], Value::Float(90.0));
    assert_eq!(v["x_avg"], Value::Float(9.0));
    assert_eq!(v["x_min"], Value::Float(0.0));
    assert_eq!(v["x_max"], Value::Float(18.0));
    assert_eq!(v["flags_any"], Value::Int(0b101));
    assert_eq!(v["flags_all"], Value::Int(0));
    let top = v["top_cpu"].as_list().unwrap();
    assert_eq!(top.len(), 5);
    assert_eq!(
        top[0],
        Value::List(vec![Value::str("h18"), Value::Float(36.0)])
    );
    assert_eq!(v["sample"].as_list().unwrap().len(), 2);
    let firsts = v["firsts"].as_list().unwrap();
    assert_eq!(firsts[0], Value::str("10.0.0.0:7946"));
    assert_eq!(v["versions"], Value::Int(5));
    let contacts = v["contacts"].as_list().unwrap();
    assert_eq!(contacts.len(), 5);
    assert_eq!(contacts[0], Value::str("10.0.0.0:7946"));
}

#[test]
fn sums_of_integers_stay_integers_and_empty_is_null() {
    let set =
        AggregateSet::compile(&["SELECT sum(n) AS s, avg(n) AS a, min(n) AS lo WHERE n > 100"])
            .unwrap();
    let mut leaves = Vec::new();
    for n in [1i64, 2, 3] {
        let mut a = Attributes::new();
        a.insert("n".into(), Value::Int(n));
        leaves.push(a);
    }
    let v = direct(&set, &leaves);
    assert_eq!(v["s"], Value::Null);
    assert_eq!(v["a"], Value::Null);
    assert_eq!(v["lo"], Value::Null);
    let set = AggregateSet::compile(&["SELECT sum(n) AS s, count(n) AS c, count(*) AS all_rows"])
        .unwrap();
    leaves.push(Attributes::new());
    let v = direct(&set, &leaves);
    assert_eq!(v["s"], Value::Int(6));
    assert_eq!(v["c"], Value::Int(3));
    assert_eq!(v["all_rows"], Value::Int(4));
}

#[test]
fn unaliased_columns_get_derived_names() {
    let set = AggregateSet::compile(&["SELECT count(*), sum(rx + tx), max(load)"]).unwrap();
    let names: Vec<&str> = set.columns().iter().map(|c| &**c).collect();
    assert_eq!(names, vec!["count", "sum_rx_tx", "max_load"]);
}

fn error_of(sql: &str) -> String {
    AggregateSet::with_defaults(&[sql]).unwrap_err().to_string()
}

#[test]
fn errors_name_the_problem_and_where() {
    let e = error_of("SELECT medain(x) AS m");
    assert!(
        e.contains("unknown function") && e.contains("medain"),
        "{e}"
    );
    assert!(e.contains("line 1, column 8"), "{e}");
    assert!(e.starts_with("aggregate 1:"), "{e}");
    assert!(error_of("SELECT sum(x, y) AS s").contains("sum takes 1 argument, got 2"));
    assert!(error_of("SELECT quantile(1.5, x) AS q").contains("between 0 and 1"));
    assert!(error_of("SELECT quantile(q, x) AS q").contains("between 0 and 1"));
    assert!(error_of("SELECT first(0, x ORDER BY y) AS f").contains("from 1 to 64"));
    assert!(error_of("SELECT first(2, x) AS f").contains("ORDER BY"));
    let e = error_of("SELECT load AS l");
    assert!(
        e.contains("not an aggregate function") && e.contains("column 8"),
        "{e}"
    );
    assert!(error_of("SELECT sum(x) AS a, max(x) AS a").contains("defined twice"));
    assert!(error_of("SELECT count(*) AS members").contains("reserved"));
    assert!(error_of("SELECT sum(x) AS s GROUP BY role").contains("GROUP BY"));
    assert!(error_of("SELECT sum(x) AS s ORDER BY s").contains("ORDER BY"));
    assert!(error_of("SELECT sum(x) AS s FROM hosts").contains("no FROM"));
    assert!(error_of("SELECT sum(x AS s").contains("Expected"));
    assert!(error_of("DELETE FROM t").contains("SELECT"));
    assert!(error_of("SELECT 1 AS a; SELECT 2 AS b").contains("one SELECT"));
    assert!(error_of("SELECT sum(max(x)) AS s").contains("cannot be nested"));
    assert!(error_of("SELECT * ").contains("SELECT *"));
    assert!(error_of("").contains("expected one SELECT"));
}

#[test]
fn states_of_different_kinds_do_not_merge() {
    let mut a = State::Count(3);
    a.merge(&State::Avg { sum: 1.0, count: 1 });
    assert_eq!(a, State::Count(3));
    let mut q = State::Quantile {
        q: 0.5,
        sketch: Default::default(),
    };
    let before = q.clone();
    let mut other = ddsketch::DdSketch::default();
    other.add(1.0);
    q.merge(&State::Quantile {
        q: 0.9,
        sketch: other,
    });
    assert_eq!(q, before);
}

#[test]
fn the_example_state_fits_a_datagram() {
    let set = AggregateSet::with_defaults(&[EXAMPLE]).unwrap();
    let leaves: Vec<_> = (0..1000)
        .map(|i| leaf(i, (i * 7919 % 1000) as f64 / 10.0, "web"))
        .collect();
    let states: Vec<States> = leaves.iter().map(|l| set.leaf_states(l)).collect();
    let merged = set.merge(states.iter());
    let bytes = postcard::to_allocvec(&merged).unwrap();
    assert!(bytes.len() < 1200, "{} bytes", bytes.len());
}

fn arb_leaf() -> impl Strategy<Value = Attributes> {
    (0i64..1000, -1000.0f64..1000.0, any::<bool>(), 0i64..16).prop_map(|(i, x, web, f)| {
        let mut a = leaf(
            i,
            (x * 100.0).round() / 100.0,
            if web { "web" } else { "db" },
        );
        a.insert("n".into(), Value::Int(i - 500));
        a.insert("flags".into(), Value::Int(f));
        a
    })
}

const PROPERTY_SQL: &str = "SELECT count(*) AS c, sum(n) AS n_sum, sum(x) AS x_sum, avg(x) AS x_avg, min(x) AS x_min, max(n) AS n_max, quantile(0.9, x) AS x_p90, first(3, addr ORDER BY n DESC) AS f, random(3, name) AS r, topk(3, name, x) AS t, bit_or(flags) AS bo, bit_and(flags) AS ba, count_distinct(id) AS d WHERE role = 'web' OR x > 0";

fn close(a: &Value, b: &Value, rel: f64) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => (x - y).abs() <= rel * x.abs().max(y.abs()).max(1.0),
        (Value::List(x), Value::List(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| close(p, q, rel))
        }
        _ => a == b,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn merge_is_commutative_and_associative(
        a in prop::collection::vec(arb_leaf(), 0..20),
        b in prop::collection::vec(arb_leaf(), 0..20),
        c in prop::collection::vec(arb_leaf(), 0..20),
    ) {
        let set = AggregateSet::compile(&[PROPERTY_SQL]).unwrap();
        let part = |leaves: &[Attributes]| {
            let s: Vec<States> = leaves.iter().map(|l| set.leaf_states(l)).collect();
            set.merge(s.iter())
        };
        let (sa, sb, sc) = (part(&a), part(&b), part(&c));
        let ab_c = set.merge([&set.merge([&sa, &sb]), &sc]);
        let a_bc = set.merge([&sa, &set.merge([&sb, &sc])]);
        let cba = set.merge([&sc, &sb, &sa]);
        let (x, y, z) = (AggregateSet::finalize(&ab_c), AggregateSet::finalize(&a_bc), AggregateSet::finalize(&cba));
        for (name, v) in &x {
            prop_assert!(close(v, &y[name], 1e-9), "{name}: {v} vs {}", y[name]);
            prop_assert!(close(v, &z[name], 1e-9), "{name}: {v} vs {}", z[name]);
        }
    }

    #[test]
    fn merging_a_column_at_once_equals_merging_one_by_one(
        leaves in prop::collection::vec(arb_leaf(), 0..40),
    ) {
        let set = AggregateSet::compile(&[PROPERTY_SQL]).unwrap();
        let states: Vec<States> = leaves.iter().map(|l| set.leaf_states(l)).collect();
        let at_once = set.merge(states.iter());
        let mut one_by_one = set.empty_states();
        for child in &states {
            for (name, acc) in one_by_one.iter_mut() {
                if let Some(state) = child.get(name) {
                    acc.merge(state);
                }
            }
        }
        prop_assert_eq!(at_once, one_by_one);
    }

    #[test]
    fn a_tree_of_merges_equals_the_direct_computation(
        leaves in prop::collection::vec(arb_leaf(), 1..120),
        cuts in prop::collection::vec(1usize..8, 1..6),
    ) {
        let set = AggregateSet::compile(&[PROPERTY_SQL]).unwrap();
        let want = direct(&set, &leaves);
        // Two levels of zones of varying sizes above the leaves.
        let leaf_states: Vec<States> = leaves.iter().map(|l| set.leaf_states(l)).collect();
        let mut zones: Vec<States> = Vec::new();
        let mut i = 0;
        let mut k = 0;
        while i < leaf_states.len() {
            let size = cuts[k % cuts.len()];
            let end = (i + size).min(leaf_states.len());
            zones.push(set.merge(leaf_states[i..end].iter()));
            i = end;
            k += 1;
        }
        let regions: Vec<States> = zones.chunks(3).map(|c| set.merge(c.iter())).collect();
        let root = AggregateSet::finalize(&set.merge(regions.iter()));
        for (name, v) in &want {
            prop_assert!(close(v, &root[name], 1e-9), "{name}: direct {v} vs tree {}", root[name]);
        }
        // The quantile is within the sketch's relative error of the exact one.
        let selected: Vec<f64> = leaves.iter()
            .filter(|l| l["role"] == Value::str("web") || l["x"].as_f64().unwrap() > 0.0)
            .map(|l| l["x"].as_f64().unwrap())
            .collect();
        if !selected.is_empty() {
            let mut sorted = selected.clone();
            sorted.sort_by(f64::total_cmp);
            let exact = sorted[(0.9 * (sorted.len() - 1) as f64).round() as usize];
            let got = root["x_p90"].as_f64().unwrap();
            prop_assert!((got - exact).abs() <= ddsketch::ALPHA * exact.abs() + 1e-9, "p90 {got} vs {exact}");
        }
    }
}
