//! The control socket: JSON lines from local clients (chatctl).
//!
//! Each connection has a reader (this task) and a writer task. The reader parses requests in
//! order and does the order-sensitive part at once (a `send` is queued to the database before
//! the next request is read), then hands the writer a future for the reply. The writer awaits
//! those in order, so replies keep request order while many requests are in flight (pipelining).
//! A `follow` request hands the writer the stream instead.

mod follow;
mod groups;
mod identity;
mod inbox;
mod lines;
mod outbox;
mod peers;
mod reply;
mod send;
mod status;

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use peerchat_daemon::accept;
use peerchat_proto::control::{self, code, Request, Response};
use peerchat_proto::envelope::{append_line, to_line, ErrorBody, Outcome, Reply};
use tokio::io::{AsyncWriteExt, WriteHalf};
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::node::Node;
use crate::platform::{ControlListener, ControlStream};
use reply::{flush, ready, ReplyFuture};

pub use follow::FollowParams;

/// A new connection must complete its hello within this time.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection (not following) with no request for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Replies waiting to be written per connection (bounds memory; the reader waits when full).
const PIPELINE_DEPTH: usize = 2048;
/// Most request bytes (bodies, mostly) in flight per connection.
const PIPELINE_BYTES: usize = 16 << 20;
const MAX_CONNECTIONS: usize = 256;

enum Pending {
    Reply(u64, ReplyFuture),
    Follow(u64, FollowParams),
}

pub async fn serve(
    listener: ControlListener,
    node: Arc<Node>,
    stop: CancellationToken,
    tasks: TaskTracker,
) {
    let options = accept::Options {
        max_connections: MAX_CONNECTIONS,
        max_per_address: None,
        accept_backoff: accept::ACCEPT_BACKOFF,
        on_accept_error: |e| warn!(error = %e, "control accept failed"),
        // Not logged: the client is told (Control::refuse).
        on_refused: |_, _| {},
    };
    accept::serve(
        Control(listener),
        options,
        stop.cancelled(),
        &tasks,
        |stream| connection(stream, node.clone(), stop.clone()),
    )
    .await
}

/// The control endpoint as the accept loop sees it. A caller the platform does not authorize is
/// answered and closed inside `accept`, so it never counts against the connection limit.
struct Control(ControlListener);

impl accept::Listen for Control {
    type Conn = ControlStream;

    async fn accept(&mut self) -> std::io::Result<ControlStream> {
        loop {
            let stream = self.0.accept().await?;
            match self.0.authorize(&stream) {
                Ok(()) => return Ok(stream),
                Err(why) => {
                    warn!(reason = %why, "control connection refused");
                    refuse(stream, why).await;
                }
            }
        }
    }

    async fn refuse(&mut self, stream: ControlStream) {
        refuse(stream, "too many control connections".into()).await;
    }
}

/// Tells a turned-away client why, if it reads within a second, and closes the connection.
async fn refuse(mut stream: ControlStream, why: String) {
    let reply: Reply<Response> = Reply {
        id: 0,
        outcome: Outcome::Err(ErrorBody::new(code::REFUSED, why)),
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&to_line(&reply))).await;
}

