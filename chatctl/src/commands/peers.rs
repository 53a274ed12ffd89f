//! `chatctl peers`: the names the registry knows, with presence.

use peerchat_proto::control::{Request, Response};

use crate::client::Client;
use crate::exit::{self, Failure};
use crate::output;

pub fn run(mut client: Client, json: bool) -> Result<i32, Failure> {
    let Response::Peers { peers, from_cache } = client.call(Request::Peers)? else {
        return Err(Failure::new(
            exit::OTHER,
            "protocol",
            "unexpected reply from chatd",
        ));
    };
    if from_cache && !json {
        eprintln!("chatctl: the registry is unreachable; showing chatd's cached addresses");
    }
    if json {
        for p in &peers {
            output::json(p);
        }
        return Ok(exit::OK);
    }
    let w = peers
        .iter()
        .map(|p| p.name.as_str().len())
        .max()
        .unwrap_or(4)
        .max(4);
    let a = peers
        .iter()
        .map(|p| p.address.len())
        .max()
        .unwrap_or(7)
        .max(7);
    output::line(&format!(
        "{:w$}  {:a$}  {:6}  {:6}  {:39}  {:7}  LAST SEEN",
        "NAME", "ADDRESS", "ONLINE", "KIND", "FINGERPRINT", "KEY"
    ));
    for p in &peers {
        let online = match p.online {
            Some(true) => "yes",
            Some(false) => "no",
            None => "?",
        };
        let kind = if p.legacy { "legacy" } else { "node" };
        output::line(&format!(
            "{:w$}  {:a$}  {:6}  {:6}  {:39}  {:7}  {}",
            p.name.as_str(),
            p.address,
            online,
            kind,
            p.fingerprint.as_deref().unwrap_or("-"),
            p.key.as_deref().unwrap_or("-"),
            p.last_seen.as_deref().unwrap_or("-")
        ));
    }
    Ok(exit::OK)
}
