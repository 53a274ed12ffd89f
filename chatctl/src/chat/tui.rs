//! The full-screen loop: draw, wait briefly for a key, apply chatd's events, hand the app's
//! requests to the session.

use std::path::Path;
use std::sync::mpsc::{Receiver, Sender};
use std::time::Duration;

use ratatui::crossterm::event::{self, Event};

use super::app::App;
use super::events::{FromChatd, ToChatd};
use super::lines::Tz;
use super::model::ConvId;
use super::session;
use super::terminal::Screen;
use super::view;
use crate::exit::{self, Failure};
use crate::safe_text::{visible, INDENT};

/// How long the loop waits for a key before looking at chatd's events again.
const TICK: Duration = Duration::from_millis(50);

pub fn run(socket: Option<&Path>, open: Option<ConvId>, bell: bool) -> Result<i32, Failure> {
    let (to_session, from_session) = session::spawn(socket)?;
    let mut app = App::new(open.clone(), bell, Tz::Local);
    if let Some(id) = open {
        forward(&to_session, app.open_conversation(id));
    }
    let mut screen = Screen::open()?;
    let result = main_loop(&mut screen, &mut app, &to_session, &from_session);
    drop(screen);
    result?;
    // What chatd did not accept is not lost: it is printed once the screen is back.
    if let Some(text) = app.unsent() {
        let what = if app.sending.is_some() {
            "not accepted by chatd"
        } else {
            "typed, not sent"
        };
        eprintln!("chatctl: {what}:\n    {}", visible(&text, INDENT));
        if app.sending.is_some() {
            return Ok(exit::OTHER);
        }
    }
    Ok(exit::OK)
}

fn main_loop(
    screen: &mut Screen,
    app: &mut App,
    to_session: &Sender<ToChatd>,
    from_session: &Receiver<FromChatd>,
) -> Result<(), Failure> {
    let io = |e| Failure::io("terminal", e);
    loop {
        let size = screen.terminal.size().map_err(io)?;
        app.pane = view::pane(size.into(), app);
        screen.terminal.draw(|f| view::draw(f, app)).map_err(io)?;
        if std::mem::take(&mut app.ring) {
            screen.bell();
        }
        if app.quit || screen.stopped() {
            return Ok(());
        }
        if event::poll(TICK).map_err(io)? {
            match event::read().map_err(io)? {
                Event::Key(key) => forward(to_session, app.on_key(key)),
                Event::Paste(text) => app.paste(&text),
                _ => {}
            }
        }
        while let Ok(ev) = from_session.try_recv() {
            forward(to_session, app.on_chatd(ev));
        }
    }
}

fn forward(to_session: &Sender<ToChatd>, requests: Vec<ToChatd>) {
    for r in requests {
        // The session lives as long as the loop; a send can only fail after it ended.
        let _ = to_session.send(r);
    }
}
