//! The control-socket side of the TUI: a thread that owns the connections to chatd, turns the
//! app's requests into control requests and chatd's replies and events into [`FromChatd`].

use std::path::Path;
use std::sync::mpsc::{self, Receiver, Sender};

use peerchat_client::Client;

use super::events::{FromChatd, ToChatd};
use crate::exit::Failure;

pub fn spawn(socket: Option<&Path>) -> Result<(Sender<ToChatd>, Receiver<FromChatd>), Failure> {
    let client = Client::connect(socket)?;
    let (to_session, requests) = mpsc::channel();
    let (events, from_session) = mpsc::channel();
    std::thread::Builder::new()
        .name("chat-session".into())
        .spawn(move || run(client, requests, events))
        .map_err(|e| Failure::io("starting a thread", e))?;
    Ok((to_session, from_session))
}

fn run(_client: Client, requests: Receiver<ToChatd>, events: Sender<FromChatd>) {
    let _ = events.send(FromChatd::Connected { me: String::new() });
    while requests.recv().is_ok() {}
}
