//! Scalar expressions over a leaf's attributes: WHERE clauses and the
//! arguments of aggregate functions.

use std::cmp::Ordering;
use std::sync::Arc;

use crate::zone::{Attributes, Value};

/// A planned scalar expression. Evaluates with SQL's three-valued logic: a
/// missing attribute, a type mismatch or an overflow is `Null`, never an error.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// An attribute of the row, by name; `Null` if the row lacks it.
    Column(Arc<str>),
    /// A constant.
    Literal(Value),
    /// `NOT e`.
    Not(Box<Expr>),
    /// `-e`.
    Neg(Box<Expr>),
    /// `e IS NULL`, or `e IS NOT NULL` when the flag is set.
    IsNull(Box<Expr>, bool),
    /// `e IN (list)`, or `e NOT IN (list)` when the flag is set.
    InList(Box<Expr>, Vec<Expr>, bool),
    /// `l op r`.
    Binary(Box<Expr>, BinOp, Box<Expr>),
}

/// Binary operators of WHERE clauses and aggregate arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    /// `=`
    Eq,
    /// `<>` or `!=`
    NotEq,
    /// `<`
    Lt,
    /// `<=`
    LtEq,
    /// `>`
    Gt,
    /// `>=`
    GtEq,
    /// `AND`, three-valued.
    And,
    /// `OR`, three-valued.
    Or,
    /// `+`
    Plus,
    /// `-`
    Minus,
    /// `*`
    Multiply,
    /// `/`, always a float; `Null` on division by zero.
    Divide,
    /// `%`
    Modulo,
}

/// A total order on the values aggregates compare: numbers (ints, floats
/// and bools together) before strings; nulls and lists last.
pub fn compare(a: &Value, b: &Value) -> Ordering {
    fn class(v: &Value) -> u8 {
        match v {
            Value::Int(_) | Value::Float(_) | Value::Bool(_) => 0,
            Value::Str(_) => 1,
            Value::List(_) => 2,
            Value::Null => 3,
        }
    }
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => x.cmp(y),
        (Value::Str(x), Value::Str(y)) => x.cmp(y),
        _ if class(a) == 0 && class(b) == 0 => {
            let (x, y) = (a.as_f64().unwrap_or(0.0), b.as_f64().unwrap_or(0.0));
            x.total_cmp(&y)
        }
        (Value::List(x), Value::List(y)) => {
            for (p, q) in x.iter().zip(y) {
                let o = compare(p, q);
                if o != Ordering::Equal {
                    return o;
                }
            }
            x.len().cmp(&y.len())
        }
        _ => class(a).cmp(&class(b)),
    }
}

fn sql_eq(a: &Value, b: &Value) -> Option<bool> {
    if a.is_null() || b.is_null() {
        return None;
    }
    let comparable = matches!((a, b), (Value::Str(_), Value::Str(_)))
        || (a.as_f64().is_some() && b.as_f64().is_some());
    Some(comparable && compare(a, b) == Ordering::Equal)
}

fn arith(op: BinOp, a: &Value, b: &Value) -> Value {
    if let (Value::Int(x), Value::Int(y)) = (a, b) {
        let r = match op {
            BinOp::Plus => x.checked_add(*y),
            BinOp::Minus => x.checked_sub(*y),
            BinOp::Multiply => x.checked_mul(*y),
            BinOp::Divide => {
                if *y == 0 {
                    return Value::Null;
                }
                return Value::Float(*x as f64 / *y as f64);
            }
            BinOp::Modulo => x.checked_rem(*y),
            _ => None,
        };
        return r.map_or(Value::Null, Value::Int);
    }
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => {
            let r = match op {
                BinOp::Plus => x + y,
                BinOp::Minus => x - y,
                BinOp::Multiply => x * y,
                BinOp::Divide => x / y,
                BinOp::Modulo => x % y,
                _ => f64::NAN,
            };
            if r.is_finite() {
                Value::Float(r)
            } else {
                Value::Null
            }
        }
        _ => Value::Null,
    }
}

