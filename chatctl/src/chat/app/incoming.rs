//! chatd's events applied to the app: connection changes, history pages, new messages, our
//! sends accepted or refused, delivery ticks, read positions, presence.

use super::super::events::{FromChatd, ToChatd};
use super::super::model::{ConvId, Msg};
use super::{send_request, App, Connection, Overlay, PAGE};
use crate::safe_text::one_line;

impl App {
    /// An event from the session.
    pub fn on_chatd(&mut self, ev: FromChatd) -> Vec<ToChatd> {
        match ev {
            FromChatd::Connected { me } => return self.connected(me),
            FromChatd::Disconnected { error } => {
                self.connection = Connection::Reconnecting(error);
                for c in &mut self.convs {
                    c.loading = false;
                }
            }
            FromChatd::Conversations(list) => {
                for s in list {
                    let c = self.conv_mut(&s.id);
                    c.unread = s.unread;
                    c.online = s.online.or(c.online);
                    c.last_activity = s.last_activity.max(c.last_activity);
                }
                self.sort();
                return self.mark_read();
            }
            FromChatd::History {
                conv,
                messages,
                complete,
            } => {
                let c = self.conv_mut(&conv);
                c.loading = false;
                c.history_complete = complete;
                for m in messages {
                    c.upsert(m);
                }
                self.sort();
                return self.mark_read();
            }
            FromChatd::Message { conv, msg } => return self.message(conv, msg),
            FromChatd::Accepted { conv, msg } => return self.accepted(conv, msg),
            FromChatd::Refused { msg_id, error } => {
                if self.sending.as_ref().is_some_and(|p| p.msg_id == msg_id) {
                    self.sending = None;
                }
                self.error(format!("not sent: {}", one_line(&error)));
            }
            FromChatd::Delivery { msg_id, tick } => {
                for c in &mut self.convs {
                    if let Some(m) = c.messages.iter_mut().find(|m| m.id == msg_id) {
                        m.tick = Some(tick.clone());
                    }
                }
            }
            FromChatd::Read { conv, unread } => self.conv_mut(&conv).unread = unread,
            FromChatd::Presence { name, online } => {
                if let Some(c) = self.convs.iter_mut().find(|c| c.id.as_str() == name) {
                    c.online = Some(online);
                }
            }
            FromChatd::Names { peers, groups } => {
                self.peers = peers;
                self.groups = groups;
            }
            FromChatd::SearchResults { query, hits } => {
                self.overlay = Overlay::Search { query, hits };
            }
            FromChatd::Notice(text) => self.notice(text),
            FromChatd::Error(text) => self.error(text),
        }
        Vec::new()
    }

    fn connected(&mut self, me: String) -> Vec<ToChatd> {
        self.me = Some(me);
        let was_lost = matches!(self.connection, Connection::Reconnecting(_));
        self.connection = Connection::Connected;
        if was_lost {
            self.notice("reconnected to chatd");
        }
        let mut out = Vec::new();
        if let Some(p) = &self.sending {
            out.push(send_request(p));
        }
        if let Some(id) = self.open.clone() {
            let c = self.conv_mut(&id);
            c.loading = true;
            out.push(ToChatd::LoadHistory {
                conv: id,
                before: None,
                limit: PAGE,
            });
        }
        out
    }

    fn message(&mut self, conv: ConvId, msg: Msg) -> Vec<ToChatd> {
        let incoming = !msg.outgoing;
        let is_open = self.open.as_ref() == Some(&conv);
        let c = self.conv_mut(&conv);
        let new = !c.messages.iter().any(|m| m.id == msg.id);
        c.upsert(msg);
        if new && incoming {
            c.unread += 1;
            if !is_open || c.scroll > 0 {
                self.ring = self.bell;
            }
        }
        self.sort();
        if is_open {
            return self.mark_read();
        }
        Vec::new()
    }

    fn accepted(&mut self, conv: ConvId, mut msg: Msg) -> Vec<ToChatd> {
        if msg.from.is_empty() {
            msg.from = self.me.clone().unwrap_or_default();
        }
        if self.sending.as_ref().is_some_and(|p| p.msg_id == msg.id) {
            self.sending = None;
            let text = self.input.text();
            self.input.remember(&text);
            self.input.clear();
            if self.notice.as_ref().is_some_and(|(_, err)| !err) {
                self.notice = None;
            }
        }
        self.conv_mut(&conv).upsert(msg);
        self.sort();
        Vec::new()
    }
}
