//! `astrolabe query` and `astrolabe command`: ask an agent's overlay and
//! print the answer as a table with its coverage.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::Args;
use serde_json::{json, Value};

/// Where and how to ask: the same flags for `query` and `command`.
#[derive(Debug, Args)]
pub struct Target {
    /// The agent to ask, e.g. http://host:9464.
    #[arg(long, default_value = "http://127.0.0.1:9464")]
    pub server: String,
    /// The zone whose hosts answer.
    #[arg(long, default_value = "/")]
    pub zone: String,
    /// How long to wait for hosts, in milliseconds.
    #[arg(long = "timeout-ms", default_value_t = 2000)]
    pub timeout_ms: u64,
    /// Print the JSON answer instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub target: Target,
    /// List the columns of the tables host and process, with their types and how many hosts have each.
    #[arg(long, conflicts_with = "sql")]
    pub columns: bool,
    /// SQL over the tables host, process and columns, e.g. "SELECT count(*) FROM process".
    #[arg(required_unless_present = "columns")]
    pub sql: Option<String>,
}

/// What `--columns` asks: the `columns` table, one row per column and type.
pub const COLUMNS_SQL: &str = "SELECT table_name, column_name, data_type, count(*) AS hosts FROM columns GROUP BY table_name, column_name, data_type ORDER BY table_name, column_name, data_type";

#[derive(Debug, Args)]
pub struct CommandArgs {
    #[command(flatten)]
    pub target: Target,
    /// Sign the command with this operator private key (astrolabe operator-key generate); agents with trusted keys run only signed commands.
    #[arg(long)]
    pub key: Option<std::path::PathBuf>,
    /// collect, set-log-level LEVEL, or an action configured on the hosts.
    pub command: String,
    /// Arguments of the command.
    pub args: Vec<String>,
}

/// POSTs JSON and returns the status and the parsed body.
pub(crate) fn post(
    server: &str,
    path: &str,
    body: &Value,
    timeout: Duration,
) -> anyhow::Result<(u16, Value)> {
    request(server, "POST", path, Some(body), timeout)
}

/// One HTTP/1.0 request with an optional JSON body; the status and the parsed answer.
pub(crate) fn request(
    server: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> anyhow::Result<(u16, Value)> {
    let rest = server
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("--server {server:?}: expected http://host:port"))?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let mut stream =
        TcpStream::connect(authority).with_context(|| format!("cannot reach {server}"))?;
    stream.set_read_timeout(Some(timeout)).ok();
    let text = body.map(Value::to_string).unwrap_or_default();
    // HTTP/1.0: the answer comes whole, then the connection closes.
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}",
        text.len()
    );
    stream
        .write_all(request.as_bytes())
        .with_context(|| format!("cannot send to {server}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .with_context(|| format!("no answer from {server}"))?;
    let raw = String::from_utf8_lossy(&raw);
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("{server} sent a malformed HTTP answer"))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("{server} sent a malformed HTTP status"))?;
    let value: Value = serde_json::from_str(body)
        .map_err(|_| anyhow!("{server} answered {status} without JSON: {}", body.trim()))?;
    Ok((status, value))
}

pub(crate) fn check(status: u16, value: &Value) -> anyhow::Result<()> {
    if status != 200 {
        let msg = value
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("request failed");
        bail!("{msg} (HTTP {status})");
    }
    Ok(())
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => {
                let s = format!("{f:.6}");
                s.trim_end_matches('0').trim_end_matches('.').to_string()
            }
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// Columns padded to their widest cell; numbers right-aligned.
pub fn render_table(columns: &[String], rows: &[Vec<Value>]) -> String {
    let cells: Vec<Vec<String>> = rows.iter().map(|r| r.iter().map(cell).collect()).collect();
    let numeric: Vec<bool> = (0..columns.len())
        .map(|i| {
            !rows.is_empty()
                && rows
                    .iter()
                    .all(|r| r.get(i).is_some_and(|v| v.is_number() || v.is_null()))
        })
        .collect();
    render_cells(columns, &cells, &numeric)
}

/// Text cells padded to each column's widest, two spaces apart; the
/// columns `right` says are right-aligned.
pub fn render_cells(columns: &[String], cells: &[Vec<String>], right: &[bool]) -> String {
    let mut widths: Vec<usize> = columns.iter().map(|c| c.chars().count()).collect();
    for r in cells {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |values: &[String]| {
        let parts: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let w = widths.get(i).copied().unwrap_or(0);
                if right.get(i).copied().unwrap_or(false) {
                    format!("{v:>w$}")
                } else {
                    format!("{v:<w$}")
                }
            })
            .collect();
        parts.join("  ").trim_end().to_string()
    };
    let mut out = String::new();
    out.push_str(&line(columns));
    out.push('\n');
    for r in cells {
        out.push_str(&line(r));
        out.push('\n');
    }
    out
}

