//! SQL text to aggregate plans, with sqlparser.

use std::sync::Arc;

use sqlparser::ast::{
    self, BinaryOperator, Expr as SqlExpr, FunctionArg, FunctionArgExpr, FunctionArgumentClause,
    FunctionArguments, SelectItem, SetExpr, Spanned, Statement, UnaryOperator,
};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;

use super::expr::{BinOp, Expr};
use super::AggregateError;
use crate::zone::Value;

/// Largest `n` of first/random/topk: their state travels in every row.
pub const MAX_ITEMS: u32 = 64;

/// An aggregate function of a column, with its planned arguments.
#[derive(Debug, Clone, PartialEq)]
pub enum Func {
    /// `count(*)` (None) or `count(x)` (non-null x).
    Count(Option<Expr>),
    /// `sum(x)`: an integer while every value is one.
    Sum(Expr),
    /// `avg(x)`.
    Avg(Expr),
    /// `min(x)` in the order of `compare`.
    Min(Expr),
    /// `max(x)` in the order of `compare`.
    Max(Expr),
    /// `quantile(q, x)`, 0 < q < 1, from a DDSketch.
    Quantile(f64, Expr),
    /// `first(n, x ORDER BY key [DESC])`: the `x` of the `n` rows with the
    /// smallest (largest) keys.
    First {
        /// How many items are kept (at most `MAX_ITEMS`).
        n: u32,
        /// The value listed.
        value: Expr,
        /// The ordering key.
        key: Expr,
        /// Largest keys first.
        desc: bool,
    },
    /// `random(n, x)`: a deterministic sample of `n` values.
    Random(u32, Expr),
    /// `topk(n, name, value)`: the `n` (name, value) pairs with the largest
    /// values.
    TopK(u32, Expr, Expr),
    /// `bit_or(x)` of integer values.
    BitOr(Expr),
    /// `bit_and(x)` of integer values.
    BitAnd(Expr),
    /// `count_distinct(x)`, estimated by HyperLogLog.
    CountDistinct(Expr),
}

/// One output column of a SELECT: `func AS name`.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// The output name, the attribute the zone row carries.
    pub name: Arc<str>,
    /// The function that computes it.
    pub func: Func,
}

/// One SELECT: its columns and its WHERE clause.
#[derive(Debug, Clone, PartialEq)]
pub struct Select {
    /// The columns, in the order written.
    pub columns: Vec<Column>,
    /// The WHERE clause: a leaf it is not true for contributes empty states.
    pub filter: Option<Expr>,
}

type Result<T> = std::result::Result<T, AggregateError>;

fn at(node: &impl Spanned, message: impl Into<String>) -> AggregateError {
    let start = node.span().start;
    AggregateError::new(message).at(start.line, start.column)
}

pub(crate) fn parse_select(sql: &str) -> Result<Select> {
    let statements = Parser::parse_sql(&GenericDialect {}, sql).map_err(|e| {
        AggregateError::new(
            e.to_string()
                .trim_start_matches("sql parser error: ")
                .to_string(),
        )
    })?;
    let [statement] = statements.as_slice() else {
        return Err(AggregateError::new(format!(
            "expected one SELECT statement, found {}",
            statements.len()
        )));
    };
    let Statement::Query(query) = statement else {
        return Err(AggregateError::new("an aggregate is a SELECT statement"));
    };
    if query.with.is_some() {
        return Err(at(query.as_ref(), "WITH is not supported in aggregates"));
    }
    if query.order_by.is_some() || query.limit_clause.is_some() || query.fetch.is_some() {
        return Err(at(
            query.as_ref(),
            "ORDER BY, LIMIT and FETCH are not supported in aggregates",
        ));
    }
    let SetExpr::Select(select) = query.body.as_ref() else {
        return Err(at(
            query.as_ref(),
            "UNION, VALUES and the like are not supported in aggregates",
        ));
    };
    if !select.from.is_empty() {
        return Err(at(
            &select.from[0],
            "aggregates take no FROM: they run over the children of every zone",
        ));
    }
    if select.distinct.is_some() {
        return Err(at(
            select.as_ref(),
            "DISTINCT is not supported in aggregates; use count_distinct(x)",
        ));
    }
    let grouped = match &select.group_by {
        ast::GroupByExpr::All(_) => true,
        ast::GroupByExpr::Expressions(e, _) => !e.is_empty(),
    };
    if grouped || select.having.is_some() {
        return Err(at(
            select.as_ref(),
            "GROUP BY and HAVING are not supported in aggregates",
        ));
    }
    let mut columns = Vec::new();
    for item in &select.projection {
        let (expr, name) = match item {
            SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias.value.clone())),
            SelectItem::UnnamedExpr(expr) => (expr, None),
            other => {
                return Err(at(
                    other,
                    "SELECT * is not an aggregate; name the functions to compute",
                ))
            }
        };
        let func = plan_function(expr)?;
        let name = match name {
            Some(n) => n,
            None => derived_name(expr),
        };
        columns.push(Column {
            name: name.into(),
            func,
        });
    }
    let filter = select.selection.as_ref().map(plan_expr).transpose()?;
    Ok(Select { columns, filter })
}

