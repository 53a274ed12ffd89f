//! The open conversation: its title (with the UTC offset, shown once) and its messages,
//! bottom-aligned, scrolled by the conversation's `scroll`.

use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::super::app::App;
use super::super::lines;
use crate::safe_text::one_line;

pub fn title(frame: &mut Frame, area: Rect, app: &App) {
    let Some(c) = app.open_conv() else {
        frame.render_widget(
            Paragraph::new(" no conversation open: /msg NAME, or Ctrl+N for unread"),
            area,
        );
        return;
    };
    let presence = match (c.id.is_group(), c.online) {
        (true, _) => "group",
        (false, Some(true)) => "online",
        (false, Some(false)) => "offline",
        (false, None) => "",
    };
    let mut spans = vec![
        Span::styled(
            format!(" {} ", one_line(c.id.as_str())),
            Style::default().add_modifier(Modifier::BOLD),
        ),
        Span::styled(
            format!(
                "{presence}{}times in {}",
                if presence.is_empty() { "" } else { " · " },
                app.tz.label()
            ),
            Style::default().fg(Color::DarkGray),
        ),
    ];
    if c.loading {
        spans.push(Span::raw(" · loading…"));
    } else if c.scroll > 0 {
        spans.push(Span::raw(format!(" · ↑{} (PgDn)", c.scroll)));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let Some(c) = app.open_conv() else {
        return;
    };
    let rows = lines::rows(c, area.width as usize, app.tz);
    let height = area.height as usize;
    let end = rows
        .len()
        .saturating_sub(c.scroll.min(rows.len().saturating_sub(height)));
    let start = end.saturating_sub(height);
    let mut shown: Vec<Line> = rows[start..end].to_vec();
    if start == 0 && c.history_complete && shown.len() < height {
        shown.insert(
            0,
            Line::styled(
                "(beginning of the conversation)",
                Style::default().fg(Color::DarkGray),
            ),
        );
    }
    // Bottom-aligned, like a chat.
    let pad = height.saturating_sub(shown.len());
    let mut all = vec![Line::raw(""); pad];
    all.extend(shown);
    frame.render_widget(Paragraph::new(all), area);
}