impl Expr {
    /// The value of the expression for one row's attributes.
    pub fn eval(&self, attrs: &Attributes) -> Value {
        match self {
            Expr::Column(name) => attrs.get(name).cloned().unwrap_or(Value::Null),
            Expr::Literal(v) => v.clone(),
            Expr::Not(e) => match e.eval(attrs) {
                Value::Bool(b) => Value::Bool(!b),
                _ => Value::Null,
            },
            Expr::Neg(e) => match e.eval(attrs) {
                Value::Int(i) => i.checked_neg().map_or(Value::Null, Value::Int),
                Value::Float(f) => Value::Float(-f),
                _ => Value::Null,
            },
            Expr::IsNull(e, negated) => Value::Bool(e.eval(attrs).is_null() != *negated),
            Expr::InList(e, list, negated) => {
                let v = e.eval(attrs);
                if v.is_null() {
                    return Value::Null;
                }
                let found = list
                    .iter()
                    .any(|item| sql_eq(&v, &item.eval(attrs)) == Some(true));
                Value::Bool(found != *negated)
            }
            Expr::Binary(l, op, r) => {
                let a = l.eval(attrs);
                match op {
                    BinOp::And => {
                        if a == Value::Bool(false) {
                            return Value::Bool(false);
                        }
                        let b = r.eval(attrs);
                        match (a, b) {
                            (_, Value::Bool(false)) => Value::Bool(false),
                            (Value::Bool(true), Value::Bool(true)) => Value::Bool(true),
                            _ => Value::Null,
                        }
                    }
                    BinOp::Or => {
                        if a == Value::Bool(true) {
                            return Value::Bool(true);
                        }
                        let b = r.eval(attrs);
                        match (a, b) {
                            (_, Value::Bool(true)) => Value::Bool(true),
                            (Value::Bool(false), Value::Bool(false)) => Value::Bool(false),
                            _ => Value::Null,
                        }
                    }
                    BinOp::Eq | BinOp::NotEq => {
                        let b = r.eval(attrs);
                        match sql_eq(&a, &b) {
                            Some(eq) => Value::Bool(eq == (*op == BinOp::Eq)),
                            None => Value::Null,
                        }
                    }
                    BinOp::Lt | BinOp::LtEq | BinOp::Gt | BinOp::GtEq => {
                        let b = r.eval(attrs);
                        if a.is_null() || b.is_null() || sql_eq(&a, &b).is_none() {
                            return Value::Null;
                        }
                        let comparable = matches!((&a, &b), (Value::Str(_), Value::Str(_)))
                            || (a.as_f64().is_some() && b.as_f64().is_some());
                        if !comparable {
                            return Value::Null;
                        }
                        let o = compare(&a, &b);
                        Value::Bool(match op {
                            BinOp::Lt => o == Ordering::Less,
                            BinOp::LtEq => o != Ordering::Greater,
                            BinOp::Gt => o == Ordering::Greater,
                            _ => o != Ordering::Less,
                        })
                    }
                    _ => arith(*op, &a, &r.eval(attrs)),
                }
            }
        }
    }

    /// WHERE semantics: only a true result selects the row.
    pub fn is_true(&self, attrs: &Attributes) -> bool {
        self.eval(attrs) == Value::Bool(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs() -> Attributes {
        let mut a = Attributes::new();
        a.insert("role".into(), Value::str("web"));
        a.insert("load".into(), Value::Float(0.5));
        a.insert("n".into(), Value::Int(3));
        a
    }

    fn col(n: &str) -> Box<Expr> {
        Box::new(Expr::Column(n.into()))
    }
    fn lit(v: Value) -> Box<Expr> {
        Box::new(Expr::Literal(v))
    }

    #[test]
    fn three_valued_logic_and_comparisons() {
        let a = attrs();
        let eq = Expr::Binary(col("role"), BinOp::Eq, lit(Value::str("web")));
        assert!(eq.is_true(&a));
        let missing = Expr::Binary(col("nope"), BinOp::Gt, lit(Value::Int(1)));
        assert_eq!(missing.eval(&a), Value::Null);
        let or = Expr::Binary(Box::new(missing), BinOp::Or, Box::new(eq));
        assert!(or.is_true(&a));
        let mixed = Expr::Binary(col("n"), BinOp::Lt, lit(Value::Float(3.5)));
        assert!(mixed.is_true(&a));
        let sum = Expr::Binary(col("n"), BinOp::Plus, col("load"));
        assert_eq!(sum.eval(&a), Value::Float(3.5));
        let div0 = Expr::Binary(col("n"), BinOp::Divide, lit(Value::Int(0)));
        assert_eq!(div0.eval(&a), Value::Null);
        let overflow = Expr::Binary(lit(Value::Int(i64::MAX)), BinOp::Plus, lit(Value::Int(1)));
        assert_eq!(overflow.eval(&a), Value::Null);
        let inlist = Expr::InList(
            col("role"),
            vec![
                Expr::Literal(Value::str("db")),
                Expr::Literal(Value::str("web")),
            ],
            false,
        );
        assert!(inlist.is_true(&a));
    }
}
