//! `chatctl peers`: the names the registry knows, with presence.

use peerchat_client::{Client, Error};
use peerchat_proto::control::{Request, Response};

use crate::exit::{self, Failure};
use crate::output;
use crate::safe_text::one_line;

pub fn run(mut client: Client, json: bool) -> Result<i32, Failure> {
    let (peers, from_cache) = client.call_expect(&Request::Peers, |r| match r {
        Response::Peers { peers, from_cache } => Ok((peers, from_cache)),
        r => Err(Error::unexpected(r)),
    })?;
    if from_cache && !json {
        eprintln!("chatctl: the registry is unreachable; showing chatd's cached addresses");
    }
    if json {
        for p in &peers {
            output::json(p);
        }
        return Ok(exit::OK);
    }
    // The registry relays what peers registered: every field is shown escaped.
    let rows: Vec<[String; 7]> = peers
        .iter()
        .map(|p| {
            let online = match p.online {
                Some(true) => "yes",
                Some(false) => "no",
                None => "?",
            };
            let kind = if p.legacy { "legacy" } else { "node" };
            [
                one_line(p.name.as_str()).into_owned(),
                one_line(&p.address).into_owned(),
                online.to_string(),
                kind.to_string(),
                one_line(p.fingerprint.as_deref().unwrap_or("-")).into_owned(),
                one_line(p.key.as_deref().unwrap_or("-")).into_owned(),
                one_line(p.last_seen.as_deref().unwrap_or("-")).into_owned(),
            ]
        })
        .collect();
    let w = rows
        .iter()
        .map(|r| r[0].chars().count())
        .max()
        .unwrap_or(4)
        .max(4);
    let a = rows
        .iter()
        .map(|r| r[1].chars().count())
        .max()
        .unwrap_or(7)
        .max(7);
    output::line(&format!(
        "{:w$}  {:a$}  {:6}  {:6}  {:39}  {:7}  LAST SEEN",
        "NAME", "ADDRESS", "ONLINE", "KIND", "FINGERPRINT", "KEY"
    ));
    for [name, address, online, kind, fingerprint, key, last_seen] in &rows {
        output::line(&format!(
            "{name:w$}  {address:a$}  {online:6}  {kind:6}  {fingerprint:39}  {key:7}  {last_seen}"
        ));
    }
    Ok(exit::OK)
}
