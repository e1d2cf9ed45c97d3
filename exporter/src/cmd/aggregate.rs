//! `astrolabe aggregate install|remove|list`: signed aggregation function
//! certificates, signed here with the operator's private key and posted to
//! one agent of the zone; gossip takes them to the rest.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context};
use clap::{Args, Subcommand};
use serde_json::Value;

use super::agent::parse_duration;
use super::query::{check, render_table, request};
use crate::security::certificate::{AggregateCertificate, MAX_NAME_BYTES};

#[derive(Debug, Args)]
pub struct AggregateArgs {
    #[command(subcommand)]
    pub action: AggregateAction,
}

#[derive(Debug, Args)]
pub struct Signing {
    /// The agent to post to (one inside the zone), e.g. http://host:9464.
    #[arg(long, default_value = "http://127.0.0.1:9464")]
    pub server: String,
    /// The zone whose subtree computes the aggregate, e.g. /eu.
    #[arg(long)]
    pub zone: String,
    /// The operator private key (astrolabe operator-key generate).
    #[arg(long)]
    pub key: PathBuf,
    /// How long the certificate is valid, e.g. 24h; it disappears after.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub expires: Duration,
}

#[derive(Debug, Subcommand)]
pub enum AggregateAction {
    /// Install a SELECT into a zone (signed here; the key never leaves).
    Install {
        #[command(flatten)]
        signing: Signing,
        /// Name of the aggregate, for its removal [default: its column names].
        #[arg(long)]
        name: Option<String>,
        /// The aggregate, e.g. 'SELECT max(load1) AS load1_peak_eu'.
        sql: String,
    },
    /// Remove an installed aggregate by name (a newer, signed removal).
    Remove {
        #[command(flatten)]
        signing: Signing,
        /// The aggregate's name.
        name: String,
    },
    /// List the certificates an agent holds.
    List {
        #[arg(long, default_value = "http://127.0.0.1:9464")]
        server: String,
        /// Print the JSON answer instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn post_certificate(signing: &Signing, name: &str, sql: Option<String>) -> anyhow::Result<String> {
    let key = crate::security::key_file::load(&signing.key)?;
    let issued = now_ms();
    let expires = issued.saturating_add(signing.expires.as_millis() as u64);
    let cert = AggregateCertificate::signed_by(&key, &signing.zone, name, sql, issued, expires);
    let body = serde_json::to_value(&cert).context("encoding the certificate")?;
    let (status, value) = request(
        &signing.server,
        "POST",
        "/api/v1/aggregates",
        Some(&body),
        Duration::from_secs(10),
    )?;
    check(status, &value)?;
    Ok(value["status"].as_str().unwrap_or("ok").to_string())
}

pub fn run(args: AggregateArgs) -> anyhow::Result<()> {
    match args.action {
        AggregateAction::Install { signing, name, sql } => {
            let set = crate::aggregate::AggregateSet::compile(&[&sql])
                .map_err(|e| anyhow!("the aggregate: {e}"))?;
            let name = name.unwrap_or_else(|| {
                let joined: Vec<&str> = set.columns().iter().map(|c| &**c).collect();
                let mut n = joined.join(",");
                n.truncate(MAX_NAME_BYTES);
                n
            });
            let status = post_certificate(&signing, &name, Some(sql))?;
            println!("{name} in {}: {status}", signing.zone);
        }
        AggregateAction::Remove { signing, name } => {
            let status = post_certificate(&signing, &name, None)?;
            println!("{name} in {}: {status}", signing.zone);
        }
        AggregateAction::List { server, json } => {
            let (status, value) = request(
                &server,
                "GET",
                "/api/v1/aggregates",
                None,
                Duration::from_secs(10),
            )?;
            check(status, &value)?;
            if json {
                println!("{value}");
                return Ok(());
            }
            let rows: Vec<Vec<Value>> = value["certificates"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|c| {
                            let what = if c["remove"].as_bool() == Some(true) {
                                Value::from("(removed)")
                            } else {
                                c["sql"].clone()
                            };
                            vec![
                                c["zone"].clone(),
                                c["name"].clone(),
                                c["expires"].clone(),
                                what,
                            ]
                        })
                        .collect()
                })
                .unwrap_or_default();
            print!(
                "{}",
                render_table(
                    &[
                        "zone".into(),
                        "name".into(),
                        "expires_ms".into(),
                        "sql".into()
                    ],
                    &rows
                )
            );
        }
    }
    Ok(())
}
