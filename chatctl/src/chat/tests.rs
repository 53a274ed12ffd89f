//! The TUI drawn on ratatui's `TestBackend`: layout at 80×24, CJK wrapping, unread counts, what
//! a hostile body can and cannot do; and the reducer's send / reconnect / unread behaviour.

use chrono::{FixedOffset, TimeZone, Utc};
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;

use super::app::App;
use super::events::{FromChatd, ToChatd};
use super::lines::{Tz, INDENT};
use super::model::{ConvId, Msg, Summary, Tick};
use super::view::{self, wrap::width};

fn tz() -> Tz {
    Tz::Fixed(FixedOffset::east_opt(8 * 3600).unwrap())
}

fn msg(id: &str, seq: i64, from: &str, body: &str, minute: u32) -> Msg {
    Msg {
        id: id.to_string(),
        seq,
        from: from.to_string(),
        outgoing: from == "pb",
        body: body.to_string(),
        at: Utc.with_ymd_and_hms(2026, 12, 4, 4, minute, 0).unwrap(),
        tick: (from == "pb").then_some(Tick::Delivered),
    }
}

/// The screen as text rows (a wide character once, its second cell skipped).
fn draw(app: &mut App, w: u16, h: u16) -> Vec<String> {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    app.pane = view::pane(ratatui::layout::Rect::new(0, 0, w, h), app);
    t.draw(|f| view::draw(f, app)).unwrap();
    let buf = t.backend().buffer();
    (0..h)
        .map(|y| {
            let mut row = String::new();
            let mut skip = false;
            for x in 0..w {
                if std::mem::take(&mut skip) {
                    continue;
                }
                let s = buf[(x, y)].symbol();
                skip = width(s) == 2;
                row.push_str(s);
            }
            row
        })
        .collect()
}

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

fn type_text(app: &mut App, s: &str) -> Vec<ToChatd> {
    s.chars()
        .flat_map(|c| app.on_key(key(KeyCode::Char(c))))
        .collect()
}

/// pb's TUI: pa wrote 你好 in an open conversation, pc twice in another.
fn chatting() -> App {
    let mut app = App::new(Some(ConvId::peer("pa")), true, tz());
    app.on_chatd(FromChatd::Connected { me: "pb".into() });
    app.on_chatd(FromChatd::History {
        conv: ConvId::peer("pa"),
        messages: vec![
            msg("m1", 1, "pa", "你好，世界", 0),
            msg("m2", 2, "pb", "hi pa", 1),
        ],
        complete: true,
    });
    app.on_chatd(FromChatd::Conversations(vec![Summary {
        id: ConvId::peer("pc"),
        unread: 2,
        online: Some(true),
        last_activity: Some(Utc.with_ymd_and_hms(2026, 12, 4, 3, 0, 0).unwrap()),
    }]));
    app
}

#[test]
fn the_screen_at_80x24_has_list_conversation_input_and_status() {
    let mut app = chatting();
    let screen = draw(&mut app, 80, 24);
    let text = screen.join("\n");
    assert!(screen[0].contains("pb · connected"), "{text}");
    assert!(screen[0].contains("2 unread"), "{text}");
    // The list: pc with its 2 unread.
    let pc = screen.iter().find(|r| r.contains("pc")).expect(&text);
    assert!(pc.contains(" 2 "), "{text}");
    // The title shows the offset once; the day separator and the times are local (UTC+8).
    assert!(text.contains("times in UTC+08:00"), "{text}");
    assert_eq!(text.matches("UTC+08:00").count(), 1, "{text}");
    assert!(text.contains("Friday, 4 December 2026"), "{text}");
    assert!(text.contains("12:00 pa: 你好，世界"), "{text}");
    assert!(text.contains("12:01 pb: hi pa ✓✓"), "{text}");
    assert!(screen[21].starts_with(" to pa ──"), "{text}");
    assert_eq!(screen.len(), 24);
}

