//! chatctl: the command-line client of the local chatd.

mod cli;
mod client;
mod commands;
mod exit;
mod output;
mod stdout_watch;

use clap::Parser;

fn main() {
    let cli = match cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // --help and --version print to stdout and succeed; everything else is a usage error.
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    let json = cli.json;
    let code = match commands::run(cli) {
        Ok(code) => code,
        Err(f) => {
            output::failure(json, &f);
            f.exit
        }
    };
    std::process::exit(code);
}
