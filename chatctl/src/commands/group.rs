//! `chatctl group …`: named recipient lists kept by the local chatd.

use peerchat_client::{Client, Error};
use peerchat_proto::control::{GroupInfo, Request, Response};
use peerchat_proto::Name;

use crate::cli::GroupCommand;
use crate::exit::{self, Failure};
use crate::output;
use crate::safe_text::one_line;

fn name(s: &str, what: &str) -> Result<Name, Failure> {
    Name::new(s.trim_start_matches('@'))
        .map_err(|e| Failure::usage(format!("invalid {what} {s:?}: {e}")))
}

fn names(v: &[String]) -> Result<Vec<Name>, Failure> {
    v.iter().map(|s| name(s, "member")).collect()
}

/// The request for `cmd`, with its names checked (before connecting: a usage error is exit 2).
pub fn request(cmd: &GroupCommand) -> Result<Request, Failure> {
    Ok(match cmd {
        GroupCommand::Create { group, members } => Request::GroupCreate {
            group: name(group, "group")?,
            members: names(members)?,
        },
        GroupCommand::Add { group, members } => Request::GroupAdd {
            group: name(group, "group")?,
            members: names(members)?,
        },
        GroupCommand::Remove { group, members } => Request::GroupRemove {
            group: name(group, "group")?,
            members: names(members)?,
        },
        GroupCommand::Delete { group } => Request::GroupDelete {
            group: name(group, "group")?,
        },
        GroupCommand::List => Request::GroupList,
        GroupCommand::Show { group } => Request::GroupShow {
            group: name(group, "group")?,
        },
    })
}

pub fn run(mut client: Client, json: bool, request: Request) -> Result<i32, Failure> {
    match client.call(&request)? {
        Response::Group(g) => print(json, &g),
        Response::Groups { groups } => {
            for g in &groups {
                print(json, g);
            }
        }
        Response::Done => {
            if json {
                output::json(&serde_json::json!({"ok": true}));
            }
        }
        other => return Err(Error::unexpected(other).into()),
    }
    Ok(exit::OK)
}

fn print(json: bool, g: &GroupInfo) {
    if json {
        output::json(g);
    } else {
        // Names are validated when they are parsed; checked again, like any text chatd relays.
        let members: Vec<String> = g
            .members
            .iter()
            .map(|m| one_line(m.as_str()).into_owned())
            .collect();
        output::line(&format!(
            "{}: {}",
            one_line(g.name.as_str()),
            members.join(" ")
        ));
    }
}
