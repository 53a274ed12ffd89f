//! `chatctl whoami`, `trust NAME`, `rotate-key`.

use peerchat_client::{Client, Error};
use peerchat_proto::control::{Request, Response};
use peerchat_proto::Name;

use crate::exit::{self, Failure};
use crate::output;

/// The reply when it is of the type `is` accepts (printed whole with `--json`), for
/// [`Client::call_expect`].
fn only(is: fn(&Response) -> bool) -> impl FnOnce(Response) -> Result<Response, Error> {
    move |r| {
        if is(&r) {
            Ok(r)
        } else {
            Err(Error::unexpected(r))
        }
    }
}

pub fn whoami(mut client: Client, json: bool) -> Result<i32, Failure> {
    let reply = client.call_expect(
        &Request::Whoami,
        only(|r| matches!(r, Response::Identity { .. })),
    )?;
    if json {
        output::json(&reply);
    } else if let Response::Identity {
        name,
        key,
        fingerprint,
    } = &reply
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

pub fn trust(mut client: Client, json: bool, name: Name) -> Result<i32, Failure> {
    let reply = client.call_expect(
        &Request::Trust { name },
        only(|r| matches!(r, Response::Trusted { .. })),
    )?;
    if json {
        output::json(&reply);
    } else if let Response::Trusted {
        name,
        previous,
        fingerprint,
    } = &reply
    {
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
    let reply = client.call_expect(
        &Request::RotateKey,
        only(|r| matches!(r, Response::Rotated { .. })),
    )?;
    if json {
        output::json(&reply);
    } else if let Response::Rotated {
        previous,
        fingerprint,
        published,
        error,
    } = &reply
    {
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
