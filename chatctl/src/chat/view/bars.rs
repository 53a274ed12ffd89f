//! The top bar (who, connection, unread total), the input line and the status line.

use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};
use ratatui::Frame;

use super::super::app::{App, Connection};
use crate::safe_text::one_line;

pub fn top(frame: &mut Frame, area: Rect, app: &App) {
    let me = app.me.as_deref().map(one_line).unwrap_or_default();
    let (conn, color) = match &app.connection {
        Connection::Connecting => ("connecting…".to_string(), Color::Yellow),
        Connection::Connected => ("connected".to_string(), Color::Green),
        Connection::Reconnecting(_) => ("chatd away, reconnecting…".to_string(), Color::Red),
    };
    let unread = app.total_unread();
    let mut spans = vec![
        Span::styled(" peerchat ", Style::default().add_modifier(Modifier::BOLD)),
        Span::raw(format!("{me} · ")),
        Span::styled(conn, Style::default().fg(color)),
    ];
    if unread > 0 {
        spans.push(Span::styled(
            format!(" · {unread} unread (Ctrl+N)"),
            Style::default().fg(Color::Yellow),
        ));
    }
    if !app.bell {
        spans.push(Span::raw(" · bell off"));
    }
    spans.push(Span::styled(
        " · F1 help",
        Style::default().fg(Color::DarkGray),
    ));
    frame.render_widget(
        Paragraph::new(Line::from(spans)).style(Style::default().bg(Color::Indexed(236))),
        area,
    );
}

pub fn input(frame: &mut Frame, area: Rect, app: &App) {
    let to = match &app.open {
        Some(id) => format!(" to {} ", one_line(id.as_str())),
        None => " /msg NAME to start ".to_string(),
    };
    let label = if app.sending.is_some() {
        format!("{to}· sending… ")
    } else {
        to
    };
    let block = Block::default()
        .borders(Borders::TOP)
        .title(label)
        .border_style(Style::default().fg(Color::DarkGray));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    frame.render_widget(app.input.widget(), inner);
}

pub fn status(frame: &mut Frame, area: Rect, app: &App) {
    let line = match (&app.notice, &app.connection) {
        (Some((text, true)), _) => {
            Span::styled(one_line(text).into_owned(), Style::default().fg(Color::Red))
        }
        (Some((text, false)), _) => Span::raw(one_line(text).into_owned()),
        (None, Connection::Reconnecting(e)) => Span::styled(
            format!(
                "lost chatd ({}); reconnecting… nothing typed is lost",
                one_line(e)
            ),
            Style::default().fg(Color::Red),
        ),
        (None, _) => Span::styled(
            "Enter send · Alt+Enter newline · Ctrl+N next unread · PgUp older · /help",
            Style::default().fg(Color::DarkGray),
        ),
    };
    frame.render_widget(Paragraph::new(Line::from(line)), area);
}
