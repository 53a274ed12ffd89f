//! The TUI's state and its reducer: keys and chatd's events in, requests to chatd out. No I/O
//! here (the session does it, the view draws), so every behaviour is testable by feeding events.
//! Keys are handled here, chatd's events in `incoming.rs`.

mod incoming;

use ratatui::crossterm::event::KeyEvent;

use super::commands::{self, SlashCommand};
use super::events::ToChatd;
use super::input::Input;
use super::keys::{self, Action};
use super::lines::{self, Tz};
use super::model::{ConvId, Conversation, Msg, Tick};

/// Messages asked for per history page.
pub const PAGE: u32 = 50;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connection {
    Connecting,
    Connected,
    /// Lost; the session is trying again.
    Reconnecting(String),
}

/// A message handed to chatd and not yet accepted: its text stays in the input line until then.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub msg_id: String,
    pub to: ConvId,
    pub body: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Overlay {
    None,
    Help,
    Search {
        query: String,
        hits: Vec<(ConvId, Msg)>,
    },
}

pub struct App {
    pub me: Option<String>,
    /// Most recent activity first.
    pub convs: Vec<Conversation>,
    pub open: Option<ConvId>,
    pub input: Input,
    /// The send in flight (input locked), if any.
    pub sending: Option<Pending>,
    /// The last send that did not go through, to reuse its id if the same text is sent again
    /// (chatd may have recorded it before the connection dropped: the same id is not a
    /// duplicate).
    pub last_attempt: Option<Pending>,
    pub connection: Connection,
    /// One line for the status bar, and whether it is an error.
    pub notice: Option<(String, bool)>,
    pub bell: bool,
    /// The bell should ring now (taken by the main loop).
    pub ring: bool,
    pub peers: Vec<String>,
    pub groups: Vec<String>,
    pub overlay: Overlay,
    pub quit: bool,
    /// Set when Quit was refused once because a message is still on its way.
    quit_asked: bool,
    pub tz: Tz,
    /// The message pane's size as last drawn (width, rows): what PgUp/PgDn scroll by.
    pub pane: (usize, usize),
}

impl App {
    pub fn new(open: Option<ConvId>, bell: bool, tz: Tz) -> App {
        let mut app = App {
            me: None,
            convs: Vec::new(),
            open: None,
            input: Input::default(),
            sending: None,
            last_attempt: None,
            connection: Connection::Connecting,
            notice: None,
            bell,
            ring: false,
            peers: Vec::new(),
            groups: Vec::new(),
            overlay: Overlay::None,
            quit: false,
            quit_asked: false,
            tz,
            pane: (60, 20),
        };
        if let Some(id) = open {
            app.conv_mut(&id);
            app.open = Some(id);
        }
        app
    }

    pub fn conv(&self, id: &ConvId) -> Option<&Conversation> {
        self.convs.iter().find(|c| &c.id == id)
    }

    /// The conversation, created if new.
    pub fn conv_mut(&mut self, id: &ConvId) -> &mut Conversation {
        let at = match self.convs.iter().position(|c| &c.id == id) {
            Some(at) => at,
            None => {
                self.convs.push(Conversation::new(id.clone()));
                self.convs.len() - 1
            }
        };
        &mut self.convs[at]
    }

    pub fn open_conv(&self) -> Option<&Conversation> {
        self.open.as_ref().and_then(|id| self.conv(id))
    }

    pub(super) fn sort(&mut self) {
        self.convs.sort_by(|a, b| {
            b.last_activity
                .cmp(&a.last_activity)
                .then_with(|| a.id.cmp(&b.id))
        });
    }

    pub fn total_unread(&self) -> u32 {
        self.convs.iter().map(|c| c.unread).sum()
    }

    pub(super) fn notice(&mut self, text: impl Into<String>) {
        self.notice = Some((text.into(), false));
    }

    pub(super) fn error(&mut self, text: impl Into<String>) {
        self.notice = Some((text.into(), true));
    }

