//! The client against a real Unix socket, with a scripted chatd on a thread.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::Duration;

use peerchat_proto::control::{Request, Response};

use super::{Client, Error};

const HELLO: &str = r#"{"id":1,"ok":{"type":"hello","version":1,"node":"pa","software":"t"}}"#;

/// A socket in a fresh directory, and a thread that accepts one connection and runs `script`
/// on it (the lines it reads, the stream to answer on).
fn serve(
    script: impl FnOnce(&mut Lines, &mut UnixStream) + Send + 'static,
) -> (tempfile::TempDir, PathBuf, JoinHandle<()>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("chatd.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        let mut lines = Lines(BufReader::new(stream.try_clone().expect("clone")));
        script(&mut lines, &mut stream);
    });
    (dir, path, server)
}

struct Lines(BufReader<UnixStream>);

impl Lines {
    /// The next request line, parsed.
    fn next(&mut self) -> serde_json::Value {
        let mut line = String::new();
        self.0.read_line(&mut line).expect("read a request");
        assert!(line.ends_with('\n'), "a whole line: {line:?}");
        serde_json::from_str(&line).expect("a JSON request")
    }

    /// Reads the hello and answers it.
    fn hello(&mut self, out: &mut UnixStream) {
        let h = self.next();
        assert_eq!(
            (h["id"].as_u64(), h["op"].as_str()),
            (Some(1), Some("hello"))
        );
        writeln!(out, "{HELLO}").expect("write hello");
    }
}

#[test]
fn hello_then_requests_with_increasing_ids() {
    let (_dir, path, server) = serve(|lines, out| {
        lines.hello(out);
        let r = lines.next();
        assert_eq!(
            (r["id"].as_u64(), r["op"].as_str()),
            (Some(2), Some("peers"))
        );
        writeln!(
            out,
            r#"{{"id":2,"ok":{{"type":"peers","peers":[],"from_cache":true}}}}"#
        )
        .expect("write");
        let r = lines.next();
        assert_eq!(r["op"].as_str(), Some("status"));
        writeln!(
            out,
            r#"{{"id":3,"error":{{"code":"storage","message":"disk full"}}}}"#
        )
        .expect("write");
    });
    let mut c = Client::connect(Some(&path)).expect("connect");
    assert_eq!(c.socket(), path);
    assert_eq!(
        c.call(&Request::Peers).expect("peers"),
        Response::Peers {
            peers: vec![],
            from_cache: true
        }
    );
    let e = c.status().expect_err("an error reply");
    assert!(
        matches!(&e, Error::Chatd(b) if b.code == "storage"),
        "{e:?}"
    );
    assert_eq!((e.code(), e.to_string()), ("storage", "disk full".into()));
    assert!(!e.is_lost());
    server.join().expect("server");
}

#[test]
fn a_refused_hello_is_chatds_error_even_if_it_closes_at_once() {
    let (_dir, path, server) = serve(|_lines, out| {
        writeln!(
            out,
            r#"{{"id":0,"error":{{"code":"refused","message":"not in the group"}}}}"#
        )
        .expect("write");
    });
    let e = Client::connect(Some(&path)).err().expect("refused");
    assert_eq!(e.code(), "refused");
    server.join().expect("server");
}

#[test]
fn a_reply_cut_by_the_read_timeout_is_finished_by_the_next_recv() {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (_dir, path, server) = serve(move |lines, out| {
        lines.hello(out);
        lines.next();
        out.write_all(br#"{"id":2,"ok":{"type":"he"#)
            .expect("write");
        rx.recv().expect("go on");
        out.write_all(b"artbeat\"}}\n").expect("write");
    });
    let mut c = Client::connect(Some(&path)).expect("connect");
    c.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    c.send(&Request::Status).expect("send");
    let e = c.recv().expect_err("half a line");
    assert!(matches!(e, Error::Timeout), "{e:?}");
    assert_eq!(e.code(), "timeout");
    tx.send(()).expect("go");
    c.set_streaming().expect("no timeout");
    let r = c.recv().expect("the whole line");
    assert_eq!(r.id, 2);
    assert_eq!(r.outcome.into_result().expect("ok"), Response::Heartbeat);
    server.join().expect("server");
}

#[test]
fn a_closed_connection_is_lost_and_a_wrong_reply_is_a_protocol_error() {
    let (_dir, path, server) = serve(|lines, out| {
        lines.hello(out);
        lines.next();
        // The reply to another request, then one of the wrong type, then half a line and EOF.
        writeln!(out, r#"{{"id":7,"ok":{{"type":"done"}}}}"#).expect("write");
        lines.next();
        writeln!(out, r#"{{"id":3,"ok":{{"type":"done"}}}}"#).expect("write");
        lines.next();
        writeln!(out, "not json").expect("write");
        out.write_all(br#"{"id":5,"#).expect("write");
    });
    let mut c = Client::connect(Some(&path)).expect("connect");
    let e = c.call(&Request::Peers).expect_err("wrong id");
    assert_eq!(
        (e.code(), e.to_string()),
        ("protocol", "reply for request 7 while waiting for 2".into())
    );
    let e = c.status().expect_err("wrong type");
    assert!(
        matches!(&e, Error::Unexpected(r) if **r == Response::Done),
        "{e:?}"
    );
    assert_eq!(e.to_string(), "unexpected reply from chatd: Done");
    let e = c.call(&Request::Peers).expect_err("garbage");
    assert!(
        e.to_string().starts_with("unreadable reply from chatd: "),
        "{e}"
    );
    server.join().expect("server");
    let e = c.recv().expect_err("half a line, then closed");
    assert!(matches!(e, Error::Disconnected), "{e:?}");
    assert!(e.is_lost());
    assert_eq!(e.to_string(), "chatd closed the connection");
}

#[test]
fn a_writer_pipelines_while_the_client_reads() {
    const N: u64 = 2_000;
    let (_dir, path, server) = serve(|lines, out| {
        lines.hello(out);
        for _ in 0..N {
            let r = lines.next();
            let id = r["id"].as_u64().expect("id");
            writeln!(out, r#"{{"id":{id},"ok":{{"type":"done"}}}}"#).expect("write");
        }
    });
    let mut c = Client::connect(Some(&path)).expect("connect");
    let first = c.next_id();
    let mut w = c.writer().expect("writer");
    let writer = std::thread::spawn(move || {
        for id in first..first + N {
            w.send(id, &Request::GroupList).expect("write");
        }
    });
    for id in first..first + N {
        let r = c.recv().expect("reply");
        assert_eq!(r.id, id, "replies in request order");
    }
    writer.join().expect("writer");
    server.join().expect("server");
}

#[test]
fn no_socket_is_not_running_and_lists_what_was_tried() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("none.sock");
    let e = Client::connect(Some(&path)).err().expect("nothing there");
    assert_eq!(e.code(), "not_running");
    let text = e.to_string();
    assert!(
        text.contains(&format!("tried:\n  {}: ", path.display())),
        "{text}"
    );
    assert!(!e.is_lost());
}