/// A name for an unaliased column: `sum(x)` -> `sum_x`, `count(*)` -> `count`.
fn derived_name(expr: &SqlExpr) -> String {
    let text = expr.to_string().to_lowercase();
    let mut name = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            name.push(c);
        } else if !name.ends_with('_') {
            name.push('_');
        }
    }
    name.trim_matches('_').to_string()
}

pub(crate) fn plan_function(expr: &SqlExpr) -> Result<Func> {
    let SqlExpr::Function(f) = expr else {
        return Err(at(
            expr,
            format!("{expr} is not an aggregate function; every column must aggregate (count, sum, avg, min, max, quantile, first, random, topk, bit_or, bit_and, count_distinct)"),
        ));
    };
    let name = f.name.to_string().to_lowercase();
    if f.over.is_some() || f.filter.is_some() || !f.within_group.is_empty() {
        return Err(at(
            expr,
            format!("{name}: OVER, FILTER and WITHIN GROUP are not supported"),
        ));
    }
    let (args, clauses) = match &f.args {
        FunctionArguments::List(list) => {
            if list.duplicate_treatment.is_some() {
                return Err(at(expr, format!("{name}: DISTINCT inside a function is not supported; use count_distinct(x)")));
            }
            (list.args.as_slice(), list.clauses.as_slice())
        }
        FunctionArguments::None => (&[][..], &[][..]),
        FunctionArguments::Subquery(_) => {
            return Err(at(expr, format!("{name}: subqueries are not supported")))
        }
    };
    let mut order: Option<(Expr, bool)> = None;
    for clause in clauses {
        match clause {
            FunctionArgumentClause::OrderBy(items) if name == "first" && items.len() == 1 => {
                let desc = matches!(items[0].options.sort, Some(ast::OrderBySort::Desc));
                order = Some((plan_expr(&items[0].expr)?, desc));
            }
            _ => {
                return Err(at(
                    expr,
                    format!("{name}: only first(n, x ORDER BY y) takes a clause"),
                ))
            }
        }
    }
    let arity = |want: usize| -> Result<()> {
        if args.len() == want {
            Ok(())
        } else {
            Err(at(
                expr,
                format!(
                    "{name} takes {want} argument{}, got {}",
                    if want == 1 { "" } else { "s" },
                    args.len()
                ),
            ))
        }
    };
    let arg = |i: usize| -> Result<Expr> {
        match &args[i] {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => plan_expr(e),
            FunctionArg::Unnamed(FunctionArgExpr::Wildcard) => {
                Err(at(expr, format!("{name}: * is only allowed in count(*)")))
            }
            _ => Err(at(
                expr,
                format!("{name}: argument {} is not an expression", i + 1),
            )),
        }
    };
    let count_arg = |i: usize| -> Result<u32> {
        match arg(i)? {
            Expr::Literal(Value::Int(n)) if n >= 1 && n <= MAX_ITEMS as i64 => Ok(n as u32),
            _ => Err(at(
                expr,
                format!("{name}: the first argument is how many items to keep, an integer from 1 to {MAX_ITEMS}"),
            )),
        }
    };
    let func = match name.as_str() {
        "count" => {
            arity(1)?;
            match &args[0] {
                FunctionArg::Unnamed(FunctionArgExpr::Wildcard) => Func::Count(None),
                _ => Func::Count(Some(arg(0)?)),
            }
        }
        "sum" => {
            arity(1)?;
            Func::Sum(arg(0)?)
        }
        "avg" => {
            arity(1)?;
            Func::Avg(arg(0)?)
        }
        "min" => {
            arity(1)?;
            Func::Min(arg(0)?)
        }
        "max" => {
            arity(1)?;
            Func::Max(arg(0)?)
        }
        "quantile" => {
            arity(2)?;
            let q = match arg(0)? {
                Expr::Literal(v) => v.as_f64().filter(|q| *q > 0.0 && *q < 1.0),
                _ => None,
            };
            let Some(q) = q else {
                return Err(at(expr, "quantile: the first argument is the quantile, a number between 0 and 1 exclusive, e.g. quantile(0.99, x)"));
            };
            Func::Quantile(q, arg(1)?)
        }
        "first" => {
            arity(2)?;
            let Some((key, desc)) = order else {
                return Err(at(expr, "first needs an order: first(n, x ORDER BY y)"));
            };
            Func::First {
                n: count_arg(0)?,
                value: arg(1)?,
                key,
                desc,
            }
        }
        "random" => {
            arity(2)?;
            Func::Random(count_arg(0)?, arg(1)?)
        }
        "topk" => {
            arity(3)?;
            Func::TopK(count_arg(0)?, arg(1)?, arg(2)?)
        }
        "bit_or" => {
            arity(1)?;
            Func::BitOr(arg(0)?)
        }
        "bit_and" => {
            arity(1)?;
            Func::BitAnd(arg(0)?)
        }
        "count_distinct" => {
            arity(1)?;
            Func::CountDistinct(arg(0)?)
        }
        _ => {
            return Err(at(
                expr,
                format!("unknown function {:?}", f.name.to_string()),
            ))
        }
    };
    Ok(func)
}

