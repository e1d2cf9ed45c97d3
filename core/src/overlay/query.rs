//! The on-demand query language: SQL over two local tables of every host,
//! planned so that every hop of the overlay forwards a partial result of
//! bounded size.
//!
//! `host` has one row per host (every leaf attribute and collector sample,
//! plus `zone` and `host`); `process` one row per process. A query is
//! either a plain row query (`SELECT a, b FROM t WHERE ... ORDER BY ...
//! LIMIT n`), whose partials are the top `n` rows, or an aggregate query
//! (count/sum/avg/min/max/quantile/... with or without GROUP BY), whose
//! partials are one mergeable state per group. WHERE and the aggregate
//! functions are planned by the same code as the gossip aggregates.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sqlparser::ast::{
    self, Expr as SqlExpr, GroupByExpr, LimitClause, OrderByKind, SelectItem, SetExpr, Statement,
    TableFactor,
};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;

use crate::aggregate::{compare, plan_expr, plan_function, Expr, Func, Reads, State};
use crate::zone::{Attributes, Value};

/// Largest SQL text accepted: the query travels in every fan-out datagram.
pub const MAX_SQL_BYTES: usize = 1000;
/// Rows a plain query without LIMIT forwards per hop, at most.
pub const MAX_ROWS: usize = 1000;
/// Groups an aggregate query forwards per hop, at most.
pub const MAX_GROUPS: usize = 1000;
/// Largest LIMIT: a partial carries up to LIMIT rows.
pub const MAX_LIMIT: usize = MAX_ROWS;

/// The columns of the `process` table, in `SELECT *` order.
pub const PROCESS_COLUMNS: &[&str] = &[
    "zone",
    "host",
    "pid",
    "name",
    "user",
    "cpu_seconds",
    "rss_bytes",
    "threads",
    "start_time",
    "cmdline",
];

/// The type of each of `PROCESS_COLUMNS`, as `Value::type_name` says it.
const PROCESS_TYPES: &[&str] = &[
    "string", "string", "int", "string", "string", "float", "int", "int", "float", "string",
];

/// The columns of the `columns` table, in `SELECT *` order: on every host,
/// one row per column of its `host` row (typed as that host has it) and
/// one per column of `process`.
pub const COLUMNS_COLUMNS: &[&str] = &["zone", "host", "table_name", "column_name", "data_type"];

/// Columns the query reads that some answering hosts' `host` rows lack,
/// with how many lack each.
pub type Lacking = BTreeMap<String, u32>;

/// Why a query was refused: the parser's or planner's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct QueryError(pub String);

impl From<crate::aggregate::AggregateError> for QueryError {
    fn from(e: crate::aggregate::AggregateError) -> Self {
        QueryError(e.to_string())
    }
}

fn err<T>(message: impl Into<String>) -> Result<T, QueryError> {
    Err(QueryError(message.into()))
}

/// The table a query reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `host`: one row per host, its leaf attributes plus `zone` and `host`.
    Host,
    /// `process`: one row per process of every host (`PROCESS_COLUMNS`).
    Process,
    /// The columns of `host` and `process` on every host.
    Columns,
}

impl Source {
    /// The table's name in SQL.
    pub fn name(self) -> &'static str {
        match self {
            Source::Host => "host",
            Source::Process => "process",
            Source::Columns => "columns",
        }
    }

    /// The columns every row of the table has; None for `host`, whose
    /// columns are whatever each host has.
    pub fn fixed_columns(self) -> Option<&'static [&'static str]> {
        match self {
            Source::Host => None,
            Source::Process => Some(PROCESS_COLUMNS),
            Source::Columns => Some(COLUMNS_COLUMNS),
        }
    }
}

/// What one host holds for queries.
#[derive(Debug, Clone, Default)]
pub struct LocalData {
    /// The host's leaf attributes and collector samples.
    pub host: Attributes,
    /// One row per process, with the `PROCESS_COLUMNS`.
    pub processes: Vec<Attributes>,
}

#[derive(Debug, Clone)]
enum Item {
    /// A plain expression of a row query.
    Expr(Expr),
    /// The i-th GROUP BY expression.
    Group(usize),
    /// The i-th aggregate function.
    Agg(usize),
}

