//! Talking to registryd on the wire, as a node or a seed peer would, for tests that check its
//! replies byte for byte (every read bounded by a 5 s timeout).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

/// A connection to `addr` whose reads give up after 5 s.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect to registryd");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    s
}

/// Sends JSON request lines on one connection (pipelined) and returns one parsed reply per line.
pub fn ask<S: AsRef<str>>(addr: SocketAddr, lines: &[S]) -> Vec<Value> {
    let mut s = connect(addr);
    let mut all = String::new();
    for l in lines {
        all.push_str(l.as_ref());
        all.push('\n');
    }
    s.write_all(all.as_bytes()).expect("write requests");
    let mut r = BufReader::new(s);
    (0..lines.len())
        .map(|_| {
            let mut line = String::new();
            r.read_line(&mut line).expect("read a reply");
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
        })
        .collect()
}

/// One exchange of the seed's text protocol: `text` as is (no terminator added), then the reply
/// until registryd closes the connection.
pub fn seed(addr: SocketAddr, text: &str) -> String {
    let mut s = connect(addr);
    s.write_all(text.as_bytes())
        .expect("write the seed request");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}
