//! One app request at a time on the request connection. chatd's refusals become messages for
//! the app; only a lost connection is an `Err` (the caller reconnects).

use std::sync::mpsc::Sender;
use std::sync::Arc;

use clap::Parser;
use peerchat_client::{Client, Error};
use peerchat_proto::control::{ConvKey, Request, Response};
use peerchat_proto::{MsgId, Name};

use super::super::events::{FromChatd, ToChatd};
use super::super::model::{ConvId, Msg, Tick, UNPLACED};
use super::stream::Shared;
use super::translate;
use crate::cli::GroupCommand;

pub fn whoami(client: &mut Client) -> Result<String, Error> {
    client.call_expect(&Request::Whoami, |r| match r {
        Response::Identity { name, .. } => Ok(name.to_string()),
        r => Err(Error::unexpected(r)),
    })
}

pub struct Requests {
    pub client: Client,
    pub shared: Arc<Shared>,
    pub out: Sender<FromChatd>,
}

impl Requests {
    fn emit(&self, ev: FromChatd) {
        let _ = self.out.send(ev);
    }

    /// The conversation list and the names for completion.
    pub fn refresh(&mut self) -> Result<(), Error> {
        let reply = self.call(&Request::Conversations { limit: None })?;
        if let Some(Response::Conversations { conversations }) = reply {
            let list = conversations.iter().map(translate::summary).collect();
            self.emit(FromChatd::Conversations(list));
        }
        let mut peers = Vec::new();
        if let Some(Response::Peers { peers: p, .. }) = self.call(&Request::Peers)? {
            peers = p.into_iter().map(|p| p.name.to_string()).collect();
        }
        let mut groups = Vec::new();
        if let Some(Response::Groups { groups: g }) = self.call(&Request::GroupList)? {
            groups = g.into_iter().map(|g| g.name.to_string()).collect();
        }
        self.emit(FromChatd::Names { peers, groups });
        Ok(())
    }

    /// `Ok(None)`: chatd refused the request (already reported to the app).
    fn call(&mut self, request: &Request) -> Result<Option<Response>, Error> {
        match self.client.call(request) {
            Ok(r) => Ok(Some(r)),
            Err(e) if e.is_lost() => Err(e),
            Err(e) => {
                self.emit(FromChatd::Error(e.to_string()));
                Ok(None)
            }
        }
    }

    pub fn handle(&mut self, request: ToChatd) -> Result<(), Error> {
        match request {
            ToChatd::Send { msg_id, to, body } => self.send(msg_id, to, body),
            ToChatd::LoadHistory {
                conv,
                before,
                limit,
            } => self.history(conv, before, limit),
            ToChatd::MarkRead { conv, up_to } => {
                let Some(with) = key(&conv) else {
                    return Ok(());
                };
                if let Some(Response::ReadPosition { unread, .. }) =
                    self.call(&Request::Read { with, up_to })?
                {
                    let unread = u32::try_from(unread).unwrap_or(u32::MAX);
                    self.emit(FromChatd::Read { conv, unread });
                }
                Ok(())
            }
            ToChatd::Trust(name) => self.trust(&name),
            ToChatd::Group(words) => self.group(words),
            ToChatd::Search(text) => self.search(text),
        }
    }

    fn send(&mut self, msg_id: String, to: ConvId, body: String) -> Result<(), Error> {
        let refused = |error: String| FromChatd::Refused {
            msg_id: msg_id.clone(),
            error,
        };
        let (Some(conversation), Ok(id)) = (key(&to), MsgId::new(msg_id.clone())) else {
            self.emit(refused(format!("{to} is not a NAME or @GROUP")));
            return Ok(());
        };
        let request = Request::Send {
            to: Vec::new(),
            groups: Vec::new(),
            broadcast: false,
            body: body.clone(),
            msg_id: Some(id),
            conversation: Some(conversation),
        };
        match self.client.call(&request) {
            Ok(Response::Accepted {
                id,
                conversation,
                pos,
                ..
            }) => {
                // chatd says where the message is (an older chatd does not: it stays at the
                // end until its `message` event places it), and under which full key.
                let to = conversation
                    .and_then(|k| ConvId::parse(&k.to_string()))
                    .unwrap_or(to);
                let msg = Msg {
                    id,
                    seq: pos.unwrap_or(UNPLACED),
                    from: String::new(),
                    outgoing: true,
                    body,
                    at: chrono::Utc::now(),
                    tick: Some(Tick::Queued),
                };
                self.emit(FromChatd::Accepted { conv: to, msg });
            }
            Ok(r) => self.emit(refused(format!("unexpected reply: {r:?}"))),
            Err(e) if e.is_lost() => return Err(e),
            Err(e) => self.emit(refused(e.to_string())),
        }
        Ok(())
    }

