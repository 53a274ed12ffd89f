//! The start of both daemons' `main`: layered configuration and `--check-config`. Both
//! command lines name their options `config` and `check_config`.

use std::path::{Path, PathBuf};

use crate::config::{self, ConfigPath};

/// `$XDG_CONFIG_HOME/peerchat/FILE`, else `~/.config/peerchat/FILE`.
pub fn user_config(file: &str) -> Option<PathBuf> {
    let env = |v: &str| {
        std::env::var_os(v)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
    };
    env("XDG_CONFIG_HOME")
        .or_else(|| env("HOME").map(|h| h.join(".config")))
        .map(|d| d.join("peerchat").join(file))
}

/// Parses the command line over the environment over the config file (`--config`, else the
/// user's `DAEMON.toml` when it exists). Exits 1 with the reason if the file is bad.
pub fn load<A: clap::Parser>(daemon: &str) -> A {
    let file = format!("{daemon}.toml");
    let parsed = config::parse::<A>(|m| {
        if m.get_one::<PathBuf>("check_config").is_some() {
            return ConfigPath::None;
        }
        match m.get_one::<PathBuf>("config") {
            Some(p) => ConfigPath::Explicit(p.clone()),
            None => user_config(&file).map_or(ConfigPath::None, ConfigPath::Default),
        }
    });
    parsed.unwrap_or_else(|e| {
        eprintln!("{daemon}: {e}");
        std::process::exit(1);
    })
}

/// `--check-config PATH`: prints the verdict and exits 0 (valid) or 1 (invalid, with the line).
pub fn check_and_exit<A: clap::Parser>(daemon: &str, path: &Path) -> ! {
    match config::check::<A>(path) {
        Ok(()) => {
            eprintln!("{}: ok", path.display());
            std::process::exit(0);
        }
        Err(e) => {
            eprintln!("{daemon}: {e}");
            std::process::exit(1);
        }
    }
}
