//! Logging through `tracing` to stderr (journald picks it up): text or JSON lines.

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The level names `--log-level` accepts on their own.
pub const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];

/// The value parser of both daemons' `--log-level`: a level name (`error`, `warn`, `info`,
/// `debug`, `trace`, `off`, any case), or a full `tracing` filter directive list, recognised by
/// its `=` or `,` (`chatd=debug`, `warn,chatd::delivery=trace`). Anything else is refused: a
/// lone word such as `bogus` or `warning` would otherwise be read as a target name and silence
/// every log line.
pub fn parse_level(s: &str) -> Result<String, String> {
    let t = s.trim();
    if LEVELS.iter().any(|l| t.eq_ignore_ascii_case(l)) {
        return Ok(t.to_ascii_lowercase());
    }
    if t.contains('=') || t.contains(',') {
        return EnvFilter::try_new(t)
            .map(|_| t.to_string())
            .map_err(|e| format!("not a valid filter: {e}"));
    }
    let hint = if t.eq_ignore_ascii_case("warning") {
        " (did you mean warn?)"
    } else {
        ""
    };
    Err(format!(
        "not a log level{hint}: use one of {}, or a filter with `=` such as chatd=debug",
        LEVELS.join(", ")
    ))
}

/// Level from `level` if it was set explicitly (already checked by [`parse_level`]), else
/// `$RUST_LOG`, else `info`.
pub fn init(level: Option<&str>, format: LogFormat) {
    let filter = match level {
        Some(l) => EnvFilter::try_new(l).unwrap_or_else(|_| EnvFilter::new("info")),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_level;

    #[test]
    fn levels_and_filters_are_accepted_words_are_not() {
        for ok in ["error", "warn", "INFO", "debug", "trace", "off", " info "] {
            assert!(parse_level(ok).is_ok(), "{ok}");
        }
        assert_eq!(parse_level("Debug").as_deref(), Ok("debug"));
        assert!(parse_level("chatd=debug").is_ok());
        assert!(parse_level("warn,chatd::delivery=trace").is_ok());
        for bad in ["bogus", "warning", "", "chatd", "verbose"] {
            let e = parse_level(bad).unwrap_err();
            assert!(e.contains("not a log level"), "{bad}: {e}");
        }
        assert!(parse_level("warning")
            .unwrap_err()
            .contains("did you mean warn"));
        assert!(parse_level("chatd=loud").is_err());
    }
}
