//! Help and search results, drawn over the list and the messages.

use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};
use ratatui::Frame;

use super::super::app::{App, Overlay};
use super::super::keys::{COMMANDS, KEYS};
use super::wrap::truncate;
use crate::safe_text::one_line;

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let (title, lines) = match &app.overlay {
        Overlay::None => return,
        Overlay::Help => (" keys (Esc closes) ".to_string(), help()),
        Overlay::Search { query, hits } => (
            format!(
                " {} found for {:?} (Esc closes) ",
                hits.len(),
                one_line(query)
            ),
            hits.iter()
                .map(|(conv, m)| {
                    let at = app.tz.convert(m.at).format("%m-%d %H:%M ").to_string();
                    let text = format!(
                        "{at}{} {}: {}",
                        one_line(conv.as_str()),
                        one_line(&m.from),
                        one_line(&m.body)
                    );
                    Line::raw(truncate(&text, area.width.saturating_sub(2) as usize))
                })
                .collect(),
        ),
    };
    frame.render_widget(Clear, area);
    let block = Block::default().borders(Borders::ALL).title(title);
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

fn help() -> Vec<Line<'static>> {
    let key = Style::default()
        .fg(Color::Cyan)
        .add_modifier(Modifier::BOLD);
    let mut lines: Vec<Line> = KEYS
        .iter()
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(format!("{k:<18} "), key),
                Span::raw(*what),
            ])
        })
        .collect();
    lines.push(Line::raw(""));
    lines.extend(
        COMMANDS.iter().map(|(c, what)| {
            Line::from(vec![Span::styled(format!("{c} "), key), Span::raw(*what)])
        }),
    );
    lines
}