/// A planned query.
#[derive(Debug, Clone)]
pub struct Query {
    /// The table it reads.
    pub source: Source,
    /// Output column names, in order.
    pub columns: Vec<String>,
    filter: Option<Expr>,
    /// Some for an aggregate query (empty: one group).
    group_by: Option<Vec<Expr>>,
    aggs: Vec<Func>,
    /// Output items, then hidden sort keys (row queries only).
    items: Vec<Item>,
    order: Vec<(usize, bool)>,
    /// LIMIT of a row query.
    pub limit: Option<usize>,
    /// Every column the plan reads (`columns_read`), kept for `local` and
    /// `merge`, which count the hosts that lack one.
    reads: Reads,
}

/// A partial result: what one subtree forwards to its parent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Partial {
    /// Rows of a row query (every item, hidden sort keys included).
    Rows {
        /// The rows, at most LIMIT (or `MAX_ROWS`), in the query's order.
        rows: Vec<Vec<Value>>,
        /// Some hop dropped rows beyond the bound.
        truncated: bool,
        /// Hosts lacking each column the query reads.
        lacking: Lacking,
    },
    /// Group key and one state per aggregate function.
    Groups {
        /// Per group, its key values and one state per aggregate function, at
        /// most `MAX_GROUPS`.
        groups: Vec<(Vec<Value>, Vec<State>)>,
        /// Some hop dropped groups beyond the bound.
        truncated: bool,
        /// Hosts lacking each column the query reads.
        lacking: Lacking,
    },
}

impl Partial {
    /// The hosts of this partial that lack a column the query reads.
    pub fn lacking(&self) -> &Lacking {
        match self {
            Partial::Rows { lacking, .. } | Partial::Groups { lacking, .. } => lacking,
        }
    }
}

/// The final answer: named columns and rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// Output column names, in order.
    pub columns: Vec<String>,
    /// The rows, each with one value per column.
    pub rows: Vec<Vec<Value>>,
    /// Some hop dropped rows or groups beyond the bounds.
    pub truncated: bool,
}

fn order_rows(order: &[(usize, bool)], a: &[Value], b: &[Value]) -> Ordering {
    for (i, desc) in order {
        let (x, y) = (
            a.get(*i).unwrap_or(&Value::Null),
            b.get(*i).unwrap_or(&Value::Null),
        );
        let o = compare(x, y);
        let o = if *desc { o.reverse() } else { o };
        if o != Ordering::Equal {
            return o;
        }
    }
    // A total order, so every merge order gives the same rows.
    for (x, y) in a.iter().zip(b) {
        let o = compare(x, y);
        if o != Ordering::Equal {
            return o;
        }
    }
    a.len().cmp(&b.len())
}

fn key_bytes(key: &[Value]) -> Vec<u8> {
    postcard::to_allocvec(key).unwrap_or_default()
}

