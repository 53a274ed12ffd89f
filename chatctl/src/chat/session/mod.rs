//! The control-socket side of the TUI: a thread that owns the connections to chatd (one for
//! requests, one for the `events` stream), turns the app's requests into control requests and
//! chatd's replies and events into [`FromChatd`]. When chatd goes away it says so, reconnects
//! (with `peerchat_client::reconnect`'s back-off) and resumes the stream after the last event
//! seen; the app sends its unaccepted message again under the same id.

mod requests;
mod stream;
mod translate;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use peerchat_client::{self as client, Client, Error};
use peerchat_proto::control::{code, Request};

use super::events::{FromChatd, ToChatd};
use crate::exit::Failure;
use stream::{Shared, NO_CURSOR};

/// How often the request loop looks whether the stream's connection was lost.
const POLL: Duration = Duration::from_millis(100);

/// Connects (so that a chatd that does not run is reported before the screen opens) and starts
/// the session thread.
pub fn spawn(socket: Option<&Path>) -> Result<(Sender<ToChatd>, Receiver<FromChatd>), Failure> {
    let mut client = Client::connect(socket)?;
    too_old(&mut client)?;
    let path = client.socket().to_path_buf();
    let (to_session, requests) = mpsc::channel();
    let (events, from_session) = mpsc::channel();
    std::thread::Builder::new()
        .name("chat-session".into())
        .spawn(move || run(path, client, requests, events))
        .map_err(|e| Failure::io("starting a thread", e))?;
    Ok((to_session, from_session))
}

/// A chatd without the conversation requests answers them `unknown_op`: said once, before the
/// screen opens, instead of reconnecting for ever. Other errors are the session's to report.
fn too_old(client: &mut Client) -> Result<(), Failure> {
    match client.call(&Request::Conversations { limit: Some(1) }) {
        Err(Error::Chatd(b)) if b.code == code::UNKNOWN_OP => Err(Failure::new(
            crate::exit::for_code(code::UNKNOWN_OP),
            code::UNKNOWN_OP,
            format!(
                "chatd is too old for chat: it does not know the conversation requests ({}). \
                 Upgrade chatd; send, inbox and follow still work with it",
                b.message
            ),
        )),
        _ => Ok(()),
    }
}

fn run(path: PathBuf, first: Client, requests: Receiver<ToChatd>, out: Sender<FromChatd>) {
    let shared = Arc::new(Shared {
        cursor: AtomicI64::new(NO_CURSOR),
        deliveries: Mutex::new(Default::default()),
    });
    let mut next = Some(first);
    loop {
        let client = match next.take() {
            Some(c) => c,
            // The app dropping its sender ends the wait too.
            None => match client::reconnect(&path, None, &|| false) {
                Ok(Some(c)) => c,
                _ => return,
            },
        };
        let error = match connection(client, &path, &shared, &requests, &out) {
            Ok(()) => return,
            Err(e) => e,
        };
        if out.send(FromChatd::Disconnected { error }).is_err() {
            return;
        }
    }
}

/// Serves one connection until it is lost (`Err`) or the app ends (`Ok`).
fn connection(
    mut client: Client,
    path: &Path,
    shared: &Arc<Shared>,
    requests: &Receiver<ToChatd>,
    out: &Sender<FromChatd>,
) -> Result<(), String> {
    let current = Arc::new(AtomicBool::new(true));
    let lost = Arc::new(AtomicBool::new(false));
    let result = (|| {
        let me = requests::whoami(&mut client).map_err(|e| e.to_string())?;
        let stream = Client::connect(Some(path)).map_err(|e| e.to_string())?;
        stream::start(
            stream,
            shared.clone(),
            out.clone(),
            current.clone(),
            lost.clone(),
        )
        .map_err(|e| e.to_string())?;
        let _ = out.send(FromChatd::Connected { me });
        let mut session = requests::Requests {
            client,
            shared: shared.clone(),
            out: out.clone(),
        };
        session.refresh().map_err(lost_error)?;
        loop {
            if lost.load(Ordering::Relaxed) {
                return Err("the event stream ended".to_string());
            }
            match requests.recv_timeout(POLL) {
                Ok(r) => session.handle(r).map_err(lost_error)?,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
        }
    })();
    current.store(false, Ordering::Relaxed);
    result
}

fn lost_error(e: Error) -> String {
    e.to_string()
}
