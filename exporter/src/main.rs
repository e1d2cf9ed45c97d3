// Unsafe code only in `lean_allocator`, with its SAFETY comments.
#![deny(unsafe_code)]

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use astrolabe::cmd;

/// mimalloc instead of the system allocator: the agent and above all the
/// simulator free rows on other threads than the ones that made them, where
/// glibc's allocator spent an eighth of a 10^5-agent run (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's defaults suit the simulator, which lives for one run of heavy
/// allocation; an agent lives for months on every host, and with them its
/// freed pages stayed resident (eagerly committed arenas are reset, not
/// decommitted): 14 MB of its 24 MB (BENCHMARKS.md, stop 18). Every
/// subcommand but `sim` therefore commits arena memory on demand and gives
/// freed pages back at once. This runs from `.init_array`, before the first
/// allocation, so the first arena is reserved with it; a `MIMALLOC_*`
/// variable in the environment still wins.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // FFI to mimalloc and an .init_array entry; SAFETY below
mod lean_allocator {
    use std::ffi::{c_char, c_int, c_long, CStr};

    // mimalloc v3's `mi_option_e` (include/mimalloc.h).
    const ARENA_EAGER_COMMIT: c_int = 4;
    const PURGE_DELAY: c_int = 15;

    extern "C" {
        fn mi_option_set_default(option: c_int, value: c_long);
    }

    /// glibc calls `.init_array` functions with the program's arguments.
    extern "C" fn choose(argc: c_int, argv: *const *const c_char, _env: *const *const c_char) {
        // SAFETY: glibc passes argc entries of argv, each a C string.
        let subcommand = (argc > 1).then(|| unsafe { CStr::from_ptr(*argv.add(1)) });
        if subcommand.is_some_and(|s| s.to_bytes() == b"sim") {
            return;
        }
        // SAFETY: plain setters of mimalloc's option table, called before
        // any thread or allocation exists.
        unsafe {
            mi_option_set_default(ARENA_EAGER_COMMIT, 0);
            mi_option_set_default(PURGE_DELAY, 0);
        }
    }

    #[used]
    #[link_section = ".init_array"]
    static CHOOSE: extern "C" fn(c_int, *const *const c_char, *const *const c_char) = choose;
}

/// Astrolabe exporter: hierarchical gossip aggregation of host metrics,
/// served to Prometheus from any agent.
#[derive(Debug, Parser)]
#[command(name = "astrolabe", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run an agent: collect, gossip, and serve every zone's aggregates.
    Agent(Box<astrolabe::config::Settings>),
    /// Check an agent configuration file and exit.
    CheckConfig {
        /// The TOML file.
        file: std::path::PathBuf,
    },
    /// Start a local cluster (9 agents in 3 zones) and show its zones live.
    Demo(cmd::demo::DemoArgs),
    /// Generate gossip keys and rotate them across a running cluster.
    Keys(cmd::keys::KeysArgs),
    /// Install, remove and list signed aggregates of a zone at runtime.
    Aggregate(cmd::aggregate::AggregateArgs),
    /// Create operator keys that sign commands and aggregate certificates.
    #[command(name = "operator-key")]
    OperatorKey(cmd::operator_key::OperatorKeyArgs),
    /// Simulate N agents on a virtual clock and report convergence as JSON.
    Sim(cmd::sim::SimArgs),
    /// Ask every host of a zone a SQL question (tables host and process).
    Query(cmd::query::QueryArgs),
    /// Run a command on every host of a zone (collect, set-log-level, actions).
    #[command(name = "command")]
    Exec(cmd::query::CommandArgs),
}

fn main() -> ExitCode {
    let parsed = Cli::command()
        .mut_subcommand("agent", astrolabe::config::with_value_names)
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m).map(|c| (c, m)));
    let (cli, matches) = match parsed {
        Ok(ok) => ok,
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp
                    | clap::error::ErrorKind::DisplayVersion
                    | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) =>
        {
            e.exit()
        }
        Err(e) => {
            // One line a person can act on, not clap's three.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("bad arguments");
            eprintln!(
                "astrolabe: {} (see --help)",
                first.trim_start_matches("error: ")
            );
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        // The settings come from the matches, which also say which were
        // given and which are clap's defaults (a layer of their own).
        Command::Agent(_) => match matches.subcommand_matches("agent") {
            Some(m) => astrolabe::config::CommandLine::from_matches(m).and_then(cmd::agent::run),
            None => Err(anyhow::anyhow!("agent: no arguments")),
        },
        Command::CheckConfig { file } => cmd::agent::check_config(file),
        Command::Demo(args) => cmd::demo::run(args),
        Command::Sim(args) => cmd::sim::run(args),
        Command::Keys(args) => cmd::keys::run(args),
        Command::OperatorKey(args) => cmd::operator_key::run(args),
        Command::Aggregate(args) => cmd::aggregate::run(args),
        Command::Query(args) => cmd::query::run_query(args),
        Command::Exec(args) => cmd::query::run_command(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("astrolabe: {e:#}");
            ExitCode::FAILURE
        }
    }
}
