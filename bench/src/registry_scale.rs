//! `--only registry-scale`: the registry at scale. A load generator acts as many nodes (real
//! Ed25519-signed registrations and renewals, not chatd processes): N names register, then
//! renew every 30 s while 4 clients look names up (pipelined, for throughput) and one more
//! client times single lookups (for the p99). Run against 2 registryd on a 3-member etcd
//! cluster, then against one registryd on SQLite; RSS of every daemon at the end.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use ed25519_dalek::{Signer as _, SigningKey};
use peerchat_proto::registry::Statement;
use peerchat_proto::{Name, PublicKey};
use peerchat_testkit::etcd::EtcdCluster;
use peerchat_testkit::Registry;
use serde::Serialize;

use crate::procfs;

/// How often every name renews (a node renews every TTL/3; 30 s is the default TTL of 90 s).
const RENEW_EVERY: Duration = Duration::from_secs(30);
/// Registration and renewal connections; requests pipelined in batches on each.
const WRITERS: usize = 8;
const WRITE_BATCH: usize = 64;
/// The registration phase gives up after this long (the run stays bounded).
const REGISTER_LIMIT: Duration = Duration::from_secs(120);

#[derive(Debug, Serialize)]
struct StoreRow {
    store: String,
    names: usize,
    registered: u64,
    register_errors: u64,
    registrations_per_sec: f64,
    renewals: u64,
    renewal_errors: u64,
    renewals_per_sec: f64,
    lookups_per_sec: f64,
    lookup_p50_ms: f64,
    lookup_p99_ms: f64,
    registryd_rss_kb: Vec<u64>,
    etcd_rss_kb: Vec<u64>,
    first_error: Option<String>,
}

/// One node: its name and key.
struct Identity {
    name: Name,
    key: SigningKey,
    public: PublicKey,
}

fn identities(n: usize) -> Vec<Identity> {
    (0..n)
        .map(|i| {
            let mut seed = [7u8; 32];
            seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let key = SigningKey::from_bytes(&seed);
            Identity {
                name: Name::new(format!("n{i}")).expect("valid name"),
                public: PublicKey(key.verifying_key().to_bytes()),
                key,
            }
        })
        .collect()
}

fn register_line(id: &Identity, seq: u64) -> String {
    // The same port every time: a renewal that changes nothing.
    let port = 10_001;
    let sig = id.key.sign(
        &Statement::Register {
            name: &id.name,
            key: &id.public,
            port,
            host: None,
            seq,
        }
        .to_bytes(),
    );
    serde_json::json!({
        "id": seq, "op": "register", "name": id.name.as_str(), "port": port,
        "key": id.public, "seq": seq,
        "sig": peerchat_proto::Signature(sig.to_bytes()),
    })
    .to_string()
}

pub fn run(n: usize, steady: Duration, json: bool) -> anyhow::Result<i32> {
    let dir = peerchat_testkit::tempdir();
    eprintln!("registry-scale: {n} names, signing keys...");
    let ids = Arc::new(identities(n));
    let extra = [
        "--register-rate",
        "1000000000",
        "--max-names",
        "10000000",
        "--max-connections",
        "100000",
    ];
    let mut rows = Vec::new();
    {
        eprintln!(
            "registry-scale: etcd (3 members) + 2 registryd in {}",
            dir.path().display()
        );
        let etcd = EtcdCluster::start(dir.path(), 3, "registry-scale")
            .context("registry-scale needs etcd (Debian: etcd-server)")?;
        let url = etcd.url("/bench/");
        let a = Registry::start_store(dir.path(), "a.log", &url, &extra);
        let b = Registry::start_store(dir.path(), "b.log", &url, &extra);
        let regs = [&a, &b];
        let mut row = measure(
            "etcd (3 members, 2 registryd)",
            &ids,
            &[a.addr, b.addr],
            steady,
        );
        row.registryd_rss_kb = regs
            .iter()
            .filter_map(|r| procfs::rss_kb(r.daemon.child.id()))
            .collect();
        row.etcd_rss_kb = etcd.pids().into_iter().filter_map(procfs::rss_kb).collect();
        rows.push(row);
    }
    {
        eprintln!("registry-scale: SQLite, 1 registryd");
        let sqlite_dir = dir.path().join("sqlite");
        std::fs::create_dir_all(&sqlite_dir)?;
        let r = Registry::start_with(&sqlite_dir, "127.0.0.1:0", &extra);
        let mut row = measure("sqlite (1 registryd)", &ids, &[r.addr], steady);
        row.registryd_rss_kb = procfs::rss_kb(r.daemon.child.id()).into_iter().collect();
        rows.push(row);
    }
    print_rows(&rows);
    if json {
        println!("{}", serde_json::to_string(&rows)?);
    }
    Ok(0)
}

