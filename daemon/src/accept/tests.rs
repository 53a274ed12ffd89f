//! The accept loop on real loopback sockets. Each test waits on events (a handler starting, a
//! read hitting end of file) with a deadline, never a fixed sleep.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::*;

const DEADLINE: Duration = Duration::from_secs(10);

type Tcp = (TcpStream, SocketAddr);

fn options<C>(max_connections: usize, max_per_address: Option<usize>) -> Options<C> {
    Options {
        max_connections,
        max_per_address,
        accept_backoff: Duration::from_millis(1),
        on_accept_error: |_| {},
        on_refused: |_, _| {},
    }
}

/// Starts `serve` on a fresh loopback port. Each handler reports its start on the returned
/// channel, then holds its connection until the client closes it.
async fn start(
    listener: impl Listen<Conn = Tcp> + 'static,
    options: Options<Tcp>,
    addr: SocketAddr,
) -> Running {
    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    let (started, rx) = mpsc::unbounded_channel();
    let serving = tokio::spawn({
        let (stop, tasks) = (stop.clone(), tasks.clone());
        async move {
            serve(
                listener,
                options,
                stop.cancelled(),
                &tasks,
                move |(s, _)| hold(s, started.clone()),
            )
            .await
        }
    });
    Running {
        addr,
        stop,
        tasks,
        started: rx,
        serving,
    }
}

async fn hold(mut s: impl AsyncRead + Unpin, started: mpsc::UnboundedSender<()>) {
    let _ = started.send(());
    let mut b = [0u8; 1];
    let _ = s.read(&mut b).await;
}

struct Running {
    addr: SocketAddr,
    stop: CancellationToken,
    tasks: TaskTracker,
    started: mpsc::UnboundedReceiver<()>,
    serving: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Connects and waits until the loop handed the connection to a handler.
    async fn served(&mut self) -> TcpStream {
        let s = connect(self.addr).await;
        self.handler_started().await;
        s
    }

    async fn handler_started(&mut self) {
        let started = tokio::time::timeout(DEADLINE, self.started.recv()).await;
        assert!(matches!(started, Ok(Some(()))), "no handler started");
    }