impl Query {
    /// Parses and plans `sql` (at most `MAX_SQL_BYTES`): one SELECT from
    /// `host`, `process` or `columns`.
    pub fn parse(sql: &str) -> Result<Query, QueryError> {
        if sql.len() > MAX_SQL_BYTES {
            return err(format!(
                "the query is {} bytes long; at most {MAX_SQL_BYTES} are accepted",
                sql.len()
            ));
        }
        let statements =
            Parser::parse_sql(&GenericDialect {}, sql).map_err(|e| QueryError(e.to_string()))?;
        let [statement] = statements.as_slice() else {
            return err(format!(
                "expected one SELECT statement, found {}",
                statements.len()
            ));
        };
        let Statement::Query(query) = statement else {
            return err("a query is a SELECT statement");
        };
        if query.with.is_some() || query.fetch.is_some() {
            return err("WITH and FETCH are not supported");
        }
        let SetExpr::Select(select) = query.body.as_ref() else {
            return err("UNION, VALUES and the like are not supported");
        };
        if select.distinct.is_some() || select.having.is_some() {
            return err("DISTINCT and HAVING are not supported");
        }
        let source = match select.from.as_slice() {
            [from] if from.joins.is_empty() => match &from.relation {
                TableFactor::Table { name, .. } => match name.to_string().to_lowercase().as_str() {
                    "host" => Source::Host,
                    "process" => Source::Process,
                    "columns" => Source::Columns,
                    other => {
                        return err(format!(
                            "unknown table {other:?}: the tables are host, process and columns"
                        ))
                    }
                },
                _ => return err("FROM takes a table: host or process"),
            },
            [] => return err("FROM is missing: the tables are host and process"),
            _ => return err("joins are not supported: query host or process"),
        };
        let filter = select.selection.as_ref().map(plan_expr).transpose()?;
        let group_exprs: Vec<SqlExpr> = match &select.group_by {
            GroupByExpr::All(_) => return err("GROUP BY ALL is not supported"),
            GroupByExpr::Expressions(e, _) => e.clone(),
        };
        let group_by: Vec<Expr> = group_exprs
            .iter()
            .map(plan_expr)
            .collect::<Result<_, _>>()?;
        let is_agg = |e: &SqlExpr| matches!(e, SqlExpr::Function(f) if crate::aggregate::bare_keyword_column(f).is_none());
        let mut projection: Vec<(SqlExpr, String)> = Vec::new();
        for item in &select.projection {
            match item {
                SelectItem::ExprWithAlias { expr, alias } => {
                    projection.push((expr.clone(), alias.value.clone()))
                }
                SelectItem::UnnamedExpr(expr) => projection.push((expr.clone(), column_name(expr))),
                SelectItem::Wildcard(_) if source.fixed_columns().is_some() => {
                    for c in source.fixed_columns().unwrap_or_default() {
                        projection.push((SqlExpr::Identifier(ast::Ident::new(*c)), c.to_string()))
                    }
                }
                _ => return err("SELECT * works on the process and columns tables only; name the host columns (astrolabe query --columns lists them)"),
            }
        }
        let aggregate = !group_by.is_empty() || projection.iter().any(|(e, _)| is_agg(e));
        let mut aggs = Vec::new();
        let mut items = Vec::new();
        let mut columns = Vec::new();
        for (expr, name) in &projection {
            let item = if aggregate {
                if is_agg(expr) {
                    aggs.push(plan_function(expr)?);
                    Item::Agg(aggs.len() - 1)
                } else {
                    let planned = plan_expr(expr)?;
                    match group_by.iter().position(|g| *g == planned) {
                        Some(i) => Item::Group(i),
                        None => {
                            return err(format!(
                                "{expr} must appear in GROUP BY or be inside an aggregate function"
                            ))
                        }
                    }
                }
            } else {
                Item::Expr(plan_expr(expr)?)
            };
            items.push(item);
            columns.push(name.clone());
        }
        let mut order = Vec::new();
        if let Some(order_by) = &query.order_by {
            let OrderByKind::Expressions(exprs) = &order_by.kind else {
                return err("ORDER BY ALL is not supported");
            };
            for o in exprs {
                let desc = matches!(o.options.sort, Some(ast::OrderBySort::Desc));
                let index = order_index(&o.expr, &projection)?;
                let index = match index {
                    Some(i) => i,
                    None if !aggregate => {
                        items.push(Item::Expr(plan_expr(&o.expr)?));
                        items.len() - 1
                    }
                    None => {
                        return err(format!(
                            "ORDER BY {}: order an aggregate query by one of its columns",
                            o.expr
                        ))
                    }
                };
                order.push((index, desc));
            }
        }
        let limit = match &query.limit_clause {
            None => None,
            Some(LimitClause::LimitOffset {
                limit,
                offset,
                limit_by,
            }) => {
                if offset.is_some() || !limit_by.is_empty() {
                    return err("OFFSET and LIMIT BY are not supported");
                }
                match limit {
                    None => None,
                    Some(e) => Some(limit_value(e)?),
                }
            }
            Some(LimitClause::OffsetCommaLimit { .. }) => {
                return err("LIMIT offset, n is not supported; use LIMIT n")
            }
        };
        let mut query = Query {
            source,
            columns,
            filter,
            group_by: aggregate.then_some(group_by),
            aggs,
            items,
            order,
            limit,
            reads: Default::default(),
        };
        query.reads = query.columns_read();
        if let Some(fixed) = source.fixed_columns() {
            if let Some(c) = query.reads.iter().find(|c| !fixed.contains(&&***c)) {
                return err(format!(
                    "unknown column {:?} of table {}: its columns are {}",
                    &**c,
                    source.name(),
                    fixed.join(", ")
                ));
            }
        }
        Ok(query)
    }

    /// Whether this is an aggregate query (partials are groups of states)
    /// rather than a row query (partials are rows).
    pub fn is_aggregate(&self) -> bool {
        self.group_by.is_some()
    }