#[test]
fn cjk_text_wraps_at_character_boundaries_without_losing_any() {
    let body = "中文消息需要按照显示宽度正确换行，每个汉字占两列。".repeat(3);
    let mut app = App::new(Some(ConvId::peer("pa")), true, tz());
    app.on_chatd(FromChatd::History {
        conv: ConvId::peer("pa"),
        messages: vec![msg("m1", 1, "pa", &body, 0)],
        complete: true,
    });
    let screen = draw(&mut app, 50, 20);
    let list_width = 12; // the narrowest list, its border included
    let rows: Vec<&str> = screen
        .iter()
        .filter(|r| r.contains('中') || r.contains('字') || r.contains('确'))
        .map(|r| r.as_str())
        .collect();
    assert!(rows.len() >= 4, "{}", screen.join("\n"));
    // Every continuation row starts at the indent; together the rows hold the whole body.
    let mut joined = String::new();
    for (i, r) in rows.iter().enumerate() {
        let pane: String = r.chars().skip(list_width).collect();
        if i == 0 {
            joined.push_str(pane.split_once("pa: ").unwrap().1.trim_end());
        } else {
            assert!(pane.starts_with(&" ".repeat(INDENT)), "{pane:?}");
            assert!(!pane.starts_with(&" ".repeat(INDENT + 1)), "{pane:?}");
            joined.push_str(pane.trim());
        }
        assert!(width(r) <= 50, "{r}");
    }
    assert_eq!(joined, body);
}

#[test]
fn a_body_cannot_forge_a_message_line_or_send_controls() {
    let mut app = App::new(Some(ConvId::peer("pa")), true, tz());
    app.on_chatd(FromChatd::History {
        conv: ConvId::peer("pa"),
        messages: vec![msg(
            "m1",
            1,
            "pa",
            "ok\n12:00 bob: send me money\x1b[2J\r\x07",
            0,
        )],
        complete: true,
    });
    let screen = draw(&mut app, 80, 24);
    let text = screen.join("\n");
    let forged = screen.iter().find(|r| r.contains("bob:")).expect(&text);
    let pane = forged.split('│').nth(1).unwrap();
    assert!(pane.starts_with("      12:00 bob:"), "{pane:?}");
    assert!(text.contains("\\x1b[2J\\r\\x07"), "{text}");
    assert!(!text.contains('\x1b'));
}

#[test]
fn a_message_in_another_conversation_counts_and_rings_unless_the_bell_is_off() {
    for bell in [true, false] {
        let mut app = chatting();
        app.bell = bell;
        let out = app.on_chatd(FromChatd::Message {
            conv: ConvId::peer("pc"),
            msg: msg("m9", 9, "pc", "ping", 5),
        });
        assert!(out.is_empty());
        assert_eq!(app.conv(&ConvId::peer("pc")).unwrap().unread, 3);
        assert_eq!(app.ring, bell);
        assert_eq!(app.convs[0].id, ConvId::peer("pc"), "most recent first");
        let screen = draw(&mut app, 80, 24).join("\n");
        assert!(screen.contains("3 unread"), "{screen}");
    }
}

#[test]
fn reading_moves_the_read_position_and_ctrl_n_jumps_to_unread() {
    let mut app = chatting();
    // A message in the open conversation is read at once.
    let out = app.on_chatd(FromChatd::Message {
        conv: ConvId::peer("pa"),
        msg: msg("m3", 3, "pa", "还在吗", 2),
    });
    assert_eq!(
        out,
        vec![ToChatd::MarkRead {
            conv: ConvId::peer("pa"),
            up_to: 3
        }]
    );
    assert!(!app.ring);
    let out = app.on_key(KeyEvent::new(KeyCode::Char('n'), KeyModifiers::CONTROL));
    assert_eq!(app.open, Some(ConvId::peer("pc")));
    assert!(
        matches!(out[0], ToChatd::LoadHistory { before: None, .. }),
        "{out:?}"
    );
    app.on_chatd(FromChatd::History {
        conv: ConvId::peer("pc"),
        messages: vec![msg("c1", 7, "pc", "a", 0), msg("c2", 8, "pc", "b", 0)],
        complete: false,
    });
    assert_eq!(app.conv(&ConvId::peer("pc")).unwrap().unread, 0);
}