pub fn coverage_line(value: &Value) -> String {
    let c = &value["coverage"];
    let answered = c["answered"].as_u64().unwrap_or(0);
    let expected = c["expected"].as_u64().unwrap_or(0);
    let elapsed = value["elapsed_ms"].as_u64().unwrap_or(0);
    let missing: Vec<String> = c["missing_zones"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|z| z.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let more = c["missing_zones_not_listed"].as_u64().unwrap_or(0);
    let mut line = format!("coverage: {answered}/{expected} hosts in {elapsed} ms");
    if !missing.is_empty() {
        line.push_str(&format!("; missing: {}", missing.join(", ")));
        if more > 0 {
            line.push_str(&format!(" and {more} more"));
        }
    }
    let refused = c["refused_zones"].as_array().map_or(0, Vec::len);
    if refused > 0 {
        line.push_str(&format!(
            "; {refused} of them refused (their agents are at --limits.pending-queries)"
        ));
    }
    if value["truncated"].as_bool() == Some(true) {
        line.push_str("; rows beyond the per-hop bound were dropped");
    }
    line
}

pub fn run_query(args: QueryArgs) -> anyhow::Result<()> {
    let sql = match &args.sql {
        Some(sql) => sql.as_str(),
        None => COLUMNS_SQL,
    };
    let body = json!({"zone": args.target.zone, "sql": sql, "timeout_ms": args.target.timeout_ms});
    let wait = Duration::from_millis(args.target.timeout_ms + 5000);
    let (status, value) = post(&args.target.server, "/api/v1/query", &body, wait)?;
    check(status, &value)?;
    if args.target.json {
        println!("{value}");
        return Ok(());
    }
    let columns: Vec<String> = value["columns"]
        .as_array()
        .map(|a| a.iter().map(cell).collect())
        .unwrap_or_default();
    let rows: Vec<Vec<Value>> = value["rows"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| r.as_array().cloned().unwrap_or_default())
                .collect()
        })
        .unwrap_or_default();
    print!("{}", render_table(&columns, &rows));
    println!("{}", coverage_line(&value));
    for w in value["warnings"].as_array().into_iter().flatten() {
        eprintln!("warning: {}", w.as_str().unwrap_or_default());
    }
    Ok(())
}

pub fn run_command(args: CommandArgs) -> anyhow::Result<()> {
    let mut body = json!({"zone": args.target.zone, "command": args.command, "args": args.args, "timeout_ms": args.target.timeout_ms});
    if let Some(path) = &args.key {
        // Signed here: only the signature travels, never the private key.
        let key = crate::security::key_file::load(path)?;
        let issued_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce).map_err(|e| anyhow!("cannot draw a nonce: {e}"))?;
        let seal = crate::security::command::seal_command(
            &key,
            &args.target.zone,
            &args.command,
            &args.args,
            issued_ms,
            u64::from_le_bytes(nonce),
        );
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        body["issued_ms"] = json!(seal.issued_ms);
        body["nonce"] = json!(seal.nonce);
        body["key"] = json!(b64.encode(&seal.key));
        body["signature"] = json!(b64.encode(&seal.signature));
    }
    let wait = Duration::from_millis(args.target.timeout_ms + 5000);
    let (status, value) = post(&args.target.server, "/api/v1/command", &body, wait)?;
    check(status, &value)?;
    let tally = |field: &str| value[field].as_u64().unwrap_or(0);
    let not_done = tally("failed") + tally("not_configured") + tally("refused");
    if args.target.json {
        println!("{value}");
    } else {
        let outputs: Vec<Vec<Value>> = value["outputs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|o| vec![o["host"].clone(), o["status"].clone(), o["output"].clone()])
                    .collect()
            })
            .unwrap_or_default();
        if !outputs.is_empty() {
            print!(
                "{}",
                render_table(&["host".into(), "status".into(), "output".into()], &outputs)
            );
        }
        println!(
            "ok: {}, failed: {}, not configured: {}, refused: {}",
            tally("ok"),
            tally("failed"),
            tally("not_configured"),
            tally("refused")
        );
        println!("{}", coverage_line(&value));
    }
    // Scripts rely on the exit code: any host that did not run it fails.
    if not_done > 0 {
        bail!(
            "{} did not run on {not_done} of {} hosts (failed {}, not configured {}, refused {})",
            args.command,
            not_done + tally("ok"),
            tally("failed"),
            tally("not_configured"),
            tally("refused")
        );
    }
    if tally("ok") == 0 {
        bail!("{} ran on no host: none answered", args.command);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_numbers_go_right() {
        let t = render_table(
            &["name".into(), "rss".into()],
            &[
                vec![json!("nginx"), json!(1234)],
                vec![json!("postgres-main"), json!(5)],
            ],
        );
        assert_eq!(
            t,
            "name            rss\nnginx          1234\npostgres-main     5\n"
        );
    }
}