    /// A partial of nothing: the identity of `merge`.
    pub fn empty(&self) -> Partial {
        if self.is_aggregate() {
            Partial::Groups {
                groups: Vec::new(),
                truncated: false,
                lacking: Lacking::new(),
            }
        } else {
            Partial::Rows {
                rows: Vec::new(),
                truncated: false,
                lacking: Lacking::new(),
            }
        }
    }

    /// The partial result of one host.
    pub fn local(&self, data: &LocalData) -> Partial {
        let column_rows;
        let rows: Box<dyn Iterator<Item = &Attributes>> = match self.source {
            Source::Host => Box::new(std::iter::once(&data.host)),
            Source::Process => Box::new(data.processes.iter()),
            Source::Columns => {
                column_rows = columns_of(&data.host);
                Box::new(column_rows.iter())
            }
        };
        let selected = rows.filter(|r| self.filter.as_ref().is_none_or(|f| f.is_true(r)));
        let mut out = self.empty();
        match (&mut out, &self.group_by) {
            (
                Partial::Groups {
                    groups,
                    truncated,
                    lacking,
                },
                Some(group_by),
            ) => {
                *lacking = self.lacking_here(data);
                let mut by_key: BTreeMap<Vec<u8>, (Vec<Value>, Vec<State>)> = BTreeMap::new();
                for row in selected {
                    let key: Vec<Value> = group_by.iter().map(|g| g.eval(row)).collect();
                    let states: Vec<State> = self
                        .aggs
                        .iter()
                        .map(|f| crate::aggregate::leaf_state(f, row))
                        .collect();
                    match by_key.entry(key_bytes(&key)) {
                        std::collections::btree_map::Entry::Occupied(mut e) => {
                            for (acc, s) in e.get_mut().1.iter_mut().zip(&states) {
                                acc.merge(s);
                            }
                        }
                        std::collections::btree_map::Entry::Vacant(e) => {
                            e.insert((key, states));
                        }
                    }
                }
                *groups = by_key.into_values().collect();
                *truncated = self.bound_groups(groups);
            }
            (
                Partial::Rows {
                    rows,
                    truncated,
                    lacking,
                },
                None,
            ) => {
                *lacking = self.lacking_here(data);
                for row in selected {
                    rows.push(
                        self.items
                            .iter()
                            .map(|i| match i {
                                Item::Expr(e) => e.eval(row),
                                _ => Value::Null,
                            })
                            .collect(),
                    );
                }
                *truncated = self.bound_rows(rows);
            }
            _ => {}
        }
        out
    }

    /// The columns this host's `host` row lacks (each counted once: one
    /// host). Fixed tables lack nothing: `parse` refuses unknown columns.
    fn lacking_here(&self, data: &LocalData) -> Lacking {
        if self.source != Source::Host {
            return Lacking::new();
        }
        self.reads
            .iter()
            .filter(|c| !data.host.contains_key(&***c))
            .map(|c| (c.to_string(), 1))
            .collect()
    }

    /// Adds `other`'s counts of hosts lacking a column to `acc`'s, for the
    /// columns this query reads only (a peer cannot grow the list).
    fn merge_lacking(&self, acc: &mut Lacking, other: &Lacking) {
        for (column, n) in other {
            if self.reads.contains(column.as_str()) {
                let count = acc.entry(column.clone()).or_default();
                *count = count.saturating_add(*n);
            }
        }
    }

    /// What the answer says about columns that answering hosts lack: once
    /// the answer is `done`, an error if none of the `answered` hosts has
    /// one; otherwise a warning per column with how many lack it.
    pub fn column_warnings(
        &self,
        partial: &Partial,
        answered: u32,
        done: bool,
    ) -> Result<Vec<String>, QueryError> {
        let mut nowhere = Vec::new();
        let mut warnings = Vec::new();
        for (column, n) in partial.lacking() {
            if !self.reads.contains(column.as_str()) || answered == 0 {
                continue;
            }
            let n = (*n).min(answered);
            if n == answered && done {
                nowhere.push(format!("{column:?}"));
            } else if n > 0 {
                warnings.push(format!("column {column}: {n} of {answered} hosts lack it"));
            }
        }
        if !nowhere.is_empty() {
            let hosts = if answered == 1 { "host" } else { "hosts" };
            return err(format!(
                "no column {} on any of the {answered} answering {hosts} (astrolabe query --columns lists the columns)",
                nowhere.join(", ")
            ));
        }
        Ok(warnings)
    }