    /// Waits until `n` connection tasks are left (a closed client's task ends soon after).
    async fn until_tasks(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while self.tasks.len() != n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "tasks: {}",
                self.tasks.len()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

async fn connect(addr: SocketAddr) -> TcpStream {
    match tokio::time::timeout(DEADLINE, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        other => panic!("connect {addr}: {other:?}"),
    }
}

/// Whether the server closed `s` (end of file or reset) before the deadline.
async fn closed(s: &mut (impl AsyncRead + Unpin)) -> bool {
    let mut b = [0u8; 16];
    matches!(
        tokio::time::timeout(DEADLINE, s.read(&mut b)).await,
        Ok(Ok(0) | Err(_))
    )
}

async fn loopback() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

#[tokio::test]
async fn the_connection_over_the_limit_is_closed_at_once() {
    let (l, addr) = loopback().await;
    let mut run = start(l, options(2, None), addr).await;
    let first = run.served().await;
    let _second = run.served().await;
    let mut third = connect(addr).await;
    assert!(closed(&mut third).await, "the third connection stayed open");
    assert_eq!(run.tasks.len(), 2);
    // A connection that ends gives its permit back.
    drop(first);
    run.until_tasks(1).await;
    let _fourth = run.served().await;
}

#[tokio::test]
async fn one_address_gets_at_most_its_share() {
    let (l, addr) = loopback().await;
    let mut run = start(l, options(10, Some(2)), addr).await;
    let first = run.served().await;
    let _second = run.served().await;
    let mut third = connect(addr).await;
    assert!(
        closed(&mut third).await,
        "a third from one address stayed open"
    );
    // Another address is not held back (all of 127/8 is loopback on Linux).
    let mut others = Vec::new();
    #[cfg(target_os = "linux")]
    {
        let other = tokio::net::TcpSocket::new_v4().unwrap();
        other.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        others.push(other.connect(addr).await.unwrap());
        run.handler_started().await;
    }
    run.until_tasks(2 + others.len()).await;
    // The slot comes back when a connection ends.
    drop(first);
    run.until_tasks(1 + others.len()).await;
    let _again = run.served().await;
}

#[tokio::test]
async fn shutdown_stops_accepting_and_leaves_the_connections_to_finish() {
    let (l, addr) = loopback().await;
    let mut run = start(l, options(10, None), addr).await;
    let client = run.served().await;
    run.stop.cancel();
    let returned = tokio::time::timeout(DEADLINE, &mut run.serving).await;
    assert!(matches!(returned, Ok(Ok(()))), "serve went on after stop");
    // The listener went with the loop: new connections are refused, not queued.
    assert!(TcpStream::connect(addr).await.is_err());
    // The connection accepted before runs on, tracked, until its client is done.
    run.tasks.close();
    assert_eq!(run.tasks.len(), 1, "the handler is not tracked");
    drop(client);
    let drained = tokio::time::timeout(DEADLINE, run.tasks.wait()).await;
    assert!(drained.is_ok(), "the tasks did not drain");
}

/// A real listener whose first accepts fail, as under `EMFILE`.
struct Failing(TcpListener, usize);

impl Listen for Failing {
    type Conn = Tcp;

    async fn accept(&mut self) -> io::Result<Tcp> {
        if self.1 > 0 {
            self.1 -= 1;
            return Err(io::Error::other("injected"));
        }
        self.0.accept().await
    }
}

static ACCEPT_ERRORS: AtomicUsize = AtomicUsize::new(0);

#[tokio::test]
async fn an_accept_error_does_not_end_the_loop() {
    let (l, addr) = loopback().await;
    let mut options = options(10, None);
    options.on_accept_error = |_| {
        ACCEPT_ERRORS.fetch_add(1, Ordering::SeqCst);
    };
    let mut run = start(Failing(l, 3), options, addr).await;
    let _served = run.served().await;
    assert_eq!(ACCEPT_ERRORS.load(Ordering::SeqCst), 3);
}

/// A Unix socket whose protocol says why it turns a connection away.
#[cfg(unix)]
struct Saying(tokio::net::UnixListener);

#[cfg(unix)]
impl Listen for Saying {
    type Conn = tokio::net::UnixStream;

    async fn accept(&mut self) -> io::Result<Self::Conn> {
        Listen::accept(&mut self.0).await
    }

    async fn refuse(&mut self, mut conn: Self::Conn) {
        let _ = conn.write_all(b"busy\n").await;
    }
}

#[cfg(unix)]
static REFUSED: std::sync::Mutex<Vec<Refused>> = std::sync::Mutex::new(Vec::new());

#[cfg(unix)]
#[tokio::test]
async fn unix_sockets_have_no_address_limit_and_may_say_why() {
    use tokio::net::UnixStream;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let l = Saying(tokio::net::UnixListener::bind(&path).unwrap());
    // The per-address limit of 1 does not apply: Unix connections have no source address.
    let mut options = options(2, Some(1));
    options.on_refused = |_, why| REFUSED.lock().unwrap().push(why);
    let tasks = TaskTracker::new();
    let stop = CancellationToken::new();
    let (started, mut rx) = mpsc::unbounded_channel();
    let serving = tokio::spawn({
        let (stop, tasks) = (stop.clone(), tasks.clone());
        async move {
            serve(l, options, stop.cancelled(), &tasks, move |s| {
                hold(s, started.clone())
            })
            .await
        }
    });
    let mut clients = Vec::new();
    for _ in 0..2 {
        clients.push(UnixStream::connect(&path).await.unwrap());
        let started = tokio::time::timeout(DEADLINE, rx.recv()).await;
        assert!(matches!(started, Ok(Some(()))), "no handler started");
    }
    let mut third = UnixStream::connect(&path).await.unwrap();
    let mut said = String::new();
    let read = tokio::time::timeout(DEADLINE, third.read_to_string(&mut said)).await;
    assert!(matches!(read, Ok(Ok(_))), "{read:?}");
    assert_eq!(said, "busy\n");
    assert_eq!(*REFUSED.lock().unwrap(), [Refused::Connections]);
    stop.cancel();
    let _ = serving.await;
}
