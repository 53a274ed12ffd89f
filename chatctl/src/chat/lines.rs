//! A conversation laid out as screen rows for a given width: day separators, `HH:MM name: body`
//! with wrapped rows indented under the time column, delivery ticks. Used by the view to draw
//! and by the app to know how far it can scroll.
//!
//! Bodies go through [`crate::safe_text::visible`]: a control character shows as an escape, and
//! every row after a message's first (a newline in the body, or a wrap) starts with
//! [`INDENT`] spaces, so a body cannot forge a message line (which starts with the time at
//! column 0).

use chrono::{DateTime, FixedOffset, Local, NaiveDate, Utc};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};

use super::model::{Conversation, Msg, Tick};
use super::view::wrap::{truncate, width, wrap};
use crate::safe_text::{one_line, visible};

/// Columns before a continuation row's text: as wide as `HH:MM `.
pub const INDENT: usize = 6;
/// Longest sender name shown (longer ones end with `…`).
const NAME_MAX: usize = 16;

/// The time zone times are shown in.
#[derive(Debug, Clone, Copy)]
pub enum Tz {
    Local,
    /// A fixed offset (the tests pin one).
    #[cfg_attr(not(test), allow(dead_code))]
    Fixed(FixedOffset),
}

impl Tz {
    pub fn convert(self, t: DateTime<Utc>) -> DateTime<FixedOffset> {
        match self {
            Tz::Local => t.with_timezone(&Local).fixed_offset(),
            Tz::Fixed(o) => t.with_timezone(&o),
        }
    }

    /// `UTC+08:00`, as of now (the header shows it once instead of on every message).
    pub fn label(self) -> String {
        let offset = *self.convert(Utc::now()).offset();
        format!("UTC{offset}")
    }
}

/// Every row of `conv` at `width` columns.
pub fn rows(conv: &Conversation, width: usize, tz: Tz) -> Vec<Line<'static>> {
    let width = width.max(INDENT + 4);
    let mut out = Vec::new();
    let mut day: Option<NaiveDate> = None;
    for m in &conv.messages {
        let local = tz.convert(m.at);
        if day != Some(local.date_naive()) {
            day = Some(local.date_naive());
            out.push(separator(&local.format("%A, %-d %B %Y").to_string(), width));
        }
        message_rows(m, &local.format("%H:%M ").to_string(), width, &mut out);
    }
    out
}

fn separator(label: &str, width: usize) -> Line<'static> {
    let label = format!(" {label} ");
    let side = width.saturating_sub(width_of(&label)) / 2;
    let dashes = "─".repeat(side);
    Line::from(Span::styled(
        format!("{dashes}{label}{dashes}"),
        Style::default().fg(Color::DarkGray),
    ))
}

fn width_of(s: &str) -> usize {
    width(s)
}

fn message_rows(m: &Msg, time: &str, width: usize, out: &mut Vec<Line<'static>>) {
    let name = truncate(&one_line(&m.from), NAME_MAX);
    let name_style = if m.outgoing {
        Style::default()
            .fg(Color::Cyan)
            .add_modifier(Modifier::BOLD)
    } else {
        Style::default()
            .fg(Color::Yellow)
            .add_modifier(Modifier::BOLD)
    };
    let header = format!("{name}: ");
    let first_width = width.saturating_sub(INDENT + width_of(&header)).max(1);
    let body = visible(&m.body, "\n");
    let mut first = true;
    let start = out.len();
    for paragraph in body.split('\n') {
        let mut pieces = if first {
            hanging(paragraph, first_width, width - INDENT)
        } else {
            wrap(paragraph, width - INDENT)
        };
        if first {
            let text = pieces.remove(0);
            out.push(Line::from(vec![
                Span::styled(time.to_string(), Style::default().fg(Color::DarkGray)),
                Span::styled(header.clone(), name_style),
                Span::raw(text),
            ]));
            first = false;
        }
        for p in pieces {
            out.push(Line::from(vec![
                Span::raw(" ".repeat(INDENT)),
                Span::raw(p),
            ]));
        }
    }
    if let Some(tick) = &m.tick {
        add_tick(tick, width, start, out);
    }
}

/// Wraps with `first` columns for the first row and `rest` for the others.
fn hanging(text: &str, first: usize, rest: usize) -> Vec<String> {
    let mut pieces = wrap(text, first);
    if pieces.len() > 1 {
        let head = pieces.remove(0);
        let tail = &text[head.len()..];
        let mut out = vec![head];
        out.extend(wrap(tail, rest));
        return out;
    }
    pieces
}

/// The tick after the message's last row (on a row of its own when it does not fit).
fn add_tick(tick: &Tick, width: usize, start: usize, out: &mut Vec<Line<'static>>) {
    let (text, style) = match tick {
        Tick::Queued => (" ·".to_string(), Style::default().fg(Color::DarkGray)),
        Tick::Sent => (" ✓".to_string(), Style::default().fg(Color::DarkGray)),
        Tick::Delivered => (" ✓✓".to_string(), Style::default().fg(Color::Green)),
        Tick::Failed(why) => (
            format!(" ✗ not delivered: {} (Ctrl+R retries)", one_line(why)),
            Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
        ),
    };
    if out.len() <= start {
        return;
    }
    let Some(last) = out.last_mut() else {
        return;
    };
    if last.width() + width_of(&text) <= width {
        last.spans.push(Span::styled(text, style));
        return;
    }
    for piece in wrap(text.trim_start(), width - INDENT) {
        out.push(Line::from(vec![
            Span::raw(" ".repeat(INDENT)),
            Span::styled(piece, style),
        ]));
    }
}