/// The column a bare keyword names: sqlparser reads `user` (a column of
/// the `process` table) as the niladic SQL function USER; written without
/// parentheses it is the column.
pub(crate) fn bare_keyword_column(f: &ast::Function) -> Option<&str> {
    match (&f.args, f.name.0.as_slice()) {
        (ast::FunctionArguments::None, [part]) => part.as_ident().map(|i| i.value.as_str()),
        _ => None,
    }
}

pub(crate) fn plan_expr(expr: &SqlExpr) -> Result<Expr> {
    Ok(match expr {
        SqlExpr::Function(f) if bare_keyword_column(f).is_some() => {
            Expr::Column(bare_keyword_column(f).unwrap_or_default().into())
        }
        SqlExpr::Identifier(ident) => Expr::Column(ident.value.as_str().into()),
        SqlExpr::CompoundIdentifier(parts) => {
            Expr::Column(parts.last().map(|p| p.value.as_str()).unwrap_or("").into())
        }
        SqlExpr::Value(v) => Expr::Literal(match &v.value {
            ast::Value::Number(n, _) => match n.parse::<i64>() {
                Ok(i) => Value::Int(i),
                Err(_) => match n.parse::<f64>() {
                    Ok(f) if f.is_finite() => Value::Float(f),
                    _ => return Err(at(expr, format!("bad number {n}"))),
                },
            },
            ast::Value::SingleQuotedString(s) | ast::Value::DoubleQuotedString(s) => Value::str(s),
            ast::Value::Boolean(b) => Value::Bool(*b),
            ast::Value::Null => Value::Null,
            other => return Err(at(expr, format!("unsupported literal {other}"))),
        }),
        SqlExpr::Nested(e) => plan_expr(e)?,
        SqlExpr::UnaryOp { op, expr: e } => match op {
            UnaryOperator::Not => Expr::Not(Box::new(plan_expr(e)?)),
            UnaryOperator::Minus => Expr::Neg(Box::new(plan_expr(e)?)),
            UnaryOperator::Plus => plan_expr(e)?,
            other => return Err(at(expr, format!("unsupported operator {other}"))),
        },
        SqlExpr::IsNull(e) => Expr::IsNull(Box::new(plan_expr(e)?), false),
        SqlExpr::IsNotNull(e) => Expr::IsNull(Box::new(plan_expr(e)?), true),
        SqlExpr::In {
            expr: e,
            target: ast::InTarget::List(list),
            negated,
            ..
        } => Expr::InList(
            Box::new(plan_expr(e)?),
            list.iter().map(plan_expr).collect::<Result<_>>()?,
            *negated,
        ),
        SqlExpr::BinaryOp { left, op, right } => {
            let op = match op {
                BinaryOperator::Eq => BinOp::Eq,
                BinaryOperator::NotEq => BinOp::NotEq,
                BinaryOperator::Lt => BinOp::Lt,
                BinaryOperator::LtEq => BinOp::LtEq,
                BinaryOperator::Gt => BinOp::Gt,
                BinaryOperator::GtEq => BinOp::GtEq,
                BinaryOperator::And => BinOp::And,
                BinaryOperator::Or => BinOp::Or,
                BinaryOperator::Plus => BinOp::Plus,
                BinaryOperator::Minus => BinOp::Minus,
                BinaryOperator::Multiply => BinOp::Multiply,
                BinaryOperator::Divide => BinOp::Divide,
                BinaryOperator::Modulo => BinOp::Modulo,
                other => return Err(at(expr, format!("unsupported operator {other}"))),
            };
            Expr::Binary(Box::new(plan_expr(left)?), op, Box::new(plan_expr(right)?))
        }
        SqlExpr::Function(f) => {
            return Err(at(
                expr,
                format!(
                    "{}: aggregate functions cannot be nested or used in WHERE",
                    f.name
                ),
            ))
        }
        other => return Err(at(expr, format!("unsupported expression {other}"))),
    })
}