    /// Sorts and cuts rows to what a hop forwards: the top LIMIT, or at
    /// most MAX_ROWS. Returns whether rows beyond LIMIT's reach were lost.
    fn bound_rows(&self, rows: &mut Vec<Vec<Value>>) -> bool {
        rows.sort_by(|a, b| order_rows(&self.order, a, b));
        match self.limit {
            Some(n) => {
                rows.truncate(n.min(MAX_LIMIT));
                n > MAX_LIMIT && rows.len() == MAX_LIMIT
            }
            None => {
                let cut = rows.len() > MAX_ROWS;
                rows.truncate(MAX_ROWS);
                cut
            }
        }
    }

    /// Groups are cut to LIMIT only when the order is by group keys alone
    /// (then a group in the global top n is in every partial's top n);
    /// otherwise to MAX_GROUPS, which flags the answer as truncated.
    fn bound_groups(&self, groups: &mut Vec<(Vec<Value>, Vec<State>)>) -> bool {
        let key_order: Option<Vec<(usize, bool)>> = self
            .order
            .iter()
            .map(|(i, desc)| match self.items.get(*i) {
                Some(Item::Group(g)) => Some((*g, *desc)),
                _ => None,
            })
            .collect();
        match (key_order, self.limit) {
            (Some(order), Some(n)) => {
                groups.sort_by(|a, b| order_rows(&order, &a.0, &b.0));
                groups.truncate(n.min(MAX_GROUPS));
                false
            }
            _ => {
                let cut = groups.len() > MAX_GROUPS;
                groups.truncate(MAX_GROUPS);
                cut
            }
        }
    }

    /// Merges `other` into `acc`; the result is bounded like `local`'s.
    pub fn merge(&self, acc: &mut Partial, other: &Partial) {
        match (acc, other) {
            (
                Partial::Rows {
                    rows,
                    truncated,
                    lacking,
                },
                Partial::Rows {
                    rows: more,
                    truncated: t2,
                    lacking: lacking2,
                },
            ) => {
                self.merge_lacking(lacking, lacking2);
                rows.extend(more.iter().cloned());
                let cut = self.bound_rows(rows);
                *truncated |= *t2 || cut;
            }
            (
                Partial::Groups {
                    groups,
                    truncated,
                    lacking,
                },
                Partial::Groups {
                    groups: more,
                    truncated: t2,
                    lacking: lacking2,
                },
            ) => {
                self.merge_lacking(lacking, lacking2);
                let mut by_key: BTreeMap<Vec<u8>, (Vec<Value>, Vec<State>)> = groups
                    .drain(..)
                    .map(|(k, s)| (key_bytes(&k), (k, s)))
                    .collect();
                for (k, s) in more {
                    match by_key.entry(key_bytes(k)) {
                        std::collections::btree_map::Entry::Occupied(mut e) => {
                            for (acc, s) in e.get_mut().1.iter_mut().zip(s) {
                                acc.merge(s);
                            }
                        }
                        std::collections::btree_map::Entry::Vacant(e) => {
                            e.insert((k.clone(), s.clone()));
                        }
                    }
                }
                *groups = by_key.into_values().collect();
                let cut = self.bound_groups(groups);
                *truncated |= *t2 || cut;
            }
            // A partial of the other shape comes only from a peer that
            // planned another query; it is ignored rather than trusted.
            _ => {}
        }
    }

    /// The answer from a merged partial.
    pub fn finish(&self, partial: &Partial) -> Table {
        let visible = self.columns.len();
        let (mut rows, truncated) = match partial {
            Partial::Rows {
                rows, truncated, ..
            } => (rows.clone(), *truncated),
            Partial::Groups {
                groups, truncated, ..
            } => {
                let mut rows: Vec<Vec<Value>> = groups
                    .iter()
                    .map(|(key, states)| self.group_row(key, states))
                    .collect();
                let no_keys = self.group_by.as_ref().is_some_and(|g| g.is_empty());
                if rows.is_empty() && no_keys {
                    // count(*) over nothing is one row of 0, as in SQL.
                    let states: Vec<State> = self
                        .aggs
                        .iter()
                        .map(crate::aggregate::empty_state)
                        .collect();
                    rows.push(self.group_row(&[], &states));
                }
                (rows, *truncated)
            }
        };
        rows.sort_by(|a, b| order_rows(&self.order, a, b));
        if let Some(n) = self.limit {
            rows.truncate(n);
        }
        for r in &mut rows {
            r.truncate(visible);
        }
        Table {
            columns: self.columns.clone(),
            rows,
            truncated,
        }
    }