fn measure(
    store: &str,
    ids: &Arc<Vec<Identity>>,
    addrs: &[SocketAddr],
    steady: Duration,
) -> StoreRow {
    let mut row = StoreRow {
        store: store.into(),
        names: ids.len(),
        registered: 0,
        register_errors: 0,
        registrations_per_sec: 0.0,
        renewals: 0,
        renewal_errors: 0,
        renewals_per_sec: 0.0,
        lookups_per_sec: 0.0,
        lookup_p50_ms: 0.0,
        lookup_p99_ms: 0.0,
        registryd_rss_kb: Vec::new(),
        etcd_rss_kb: Vec::new(),
        first_error: None,
    };
    // Registrations: every name once, as fast as the registry takes them.
    eprintln!("  registering {} names", ids.len());
    let start = Instant::now();
    let (ok, errors, first) = writers(ids, addrs, 1, None, start + REGISTER_LIMIT);
    let secs = start.elapsed().as_secs_f64();
    row.registered = ok;
    row.register_errors = errors;
    row.registrations_per_sec = ok as f64 / secs;
    row.first_error = first;
    // Steady state: renewals at N per 30 s, with lookups alongside.
    eprintln!("  {} s of renewals and lookups", steady.as_secs());
    let rate = ids.len() as f64 / RENEW_EVERY.as_secs_f64();
    let names: Vec<String> = ids.iter().map(|i| i.name.as_str().to_string()).collect();
    let start = Instant::now();
    let deadline = start + steady;
    let lookup_threads: Vec<_> = addrs
        .iter()
        .map(|a| {
            let (a, names, per) = (*a, names.clone(), (4 / addrs.len()).max(1));
            std::thread::spawn(move || crate::registry::lookups(a, per, steady, &names))
        })
        .collect();
    let probe_addr = addrs[0];
    let probe_names = names.clone();
    let probe = std::thread::spawn(move || timed_lookups(probe_addr, &probe_names, deadline));
    let (ok, errors, first) = writers(ids, addrs, 2, Some(rate), deadline);
    let secs = start.elapsed().as_secs_f64();
    row.renewals = ok;
    row.renewal_errors = errors;
    row.renewals_per_sec = ok as f64 / secs;
    if row.first_error.is_none() {
        row.first_error = first;
    }
    let mut per_instance = Vec::new();
    for t in lookup_threads {
        if let Ok(Ok(r)) = t.join() {
            per_instance.push(r.per_sec);
        }
    }
    row.lookups_per_sec = per_instance.iter().sum();
    if let Ok(mut lat) = probe.join() {
        lat.sort_by(f64::total_cmp);
        let at = |q: f64| {
            lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0.0)
        };
        row.lookup_p50_ms = at(0.50);
        row.lookup_p99_ms = at(0.99);
    }
    row
}

