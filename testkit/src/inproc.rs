//! Daemons in the test's own process: `chatd::run` and `registryd::run`, each on a runtime this
//! helper owns on a thread of its own, with the library code the test was built with (never a
//! stale binary). Tests still reach a node through its real control socket and its real peer
//! port, with [`Control`] (over `peerchat_client`, the control client chatctl uses), so they need
//! no chatctl binary either.
//!
//! What the binaries give and this does not: a pid to kill -9, SIGSTOP or signal, and the
//! command line itself; tests of those keep using [`crate::Node`] and [`crate::Registry`].
//!
//! Logs: every daemon's `tracing` output goes to its own file (`NAME.log`, `registryd.log` in
//! the test's directory, as with the binaries), through a dispatcher set on each of its
//! runtime's threads instead of a global subscriber, so nodes in one test binary never mix
//! their lines. (chatd's own store thread is not a runtime thread; it logs nothing a test reads.)

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use peerchat_client::{self as client, Client};
use peerchat_proto::control::{self, InboxMessage, Request, Response};
use peerchat_proto::envelope::ErrorBody;
use peerchat_proto::Name;

use crate::{tempdir, wait_for, TempDir};

/// How long a daemon may take to say it is ready.
const READY: Duration = Duration::from_secs(20);
/// How long one control reply may take.
const REPLY: Duration = Duration::from_secs(30);

type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One daemon's thread: its runtime runs the daemon until `stop` fires (or is dropped).
struct Running {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<(), String>>>,
}

