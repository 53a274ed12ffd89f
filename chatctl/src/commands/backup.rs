//! `chatctl backup PATH [--force]`: chatd writes a consistent copy of its database.

use std::path::Path;

use peerchat_client::{Client, Error};
use peerchat_proto::control::{Request, Response};

use crate::exit::{self, Failure};
use crate::output;

/// PATH as chatd must get it: absolute, from chatctl's working directory (chatd's differs).
pub fn absolute(path: &Path) -> Result<String, Failure> {
    let abs = std::path::absolute(path)
        .map_err(|e| Failure::usage(format!("{}: {e}", path.display())))?;
    abs.to_str()
        .map(str::to_string)
        .ok_or_else(|| Failure::usage(format!("{}: not valid UTF-8", abs.display())))
}

pub fn run(mut client: Client, json: bool, path: String, force: bool) -> Result<i32, Failure> {
    let reply = client.call_expect(&Request::Backup { path, force }, |r| match r {
        r @ Response::BackedUp { .. } => Ok(r),
        r => Err(Error::unexpected(r)),
    })?;
    if json {
        output::json(&reply);
    } else if let Response::BackedUp {
        path,
        bytes,
        millis,
    } = reply
    {
        output::line(&format!(
            "backed up to {} ({bytes} bytes in {millis} ms)",
            crate::safe_text::visible(&path, crate::safe_text::INDENT)
        ));
    }
    Ok(exit::OK)
}
