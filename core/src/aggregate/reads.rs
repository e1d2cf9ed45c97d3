//! Which attributes an expression, an aggregate function or a whole set
//! of aggregates reads: from the plan itself, so it agrees with what
//! evaluation looks up. The overlay uses it to count hosts lacking a
//! column; the agent to warn about aggregates over attributes no row has.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::{AggregateSet, Expr, Func};
use crate::zone::Attributes;

/// Attribute names, sorted.
pub type Reads = BTreeSet<Arc<str>>;

impl Expr {
    /// Adds every column this expression reads to `out`.
    pub fn reads_into(&self, out: &mut Reads) {
        match self {
            Expr::Column(c) => {
                out.insert(c.clone());
            }
            Expr::Literal(_) => {}
            Expr::Not(x) | Expr::Neg(x) | Expr::IsNull(x, _) => x.reads_into(out),
            Expr::InList(x, list, _) => {
                x.reads_into(out);
                list.iter().for_each(|l| l.reads_into(out));
            }
            Expr::Binary(a, _, b) => {
                a.reads_into(out);
                b.reads_into(out);
            }
        }
    }
}

impl Func {
    /// Adds every column this function's arguments read to `out`.
    pub fn reads_into(&self, out: &mut Reads) {
        match self {
            Func::Count(None) => {}
            Func::Count(Some(e))
            | Func::Sum(e)
            | Func::Avg(e)
            | Func::Min(e)
            | Func::Max(e)
            | Func::Quantile(_, e)
            | Func::Random(_, e)
            | Func::BitOr(e)
            | Func::BitAnd(e)
            | Func::CountDistinct(e) => e.reads_into(out),
            Func::First { value, key, .. } => {
                value.reads_into(out);
                key.reads_into(out);
            }
            Func::TopK(_, a, b) => {
                a.reads_into(out);
                b.reads_into(out);
            }
        }
    }
}

/// An attribute an aggregate column reads that no row has.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Absent {
    /// The aggregate's output column.
    pub column: Arc<str>,
    /// The attribute it reads.
    pub attribute: Arc<str>,
    /// An attribute some row has whose name contains this one, as
    /// `my-attr.x` contains `my` and `x` (what SQL reads unquoted
    /// `my-attr.x` as): the name the author probably meant.
    pub meant: Option<Arc<str>>,
}

impl AggregateSet {
    /// For each output column, the attributes it reads: its function's
    /// arguments and its SELECT's WHERE.
    pub fn reads(&self) -> Vec<(Arc<str>, Reads)> {
        let mut out = Vec::new();
        for select in &self.selects {
            let mut filter = Reads::new();
            if let Some(f) = &select.filter {
                f.reads_into(&mut filter);
            }
            for c in &select.columns {
                let mut reads = filter.clone();
                c.func.reads_into(&mut reads);
                out.push((c.name.clone(), reads));
            }
        }
        out
    }

    /// The attributes this set's columns read that none of `rows` has.
    pub fn absent_in<'a>(&self, rows: impl IntoIterator<Item = &'a Attributes>) -> Vec<Absent> {
        let rows: Vec<&Attributes> = rows.into_iter().collect();
        let mut absent = Vec::new();
        for (column, reads) in self.reads() {
            for attribute in reads {
                if rows.iter().any(|r| r.contains_key(&attribute)) {
                    continue;
                }
                let meant = rows
                    .iter()
                    .flat_map(|r| r.keys())
                    .find(|k| k.len() > attribute.len() && k.contains(&*attribute))
                    .cloned();
                absent.push(Absent {
                    column: column.clone(),
                    attribute,
                    meant,
                });
            }
        }
        absent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zone::Value;

    #[test]
    fn attributes_no_row_has_are_found_with_the_name_meant() {
        let set = AggregateSet::compile(&[
            "SELECT max(my-attr.x) AS attr_max, sum(load1) AS load WHERE role = 'web'",
            r#"SELECT max("my-attr.x") AS quoted"#,
        ])
        .unwrap();
        let row: Attributes = [("my-attr.x", Value::Int(3)), ("load1", Value::Float(0.5))]
            .into_iter()
            .map(|(k, v)| (Arc::from(k), v))
            .collect();
        let absent = set.absent_in([&row]);
        let found: Vec<(&str, &str, Option<&str>)> = absent
            .iter()
            .map(|a| (&*a.column, &*a.attribute, a.meant.as_deref()))
            .collect();
        assert_eq!(
            found,
            vec![
                ("attr_max", "my", Some("my-attr.x")),
                ("attr_max", "role", None),
                ("attr_max", "x", Some("my-attr.x")),
                ("load", "role", None),
            ]
        );
        assert!(AggregateSet::compile(&["SELECT count(*) AS n"])
            .unwrap()
            .absent_in([&row])
            .is_empty());
    }
}
