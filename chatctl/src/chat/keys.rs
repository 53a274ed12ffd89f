//! Which key does what: one table, used by the dispatcher, the help screen (F1) and
//! `chatctl chat --help`.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

/// What a key asks the app to do. Keys not listed here edit the input line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Send,
    Newline,
    HistoryPrev,
    HistoryNext,
    Complete,
    PageUp,
    PageDown,
    NextUnread,
    NextConversation,
    PrevConversation,
    Retry,
    ToggleBell,
    Help,
    Escape,
    Quit,
}

/// (keys, what they do), in the order the help shows them.
pub const KEYS: &[(&str, &str)] = &[
    (
        "Enter",
        "send the input line to the open conversation (or run a /command)",
    ),
    ("Alt+Enter", "start a new line in the message"),
    (
        "Up / Down",
        "earlier / later lines you sent (input history)",
    ),
    ("Tab", "complete a name or @group (e.g. after /msg)"),
    (
        "PgUp / PgDn",
        "scroll the conversation; at the top, older messages are loaded",
    ),
    (
        "Ctrl+N or Alt+A",
        "jump to the next conversation with unread messages",
    ),
    (
        "Alt+Down / Alt+Up",
        "next / previous conversation in the list",
    ),
    (
        "Ctrl+R",
        "send the failed messages of this conversation again",
    ),
    ("Ctrl+G", "terminal bell on new messages on / off"),
    ("F1", "this help"),
    ("Esc", "close the help or search results; clear the notice"),
    (
        "Ctrl+C or Ctrl+D",
        "quit (the input line is kept until chatd accepted it)",
    ),
    ("Ctrl+A / Ctrl+E", "start / end of the line"),
    (
        "Ctrl+W / Ctrl+K / Ctrl+J",
        "delete the word before / to the end / to the start",
    ),
    ("Ctrl+U", "undo an edit"),
];

/// The `/` commands, for the help.
pub const COMMANDS: &[(&str, &str)] = &[
    (
        "/msg NAME|@GROUP [TEXT]",
        "open (or start) a conversation, optionally sending TEXT",
    ),
    (
        "/group create|add|remove NAME MEMBER…",
        "manage groups (also delete NAME, list)",
    ),
    (
        "/trust NAME",
        "accept NAME's new key (check its fingerprint first)",
    ),
    ("/search TEXT", "find messages containing TEXT"),
    ("/bell", "bell on / off"),
    ("/help", "this help"),
    ("/quit", "quit"),
];

/// The keys as plain text (for `--help`).
pub fn help_text() -> String {
    let mut s = String::from("Keys:\n");
    for (k, what) in KEYS {
        s.push_str(&format!("  {k:<26} {what}\n"));
    }
    s.push_str("\nCommands (typed in the input line):\n");
    for (c, what) in COMMANDS {
        s.push_str(&format!("  {c:<40} {what}\n"));
    }
    s
}

/// The action for a key, or `None` for an editing key.
pub fn action(key: &KeyEvent) -> Option<Action> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    let alt = key.modifiers.contains(KeyModifiers::ALT);
    Some(match key.code {
        KeyCode::Enter if alt => Action::Newline,
        KeyCode::Enter => Action::Send,
        KeyCode::Char('c' | 'd') if ctrl => Action::Quit,
        KeyCode::Char('n') if ctrl => Action::NextUnread,
        KeyCode::Char('a') if alt => Action::NextUnread,
        KeyCode::Char('r') if ctrl => Action::Retry,
        KeyCode::Char('g') if ctrl => Action::ToggleBell,
        KeyCode::Down if alt => Action::NextConversation,
        KeyCode::Up if alt => Action::PrevConversation,
        KeyCode::Up => Action::HistoryPrev,
        KeyCode::Down => Action::HistoryNext,
        KeyCode::Tab => Action::Complete,
        KeyCode::PageUp => Action::PageUp,
        KeyCode::PageDown => Action::PageDown,
        KeyCode::F(1) => Action::Help,
        KeyCode::Esc => Action::Escape,
        _ => return None,
    })
}