/// Sends one signed registration (sequence number `seq`) per name, spread over [`WRITERS`]
/// pipelined connections across `addrs`, at `rate` per second if given; until done or
/// `deadline`. Returns (accepted, refused, first refusal).
fn writers(
    ids: &Arc<Vec<Identity>>,
    addrs: &[SocketAddr],
    seq: u64,
    rate: Option<f64>,
    deadline: Instant,
) -> (u64, u64, Option<String>) {
    let ok = Arc::new(AtomicU64::new(0));
    let bad = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let threads: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (ids, ok, bad) = (ids.clone(), ok.clone(), bad.clone());
            let addr = addrs[w % addrs.len()];
            std::thread::spawn(move || -> Option<String> {
                let s = TcpStream::connect(addr).ok()?;
                s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
                let mut wr = s.try_clone().ok()?;
                let mut rd = BufReader::new(s);
                let mut first = None;
                let mine: Vec<usize> = (w..ids.len()).step_by(WRITERS).collect();
                let mut line = String::new();
                for (k, chunk) in mine.chunks(WRITE_BATCH).enumerate() {
                    if Instant::now() >= deadline {
                        break;
                    }
                    if let Some(rate) = rate {
                        // This writer's share of the rate: its k-th batch is due at...
                        let due = start
                            + Duration::from_secs_f64((k * WRITE_BATCH * WRITERS) as f64 / rate);
                        if due >= deadline {
                            break;
                        }
                        std::thread::sleep(due.saturating_duration_since(Instant::now()));
                    }
                    let mut buf = String::new();
                    for i in chunk {
                        buf.push_str(&register_line(&ids[*i], seq));
                        buf.push('\n');
                    }
                    if wr.write_all(buf.as_bytes()).is_err() {
                        return Some("write failed".into());
                    }
                    for _ in chunk {
                        line.clear();
                        if rd.read_line(&mut line).unwrap_or(0) == 0 {
                            return Some("registry closed the connection".into());
                        }
                        if line.contains("\"ok\":") {
                            ok.fetch_add(1, Ordering::Relaxed);
                        } else {
                            bad.fetch_add(1, Ordering::Relaxed);
                            first.get_or_insert_with(|| line.trim().to_string());
                        }
                    }
                }
                first
            })
        })
        .collect();
    let mut first = None;
    for t in threads {
        if let Ok(Some(e)) = t.join() {
            first.get_or_insert(e);
        }
    }
    (
        ok.load(Ordering::Relaxed),
        bad.load(Ordering::Relaxed),
        first,
    )
}

/// Single lookups, one in flight, until `deadline`: each one's time in milliseconds.
fn timed_lookups(addr: SocketAddr, names: &[String], deadline: Instant) -> Vec<f64> {
    let mut out = Vec::new();
    let Ok(s) = TcpStream::connect(addr) else {
        return out;
    };
    let _ = s.set_nodelay(true);
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(mut w) = s.try_clone() else { return out };
    let mut r = BufReader::new(s);
    let mut line = String::new();
    let mut i = 0usize;
    while Instant::now() < deadline {
        i += 7919;
        let name = &names[i % names.len()];
        let t = Instant::now();
        if w.write_all(format!("{{\"id\":1,\"op\":\"lookup\",\"name\":\"{name}\"}}\n").as_bytes())
            .is_err()
        {
            break;
        }
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        out.push(t.elapsed().as_secs_f64() * 1000.0);
        // About 1,000 samples a second: a probe, not part of the load.
        std::thread::sleep(Duration::from_micros(900));
    }
    out
}

fn print_rows(rows: &[StoreRow]) {
    eprintln!(
        "\nregistry at scale ({} names, renewing every 30 s):",
        rows.first().map_or(0, |r| r.names)
    );
    eprintln!(
        "{:32} {:>10} {:>10} {:>10} {:>10} {:>10} {:>16} {:>20}",
        "store",
        "reg/s",
        "renew/s",
        "lookups/s",
        "p50 ms",
        "p99 ms",
        "registryd RSS MB",
        "etcd RSS MB"
    );
    for r in rows {
        let mb = |v: &[u64]| {
            v.iter()
                .map(|k| format!("{}", k / 1024))
                .collect::<Vec<_>>()
                .join("+")
        };
        eprintln!(
            "{:32} {:>10.0} {:>10.0} {:>10.0} {:>10.2} {:>10.2} {:>16} {:>20}",
            r.store,
            r.registrations_per_sec,
            r.renewals_per_sec,
            r.lookups_per_sec,
            r.lookup_p50_ms,
            r.lookup_p99_ms,
            mb(&r.registryd_rss_kb),
            mb(&r.etcd_rss_kb)
        );
        eprintln!(
            "{:32} registered {} (refused {}), renewals {} (refused {}){}",
            "",
            r.registered,
            r.register_errors,
            r.renewals,
            r.renewal_errors,
            r.first_error
                .as_deref()
                .map(|e| format!("; first refusal: {e}"))
                .unwrap_or_default()
        );
    }
}
