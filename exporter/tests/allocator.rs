//! The allocator settings each subcommand runs with (main.rs): an agent
//! commits arena memory on demand and gives freed pages back at once, the
//! simulator keeps mimalloc's defaults, and a `MIMALLOC_*` variable set by
//! the user wins. Read from mimalloc itself (`MIMALLOC_VERBOSE=1` prints
//! every option it runs with).

mod common;

use std::process::Command;

use common::BIN;

/// The options mimalloc reports for one run of the binary.
fn options(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .env("MIMALLOC_VERBOSE", "1")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    text.lines()
        .filter(|l| l.contains("option 'arena_eager_commit'") || l.contains("option 'purge_delay'"))
        .map(|l| l.trim())
        .collect::<Vec<_>>()
        .join("; ")
}

#[test]
fn agents_run_lean_and_the_simulator_runs_fast() {
    // The agent's own argument parsing runs, and exits before binding.
    let agent = ["agent", "--help"];
    assert_eq!(
        options(&agent, &[]),
        "option 'arena_eager_commit': 0; option 'purge_delay': 0"
    );
    assert_eq!(
        options(&["sim", "--agents", "20", "-q"], &[]),
        "option 'arena_eager_commit': 2; option 'purge_delay': 1000"
    );
    assert_eq!(
        options(&agent, &[("MIMALLOC_PURGE_DELAY", "25")]),
        "option 'arena_eager_commit': 0; option 'purge_delay': 25"
    );
}
