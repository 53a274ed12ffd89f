//! chatctl: the command-line client of the local chatd. The binary is a thin wrapper around
//! [`main`]; the clap definitions in [`cli`] are public so man pages and completions can be
//! generated from them.

mod chat;
pub mod cli;
pub(crate) mod commands;
mod exit;
mod output;
mod platform;
mod safe_text;

use clap::Parser;

/// Whether `--json` was given as the flag (before the subcommand or among its options), as
/// clap reads it, even though the command line has a usage error: a `--json` among a message's
/// words is a word, and the usage error is printed as text.
fn json_requested<I: IntoIterator<Item = std::ffi::OsString>>(args: I) -> bool {
    use clap::CommandFactory;
    cli::Cli::command()
        .ignore_errors(true)
        .try_get_matches_from(args)
        .ok()
        .and_then(|m| m.try_get_one::<bool>("json").ok().flatten().copied())
        .unwrap_or(false)
}

/// Parses the command line, runs the command, and returns the process exit code.
pub fn main() -> i32 {
    let cli = match cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // --help and --version print to stdout and succeed; everything else is a usage error.
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            if code == exit::USAGE && json_requested(std::env::args_os()) {
                let message = e.to_string();
                let message = message.trim_end().trim_start_matches("error: ");
                output::failure(true, &exit::Failure::usage(message));
            } else {
                let _ = e.print();
            }
            return code;
        }
    };
    let json = cli.json;
    let result = commands::run(cli);
    // Whatever a command kept for a batched write goes out before it ends.
    output::flush();
    match result {
        Ok(code) => code,
        Err(f) => {
            output::failure(json, &f);
            f.exit
        }
    }
}

#[cfg(test)]
mod tests {
    use super::json_requested;

    fn j(args: &[&str]) -> bool {
        json_requested(args.iter().map(std::ffi::OsString::from))
    }

    #[test]
    fn json_counts_only_as_the_flag() {
        assert!(j(&["chatctl", "--json", "send", "--wait=zz", "bob", "hi"]));
        assert!(j(&["chatctl", "send", "--json", "--wait=zz", "bob", "hi"]));
        assert!(!j(&["chatctl", "send", "--wait=zz", "bob", "--json"]));
        assert!(!j(&["chatctl", "send", "--wait=zz", "bob", "hi", "--json"]));
        assert!(!j(&["chatctl", "bogus", "--json"]));
    }
}
