//! One module per command; [`run`] is the single dispatch.

mod doctor;
mod group;
mod identity;
mod inbox;
mod outbox;
mod peers;
mod send;
mod status;

use crate::cli::{Cli, Command};
use crate::client::Client;
use crate::exit::Failure;

/// Runs the command; returns the exit code.
pub fn run(cli: Cli) -> Result<i32, Failure> {
    let socket = cli.socket.as_deref();
    match cli.command {
        Command::Send(args) => send::run(socket, cli.json, args),
        Command::Inbox(args) => inbox::run(socket, cli.json, args),
        Command::Peers => peers::run(Client::connect(socket)?, cli.json),
        Command::Status { id: None } => status::run(Client::connect(socket)?, cli.json),
        Command::Status { id: Some(id) } => outbox::status(Client::connect(socket)?, cli.json, id),
        Command::Outbox { limit, after } => {
            outbox::list(Client::connect(socket)?, cli.json, limit, after)
        }
        Command::Cancel { id } => outbox::cancel(Client::connect(socket)?, cli.json, id),
        Command::Broadcast(args) => send::run_broadcast(socket, cli.json, args),
        Command::Group(cmd) => group::run(Client::connect(socket)?, cli.json, cmd),
        Command::Doctor => doctor::run(socket, cli.json),
        Command::Whoami => identity::whoami(Client::connect(socket)?, cli.json),
        Command::Trust { name } => identity::trust(Client::connect(socket)?, cli.json, name),
        Command::RotateKey => identity::rotate(Client::connect(socket)?, cli.json),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut cmd = crate::cli::Cli::command();
            let mut out = std::io::stdout();
            clap_complete::generate(shell, &mut cmd, "chatctl", &mut out);
            Ok(crate::exit::OK)
        }
    }
}