    fn history(&mut self, conv: ConvId, before: Option<i64>, limit: u32) -> Result<(), Error> {
        let Some(with) = key(&conv) else {
            return Ok(());
        };
        let request = Request::History {
            with,
            before,
            after: None,
            limit: Some(limit),
        };
        let reply = match self.client.call(&request) {
            Ok(r) => r,
            Err(e) if e.is_lost() => return Err(e),
            // A conversation chatd has no message of yet (or refuses): shown empty.
            Err(e) => {
                if !matches!(&e, Error::Chatd(b) if b.code == "not_found") {
                    self.emit(FromChatd::Error(e.to_string()));
                }
                self.emit(FromChatd::History {
                    conv,
                    messages: Vec::new(),
                    complete: true,
                });
                return Ok(());
            }
        };
        if let Response::History { entries, older, .. } = reply {
            let Ok(mut d) = self.shared.deliveries.lock() else {
                return Ok(());
            };
            let messages = entries
                .into_iter()
                .map(|e| translate::entry(e, &mut d))
                .collect();
            drop(d);
            self.emit(FromChatd::History {
                conv,
                messages,
                complete: older.is_none(),
            });
        }
        Ok(())
    }

    fn trust(&mut self, name: &str) -> Result<(), Error> {
        let Ok(name) = Name::new(name) else {
            self.emit(FromChatd::Error(format!("{name:?} is not a name")));
            return Ok(());
        };
        if let Some(Response::Trusted {
            name, fingerprint, ..
        }) = self.call(&Request::Trust { name })?
        {
            let fp = fingerprint.unwrap_or_else(|| "no key (legacy peer)".into());
            self.emit(FromChatd::Notice(format!("trusted {name}: {fp}")));
        }
        Ok(())
    }

    fn group(&mut self, words: Vec<String>) -> Result<(), Error> {
        let cmd = std::iter::once("group".to_string()).chain(words);
        let request = GroupArgs::try_parse_from(cmd)
            .map_err(|e| e.to_string())
            .and_then(|g| crate::commands::group::request(&g.cmd).map_err(|f| f.message));
        let request = match request {
            Ok(r) => r,
            Err(e) => {
                let first = e.lines().next().unwrap_or("").trim_start_matches("error: ");
                self.emit(FromChatd::Error(format!("/group: {first}")));
                return Ok(());
            }
        };
        let text = match self.call(&request)? {
            Some(Response::Group(g)) => format!("@{}: {}", g.name, names(&g.members)),
            Some(Response::Groups { groups }) => groups
                .iter()
                .map(|g| format!("@{}: {}", g.name, names(&g.members)))
                .collect::<Vec<_>>()
                .join(" · "),
            Some(_) => "done".to_string(),
            None => return Ok(()),
        };
        self.emit(FromChatd::Notice(text));
        self.refresh()
    }

    fn search(&mut self, text: String) -> Result<(), Error> {
        let request = Request::Search {
            text: text.clone(),
            with: None,
            from: None,
            before: None,
            after: None,
            limit: Some(50),
        };
        if let Some(Response::SearchResults { hits, .. }) = self.call(&request)? {
            let Ok(mut d) = self.shared.deliveries.lock() else {
                return Ok(());
            };
            let hits = hits
                .into_iter()
                .map(|h| (translate::conv(&h.with), translate::entry(h.entry, &mut d)))
                .collect();
            drop(d);
            self.emit(FromChatd::SearchResults { query: text, hits });
        }
        Ok(())
    }
}

/// `/group …` parsed by the same clap definition as `chatctl group …`.
#[derive(Parser)]
#[command(name = "group", no_binary_name = false)]
struct GroupArgs {
    #[command(subcommand)]
    cmd: GroupCommand,
}

fn names(n: &[Name]) -> String {
    n.iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

fn key(id: &ConvId) -> Option<ConvKey> {
    ConvKey::parse(id.as_str()).ok()
}