async fn connection(stream: ControlStream, node: Arc<Node>, stop: CancellationToken) {
    let (read, write) = tokio::io::split(stream);
    let mut lines = FramedRead::new(read, lines::Lines::new(control::MAX_LINE));
    let (tx, rx) = mpsc::channel::<Pending>(PIPELINE_DEPTH);
    let conn_done = CancellationToken::new();
    let writer = tokio::spawn(writer(
        write,
        rx,
        node.clone(),
        stop.clone(),
        conn_done.clone(),
    ));
    let budget = Arc::new(tokio::sync::Semaphore::new(PIPELINE_BYTES));
    let mut said_hello = false;
    let mut following = false;
    // The whole hello must arrive within HELLO_TIMEOUT, however many lines it takes.
    let hello_deadline = tokio::time::Instant::now() + HELLO_TIMEOUT;
    loop {
        let deadline = if !said_hello {
            hello_deadline
        } else if following {
            // A follower's socket is only read to notice the client leaving.
            tokio::time::Instant::now() + Duration::from_secs(365 * 86_400)
        } else {
            tokio::time::Instant::now() + IDLE_TIMEOUT
        };
        let next = tokio::select! {
            _ = stop.cancelled() => break,
            _ = conn_done.cancelled() => break,
            n = tokio::time::timeout_at(deadline, lines.next()) => n,
        };
        let line = match next {
            Err(_) => {
                debug!("closing silent control connection");
                break;
            }
            Ok(None) => break,
            Ok(Some(Ok(line))) => line,
            Ok(Some(Err(e))) => {
                let msg = e.to_string();
                let _ = tx
                    .send(Pending::Reply(
                        0,
                        ready(Err(ErrorBody::new(code::BAD_REQUEST, msg))),
                    ))
                    .await;
                break;
            }
        };
        if following {
            continue; // a follow stream only listens for the client going away
        }
        let line = line.strip_suffix(b"\r").unwrap_or(&line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let pending = match control::parse_request(line) {
            Err((id, e)) => Pending::Reply(id, ready(Err(e))),
            Ok(req) => {
                let id = req.id;
                match (said_hello, req.request) {
                    (_, Request::Hello { version }) => {
                        if version != control::VERSION {
                            let msg = format!(
                                "control protocol version {version} is not supported; this chatd speaks version {}",
                                control::VERSION
                            );
                            let _ = tx
                                .send(Pending::Reply(
                                    id,
                                    ready(Err(ErrorBody::new(code::VERSION_MISMATCH, msg))),
                                ))
                                .await;
                            break;
                        }
                        said_hello = true;
                        Pending::Reply(
                            id,
                            ready(Ok(Response::Hello {
                                version: control::VERSION,
                                node: node.name.clone(),
                                software: peerchat_proto::SOFTWARE_VERSION.to_string(),
                            })),
                        )
                    }
                    (false, _) => {
                        let e = ErrorBody::new(
                            code::HELLO_FIRST,
                            "send {\"op\":\"hello\",\"version\":1} first",
                        );
                        let _ = tx.send(Pending::Reply(id, ready(Err(e)))).await;
                        break;
                    }
                    (
                        true,
                        Request::Follow {
                            from,
                            backlog,
                            after,
                        },
                    ) => {
                        following = true;
                        Pending::Follow(
                            id,
                            FollowParams {
                                from,
                                backlog: backlog.unwrap_or(10),
                                after,
                            },
                        )
                    }
                    (true, request) => {
                        // Requests in flight hold their bodies until committed: bound them in
                        // bytes as well as in number (reading stops while over budget).
                        let cost = line.len().clamp(1, PIPELINE_BYTES) as u32;
                        let Ok(permit) = budget.clone().acquire_many_owned(cost).await else {
                            break;
                        };
                        let fut = dispatch(request, &node).await;
                        Pending::Reply(
                            id,
                            Box::pin(async move {
                                let r = fut.await;
                                drop(permit);
                                r
                            }),
                        )
                    }
                }
            }
        };
        if tx.send(pending).await.is_err() {
            break;
        }
    }
    drop(tx);
    if following {
        // The client went away (or we are stopping): end the stream now.
        conn_done.cancel();
    }
    let _ = writer.await;
}

/// The one place every request is matched. Returns once the order-sensitive part is done; the
/// future resolves to the reply.
async fn dispatch(request: Request, node: &Arc<Node>) -> ReplyFuture {
    match request {
        Request::Send {
            to,
            groups,
            broadcast,
            body,
            msg_id,
            conversation: _,
        } => {
            send::handle(
                node,
                send::Targets {
                    to,
                    groups,
                    broadcast,
                },
                body,
                msg_id,
            )
            .await
        }
        Request::Inbox { from, limit, after } => inbox::handle(node, from, limit, after),
        Request::Peers => peers::handle(node),
        Request::Status => status::handle(node),
        r @ (Request::GroupCreate { .. }
        | Request::GroupAdd { .. }
        | Request::GroupRemove { .. }
        | Request::GroupDelete { .. }
        | Request::GroupList
        | Request::GroupShow { .. }) => groups::handle(node, r),
        Request::Outbox { limit, after } => outbox::list(node, limit, after),
        Request::MessageStatus { msg_id } => outbox::status(node, msg_id),
        Request::Wait { msg_id, timeout_ms } => outbox::wait(node, msg_id, timeout_ms),
        Request::Cancel { msg_id } => outbox::cancel(node, msg_id),
        Request::CheckDatabase => status::check_database(node),
        Request::Whoami => identity::whoami(node),
        Request::Trust { name } => identity::trust(node, name),
        Request::RotateKey => identity::rotate(node),
        Request::Conversations { .. }
        | Request::History { .. }
        | Request::Read { .. }
        | Request::Search { .. } => ready(Err(ErrorBody::new(
            code::BAD_REQUEST,
            "not implemented yet",
        ))),
        Request::Hello { .. } | Request::Follow { .. } | Request::Events { .. } => ready(Err(
            ErrorBody::new(code::INTERNAL, "handled by the connection"),
        )),
    }
}

async fn writer(
    mut write: WriteHalf<ControlStream>,
    mut rx: mpsc::Receiver<Pending>,
    node: Arc<Node>,
    stop: CancellationToken,
    conn_done: CancellationToken,
) {
    use futures_util::FutureExt;
    // Replies that are ready together go out in one write (pipelined clients send many at once).
    let mut buf: Vec<u8> = Vec::new();
    let mut next = rx.recv().await;
    while let Some(p) = next.take() {
        match p {
            Pending::Reply(id, mut fut) => {
                let result = match (&mut fut).now_or_never() {
                    Some(r) => r,
                    None => {
                        // Not ready: send what we have before waiting.
                        if flush(&mut write, &mut buf).await.is_err() {
                            break;
                        }
                        fut.await
                    }
                };
                let outcome: Outcome<Response> = result.into();
                append_line(&mut buf, &Reply { id, outcome });
                next = if buf.len() < WRITE_BATCH {
                    rx.try_recv().ok()
                } else {
                    None
                };
                if next.is_none() {
                    if flush(&mut write, &mut buf).await.is_err() {
                        break;
                    }
                    next = rx.recv().await;
                }
            }
            Pending::Follow(id, params) => {
                if flush(&mut write, &mut buf).await.is_err() {
                    break;
                }
                follow::run(&mut write, id, params, &node, &stop, &conn_done).await;
                break;
            }
        }
    }
    conn_done.cancel();
}

/// Most reply bytes gathered before a write.
const WRITE_BATCH: usize = 64 * 1024;
