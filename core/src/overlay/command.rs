//! Commands over the overlay: what each host answers, and how the answers
//! add up on the way back.

use serde::{Deserialize, Serialize};

/// Hosts whose output travels back with the counts; the rest are counted.
pub const MAX_OUTPUTS: usize = 32;
/// Bytes of one host's output kept (stdout and stderr, tail first cut).
pub const MAX_OUTPUT_BYTES: usize = 256;

/// How one host's run of a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// Ran and succeeded.
    Ok,
    /// Did not succeed: a non-zero exit, an error running it, or the agent
    /// stopping.
    Failed,
    /// This host has no action of that name configured.
    NotConfigured,
    /// Not run: the operator signature was missing, wrong or expired.
    Refused,
}

impl Status {
    /// The status's `status` label, as the API and the metrics print it.
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Failed => "failed",
            Status::NotConfigured => "not-configured",
            Status::Refused => "refused",
        }
    }
}

/// One host's outcome and what it printed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostOutput {
    /// The host's zone path.
    pub host: String,
    /// How its run ended.
    pub status: Status,
    /// Its output, trimmed and cut to `MAX_OUTPUT_BYTES`.
    pub output: String,
}

/// Counts of a command's outcomes over a subtree, with some outputs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    /// Hosts whose run succeeded.
    pub ok: u32,
    /// Hosts whose run failed.
    pub failed: u32,
    /// Hosts without the action configured.
    pub not_configured: u32,
    /// Hosts that refused the command's signature.
    pub refused: u32,
    /// Up to `MAX_OUTPUTS` hosts' outputs, failures first.
    pub outputs: Vec<HostOutput>,
}

/// Cuts to at most `max` bytes on a character boundary.
pub fn truncate_utf8(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

impl Tally {
    /// One host's outcome.
    pub fn one(host: &str, status: Status, output: &str) -> Tally {
        let mut t = Tally::default();
        match status {
            Status::Ok => t.ok = 1,
            Status::Failed => t.failed = 1,
            Status::NotConfigured => t.not_configured = 1,
            Status::Refused => t.refused = 1,
        }
        // Hosts where the action is not configured say nothing more.
        if status != Status::NotConfigured {
            t.outputs.push(HostOutput {
                host: host.to_string(),
                status,
                output: truncate_utf8(output.trim(), MAX_OUTPUT_BYTES),
            });
        }
        t
    }

    /// Adds another subtree's counts and keeps the first `MAX_OUTPUTS` outputs,
    /// failures first.
    pub fn merge(&mut self, other: &Tally) {
        self.ok += other.ok;
        self.failed += other.failed;
        self.not_configured += other.not_configured;
        self.refused += other.refused;
        self.outputs.extend(other.outputs.iter().cloned());
        // Failures first: they are what an operator reads the outputs for.
        self.outputs.sort_by(|a, b| {
            (a.status == Status::Ok, &a.host).cmp(&(b.status == Status::Ok, &b.host))
        });
        self.outputs.truncate(MAX_OUTPUTS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_add_up_and_stay_bounded() {
        let mut t = Tally::default();
        for i in 0..100 {
            let s = if i % 10 == 0 {
                Status::Failed
            } else if i % 3 == 0 {
                Status::NotConfigured
            } else {
                Status::Ok
            };
            t.merge(&Tally::one(&format!("/h{i}"), s, &"z".repeat(1000)));
        }
        assert_eq!(t.ok + t.failed + t.not_configured, 100);
        assert_eq!(t.failed, 10);
        assert_eq!(t.outputs.len(), MAX_OUTPUTS);
        assert!(t.outputs[..10].iter().all(|o| o.status == Status::Failed));
        assert!(t
            .outputs
            .iter()
            .all(|o| o.output.len() <= MAX_OUTPUT_BYTES + 3));
    }
}
