//! Registry lookups per second: several clients, each on one persistent connection, each
//! keeping two batches of `lookup` requests in flight (docs/protocol.md section 3).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

/// Requests written per batch; two batches are in flight per connection.
const BATCH: usize = 128;

#[derive(Debug, Clone, Serialize)]
pub struct LookupResult {
    pub clients: usize,
    pub pipeline_depth: usize,
    pub lookups: u64,
    pub errors: u64,
    pub secs: f64,
    pub per_sec: f64,
    pub first_error: Option<String>,
}

struct ClientOut {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
}

pub fn lookups(
    addr: SocketAddr,
    clients: usize,
    duration: Duration,
    names: &[String],
) -> anyhow::Result<LookupResult> {
    let mut conns = Vec::new();
    for _ in 0..clients {
        let s = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        conns.push(s);
    }
    let start = Instant::now();
    let deadline = start + duration;
    let threads: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(c, s)| {
            let names = names.to_vec();
            std::thread::spawn(move || client(s, c, &names, deadline))
        })
        .collect();
    let mut r = LookupResult {
        clients,
        pipeline_depth: 2 * BATCH,
        lookups: 0,
        errors: 0,
        secs: 0.0,
        per_sec: 0.0,
        first_error: None,
    };
    for t in threads {
        match t.join() {
            Ok(Ok(o)) => {
                r.lookups += o.ok;
                r.errors += o.errors;
                if r.first_error.is_none() {
                    r.first_error = o.first_error;
                }
            }
            Ok(Err(e)) => {
                r.first_error.get_or_insert(e.to_string());
            }
            Err(_) => {
                r.first_error.get_or_insert("client thread panicked".into());
            }
        }
    }
    r.secs = start.elapsed().as_secs_f64();
    r.per_sec = r.lookups as f64 / r.secs;
    Ok(r)
}

fn client(
    s: TcpStream,
    c: usize,
    names: &[String],
    deadline: Instant,
) -> anyhow::Result<ClientOut> {
    let mut w = s.try_clone()?;
    let mut r = BufReader::with_capacity(64 * 1024, s);
    let mut out = ClientOut {
        ok: 0,
        errors: 0,
        first_error: None,
    };
    let mut id = 0u64;
    let batch = |id: &mut u64| {
        let mut buf = String::with_capacity(BATCH * 48);
        for _ in 0..BATCH {
            *id += 1;
            let name = &names[(*id as usize + c) % names.len()];
            buf.push_str(&format!(
                "{{\"id\":{id},\"op\":\"lookup\",\"name\":\"{name}\"}}\n"
            ));
        }
        buf
    };
    w.write_all(batch(&mut id).as_bytes())?;
    let mut in_flight = BATCH;
    let mut line = Vec::with_capacity(256);
    loop {
        if Instant::now() < deadline {
            w.write_all(batch(&mut id).as_bytes())?;
            in_flight += BATCH;
        }
        // Read one batch of replies (the other batch keeps the registry busy meanwhile).
        for _ in 0..BATCH {
            line.clear();
            if r.read_until(b'\n', &mut line)? == 0 {
                anyhow::bail!("the registry closed the connection");
            }
            if crate::util::contains(&line, b"\"ok\":") {
                out.ok += 1;
            } else {
                out.errors += 1;
                if out.first_error.is_none() {
                    out.first_error = Some(String::from_utf8_lossy(&line).trim().to_string());
                }
            }
        }
        in_flight -= BATCH;
        if in_flight == 0 {
            return Ok(out);
        }
    }
}
