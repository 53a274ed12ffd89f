//! `chatctl chat`: the full-screen terminal UI, or with `--plain` (or without a terminal) a
//! line-oriented console.
//!
//! Inside, dependencies go one way: `model` ← `events` ← `app` (state and reducer, with
//! `input`, `keys`, `commands`, `lines`) ← `view` (drawing) ← `tui` (the terminal loop), and
//! `session` (the control-socket I/O) knows only `model` and `events`. `plain` stands alone.

mod app;
mod commands;
mod events;
mod input;
pub mod keys;
mod lines;
mod model;
mod plain;
mod session;
mod terminal;
mod tui;
mod view;

#[cfg(test)]
mod tests;

use std::io::IsTerminal;
use std::path::Path;

use crate::cli::ChatArgs;
use crate::exit::Failure;

pub fn run(socket: Option<&Path>, args: ChatArgs) -> Result<i32, Failure> {
    let open = match args.with.as_deref() {
        Some(w) => Some(
            model::ConvId::parse(w)
                .ok_or_else(|| Failure::usage(format!("{:?} is not a NAME or @GROUP", w)))?,
        ),
        None => None,
    };
    let terminal = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    if args.plain || !terminal {
        return plain::run(socket, open.map(|c| c.to_string()));
    }
    tui::run(socket, open, !args.no_bell)
}