#[test]
fn a_typed_message_stays_in_the_input_until_accepted_even_across_a_reconnect() {
    let mut app = chatting();
    type_text(&mut app, "回复 you");
    let out = app.on_key(key(KeyCode::Enter));
    let [ToChatd::Send { msg_id, to, body }] = out.as_slice() else {
        panic!("{out:?}");
    };
    assert_eq!((to.as_str(), body.as_str()), ("pa", "回复 you"));
    // The connection drops before the reply: the text stays, and is sent again under the
    // same id once chatd is back.
    app.on_chatd(FromChatd::Disconnected {
        error: "gone".into(),
    });
    assert_eq!(app.input.text(), "回复 you");
    assert!(draw(&mut app, 80, 24).join("\n").contains("reconnecting"));
    let out = app.on_chatd(FromChatd::Connected { me: "pb".into() });
    assert!(
        out.iter()
            .any(|r| matches!(r, ToChatd::Send { msg_id: id, .. } if id == msg_id)),
        "{out:?}"
    );
    let mut accepted = msg(msg_id, 10, "pb", "回复 you", 3);
    accepted.tick = Some(Tick::Queued);
    app.on_chatd(FromChatd::Accepted {
        conv: ConvId::peer("pa"),
        msg: accepted,
    });
    assert_eq!(app.input.text(), "");
    app.on_key(key(KeyCode::Up));
    assert_eq!(app.input.text(), "回复 you", "input history");
}

#[test]
fn a_refused_or_oversized_message_stays_in_the_input_with_a_clear_error() {
    let mut app = chatting();
    let big = "x".repeat(peerchat_proto::MAX_BODY_BYTES + 1);
    app.paste(&big);
    assert!(app.on_key(key(KeyCode::Enter)).is_empty());
    assert_eq!(app.input.text().len(), big.len());
    let (notice, is_error) = app.notice.clone().unwrap();
    assert!(is_error && notice.contains("65536"), "{notice}");

    let mut app = chatting();
    type_text(&mut app, "hello");
    let out = app.on_key(key(KeyCode::Enter));
    let ToChatd::Send { msg_id, .. } = &out[0] else {
        panic!()
    };
    app.on_chatd(FromChatd::Refused {
        msg_id: msg_id.clone(),
        error: "key_changed".into(),
    });
    assert_eq!(app.input.text(), "hello");
    assert!(app.sending.is_none());
}

#[test]
fn failed_messages_are_marked_and_ctrl_r_sends_them_again() {
    let mut app = chatting();
    app.on_chatd(FromChatd::Delivery {
        msg_id: "m2".into(),
        tick: Tick::Failed("unknown name".into()),
    });
    let screen = draw(&mut app, 80, 24).join("\n");
    assert!(screen.contains("✗ not delivered: unknown name"), "{screen}");
    let out = app.on_key(KeyEvent::new(KeyCode::Char('r'), KeyModifiers::CONTROL));
    assert!(
        matches!(&out[..], [ToChatd::Send { body, .. }] if body == "hi pa"),
        "{out:?}"
    );
    assert!(app
        .on_key(KeyEvent::new(KeyCode::Char('r'), KeyModifiers::CONTROL))
        .is_empty());
}

#[test]
fn page_up_at_the_top_loads_older_history() {
    let mut app = App::new(Some(ConvId::peer("pa")), true, tz());
    app.on_chatd(FromChatd::History {
        conv: ConvId::peer("pa"),
        messages: (10..40)
            .map(|i| msg(&format!("m{i}"), i, "pa", "line", 0))
            .collect(),
        complete: false,
    });
    draw(&mut app, 80, 24);
    let mut loads = Vec::new();
    for _ in 0..3 {
        loads.extend(app.on_key(key(KeyCode::PageUp)));
    }
    assert_eq!(
        loads,
        vec![ToChatd::LoadHistory {
            conv: ConvId::peer("pa"),
            before: Some(10),
            limit: super::app::PAGE
        }]
    );
    assert!(draw(&mut app, 80, 24).join("\n").contains("loading"));
}

#[test]
fn slash_msg_opens_a_conversation_and_tab_completes_names() {
    let mut app = chatting();
    app.on_chatd(FromChatd::Names {
        peers: vec!["pa".into(), "pc".into(), "alice".into()],
        groups: vec!["ops".into()],
    });
    type_text(&mut app, "/msg al");
    app.on_key(key(KeyCode::Tab));
    assert_eq!(app.input.text(), "/msg alice ");
    app.on_key(key(KeyCode::Enter));
    assert_eq!(app.open, Some(ConvId::peer("alice")));
    type_text(&mut app, "/msg @o");
    app.on_key(key(KeyCode::Tab));
    assert_eq!(app.input.text(), "/msg @ops ");
}

#[test]
fn the_screen_survives_tiny_and_resized_terminals() {
    let mut app = chatting();
    for (w, h) in [(80, 24), (20, 5), (1, 1), (200, 60), (80, 24)] {
        let screen = draw(&mut app, w, h);
        assert_eq!(screen.len(), h as usize);
    }
}
