//! `chatctl doctor`: checks the control socket, the registry, the peer port as others see it,
//! the database, and the clock; prints ok/FAIL (or skip) with a hint for each; exit 3 if chatd
//! does not answer, else 1 if any check failed.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use peerchat_client::{candidates, Client, Error};
use peerchat_proto::control::{NodeStatus, PeerInfo, Request, Response};
use peerchat_proto::peer;
use peerchat_proto::PublicKey;
use serde::Serialize;

use crate::exit::{self, Failure};
use crate::output;

#[derive(Serialize)]
struct Check {
    check: &'static str,
    ok: bool,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    hint: Option<String>,
    /// Not run, because what it needs is missing (`detail` says what); not a failure itself.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    skipped: bool,
}

fn ok(check: &'static str, detail: impl Into<String>) -> Check {
    Check {
        check,
        ok: true,
        detail: detail.into(),
        hint: None,
        skipped: false,
    }
}

fn skip(check: &'static str, detail: impl Into<String>) -> Check {
    Check {
        check,
        ok: false,
        detail: detail.into(),
        hint: None,
        skipped: true,
    }
}

/// A peer's presence in words.
fn presence(online: Option<bool>) -> &'static str {
    match online {
        Some(true) => "online",
        Some(false) => "offline",
        None => "presence unknown",
    }
}

fn fail(check: &'static str, detail: impl Into<String>, hint: impl Into<String>) -> Check {
    Check {
        check,
        ok: false,
        detail: detail.into(),
        hint: Some(hint.into()),
        skipped: false,
    }
}

pub fn run(socket: Option<&Path>, json: bool) -> Result<i32, Failure> {
    let mut checks = Vec::new();
    let client = socket_checks(socket, &mut checks);
    // chatd does not answer: the same exit status as every other command (3).
    let mut code = if client.is_none() {
        exit::NOT_RUNNING
    } else {
        exit::OK
    };
    if let Some(mut client) = client {
        let status = client.status().ok();
        if let Some(status) = &status {
            registry_checks(&mut client, status, &mut checks);
        }
        checks.push(match client.call(&Request::CheckDatabase) {
            Ok(Response::DatabaseCheck { ok: true, .. }) => {
                ok("database", "integrity check passed")
            }
            Ok(Response::DatabaseCheck { detail, .. }) => fail(
                "database",
                format!("integrity check found: {detail}"),
                "stop chatd, back up the database, and restore it or start with a fresh --db",
            ),
            Ok(_) | Err(_) => fail(
                "database",
                "chatd could not run the check",
                "see chatd's log",
            ),
        });
        checks.push(clock_check(status.as_ref()));
    }
    for c in &checks {
        if !c.ok && !c.skipped && code == exit::OK {
            code = exit::OTHER;
        }
        if json {
            output::json(c);
        } else {
            let hint = c
                .hint
                .as_deref()
                .map(|h| format!("\n       hint: {h}"))
                .unwrap_or_default();
            output::line(&format!(
                "{} {:9} {}{hint}",
                match (c.ok, c.skipped) {
                    (true, _) => "ok  ",
                    (false, true) => "skip",
                    (false, false) => "FAIL",
                },
                c.check,
                // Details quote addresses from the registry and errors from chatd.
                crate::safe_text::one_line(&c.detail)
            ));
        }
    }
    Ok(code)
}

fn socket_checks(socket: Option<&Path>, checks: &mut Vec<Check>) -> Option<Client> {
    let paths = candidates(socket);
    let Some(path) = paths.iter().find(|p| p.exists()) else {
        let tried: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        checks.push(fail(
            "socket",
            format!("no control socket at {}", tried.join(", ")),
            "start chatd (`systemctl start chatd` or `chatd --name NAME`) or set --socket / $CHATD_SOCKET",
        ));
        return None;
    };
    match std::fs::metadata(path) {
        Ok(m) if !crate::platform::is_endpoint(&m) => {
            checks.push(fail(
                "socket",
                format!("{} exists but is not a socket", path.display()),
                "something else took chatd's socket path: move it away and restart chatd, or point --socket / $CHATD_SOCKET at chatd's socket",
            ));
            return None;
        }
        Ok(m) if crate::platform::mode(&m).is_some_and(|mode| mode & 0o002 != 0) => {
            checks.push(fail(
                "socket",
                format!(
                    "{} is world-writable (mode {:o})",
                    path.display(),
                    crate::platform::mode(&m).unwrap_or(0)
                ),
                "restart chatd; it creates the socket 0600 (0660 with --socket-group)",
            ))
        }
        Ok(m) => checks.push(ok(
            "socket",
            format!(
                "{} exists, mode {:o}",
                path.display(),
                crate::platform::mode(&m).unwrap_or(0)
            ),
        )),
        Err(e) => checks.push(fail(
            "socket",
            format!("{}: {e}", path.display()),
            "check the path",
        )),
    }
    match Client::connect(Some(path)) {
        Ok(c) => {
            checks.push(ok(
                "socket",
                "chatd answers and speaks our protocol version",
            ));
            Some(c)
        }
        Err(Error::NotRunning(tried)) => {
            // Client's message lists every path tried and how to start chatd: here one line
            // (the reason for this path) and one hint are enough.
            let reason = match tried.first() {
                Some((_, e)) => e.to_string(),
                None => "it did not answer".into(),
            };
            checks.push(fail(
                "socket",
                format!("chatd does not answer on {}: {reason}", path.display()),
                "start chatd (`systemctl start chatd` or `chatd --name NAME`); if it runs, see `systemctl status chatd` or its log",
            ));
            None
        }
        Err(e) => {
            let first = e.to_string().lines().next().unwrap_or_default().to_string();
            checks.push(fail(
                "socket",
                first,
                "see `systemctl status chatd` or its log",
            ));
            None
        }
    }
}

