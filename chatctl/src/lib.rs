//! chatctl: the command-line client of the local chatd. The binary is a thin wrapper around
//! [`main`]; the clap definitions in [`cli`] are public so man pages and completions can be
//! generated from them.

pub mod cli;
mod client;
mod commands;
mod exit;
mod output;
mod platform;
mod safe_text;

use clap::Parser;

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
            if code == exit::USAGE && std::env::args().any(|a| a == "--json") {
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
    match commands::run(cli) {
        Ok(code) => code,
        Err(f) => {
            output::failure(json, &f);
            f.exit
        }
    }
}
