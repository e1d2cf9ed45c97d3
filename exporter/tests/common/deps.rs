//! The real tools a black-box test needs (docker, promtool, python
//! modules, ...). A missing one fails the test under CI (`CI=true`), with
//! the reason; elsewhere the test is skipped, and says so on the process's
//! stderr, which neither cargo test nor nextest (see .config/nextest.toml)
//! hides.

use std::io::Write;
use std::process::{Command, Stdio};

/// Whether the environment says this is CI (`CI=true`, or `1`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Whether `program args` runs and succeeds.
pub fn command_works(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether python3 can import every one of `modules`.
pub fn python_modules(modules: &[&str]) -> bool {
    command_works(
        "python3",
        &["-c", &format!("import {}", modules.join(", "))],
    )
}

/// True when the dependency `what` is `present`. Otherwise, under CI this
/// panics with the reason; elsewhere it says the test is skipped and
/// returns false (the test then returns).
pub fn require(test: &str, what: &str, present: bool) -> bool {
    if present {
        return true;
    }
    if in_ci() {
        panic!("{test}: {what} is missing, and CI=true needs it (see .ci/run)");
    }
    // Straight to the process's stderr: the test harness captures
    // eprintln! of a passing test.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: {what} is missing (under CI=true this fails)"
    );
    false
}