fn registry_checks(client: &mut Client, status: &NodeStatus, checks: &mut Vec<Check>) {
    // With several registries, each one that does not answer is named (chatd uses the others).
    if status.registries.len() > 1 {
        for r in status.registries.iter().filter(|r| !r.reachable) {
            checks.push(fail(
                "registry",
                format!(
                    "{} is unreachable from chatd{}",
                    r.address,
                    r.error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default()
                ),
                "chatd uses the other registries meanwhile and comes back to it; start it, or remove it from --registry",
            ));
        }
    }
    if status.registries.is_empty() && status.registry.is_empty() {
        checks.push(skip(
            "registry",
            "chatd runs without a registry (--registry none)",
        ));
        return;
    }
    if !status.registry_reachable {
        checks.push(fail(
            "registry",
            format!("{} is unreachable from chatd", status.registry),
            "start registryd, or fix chatd's --registry; known peers are still reached from the cache",
        ));
        return;
    }
    let peers = match client.call(&Request::Peers) {
        Ok(Response::Peers {
            peers,
            from_cache: false,
        }) => peers,
        Ok(Response::Peers {
            from_cache: true, ..
        }) => {
            checks.push(fail(
                "registry",
                format!(
                    "{} did not answer the name list (chatd's list is from its cache)",
                    status.registry
                ),
                "check that registryd runs and that chatd's --registry points at it; see chatd's log",
            ));
            return;
        }
        Ok(_) => {
            checks.push(fail(
                "registry",
                "chatd sent an unexpected reply to the name list",
                "update chatctl and chatd to the same version",
            ));
            return;
        }
        Err(e) => {
            checks.push(fail(
                "registry",
                format!("could not list names: {e}"),
                "see chatd's log",
            ));
            return;
        }
    };
    checks.push(ok("registry", format!("{} answers", status.registry)));
    checks.push(store_check(&status.registry));
    let me: Option<&PeerInfo> = peers.iter().find(|p| p.name == status.name);
    let registered = !status.address.is_empty();
    // Why there is no address of ours to probe, if there is none.
    let mut unregistered = None;
    match me {
        Some(p) if p.address == status.address && p.online == Some(true) => checks.push(ok(
            "registry",
            format!("{} resolves to us ({})", status.name, p.address),
        )),
        Some(p) if !registered => {
            let why = format!(
                "the registry lists {} at {} ({}), an address chatd did not register",
                status.name,
                p.address,
                presence(p.online)
            );
            checks.push(fail(
                "registry",
                format!("{why}; chatd has not registered yet"),
                "another node may hold the name (a different key), or chatd is still retrying; check chatd's log",
            ));
            unregistered = Some(why);
        }
        Some(p) => checks.push(fail(
            "registry",
            format!(
                "{} resolves to {} ({}), but we registered {}",
                status.name,
                p.address,
                presence(p.online),
                status.address
            ),
            "another node may hold the name, or the lease lapsed; check chatd's log",
        )),
        None => {
            checks.push(fail(
                "registry",
                format!("{} is not registered", status.name),
                "chatd retries registration with backoff; check its log for the reason",
            ));
            unregistered = Some(format!("the registry does not list {}", status.name));
        }
    }
    match unregistered {
        Some(why) if !registered => {
            checks.push(skip("peer port", format!("not registered yet: {why}")))
        }
        _ if !registered => checks.push(skip("peer port", "not registered yet")),
        _ => {
            checks.extend(nat_check(status));
            checks.push(port_check(client, &status.address));
        }
    }
}

