//! Drawing the app: a pure function of its state onto a ratatui frame (tests draw onto
//! `TestBackend`).

mod bars;
mod list;
mod messages;
mod overlay;
pub mod wrap;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::Frame;

use super::app::App;

/// Most rows the input line grows to (Alt+Enter adds lines).
const INPUT_MAX_ROWS: u16 = 5;

/// The screen's parts.
pub struct Areas {
    pub top: Rect,
    pub list: Rect,
    pub title: Rect,
    pub messages: Rect,
    pub input: Rect,
    pub status: Rect,
}

/// Where everything goes on a screen of `area` with an input of `input_lines` lines.
pub fn areas(area: Rect, input_lines: usize) -> Areas {
    let input_rows = (input_lines as u16).clamp(1, INPUT_MAX_ROWS) + 1;
    let [top, body, input, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(input_rows),
        Constraint::Length(1),
    ])
    .areas(area);
    let list_width = (area.width / 4).clamp(12, 24);
    let [list, right] =
        Layout::horizontal([Constraint::Length(list_width), Constraint::Min(1)]).areas(body);
    let [title, messages] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(right);
    Areas {
        top,
        list,
        title,
        messages,
        input,
        status,
    }
}

/// The message pane's size (width, rows) for a terminal of `area`: what the app scrolls by.
pub fn pane(area: Rect, app: &App) -> (usize, usize) {
    let a = areas(area, app.input.lines());
    (a.messages.width as usize, a.messages.height as usize)
}

pub fn draw(frame: &mut Frame, app: &App) {
    let a = areas(frame.area(), app.input.lines());
    bars::top(frame, a.top, app);
    list::draw(frame, a.list, app);
    messages::title(frame, a.title, app);
    messages::draw(frame, a.messages, app);
    bars::input(frame, a.input, app);
    bars::status(frame, a.status, app);
    overlay::draw(frame, a.messages.union(a.list), app);
}
