//! Commands as a host runs them: built-ins and the operator's actions,
//! each logged, run with a timeout, its output truncated.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use super::command::{Status, Tally};

/// What a host may be asked to do.
#[derive(Debug, Clone, Default)]
pub struct Actions {
    /// Operator-defined actions: name -> argv. Nothing else runs.
    pub defined: BTreeMap<String, Vec<String>>,
    pub timeout: Duration,
}

/// `name=program arg ...` (the `--overlay.action` flag).
pub fn parse_action(spec: &str) -> Result<(String, Vec<String>), String> {
    let (name, cmd) = spec
        .split_once('=')
        .ok_or_else(|| format!("action {spec:?}: expected name=program args..."))?;
    let argv: Vec<String> = cmd.split_whitespace().map(str::to_string).collect();
    if name.is_empty() || argv.is_empty() {
        return Err(format!("action {spec:?}: expected name=program args..."));
    }
    Ok((name.to_string(), argv))
}

impl Actions {
    /// Runs `name` here. `set-log-level` and `collect` are answered by
    /// the caller (they touch the agent itself).
    pub async fn run(&self, host: &str, name: &str) -> Tally {
        let Some(argv) = self.defined.get(name) else {
            tracing::info!(command = name, "command not configured here; nothing run");
            return Tally::one(host, Status::NotConfigured, "");
        };
        tracing::warn!(command = name, argv = ?argv, "running an action requested over the overlay");
        let mut cmd = tokio::process::Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(command = name, error = %e, "action failed to start");
                return Tally::one(
                    host,
                    Status::Failed,
                    &format!("cannot start {}: {e}", argv[0]),
                );
            }
        };
        match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Ok(Ok(out)) => {
                let mut text = String::from_utf8_lossy(&out.stdout).to_string();
                text.push_str(&String::from_utf8_lossy(&out.stderr));
                let status = if out.status.success() {
                    Status::Ok
                } else {
                    Status::Failed
                };
                tracing::warn!(command = name, status = status.label(), code = ?out.status.code(), "action finished");
                Tally::one(host, status, &text)
            }
            Ok(Err(e)) => Tally::one(host, Status::Failed, &e.to_string()),
            Err(_) => {
                tracing::warn!(command = name, timeout = ?self.timeout, "action timed out and was killed");
                Tally::one(
                    host,
                    Status::Failed,
                    &format!("timed out after {:?}", self.timeout),
                )
            }
        }
    }
}
