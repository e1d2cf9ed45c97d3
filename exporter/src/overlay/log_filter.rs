//! What `set-log-level` (and `ASTROLABE_LOG`) accept: a level, or
//! `target=level` directives. tracing's own parser takes any word as a
//! target (`loud` means "only the target loud, at trace"), which silences
//! the agent; a filter that names no level is refused here instead.

/// The level names, as tracing spells them.
pub const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a log level or filter (use {levels}, or target=level directives like astrolabe=debug,info)", levels = LEVELS.join(", "))]
pub struct LogFilterError(pub String);

fn is_level(word: &str) -> bool {
    LEVELS.iter().any(|l| l.eq_ignore_ascii_case(word.trim()))
}

/// Checks that every comma-separated directive ends in a level and that
/// tracing parses the whole filter.
pub fn check(filter: &str) -> Result<(), LogFilterError> {
    let refused = || LogFilterError(filter.to_string());
    if filter.trim().is_empty() {
        return Err(refused());
    }
    for directive in filter.split(',') {
        let names_level = match directive.rsplit_once('=') {
            Some((target, level)) => !target.trim().is_empty() && is_level(level),
            None => is_level(directive),
        };
        if !names_level {
            return Err(refused());
        }
    }
    tracing_subscriber::EnvFilter::try_new(filter).map_err(|_| refused())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn levels_and_target_directives_pass_and_words_do_not() {
        for ok in [
            "debug",
            "WARN",
            "off",
            "astrolabe=trace,info",
            "astrolabe::overlay=debug",
            "h2=off,astrolabe=info,warn",
            "astrolabe[query{zone=/eu}]=debug",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            " ",
            "loud",
            "astrolabe",
            "debug,",
            "=debug",
            "astrolabe=loud",
            "[not a filter",
            "info,astrolabe",
        ] {
            let e = check(bad).unwrap_err();
            assert!(e.to_string().contains("is not a log level"), "{bad}: {e}");
        }
    }
}
