//! Untrusted text (message bodies, names, group names, errors quoted from peers or the
//! registry) made safe to print on a terminal.
//!
//! A peer chooses every byte of a body. Printed raw, it could clear the screen (`ESC[2J`), set
//! the window title (OSC), ring the bell, move the cursor back with CR to overwrite the line
//! with a fake `[99] … alice: …`, or reorder what follows with a bidi override. [`visible`]
//! turns every such character into a visible escape and keeps everything else (any script,
//! emoji with their joiners and variation selectors) as it is. `--json` output never goes
//! through here: serde_json already escapes controls, and the body stays exact.

use std::borrow::Cow;
use std::fmt::Write;

/// What a newline becomes in a multi-line view: a newline plus this indent, so that a
/// continuation line never starts at column 0 (where a new `[seq] time from: body` line starts).
pub const INDENT: &str = "\n    ";

/// What a newline becomes in a one-line field (names, addresses, table cells).
pub const ONE_LINE: &str = "\\n";

/// `s` with every character that could act on a terminal shown as an escape instead:
///
/// - `\` itself as `\\`, so a peer cannot forge an escape;
/// - newline as `newline` ([`INDENT`] or [`ONE_LINE`]);
/// - TAB and CR as `\t` and `\r`; the other C0 controls (ESC, BEL, BS, VT, FF, …) and DEL as
///   `\xNN` (ESC is `\x1b`);
/// - C1 controls (U+0080–U+009F, e.g. the 8-bit CSI U+009B and NEL U+0085), the bidi controls
///   (U+061C, U+200E, U+200F, U+202A–U+202E, U+2066–U+2069) and other invisible format or
///   line-breaking characters (U+200B, U+2028, U+2029, U+2060–U+2064, U+206A–U+206F, U+180E,
///   U+FEFF, U+FFF9–U+FFFB, U+E0001) as `\u{XXXX}`.
///
/// ZERO WIDTH JOINER (U+200D) and NON-JOINER (U+200C), variation selectors and emoji tag
/// characters stay: emoji sequences and several scripts need them, and they cannot move the
/// cursor or reorder text.
pub fn visible<'a>(s: &'a str, newline: &str) -> Cow<'a, str> {
    if !s.chars().any(|c| c == '\\' || c == '\n' || dangerous(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str(newline),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c == '\x7f' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if dangerous(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Whether `c` (other than `\` and newline) must be escaped.
fn dangerous(c: char) -> bool {
    matches!(c,
        '\0'..='\x1f' | '\x7f'..='\u{9f}'
        // bidi: ALM, LRM, RLM, LRE/RLE/PDF/LRO/RLO, LRI/RLI/FSI/PDI
        | '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        // invisible or line-breaking: ZWSP, LINE/PARAGRAPH SEPARATOR, WORD JOINER and invisible
        // operators, deprecated format controls, MONGOLIAN VOWEL SEPARATOR, BOM, interlinear
        // annotation, LANGUAGE TAG
        | '\u{200b}' | '\u{2028}' | '\u{2029}' | '\u{2060}'..='\u{2064}' | '\u{206a}'..='\u{206f}'
        | '\u{180e}' | '\u{feff}' | '\u{fff9}'..='\u{fffb}' | '\u{e0001}')
}

/// [`visible`] for a one-line field.
pub fn one_line(s: &str) -> Cow<'_, str> {
    visible(s, ONE_LINE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ml(s: &str) -> String {
        visible(s, INDENT).into_owned()
    }

    #[test]
    fn plain_text_cjk_and_emoji_are_unchanged() {
        for s in [
            "hello, world",
            "你好，世界",
            "👨‍👩‍👧",
            "\u{1f468}\u{200d}\u{1f469}\u{200d}\u{1f467}", // the same, spelled out: ZWJs
            "\u{2764}\u{fe0f}",                            // VARIATION SELECTOR-16
            "\u{1f3f4}\u{e0067}\u{e0062}\u{e0073}\u{e0063}\u{e0074}\u{e007f}", // tag characters
            "\u{645}\u{6cc}\u{200c}\u{62e}\u{648}\u{627}\u{647}\u{645}", // ZWNJ in Persian
            "مرحبا שלום", // right-to-left scripts without overrides
            "café ñ ü ß ÿ",
        ] {
            assert!(
                matches!(visible(s, INDENT), Cow::Borrowed(_)),
                "{s:?} changed"
            );
        }
    }

    #[test]
    fn c0_controls_del_and_backslash_become_escapes() {
        assert_eq!(ml("\x1b[2J"), "\\x1b[2J");
        assert_eq!(ml("\x1b]0;pwned\x07"), "\\x1b]0;pwned\\x07");
        assert_eq!(ml("a\rb"), "a\\rb");
        assert_eq!(ml("a\tb"), "a\\tb");
        assert_eq!(ml("\0\x08\x0b\x0c\x7f"), "\\x00\\x08\\x0b\\x0c\\x7f");
        for b in (0u8..0x20).filter(|b| *b != b'\n') {
            let s = (b as char).to_string();
            let v = ml(&s);
            assert!(v.starts_with('\\') && v.is_ascii(), "{b:#x} -> {v:?}");
            assert!(!v.bytes().any(|x| x < 0x20 || x == 0x7f), "{b:#x} -> {v:?}");
        }
        // A literal backslash cannot pass for an escape.
        assert_eq!(ml("\\x1b"), "\\\\x1b");
        assert_ne!(ml("\\x1b"), ml("\x1b"));
    }

    #[test]
    fn c1_bidi_and_invisible_format_characters_become_escapes() {
        assert_eq!(ml("\u{9b}2J"), "\\u{9b}2J");
        assert_eq!(ml("\u{85}"), "\\u{85}");
        for c in ('\u{80}'..='\u{9f}').chain([
            '\u{061c}',
            '\u{200e}',
            '\u{200f}',
            '\u{202a}',
            '\u{202b}',
            '\u{202c}',
            '\u{202d}',
            '\u{202e}',
            '\u{2066}',
            '\u{2067}',
            '\u{2068}',
            '\u{2069}',
            '\u{200b}',
            '\u{2028}',
            '\u{2029}',
            '\u{2060}',
            '\u{feff}',
            '\u{180e}',
            '\u{fff9}',
            '\u{e0001}',
        ]) {
            let v = ml(&format!("a{c}b"));
            assert_eq!(v, format!("a\\u{{{:x}}}b", c as u32));
        }
        assert_eq!(ml("abc\u{202e}fed"), "abc\\u{202e}fed");
    }

    #[test]
    fn newlines_are_indented_or_escaped() {
        assert_eq!(ml("one\ntwo"), "one\n    two");
        assert_eq!(visible("one\ntwo", ONE_LINE), "one\\ntwo");
        // A forged message line never reaches column 0.
        let v = ml("hi\r[99] 2025-01-01T00:00:00.000Z alice: forged\n[98] x bob: y");
        assert!(v.lines().skip(1).all(|l| l.starts_with("    ")));
        assert!(!v.contains('\r'));
    }
}