    fn group_row(&self, key: &[Value], states: &[State]) -> Vec<Value> {
        self.items
            .iter()
            .map(|i| match i {
                Item::Group(g) => key.get(*g).cloned().unwrap_or(Value::Null),
                Item::Agg(a) => states.get(*a).map_or(Value::Null, State::finalize),
                Item::Expr(_) => Value::Null,
            })
            .collect()
    }
}

impl Query {
    /// Every column the query reads from its table's rows (in WHERE, the
    /// output, GROUP BY, aggregate arguments and hidden sort keys), from
    /// the plan itself, so it agrees with what evaluation looks up.
    pub fn columns_read(&self) -> Reads {
        let mut out = Reads::new();
        if let Some(f) = &self.filter {
            f.reads_into(&mut out);
        }
        for g in self.group_by.iter().flatten() {
            g.reads_into(&mut out);
        }
        for f in &self.aggs {
            f.reads_into(&mut out);
        }
        for item in &self.items {
            if let Item::Expr(e) = item {
                e.reads_into(&mut out);
            }
        }
        out
    }
}

/// The rows of the `columns` table on a host whose `host` row is `host`.
fn columns_of(host: &Attributes) -> Vec<Attributes> {
    let text = |name: &str| host.get(name).cloned().unwrap_or(Value::Null);
    let (zone, name) = (text("zone"), text("host"));
    let row = |table: &str, column: &str, data_type: &str| -> Attributes {
        [
            ("zone", zone.clone()),
            ("host", name.clone()),
            ("table_name", Value::str(table)),
            ("column_name", Value::str(column)),
            ("data_type", Value::str(data_type)),
        ]
        .into_iter()
        .map(|(k, v)| (Arc::from(k), v))
        .collect()
    };
    let host_columns = host.iter().map(|(k, v)| row("host", k, v.type_name()));
    let process_columns = PROCESS_COLUMNS
        .iter()
        .zip(PROCESS_TYPES)
        .map(|(c, t)| row("process", c, t));
    host_columns.chain(process_columns).collect()
}

/// `cpu` -> `cpu`, `sum(rss_bytes)` -> `sum(rss_bytes)`: SQL's own text.
fn column_name(expr: &SqlExpr) -> String {
    match expr {
        SqlExpr::Identifier(i) => i.value.clone(),
        SqlExpr::Function(f) if crate::aggregate::bare_keyword_column(f).is_some() => {
            crate::aggregate::bare_keyword_column(f)
                .unwrap_or_default()
                .to_string()
        }
        SqlExpr::CompoundIdentifier(parts) => {
            parts.last().map(|p| p.value.clone()).unwrap_or_default()
        }
        other => other.to_string(),
    }
}

/// ORDER BY refers to an output column by alias, by position (1-based) or
/// by the same expression text.
fn order_index(
    expr: &SqlExpr,
    projection: &[(SqlExpr, String)],
) -> Result<Option<usize>, QueryError> {
    if let SqlExpr::Value(v) = expr {
        if let ast::Value::Number(n, _) = &v.value {
            return match n.parse::<usize>() {
                Ok(k) if k >= 1 && k <= projection.len() => Ok(Some(k - 1)),
                _ => err(format!(
                    "ORDER BY {n}: there are {} columns",
                    projection.len()
                )),
            };
        }
    }
    if let SqlExpr::Identifier(ident) = expr {
        if let Some(i) = projection.iter().position(|(_, name)| *name == ident.value) {
            return Ok(Some(i));
        }
    }
    let text = expr.to_string().to_lowercase();
    Ok(projection
        .iter()
        .position(|(e, _)| e.to_string().to_lowercase() == text))
}

fn limit_value(e: &SqlExpr) -> Result<usize, QueryError> {
    if let SqlExpr::Value(v) = e {
        if let ast::Value::Number(n, _) = &v.value {
            if let Ok(k) = n.parse::<usize>() {
                if k <= MAX_LIMIT {
                    return Ok(k);
                }
            }
        }
    }
    err(format!(
        "LIMIT takes a number from 0 to {MAX_LIMIT}, not {e}"
    ))
}

#[cfg(test)]
mod tests;