    /// Names and groups for Tab completion, and the commands when the line starts with `/`.
    pub fn completions(&self) -> Vec<String> {
        let mut c: Vec<String> = self.peers.clone();
        c.extend(self.groups.iter().map(|g| format!("@{g}")));
        if self.input.text().starts_with('/') && !self.input.text().contains(' ') {
            c = [
                "/msg", "/group", "/trust", "/search", "/bell", "/help", "/quit",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
        }
        c.sort();
        c.dedup();
        c
    }

    /// A key press.
    pub fn on_key(&mut self, key: KeyEvent) -> Vec<ToChatd> {
        match keys::action(&key) {
            Some(a) => self.on_action(a),
            None if self.sending.is_some() => {
                self.notice("sending… (the input line is kept until chatd accepts it)");
                Vec::new()
            }
            None => {
                self.input.edit(key);
                Vec::new()
            }
        }
    }

    fn on_action(&mut self, a: Action) -> Vec<ToChatd> {
        if a != Action::Quit {
            self.quit_asked = false;
        }
        match a {
            Action::Send => return self.submit(),
            Action::Newline if self.sending.is_none() => self.input.newline(),
            Action::HistoryPrev if self.sending.is_none() => {
                if self.input.on_first_line() {
                    self.input.history_prev()
                } else {
                    self.input.move_up()
                }
            }
            Action::HistoryNext if self.sending.is_none() => {
                if self.input.on_last_line() {
                    self.input.history_next()
                } else {
                    self.input.move_down()
                }
            }
            Action::Complete if self.sending.is_none() => {
                let matches = self.input.complete(&self.completions());
                if !matches.is_empty() {
                    self.notice(matches.join("  "));
                }
            }
            Action::Newline | Action::HistoryPrev | Action::HistoryNext | Action::Complete => {}
            Action::PageUp => return self.scroll_up(),
            Action::PageDown => self.scroll_down(),
            Action::NextUnread => return self.next_unread(),
            Action::NextConversation => return self.step_conversation(1),
            Action::PrevConversation => return self.step_conversation(-1),
            Action::Retry => return self.retry(),
            Action::ToggleBell => self.toggle_bell(),
            Action::Help => self.overlay = Overlay::Help,
            Action::Escape => {
                self.overlay = Overlay::None;
                self.notice = None;
                if self.sending.is_some() && self.connection != Connection::Connected {
                    // Unlock the text to edit it while chatd is away; the same text sent again
                    // keeps its id.
                    self.last_attempt = self.sending.take();
                }
            }
            Action::Quit => self.ask_quit(),
        }
        Vec::new()
    }

    fn ask_quit(&mut self) {
        if self.sending.is_some() && !self.quit_asked {
            self.quit_asked = true;
            self.error("chatd has not accepted the message yet; press Ctrl+C again to quit anyway (the text is printed)");
            return;
        }
        self.quit = true;
    }

    fn toggle_bell(&mut self) {
        self.bell = !self.bell;
        self.notice(if self.bell { "bell on" } else { "bell off" });
    }

    /// Enter: a command, or a message to the open conversation.
    fn submit(&mut self) -> Vec<ToChatd> {
        if self.sending.is_some() {
            self.notice("still sending the last message…");
            return Vec::new();
        }
        let text = self.input.text();
        if text.trim().is_empty() {
            return Vec::new();
        }
        match commands::parse(&text) {
            Some(Ok(cmd)) => self.command(cmd),
            Some(Err(e)) => {
                self.error(e);
                Vec::new()
            }
            None => {
                let body = commands::unescape(&text).to_string();
                match self.open.clone() {
                    Some(to) => self.send(to, body),
                    None => {
                        self.error("no conversation is open: /msg NAME (Tab completes names)");
                        Vec::new()
                    }
                }
            }
        }
    }

    fn send(&mut self, to: ConvId, body: String) -> Vec<ToChatd> {
        let limit = peerchat_proto::MAX_BODY_BYTES;
        if body.len() > limit {
            self.error(format!(
                "the message is {} bytes; the limit is {limit} bytes (64 KiB): shorten it or split it",
                body.len()
            ));
            return Vec::new();
        }
        let msg_id = match self.last_attempt.take() {
            Some(p) if p.to == to && p.body == body => p.msg_id,
            _ => uuid::Uuid::now_v7().to_string(),
        };
        let pending = Pending { msg_id, to, body };
        self.sending = Some(pending.clone());
        if self.connection != Connection::Connected {
            self.notice("chatd is away: the message is sent as soon as it is back");
            return Vec::new();
        }
        vec![send_request(&pending)]
    }

    fn command(&mut self, cmd: SlashCommand) -> Vec<ToChatd> {
        let done = |app: &mut App, out: Vec<ToChatd>| {
            app.input.remember(&app.input.text());
            app.input.clear();
            out
        };
        match cmd {
            SlashCommand::Msg(id, text) => {
                let mut out = self.open_conversation(id);
                let id = self.open.clone().unwrap_or_else(|| ConvId(String::new()));
                self.input.remember(&self.input.text());
                self.input.clear();
                if let Some(t) = text {
                    self.input.set_text(&t);
                    out.extend(self.send(id, t));
                }
                out
            }
            SlashCommand::Group(words) => done(self, vec![ToChatd::Group(words)]),
            SlashCommand::Trust(name) => done(self, vec![ToChatd::Trust(name)]),
            SlashCommand::Search(text) => done(self, vec![ToChatd::Search(text)]),
            SlashCommand::Bell => {
                self.toggle_bell();
                done(self, Vec::new())
            }
            SlashCommand::Help => {
                self.overlay = Overlay::Help;
                done(self, Vec::new())
            }
            SlashCommand::Quit => {
                self.input.clear();
                self.ask_quit();
                Vec::new()
            }
        }
    }

    /// `@ops` as chatd resolves it (protocol.md §2.9.1): our own group `@ME/ops` first, else
    /// the one group conversation of that name we have.
    fn resolve(&self, id: ConvId) -> ConvId {
        if !id.is_group() || id.as_str().contains('/') {
            return id;
        }
        let suffix = format!("/{}", id.name());
        let mut known = self
            .convs
            .iter()
            .filter(|c| c.id.is_group() && c.id.as_str().ends_with(&suffix));
        let own = self.me.as_ref().map(|me| ConvId(format!("@{me}{suffix}")));
        match (own, known.next(), known.next()) {
            (Some(own), _, _)
                if self.conv(&own).is_some() || self.groups.iter().any(|g| g == id.name()) =>
            {
                own
            }
            (_, Some(one), None) => one.id.clone(),
            _ => id,
        }
    }

    /// Opens `id`: loads its history if none is loaded, and marks it read.
    pub fn open_conversation(&mut self, id: ConvId) -> Vec<ToChatd> {
        let id = self.resolve(id);
        self.overlay = Overlay::None;
        let conv = self.conv_mut(&id);
        conv.scroll = 0;
        let mut out = Vec::new();
        if conv.messages.is_empty() && !conv.history_complete && !conv.loading {
            conv.loading = true;
            out.push(ToChatd::LoadHistory {
                conv: id.clone(),
                before: None,
                limit: PAGE,
            });
        }
        self.open = Some(id);
        out.extend(self.mark_read());
        out
    }

    /// Moves the open conversation's read position to its newest message, if it has unread
    /// ones and is scrolled to the bottom (what is on screen has been read).
    pub(super) fn mark_read(&mut self) -> Vec<ToChatd> {
        let Some(id) = self.open.clone() else {
            return Vec::new();
        };
        let conv = self.conv_mut(&id);
        match conv.newest_seq() {
            Some(up_to) if conv.unread > 0 && conv.scroll == 0 => {
                conv.unread = 0;
                vec![ToChatd::MarkRead { conv: id, up_to }]
            }
            _ => Vec::new(),
        }
    }

    fn next_unread(&mut self) -> Vec<ToChatd> {
        let next = self
            .convs
            .iter()
            .find(|c| c.unread > 0 && Some(&c.id) != self.open.as_ref())
            .map(|c| c.id.clone());
        match next {
            Some(id) => self.open_conversation(id),
            None => {
                self.notice("no unread messages");
                Vec::new()
            }
        }
    }

    fn step_conversation(&mut self, step: isize) -> Vec<ToChatd> {
        if self.convs.is_empty() {
            return Vec::new();
        }
        let n = self.convs.len() as isize;
        let at = self
            .open
            .as_ref()
            .and_then(|id| self.convs.iter().position(|c| &c.id == id))
            .map_or(0, |i| (i as isize + step).rem_euclid(n));
        let id = self.convs[at as usize].id.clone();
        self.open_conversation(id)
    }

    fn scroll_up(&mut self) -> Vec<ToChatd> {
        let (width, rows) = self.pane;
        let tz = self.tz;
        let Some(id) = self.open.clone() else {
            return Vec::new();
        };
        let conv = self.conv_mut(&id);
        let total = lines::rows(conv, width, tz).len();
        let top = total.saturating_sub(rows);
        conv.scroll = (conv.scroll + rows.saturating_sub(1).max(1)).min(top);
        if conv.scroll >= top && !conv.history_complete && !conv.loading {
            conv.loading = true;
            return vec![ToChatd::LoadHistory {
                conv: id,
                before: conv.oldest_seq(),
                limit: PAGE,
            }];
        }
        Vec::new()
    }

    fn scroll_down(&mut self) {
        let rows = self.pane.1;
        if let Some(id) = self.open.clone() {
            let conv = self.conv_mut(&id);
            conv.scroll = conv.scroll.saturating_sub(rows.saturating_sub(1).max(1));
        }
    }

    /// Ctrl+R: every failed message of the open conversation again, under new ids.
    fn retry(&mut self) -> Vec<ToChatd> {
        let Some(id) = self.open.clone() else {
            return Vec::new();
        };
        let conv = self.conv_mut(&id);
        let mut out = Vec::new();
        for m in conv.messages.iter_mut().filter(|m| m.outgoing) {
            if let Some(Tick::Failed(why)) = &m.tick {
                if why.ends_with("(sent again)") {
                    continue;
                }
                out.push(ToChatd::Send {
                    msg_id: uuid::Uuid::now_v7().to_string(),
                    to: id.clone(),
                    body: m.body.clone(),
                });
                m.tick = Some(Tick::Failed(format!("{why} (sent again)")));
            }
        }
        if out.is_empty() {
            self.notice("no failed messages here");
        }
        out
    }

    /// Pasted text goes into the input as it is (newlines included), never sent by itself.
    pub fn paste(&mut self, text: &str) {
        if self.sending.is_none() {
            self.input
                .insert(&text.replace("\r\n", "\n").replace('\r', "\n"));
        }
    }

    /// What is left unsent at exit (to print after the terminal is restored).
    pub fn unsent(&self) -> Option<String> {
        let text = self.input.text();
        (!text.trim().is_empty()).then_some(text)
    }
}

pub(super) fn send_request(p: &Pending) -> ToChatd {
    ToChatd::Send {
        msg_id: p.msg_id.clone(),
        to: p.to.clone(),
        body: p.body.clone(),
    }
}
