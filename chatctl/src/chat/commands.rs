//! The `/` commands typed in the input line.

use super::model::ConvId;

#[derive(Debug, Clone, PartialEq)]
pub enum SlashCommand {
    /// Open a conversation, optionally sending a first message.
    Msg(ConvId, Option<String>),
    /// `group` with its words, as `chatctl group` takes them.
    Group(Vec<String>),
    Trust(String),
    Search(String),
    Bell,
    Help,
    Quit,
}

/// `None` when `line` is not a command (it does not start with `/`, or starts with `//`,
/// which sends a message beginning with `/`). `Some(Err)` explains a bad command.
pub fn parse(line: &str) -> Option<Result<SlashCommand, String>> {
    let rest = line.strip_prefix('/')?;
    if rest.starts_with('/') {
        return None;
    }
    let (word, args) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let args = args.trim();
    Some(match word {
        "msg" | "m" | "query" => {
            let (to, text) = args.split_once(char::is_whitespace).unwrap_or((args, ""));
            match ConvId::parse(to) {
                Some(id) => Ok(SlashCommand::Msg(
                    id,
                    Some(text.trim_start().to_string()).filter(|t| !t.is_empty()),
                )),
                None => Err("usage: /msg NAME or /msg @GROUP [TEXT]".to_string()),
            }
        }
        "group" if !args.is_empty() => Ok(SlashCommand::Group(
            args.split_whitespace().map(str::to_string).collect(),
        )),
        "group" => Err("usage: /group create|add|remove|delete|list|show …".to_string()),
        "trust" if ConvId::parse(args).is_some_and(|c| !c.is_group()) => {
            Ok(SlashCommand::Trust(args.to_string()))
        }
        "trust" => Err("usage: /trust NAME".to_string()),
        "search" if !args.is_empty() => Ok(SlashCommand::Search(args.to_string())),
        "search" => Err("usage: /search TEXT".to_string()),
        "bell" => Ok(SlashCommand::Bell),
        "help" => Ok(SlashCommand::Help),
        "quit" | "q" | "exit" => Ok(SlashCommand::Quit),
        other => Err(format!(
            "unknown command /{}; /help lists them (start a message with // to send a /)",
            crate::safe_text::one_line(other)
        )),
    })
}

/// What a `//text` line sends: the text with one `/` removed.
pub fn unescape(line: &str) -> &str {
    if line.starts_with("//") {
        &line[1..]
    } else {
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_and_bad_ones_explain_themselves() {
        assert_eq!(
            parse("/msg pb 你好 there"),
            Some(Ok(SlashCommand::Msg(
                ConvId::peer("pb"),
                Some("你好 there".into())
            )))
        );
        assert_eq!(
            parse("/msg @ops"),
            Some(Ok(SlashCommand::Msg(ConvId::group("ops"), None)))
        );
        assert!(matches!(parse("/msg"), Some(Err(_))));
        assert!(matches!(parse("/trust @ops"), Some(Err(_))));
        assert_eq!(parse("/quit"), Some(Ok(SlashCommand::Quit)));
        assert!(matches!(parse("/nope"), Some(Err(_))));
        assert_eq!(parse("hello"), None);
        assert_eq!(parse("//etc/passwd"), None);
        assert_eq!(unescape("//etc"), "/etc");
        assert_eq!(unescape("plain"), "plain");
    }
}