/// Asks the registry itself (`status`) whether its store accepts writes: a registry on etcd that
/// lost etcd still answers lookups, but no node can register or move.
fn store_check(registry: &str) -> Check {
    use peerchat_proto::registry::{self, RegistryStatus};
    let asked = (|| -> Result<String, String> {
        let addr = registry
            .to_socket_addrs()
            .map_err(|e| e.to_string())?
            .next()
            .ok_or("no address")?;
        let mut s =
            TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(3)))
            .map_err(|e| e.to_string())?;
        s.write_all(b"{\"id\":1,\"op\":\"status\"}\n")
            .map_err(|e| e.to_string())?;
        let mut line = Vec::new();
        // One short line; bounded in case something else answers.
        let _ = std::io::BufRead::read_until(
            &mut std::io::BufReader::new(s.take(64 * 1024)),
            b'\n',
            &mut line,
        );
        Ok(String::from_utf8_lossy(&line).into_owned())
    })();
    let reply = match asked {
        Ok(r) => r,
        Err(e) => {
            return skip(
                "store",
                format!("could not ask {registry} for its status: {e}"),
            )
        }
    };
    let first = reply.lines().next().unwrap_or_default();
    match serde_json::from_str::<peerchat_proto::envelope::Reply<registry::Response>>(first)
        .map(|r| r.outcome.into_result())
    {
        Ok(Ok(registry::Response::Status(RegistryStatus { store, store_ok: true, names, .. }))) => {
            ok("store", format!("the registry's {store} store accepts registrations ({names} names)"))
        }
        Ok(Ok(registry::Response::Status(RegistryStatus { store, store_detail, .. }))) => fail(
            "store",
            format!("the registry's {store} store refuses registrations: {store_detail}"),
            "lookups still work; new nodes cannot register or move until the registry's operator brings etcd back",
        ),
        _ => skip("store", format!("{registry} does not report its store (an older registryd)")),
    }
}

/// A failed `reachable` check when the registry saw us behind a NAT router (the port probe
/// from inside cannot tell: it may reach the router or even us).
fn nat_check(status: &NodeStatus) -> Option<Check> {
    let why = super::status::nat_statement(status)?;
    Some(fail(
        "reachable",
        format!("no (behind NAT): {why}"),
        "forward the port on the router (then --advertise ROUTER_IP:PORT), or run chatd where others can reach it; until then messages to this node wait in their senders' outboxes",
    ))
}

/// Connects to our registered address the way a peer would: the preamble, then the first two
/// messages of the Noise handshake, and expects the static key of our own identity (then hangs
/// up without identifying itself).
fn port_check(client: &mut Client, address: &str) -> Check {
    let expected = match client.call(&Request::Whoami) {
        Ok(Response::Identity { key, .. }) => PublicKey::from_hex(&key).and_then(|k| k.to_x25519()),
        _ => None,
    };
    let Some(expected) = expected else {
        return fail(
            "peer port",
            "chatd did not report its key",
            "update chatctl and chatd to the same version",
        );
    };
    match probe_static_key(address) {
        Ok(k) if k == expected => ok("peer port", format!("{address} answers with our key")),
        Ok(_) => fail(
            "peer port",
            format!("{address} answers with another node's key"),
            "another node holds this address; check --advertise",
        ),
        Err(e) => fail(
            "peer port",
            format!("{address} does not answer as a peer: {e}"),
            "a firewall or NAT may block it; set --advertise to an address others can reach",
        ),
    }
}

/// The responder's static key from a Noise XX handshake (messages 1 and 2 only).
fn probe_static_key(address: &str) -> Result<[u8; 32], String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let addr = address
        .to_socket_addrs()
        .map_err(|e| err(&e))?
        .next()
        .ok_or("address does not resolve")?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map_err(|e| err(&e))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .map_err(|e| err(&e))?;
    let params: snow::params::NoiseParams = peer::NOISE_PARAMS.parse().map_err(|e| err(&e))?;
    // A throwaway static key: the check never gets as far as sending it.
    let builder = snow::Builder::new(params);
    let throwaway = builder.generate_keypair().map_err(|e| err(&e))?;
    let mut hs = builder
        .local_private_key(&throwaway.private)
        .and_then(|b| b.prologue(peer::PREAMBLE))
        .and_then(|b| b.build_initiator())
        .map_err(|e| err(&e))?;
    let mut buf = vec![0u8; 65_535];
    let n = hs.write_message(&[], &mut buf).map_err(|e| err(&e))?;
    let mut out = peer::PREAMBLE.to_vec();
    out.extend_from_slice(&(n as u16).to_be_bytes());
    out.extend_from_slice(&buf[..n]);
    s.write_all(&out).map_err(|e| err(&e))?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len).map_err(|e| err(&e))?;
    let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut msg).map_err(|e| err(&e))?;
    hs.read_message(&msg, &mut buf).map_err(|e| err(&e))?;
    hs.get_remote_static()
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| "no static key in the handshake".into())
}

fn clock_check(status: Option<&NodeStatus>) -> Check {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // 2025-01-01: anything earlier means the clock was never set.
    if now < 1_735_689_600 {
        return fail(
            "clock",
            "the system clock is before 2025",
            "enable NTP (timedatectl set-ntp true)",
        );
    }
    if let Some(s) = status {
        let started = humantime::parse_rfc3339(&s.started_at)
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs());
        if let Some(started) = started {
            if started > now + 5 || now.saturating_sub(started) > s.uptime_secs + 60 {
                return fail(
                    "clock",
                    "the clock jumped since chatd started",
                    "enable NTP; timestamps of messages may be off",
                );
            }
        }
    }
    ok("clock", "looks sane")
}