impl Running {
    /// Runs `daemon` on `listener` on a new thread with a multi-thread runtime (like the
    /// binaries'), every runtime thread logging to `log`.
    fn spawn<F, Fut>(
        thread_name: String,
        log: &Path,
        listener: std::net::TcpListener,
        daemon: F,
    ) -> Running
    where
        F: FnOnce(tokio::net::TcpListener, Shutdown) -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>>,
    {
        let dispatch = log_dispatch(log);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || {
                let _log = tracing::dispatcher::set_default(&dispatch);
                let on_start = dispatch.clone();
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    // Workers and blocking threads live only as long as this runtime: the
                    // guard may stay set until the thread ends.
                    .on_thread_start(move || {
                        std::mem::forget(tracing::dispatcher::set_default(&on_start))
                    })
                    .build()
                    .map_err(|e| format!("runtime: {e}"))?;
                let result = runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)?;
                    // A dropped sender (the helper dropped) stops the daemon too.
                    let shutdown: Shutdown = Box::pin(async move {
                        let _ = stopped.await;
                    });
                    daemon(listener, shutdown).await
                });
                // What `main` does: tasks still running get half a second, then the runtime
                // (and every socket its tasks hold) is gone.
                runtime.shutdown_timeout(Duration::from_millis(500));
                result.map_err(|e| format!("{e:#}"))
            })
            .expect("spawn a daemon thread");
        Running {
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Asks the daemon to stop and waits until `run` returned and its runtime is gone.
    fn stop(&mut self) -> Result<(), String> {
        drop(self.stop.take());
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err("the daemon panicked".into())),
            None => Ok(()),
        }
    }

    /// Waits until `log` holds more than `before` lines with `marker`; panics with the error and
    /// the log if the daemon ended first.
    fn wait_ready(&mut self, log: &Path, marker: &str, before: usize) {
        wait_for(READY, marker, || {
            if self.is_finished() {
                let why = self.stop().err().unwrap_or_else(|| "it returned".into());
                panic!("{marker:?} never came: {why}\nlog:\n{}", read(log));
            }
            (read(log).matches(marker).count() > before).then_some(())
        });
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn read(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// A subscriber appending to `log` in the binaries' text format (`TEST_RUST_LOG`, else info).
fn log_dispatch(log: &Path) -> tracing::Dispatch {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    let filter = std::env::var("TEST_RUST_LOG").unwrap_or_else(|_| "info".into());
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing::Dispatch::new(
        tracing_subscriber::fmt()
            .with_writer(Mutex::new(file))
            .with_ansi(false)
            .with_env_filter(filter)
            .finish(),
    )
}

fn bind(addr: SocketAddr) -> std::net::TcpListener {
    let l = std::net::TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    l.set_nonblocking(true).expect("nonblocking listener");
    l
}

/// registryd in-process, with its database in the test's directory.
pub struct InProcRegistry {
    pub addr: SocketAddr,
    pub db: PathBuf,
    pub log: PathBuf,
    running: Option<Running>,
}

impl InProcRegistry {
    /// Starts registryd on 127.0.0.1 with an OS-chosen port and its database in `dir`.
    pub fn start(dir: &Path) -> InProcRegistry {
        InProcRegistry::start_on(dir, "127.0.0.1:0".parse().expect("address"))
    }

    pub fn start_on(dir: &Path, addr: SocketAddr) -> InProcRegistry {
        let mut r = InProcRegistry {
            addr,
            db: dir.join("registry.db"),
            log: dir.join("registryd.log"),
            running: None,
        };
        r.restart();
        r
    }

    /// Stops it (`run` returns, every connection closes); the database stays.
    pub fn stop(&mut self) {
        if let Some(mut r) = self.running.take() {
            r.stop().unwrap_or_else(|e| panic!("registryd failed: {e}"));
        }
    }

    /// Starts it again on the same port and database after [`InProcRegistry::stop`].
    pub fn restart(&mut self) {
        self.stop();
        let listener = bind(self.addr);
        self.addr = listener.local_addr().expect("local_addr");
        // The binaries' defaults (registryd's `--help`).
        let config = registryd::Config {
            store: registryd::StoreUrl::Sqlite(self.db.clone()),
            ttl: Duration::from_secs(90),
            max_connections: 1024,
            limits: registryd::Limits {
                max_names: 100_000,
                registrations_per_minute: 120,
                legacy_per_source: 8,
            },
            seed_protocol: true,
            metrics: None,
        };
        let before = read(&self.log).matches("registryd ready").count();
        let mut running = Running::spawn(
            format!("registryd-{}", self.addr.port()),
            &self.log,
            listener,
            move |l, stop| registryd::run(l, config, stop),
        );
        running.wait_ready(&self.log, "registryd ready", before);
        self.running = Some(running);
    }
}

/// Changes made to a node's [`chatd::Config`] before each start (e.g. a faster retry policy).
pub type Configure = Arc<dyn Fn(&mut chatd::Config) + Send + Sync>;

/// chatd in-process: socket, database, key and log in the test's directory.
pub struct InProcNode {
    pub name: String,
    pub socket: PathBuf,
    pub db: PathBuf,
    pub log: PathBuf,
    pub registry: SocketAddr,
    /// The peer port; a restart binds the same one.
    pub listen: SocketAddr,
    /// Applied to the config at every (re)start; replace it to restart with other options.
    pub configure: Configure,
    running: Option<Running>,
}

impl InProcNode {
    /// Starts chatd NAME with socket and database in `dir`, peer port chosen by the OS.
    pub fn start(dir: &Path, name: &str, registry: SocketAddr) -> InProcNode {
        InProcNode::start_with(dir, name, registry, Arc::new(|_| {}))
    }

    pub fn start_with(
        dir: &Path,
        name: &str,
        registry: SocketAddr,
        configure: Configure,
    ) -> InProcNode {
        let mut n = InProcNode {
            name: name.into(),
            socket: dir.join(format!("{name}.sock")),
            db: dir.join(format!("{name}.db")),
            log: dir.join(format!("{name}.log")),
            registry,
            listen: "127.0.0.1:0".parse().expect("address"),
            configure,
            running: None,
        };
        n.restart();
        n
    }

    /// Stops the node the way SIGTERM does (in-flight work finishes, the registry hears it is
    /// offline, the socket goes) and waits for `run` to return; returns how long that took.
    pub fn stop(&mut self) -> Duration {
        let start = Instant::now();
        if let Some(mut r) = self.running.take() {
            r.stop()
                .unwrap_or_else(|e| panic!("chatd {} failed: {e}", self.name));
        }
        start.elapsed()
    }

    /// Starts the node again (same name, socket, database and peer port), stopping it first if
    /// it runs; returns once it is ready (registered, or the registry could not be reached).
    pub fn restart(&mut self) {
        self.stop();
        let listener = bind(self.listen);
        self.listen = listener.local_addr().expect("local_addr");
        let mut config = chatd::Config::new(
            Name::new(self.name.clone()).expect("a valid node name"),
            self.socket.clone(),
            self.db.clone(),
        );
        config.registry = vec![self.registry.to_string()];
        (self.configure)(&mut config);
        let before = read(&self.log).matches("chatd ready").count();
        let mut running = Running::spawn(
            format!("chatd-{}", self.name),
            &self.log,
            listener,
            move |l, stop| chatd::run(l, config, stop),
        );
        running.wait_ready(&self.log, "chatd ready", before);
        self.running = Some(running);
    }

    pub fn is_running(&self) -> bool {
        self.running.as_ref().is_some_and(|r| !r.is_finished())
    }

    /// Everything this node logged so far (all its runs).
    pub fn log_text(&self) -> String {
        read(&self.log)
    }

    /// A new control connection (hello done).
    pub fn control(&self) -> Control {
        Control::connect(&self.socket)
            .unwrap_or_else(|e| panic!("control socket of {}: {e}", self.name))
    }

    /// One request on a fresh control connection.
    pub fn call(&self, request: Request) -> Result<Response, ErrorBody> {
        self.control().call(request)
    }

    /// Sends `body` to `to` (names and `@group`s, comma-separated, as chatctl takes them).
    pub fn send(&self, to: &str, body: &str) -> Result<Response, ErrorBody> {
        self.call(send_request(to, body, None))
    }

    /// Like [`InProcNode::send`]; panics unless accepted with no recipient failed at once
    /// (chatctl's exit code 0), returns the message id.
    pub fn sent(&self, to: &str, body: &str) -> String {
        accepted_id(self.send(to, body))
    }

    /// Every message in the inbox, oldest first (paged, so no limit cuts it).
    pub fn inbox(&self) -> Vec<InboxMessage> {
        let mut c = self.control();
        let mut all: Vec<InboxMessage> = Vec::new();
        loop {
            let after = all.last().map_or(0, |m| m.seq);
            let reply = c.call(Request::Inbox {
                from: None,
                limit: Some(10_000),
                after: Some(after),
            });
            match reply {
                Ok(Response::Messages { messages, .. }) if messages.is_empty() => return all,
                Ok(Response::Messages { messages, .. }) => all.extend(messages),
                other => panic!("inbox of {}: {other:?}", self.name),
            }
        }
    }

    /// Bodies in the inbox, oldest first.
    pub fn bodies(&self) -> Vec<String> {
        self.inbox().into_iter().map(|m| m.body).collect()
    }

    /// Polls until the inbox holds at least `n` messages; returns the bodies.
    pub fn wait_inbox(&self, n: usize, timeout: Duration) -> Vec<String> {
        wait_for(
            timeout,
            &format!("{n} messages in {}'s inbox", self.name),
            || {
                let b = self.bodies();
                (b.len() >= n).then_some(b)
            },
        )
    }
}

/// A `send` request the way chatctl builds one from `TO` (`a,b,@group`).
pub fn send_request(to: &str, body: &str, msg_id: Option<&str>) -> Request {
    let (mut names, mut groups) = (Vec::new(), Vec::new());
    for t in to.split(',') {
        match t.strip_prefix('@') {
            Some(g) => groups.push(name(g)),
            None => names.push(name(t)),
        }
    }
    Request::Send {
        to: names,
        groups,
        broadcast: false,
        body: body.into(),
        msg_id: msg_id.map(|id| peerchat_proto::MsgId::new(id).expect("a valid message id")),
        conversation: None,
    }
}

/// The id of an accepted send; panics if it was refused or a recipient failed at once.
pub fn accepted_id(reply: Result<Response, ErrorBody>) -> String {
    match reply {
        Ok(Response::Accepted { id, recipients, .. })
            if recipients
                .iter()
                .all(|r| r.state != control::DeliveryState::Failed) =>
        {
            id
        }
        other => panic!("send not accepted: {other:?}"),
    }
}

/// A valid [`Name`] (panics otherwise: tests name their nodes).
pub fn name(s: &str) -> Name {
    Name::new(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

/// One control connection, after `hello` (a [`peerchat_client::Client`]), with what tests
/// want: chatd's error replies as `Err`, anything else (I/O, protocol) a panic.
pub struct Control {
    client: Client,
}

impl Control {
    pub fn connect(socket: &Path) -> Result<Control, String> {
        let mut client = Client::connect_timeout(Some(socket), REPLY).map_err(|e| e.to_string())?;
        client
            .set_write_timeout(Some(REPLY))
            .map_err(|e| e.to_string())?;
        Ok(Control { client })
    }

    /// One request and its reply.
    pub fn call(&mut self, request: Request) -> Result<Response, ErrorBody> {
        match self.client.call(&request) {
            Err(client::Error::Chatd(e)) => Err(e),
            Err(e) => panic!("control request {request:?}: {e}"),
            Ok(r) => Ok(r),
        }
    }

    /// Writes every request (from a thread, so neither side's buffer can stall the other) and
    /// returns the replies in order: what chatctl's `send -l` does.
    pub fn pipeline(&mut self, requests: Vec<Request>) -> Vec<Result<Response, ErrorBody>> {
        let ids = self.client.reserve_ids(requests.len() as u64);
        let mut w = self
            .client
            .writer()
            .unwrap_or_else(|e| panic!("clone the control socket: {e}"));
        let writer = std::thread::spawn({
            let ids = ids.clone();
            move || {
                ids.zip(&requests)
                    .try_for_each(|(id, request)| w.send(id, request))
            }
        });
        let replies = ids
            .map(|want| {
                let reply = self
                    .client
                    .recv()
                    .unwrap_or_else(|e| panic!("reading a control reply: {e}"));
                assert_eq!(reply.id, want, "replies come in request order");
                reply.outcome.into_result()
            })
            .collect();
        match writer.join() {
            Ok(written) => written.unwrap_or_else(|e| panic!("writing control requests: {e}")),
            Err(p) => std::panic::resume_unwind(p),
        }
        replies
    }
}

/// A small local network in-process: one registry and named nodes in one fresh directory.
pub struct InProcNet {
    // Declared before `dir`: the registry stops before its directory is removed.
    pub registry: InProcRegistry,
    pub dir: TempDir,
}

impl InProcNet {
    pub fn new() -> InProcNet {
        let dir = tempdir();
        let registry = InProcRegistry::start(dir.path());
        InProcNet { registry, dir }
    }

    pub fn node(&self, name: &str) -> InProcNode {
        InProcNode::start(self.dir.path(), name, self.registry.addr)
    }

    /// A node whose config `configure` changes at every start.
    pub fn node_with(
        &self,
        name: &str,
        configure: impl Fn(&mut chatd::Config) + Send + Sync + 'static,
    ) -> InProcNode {
        InProcNode::start_with(
            self.dir.path(),
            name,
            self.registry.addr,
            Arc::new(configure),
        )
    }
}

impl Default for InProcNet {
    fn default() -> Self {
        InProcNet::new()
    }
}

/// A retry policy like `--retry-initial INITIAL --retry-max MAX` (seconds).
pub fn fast_retry(initial: f64, max: f64) -> impl Fn(&mut chatd::Config) + Send + Sync + 'static {
    move |c: &mut chatd::Config| {
        c.retry.initial = Duration::from_secs_f64(initial);
        c.retry.max = Duration::from_secs_f64(max.max(initial));
    }
}
