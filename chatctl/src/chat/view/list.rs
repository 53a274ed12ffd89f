//! The conversation list: presence, name, unread count, last activity.

use chrono::Utc;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};
use ratatui::Frame;

use super::super::app::App;
use super::super::model::Conversation;
use super::wrap::{truncate, width};
use crate::safe_text::one_line;

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let block = Block::default()
        .borders(Borders::RIGHT)
        .border_style(Style::default().fg(Color::DarkGray));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let w = inner.width as usize;
    let lines: Vec<Line> = app
        .convs
        .iter()
        .take(inner.height as usize)
        .map(|c| row(c, app.open.as_ref() == Some(&c.id), w, app))
        .collect();
    frame.render_widget(Paragraph::new(lines), inner);
}

/// `● name   (3) 12:04`: presence, name, unread count, last activity (time today, else date).
fn row(c: &Conversation, open: bool, w: usize, app: &App) -> Line<'static> {
    let (dot, dot_color) = match (c.id.is_group(), c.online) {
        (true, _) => ("#", Color::Blue),
        (false, Some(true)) => ("●", Color::Green),
        (false, Some(false)) => ("○", Color::DarkGray),
        (false, None) => ("·", Color::DarkGray),
    };
    let unread = if c.unread > 0 {
        format!(" {}", c.unread.min(999))
    } else {
        String::new()
    };
    let when = c
        .last_activity
        .map(|t| {
            let local = app.tz.convert(t);
            if local.date_naive() == app.tz.convert(Utc::now()).date_naive() {
                local.format(" %H:%M").to_string()
            } else {
                local.format(" %m-%d").to_string()
            }
        })
        .unwrap_or_default();
    let room = w.saturating_sub(2 + width(&unread) + width(&when));
    let name = truncate(&one_line(c.id.as_str()), room);
    let pad = " ".repeat(room.saturating_sub(width(&name)));
    let mut style = Style::default();
    if c.unread > 0 {
        style = style.add_modifier(Modifier::BOLD);
    }
    if open {
        style = style.bg(Color::Indexed(238));
    }
    Line::from(vec![
        Span::styled(format!("{dot} "), Style::default().fg(dot_color)),
        Span::styled(format!("{name}{pad}"), style),
        Span::styled(
            unread,
            Style::default()
                .fg(Color::Yellow)
                .add_modifier(Modifier::BOLD),
        ),
        Span::styled(when, Style::default().fg(Color::DarkGray)),
    ])
}
