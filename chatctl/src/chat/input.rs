//! The input line: ratatui-textarea for editing (cursor moves, word deletes, undo, several
//! lines after Alt+Enter), plus what a chat input adds: the history of sent lines (Up/Down) and
//! Tab completion of names and `@groups`.

use ratatui::crossterm::event::KeyEvent;
use ratatui::style::{Modifier, Style};
use ratatui_textarea::{CursorMove, TextArea, WrapMode};

/// Lines kept for Up/Down.
const HISTORY: usize = 500;

pub struct Input {
    area: TextArea<'static>,
    history: Vec<String>,
    /// While browsing the history: the entry shown, and the draft that was there before.
    browsing: Option<(usize, String)>,
}

impl Default for Input {
    fn default() -> Input {
        Input {
            area: new_area(Vec::new()),
            history: Vec::new(),
            browsing: None,
        }
    }
}

fn new_area(lines: Vec<String>) -> TextArea<'static> {
    let mut area = TextArea::new(lines);
    area.set_cursor_line_style(Style::default());
    area.set_cursor_style(Style::default().add_modifier(Modifier::REVERSED));
    area.set_wrap_mode(WrapMode::WordOrGlyph);
    area
}

impl Input {
    pub fn text(&self) -> String {
        self.area.lines().join("\n")
    }

    pub fn lines(&self) -> usize {
        self.area.lines().len()
    }

    pub fn widget(&self) -> &TextArea<'static> {
        &self.area
    }

    /// Replaces the text, cursor at its end.
    pub fn set_text(&mut self, text: &str) {
        let lines = text.split('\n').map(str::to_string).collect();
        self.area = new_area(lines);
        self.area.move_cursor(CursorMove::Bottom);
        self.area.move_cursor(CursorMove::End);
    }

    pub fn clear(&mut self) {
        self.set_text("");
        self.browsing = None;
    }

    /// An ordinary editing key (characters, Backspace, arrows within the text, Ctrl+W, …).
    pub fn edit(&mut self, key: KeyEvent) {
        self.area.input(key);
    }

    pub fn insert(&mut self, text: &str) {
        self.area.insert_str(text);
    }

    pub fn newline(&mut self) {
        self.area.insert_newline();
    }

    /// Whether Up/Down should browse the history rather than move between the input's lines.
    pub fn on_first_line(&self) -> bool {
        self.area.cursor().0 == 0
    }

    pub fn on_last_line(&self) -> bool {
        self.area.cursor().0 + 1 >= self.area.lines().len()
    }

    pub fn move_up(&mut self) {
        self.area.move_cursor(CursorMove::Up);
    }

    pub fn move_down(&mut self) {
        self.area.move_cursor(CursorMove::Down);
    }

    /// Remembers a sent line (not twice in a row).
    pub fn remember(&mut self, line: &str) {
        if self.history.last().map(String::as_str) != Some(line) {
            self.history.push(line.to_string());
            if self.history.len() > HISTORY {
                self.history.remove(0);
            }
        }
        self.browsing = None;
    }

    /// Up: the previous history entry (the draft is kept to come back to).
    pub fn history_prev(&mut self) {
        let (at, draft) = match self.browsing.take() {
            Some((0, d)) => (0, d),
            Some((i, d)) => (i - 1, d),
            None if self.history.is_empty() => return,
            None => (self.history.len() - 1, self.text()),
        };
        let entry = self.history[at].clone();
        self.set_text(&entry);
        self.browsing = Some((at, draft));
    }

    /// Down: the next history entry, or back to the draft.
    pub fn history_next(&mut self) {
        match self.browsing.take() {
            Some((i, d)) if i + 1 < self.history.len() => {
                let entry = self.history[i + 1].clone();
                self.set_text(&entry);
                self.browsing = Some((i + 1, d));
            }
            Some((_, d)) => self.set_text(&d),
            None => {}
        }
    }

    /// Tab: completes the word before the cursor from `candidates`. Returns the candidates
    /// that still match when there is more than one (to show them).
    pub fn complete(&mut self, candidates: &[String]) -> Vec<String> {
        let (row, col) = (self.area.cursor().0, self.area.cursor().1);
        let line: Vec<char> = self.area.lines()[row].chars().collect();
        let start = line[..col]
            .iter()
            .rposition(|c| c.is_whitespace())
            .map_or(0, |i| i + 1);
        let word: String = line[start..col].iter().collect();
        let matches: Vec<String> = candidates
            .iter()
            .filter(|c| c.starts_with(&word))
            .cloned()
            .collect();
        let Some(first) = matches.first() else {
            return Vec::new();
        };
        let common = matches.iter().fold(first.clone(), |acc, m| {
            acc.chars()
                .zip(m.chars())
                .take_while(|(a, b)| a == b)
                .map(|(a, _)| a)
                .collect()
        });
        let mut insert: String = common.chars().skip(word.chars().count()).collect();
        if matches.len() == 1 {
            insert.push(' ');
        }
        self.area.insert_str(insert);
        if matches.len() > 1 {
            matches
        } else {
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(s: &str) -> Input {
        let mut i = Input::default();
        i.set_text(s);
        i
    }

    #[test]
    fn history_goes_back_and_returns_to_the_draft() {
        let mut i = Input::default();
        i.remember("one");
        i.remember("two");
        i.set_text("draft");
        i.history_prev();
        assert_eq!(i.text(), "two");
        i.history_prev();
        i.history_prev();
        assert_eq!(i.text(), "one");
        i.history_next();
        assert_eq!(i.text(), "two");
        i.history_next();
        assert_eq!(i.text(), "draft");
    }

    #[test]
    fn tab_completes_a_unique_name_or_the_common_prefix() {
        let names = ["alice".to_string(), "albert".into(), "@ops".into()];
        let mut i = typed("/msg ali");
        assert!(i.complete(&names).is_empty());
        assert_eq!(i.text(), "/msg alice ");
        let mut i = typed("/msg a");
        assert_eq!(i.complete(&names).len(), 2);
        assert_eq!(i.text(), "/msg al");
        let mut i = typed("/msg @o");
        i.complete(&names);
        assert_eq!(i.text(), "/msg @ops ");
    }
}
