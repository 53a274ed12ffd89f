//! `chatctl whoami`, `trust NAME`, `rotate-key`.

use peerchat_client::{Client, Error};
use peerchat_proto::control::{Request, Response};
use peerchat_proto::Name;

use crate::exit::{self, Failure};
use crate::output;

/// Sends `request`, whose reply must be of the type `is` accepts. With `--json` the reply is
/// printed whole (its `type` included) and `None` returned; else it is returned for the text
/// view.
fn call(
    mut client: Client,
    json: bool,
    request: &Request,
    is: fn(&Response) -> bool,
) -> Result<Option<Response>, Failure> {
    let reply = client.call_expect(request, |r| {
        if is(&r) {
            Ok(r)
        } else {
            Err(Error::unexpected(r))
        }
    })?;
    if json {
        output::json(&reply);
        return Ok(None);
    }
    Ok(Some(reply))
}

pub fn whoami(client: Client, json: bool) -> Result<i32, Failure> {
    let is = |r: &Response| matches!(r, Response::Identity { .. });
    if let Some(Response::Identity {
        name,
        key,
        fingerprint,
    }) = call(client, json, &Request::Whoami, is)?
    {
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

pub fn trust(client: Client, json: bool, name: Name) -> Result<i32, Failure> {
    let is = |r: &Response| matches!(r, Response::Trusted { .. });
    if let Some(Response::Trusted {
        name,
        previous,
        fingerprint,
    }) = call(client, json, &Request::Trust { name }, is)?
    {
        let now = fingerprint
            .as_deref()
            .unwrap_or("no key (a legacy peer: messages to it are plaintext)");
        match &previous {
            Some(p) if Some(p) == fingerprint.as_ref() => {
                output::line(&format!("{name}: already trusted ({now})"))
            }
            Some(p) => output::line(&format!("{name}: now trusting {now} (was {p})")),
            None => output::line(&format!("{name}: now trusting {now}")),
        }
    }
    Ok(exit::OK)
}

pub fn rotate(client: Client, json: bool) -> Result<i32, Failure> {
    let is = |r: &Response| matches!(r, Response::Rotated { .. });
    if let Some(Response::Rotated {
        previous,
        fingerprint,
        published,
        error,
    }) = call(client, json, &Request::RotateKey, is)?
    {
        output::line(&format!("new key:  {fingerprint}"));
        output::line(&format!("old key:  {previous}"));
        if published {
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
