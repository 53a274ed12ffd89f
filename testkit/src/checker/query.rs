//! One-shot requests on fresh control connections: A's status while draining, B's inbox.

use std::path::Path;
use std::time::Duration;

use peerchat_client::{Client, Error};
use peerchat_proto::control::{InboxMessage, Request, Response};

/// How long a connection, a write or a reply may take.
const TIMEOUT: Duration = Duration::from_secs(30);

fn connect(socket: &Path) -> Result<Client, String> {
    let mut c = Client::connect_timeout(Some(socket), TIMEOUT).map_err(|e| e.to_string())?;
    c.set_write_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    Ok(c)
}

fn call(client: &mut Client, request: &Request) -> Result<Response, String> {
    client.call(request).map_err(|e| match e {
        Error::Chatd(e) => format!("{}: {}", e.code, e.message),
        e => e.to_string(),
    })
}

/// One request on a fresh connection (hello, then `request`); the reply or why there is none.
pub fn query(socket: &Path, request: Request) -> Result<Response, String> {
    call(&mut connect(socket)?, &request)
}

/// Every message in the inbox behind `socket`, oldest first (paged with `after`, so neither the
/// 10 000-message limit nor the 8 MiB `truncated` cut loses anything).
pub fn read_inbox(socket: &Path) -> Result<Vec<InboxMessage>, String> {
    let mut client = connect(socket)?;
    let mut all: Vec<InboxMessage> = Vec::new();
    let mut after = 0i64;
    loop {
        let request = Request::Inbox {
            from: None,
            limit: Some(10_000),
            after: Some(after),
        };
        let resp = call(&mut client, &request)?;
        let Response::Messages { messages, .. } = resp else {
            return Err(format!("inbox answered with {resp:?}"));
        };
        let Some(last) = messages.last() else {
            return Ok(all);
        };
        if last.seq <= after || messages.windows(2).any(|w| w[0].seq >= w[1].seq) {
            return Err(format!("inbox seq not increasing after {after}"));
        }
        after = last.seq;
        all.extend(messages);
    }
}
