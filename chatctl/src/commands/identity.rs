//! `chatctl whoami`, `trust NAME`, `rotate-key`.

use peerchat_proto::control::{Request, Response};
use peerchat_proto::Name;

use crate::client::Client;
use crate::exit::{self, Failure};
use crate::output;

fn unexpected() -> Failure {
    Failure::new(exit::OTHER, "protocol", "unexpected reply from chatd")
}

pub fn whoami(mut client: Client, json: bool) -> Result<i32, Failure> {
    let reply = client.call(Request::Whoami)?;
    let Response::Identity {
        name,
        key,
        fingerprint,
    } = &reply
    else {
        return Err(unexpected());
    };
    if json {
        output::json(&reply);
    } else {
        output::line(&format!("name:        {name}"));
        output::line(&format!("fingerprint: {fingerprint}"));
        output::line(&format!("key:         {key}"));
    }
    Ok(exit::OK)
}

/// `trust NAME`'s name, checked before connecting.
pub fn trust_name(name: String) -> Result<Name, Failure> {
    Name::new(name.clone()).map_err(|e| Failure::usage(format!("{name:?}: {e}")))
}

pub fn trust(mut client: Client, json: bool, name: Name) -> Result<i32, Failure> {
    let reply = client.call(Request::Trust { name })?;
    let Response::Trusted {
        name,
        previous,
        fingerprint,
    } = &reply
    else {
        return Err(unexpected());
    };
    if json {
        output::json(&reply);
    } else {
        let now = fingerprint
            .as_deref()
            .unwrap_or("no key (a legacy peer: messages to it are plaintext)");
        match previous {
            Some(p) if Some(p) == fingerprint.as_ref() => {
                output::line(&format!("{name}: already trusted ({now})"))
            }
            Some(p) => output::line(&format!("{name}: now trusting {now} (was {p})")),
            None => output::line(&format!("{name}: now trusting {now}")),
        }
    }
    Ok(exit::OK)
}

pub fn rotate(mut client: Client, json: bool) -> Result<i32, Failure> {
    let reply = client.call(Request::RotateKey)?;
    let Response::Rotated {
        previous,
        fingerprint,
        published,
        error,
    } = &reply
    else {
        return Err(unexpected());
    };
    if json {
        output::json(&reply);
    } else {
        output::line(&format!("new key:  {fingerprint}"));
        output::line(&format!("old key:  {previous}"));
        if *published {
            output::line("the registry has the new key; peers follow the signed rotation");
        } else {
            eprintln!(
                "chatctl: the registry did not take the new key yet ({}); chatd keeps trying",
                crate::safe_text::one_line(error.as_deref().unwrap_or("no answer"))
            );
        }
    }
    Ok(exit::OK)
}
