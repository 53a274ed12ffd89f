//! Wrapping by display width: CJK characters and most emoji take two columns, combining marks
//! and joiners none. Breaks after a space when the line has one, else between grapheme clusters
//! (CJK text has no spaces and may break anywhere).

use unicode_segmentation::UnicodeSegmentation;
use unicode_width::UnicodeWidthStr;

/// Columns `s` takes on a terminal.
pub fn width(s: &str) -> usize {
    s.graphemes(true).map(grapheme_width).sum()
}

fn grapheme_width(g: &str) -> usize {
    // A cluster occupies at least one cell once printed (a lone combining mark is drawn on a
    // space by terminals) and at most two.
    UnicodeWidthStr::width(g).clamp(1, 2)
}

/// `text` (one line, no newline) cut into pieces of at most `width` columns (at least one
/// piece, even for empty text). A cluster wider than `width` gets a piece of its own.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut lines = Vec::new();
    let mut line = String::new();
    let mut used = 0;
    // Byte offset in `line` just after its last space, and the width up to there.
    let mut last_space: Option<(usize, usize)> = None;
    for g in text.graphemes(true) {
        let w = grapheme_width(g);
        if used + w > width && !line.is_empty() {
            match last_space {
                Some((at, w_at)) if at < line.len() => {
                    let rest = line.split_off(at);
                    lines.push(std::mem::replace(&mut line, rest));
                    used -= w_at;
                }
                _ => {
                    lines.push(std::mem::take(&mut line));
                    used = 0;
                }
            }
            last_space = None;
        }
        line.push_str(g);
        used += w;
        if g == " " {
            last_space = Some((line.len(), used));
        }
    }
    lines.push(line);
    lines
}

/// `s` cut to at most `width` columns, with `…` when something was cut.
pub fn truncate(s: &str, width: usize) -> String {
    if self::width(s) <= width {
        return s.to_string();
    }
    let mut out = String::new();
    let mut used = 0;
    for g in s.graphemes(true) {
        let w = grapheme_width(g);
        if used + w + 1 > width {
            break;
        }
        out.push_str(g);
        used += w;
    }
    if width > 0 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cjk_is_two_columns_and_wraps_between_characters() {
        assert_eq!(width("你好"), 4);
        assert_eq!(wrap("你好世界你好", 5), vec!["你好", "世界", "你好"]);
        for l in wrap("你好世界你好世界你好世界", 7) {
            assert!(width(&l) <= 7, "{l}");
        }
    }

    #[test]
    fn words_wrap_at_spaces_and_long_words_are_cut() {
        assert_eq!(wrap("hello big world", 10), vec!["hello big ", "world"]);
        assert_eq!(wrap("abcdefghij", 4), vec!["abcd", "efgh", "ij"]);
        assert_eq!(wrap("", 4), vec![""]);
    }

    #[test]
    fn emoji_sequences_stay_whole() {
        let family = "👨\u{200d}👩\u{200d}👧";
        assert_eq!(width(family), 2);
        assert_eq!(wrap(&format!("a{family}b"), 2), vec!["a", family, "b"]);
    }

    #[test]
    fn truncate_marks_the_cut() {
        assert_eq!(truncate("你好世界", 5), "你好…");
        assert_eq!(truncate("abc", 5), "abc");
    }
}
