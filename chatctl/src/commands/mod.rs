//! One module per command; [`run`] is the single dispatch.

mod backup;
mod doctor;
mod export;
pub(crate) mod group;
mod history;
mod identity;
mod inbox;
mod outbox;
mod peers;
mod send;
mod status;

use peerchat_proto::control::check_msg_id;

use crate::cli::{Cli, Command, MessageArgs, SendArgs};
use crate::exit::{self, Failure};
use peerchat_client::Client;

/// A message id given on the command line, checked before connecting (a usage error, exit 2).
fn msg_id(id: &str) -> Result<(), Failure> {
    check_msg_id(id).map_err(|e| Failure::usage(format!("{id:?}: {e}")))
}

fn message_args(m: &MessageArgs) -> Result<(), Failure> {
    m.id.as_deref().map_or(Ok(()), msg_id)
}

/// `send --wait 5 bob hi` parses as "--wait without a limit, to 5, message bob hi"; when the
/// name 5 is then unknown, say how --wait takes its value.
fn wait_hint(args: &SendArgs) -> Option<String> {
    let looks_like_secs = args.to.parse::<f64>().is_ok();
    (args.message.wait == Some(None) && looks_like_secs).then(|| {
        format!(
            "--wait takes its value with '=' (--wait={}); without '=' the {} was read as the recipient",
            args.to, args.to
        )
    })
}

/// Runs the command; returns the exit code. Arguments are checked before connecting, so a
/// usage error is reported as one (exit 2) whether chatd runs or not.
pub fn run(cli: Cli) -> Result<i32, Failure> {
    let socket = cli.socket.as_deref();
    match cli.command {
        Command::Send(args) => {
            message_args(&args.message)?;
            let hint = wait_hint(&args);
            send::run(socket, cli.json, args).map_err(|mut f| {
                if let (exit::UNKNOWN_NAME, Some(h)) = (f.exit, hint) {
                    f.message = format!("{}\nhint: {h}", f.message);
                }
                f
            })
        }
        Command::Inbox(args) if args.unread => history::unread(socket, cli.json),
        Command::Inbox(args) => inbox::run(socket, cli.json, args),
        Command::History(args) => history::history(socket, cli.json, args),
        Command::Search(args) => history::search(socket, cli.json, args),
        Command::Peers => peers::run(Client::connect(socket)?, cli.json),
        Command::Status { id: None } => status::run(Client::connect(socket)?, cli.json),
        Command::Status { id: Some(id) } => {
            msg_id(&id)?;
            outbox::status(Client::connect(socket)?, cli.json, id)
        }
        Command::Outbox { limit, after } => {
            outbox::list(Client::connect(socket)?, cli.json, limit, after)
        }
        Command::Cancel { id } => {
            msg_id(&id)?;
            outbox::cancel(Client::connect(socket)?, cli.json, id)
        }
        Command::Broadcast(args) => {
            message_args(&args.message)?;
            send::run_broadcast(socket, cli.json, args)
        }
        Command::Group(cmd) => {
            let request = group::request(&cmd)?;
            group::run(Client::connect(socket)?, cli.json, request)
        }
        Command::Doctor => doctor::run(socket, cli.json),
        Command::Whoami => identity::whoami(Client::connect(socket)?, cli.json),
        Command::Trust { name } => {
            let name = identity::trust_name(name)?;
            identity::trust(Client::connect(socket)?, cli.json, name)
        }
        Command::RotateKey => identity::rotate(Client::connect(socket)?, cli.json),
        Command::Export { with, since } => {
            let with = export::with(with)?;
            let since = since.as_deref().map(export::since).transpose()?;
            export::run(Client::connect(socket)?, with, since)
        }
        Command::Backup { path, force } => {
            let path = backup::absolute(&path)?;
            backup::run(Client::connect(socket)?, cli.json, path, force)
        }
        Command::Chat(args) => crate::chat::run(socket, args),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut cmd = crate::cli::Cli::command();
            let mut out = std::io::stdout();
            clap_complete::generate(shell, &mut cmd, "chatctl", &mut out);
            Ok(crate::exit::OK)
        }
    }
}
