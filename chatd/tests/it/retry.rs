//! Retrying deliveries the way a user expects: the backoff starts afresh after every link that
//! came up, the registry's presence decides when to try (at once when a peer is back, every few
//! seconds while it is online but unreachable, not at all while it is offline), sends are
//! accepted while the registry is down, and dead links are noticed without traffic.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use peerchat_testkit::proxy::Proxy;
use peerchat_testkit::{json_lines, log_field, wait_for, Net, Node, Registry};

const T: Duration = Duration::from_secs(20);

fn send(from: &Node, to: &str, body: &str) -> String {
    let out = from.ctl(&["--json", "send", to, body]);
    assert!(
        out.status.success(),
        "send {to} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    json_lines(&out.stdout)[0]["id"]
        .as_str()
        .expect("id")
        .to_string()
}

/// The `retry_in_ms` of every "delivery attempt failed" line in `node`'s log, in order.
fn retry_delays(node: &Node) -> Vec<u64> {
    node.daemon
        .log_text()
        .lines()
        .filter(|l| l.contains("delivery attempt failed"))
        .filter_map(|l| log_field(l, "retry_in_ms")?.parse().ok())
        .collect()
}

fn count(node: &Node, what: &str) -> usize {
    node.daemon.log_text().matches(what).count()
}

/// A loopback port nothing listens on (yet).
fn free_port() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Item 1: each time the recipient goes away after a link was up, the first retry waits the
/// first step of the schedule again, not the last outage's delay doubled.
#[test]
fn the_backoff_starts_afresh_after_every_link_that_came_up() {
    let net = Net::new();
    let pa = net.node_with("pa", &["--retry-initial", "0.2", "--retry-max", "60"]);
    let mut pb = net.node("pb");
    for round in 0..4 {
        let body = format!("round {round}");
        send(&pa, "pb", &body);
        wait_for(T, "delivery", || pb.bodies().contains(&body).then_some(()));
        let before = retry_delays(&pa).len();
        // The recipient vanishes: the idle link breaks, and a message waits for it.
        pb.daemon.kill9();
        wait_for(T, "the broken link to be noticed", || {
            (retry_delays(&pa).len() > before).then_some(())
        });
        send(&pa, "pb", &format!("while down {round}"));
        wait_for(T, "a failed attempt while pb is down", || {
            (retry_delays(&pa).len() > before + 1).then_some(())
        });
        let delays = retry_delays(&pa);
        assert_eq!(
            delays[before], 200,
            "round {round}: the first retry after a link that was up must wait the first step; delays so far {delays:?}"
        );
        pb.restart();
        let want = format!("while down {round}");
        wait_for(T, "delivery after the restart", || {
            pb.bodies().contains(&want).then_some(())
        });
    }
}

/// Item 2: while the registry reports the recipient offline nothing is attempted, and when it
/// registers again the queued message goes at once (well within 3 s), however long the backoff.
#[test]
fn a_message_for_an_offline_peer_goes_as_soon_as_it_registers() {
    let net = Net::new();
    let pa = net.node_with("pa", &["--retry-initial", "30", "--retry-max", "300"]);
    let mut pb = net.node("pb");
    send(&pa, "pb", "hello");
    pb.wait_inbox(1, T);
    // A clean stop tells the registry pb is offline.
    pb.daemon.terminate(T);
    send(&pa, "pb", "while offline");
    wait_for(T, "the first failed attempt", || {
        (count(&pa, "delivery attempt failed") >= 1).then_some(())
    });
    let attempts = count(&pa, "delivery attempt failed");
    pb.restart();
    let ready = Instant::now();
    wait_for(T, "delivery after pb registered", || {
        pb.bodies()
            .contains(&"while offline".to_string())
            .then_some(())
    });
    let took = ready.elapsed();
    eprintln!("offline peer: delivered after it was ready: {took:?}");
    assert!(
        took < Duration::from_secs(3),
        "delivered {took:?} after pb was ready (backoff 30 s): the registry's news was not used"
    );
    assert!(
        count(&pa, "delivery attempt failed") <= attempts + 1,
        "pa kept polling an offline peer:\n{}",
        pa.daemon.log_text()
    );
}

/// Item 2: while the registry says the recipient is online but it cannot be reached (a
/// partition), attempts come at most a few seconds apart, so the healed partition is used
/// within 15 s even after a long backoff.
#[test]
fn a_healed_partition_is_used_within_15_s() {
    let net = Net::new();
    let pa = net.node_with("pa", &["--retry-initial", "10", "--retry-max", "300"]);
    let proxy = Proxy::start();
    let mut pb = net.node_with("pb", &["--advertise", &proxy.addr.to_string()]);
    proxy.set_target(pb.listen);
    send(&pa, "pb", "before");
    pb.wait_inbox(1, T);
    // Partition: the proxy drops every new connection; the live link goes with a restart of pb
    // (which keeps its registration online: same address, renewed).
    proxy.clear_target();
    pb.daemon.kill9();
    pb.restart();
    send(&pa, "pb", "across the partition");
    wait_for(T, "a failed attempt", || {
        (count(&pa, "delivery attempt failed") >= 2).then_some(())
    });
    // The plain schedule would try again 20 s after the second failure, then 40 s later: the
    // heal at 25 s would wait 35 s for it.
    let partition = Instant::now();
    while partition.elapsed() < Duration::from_secs(25) {
        std::thread::sleep(Duration::from_millis(200));
    }
    proxy.set_target(pb.listen);
    let healed = Instant::now();
    wait_for(Duration::from_secs(30), "delivery after the heal", || {
        pb.bodies()
            .contains(&"across the partition".to_string())
            .then_some(())
    });
    let took = healed.elapsed();
    eprintln!("partition: delivered after the heal: {took:?}");
    assert!(
        took <= Duration::from_secs(15),
        "delivered {took:?} after the partition healed"
    );
}

/// Item 4: a node that starts while the registry is unreachable accepts sends to names it has
/// never seen (queued, "resolving"), delivers them once the registry answers, and fails the ones
/// whose name does not exist with the usual unknown-name error.
#[test]
fn sends_are_accepted_while_the_registry_is_down() {
    let dir = peerchat_testkit::tempdir();
    let registry_addr = free_port();
    let pa = Node::start(dir.path(), "pa", registry_addr);
    let out = pa.ctl(&["send", "pb", "queued while the registry is down"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "send refused while the registry is down: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("queued") && text.contains("resolving"),
        "{text}"
    );
    let typo = send(&pa, "nosuchname", "to nobody");
    // The registry comes back (same address), and pb with it.
    let registry = Registry::start_on(dir.path(), &registry_addr.to_string());
    let pb = Node::start(dir.path(), "pb", registry.addr);
    let started = Instant::now();
    pb.wait_inbox(1, T);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    let failed = Instant::now();
    let status = || String::from_utf8_lossy(&pa.ctl(&["status", &typo]).stdout).to_string();
    while !status().contains(" failed ") {
        assert!(
            failed.elapsed() < T,
            "the message to an unknown name did not fail; pa's log:\n{}",
            pa.daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = status();
    assert!(text.contains("unknown name"), "{text}");
    assert!(
        !pb.daemon.log_text().contains("wrong_key"),
        "pb accused pa of a wrong key:\n{}",
        pb.daemon.log_text()
    );
}

/// Item 5: a peer that vanished without a word (frozen: its sockets stay open, nothing answers)
/// is noticed within about 15 s by the side that dials (pings) and by the side that accepts
/// (silence), with a log line saying so.
#[test]
fn dead_links_are_noticed_without_traffic() {
    let net = Net::new();
    let pa = net.node("pa");
    let pb = net.node("pb");
    send(&pa, "pb", "link up");
    pb.wait_inbox(1, T);
    // The dialing side: pb freezes; pa's idle link must be found dead.
    let frozen = Instant::now();
    pb.daemon.freeze();
    wait_for(
        Duration::from_secs(40),
        "pa to notice the dead link",
        || {
            pa.daemon
                .log_text()
                .contains("stopped answering pings")
                .then_some(())
        },
    );
    let took = frozen.elapsed();
    eprintln!("dead link noticed by the dialer: {took:?}");
    pb.daemon.thaw();
    assert!(took <= Duration::from_secs(20), "pa noticed after {took:?}");

    // The accepting side: a fresh link, then the dialer freezes.
    send(&pa, "pb", "link up again");
    pb.wait_inbox(2, T);
    let before = count(&pb, "dead link");
    let frozen = Instant::now();
    pa.daemon.freeze();
    wait_for(Duration::from_secs(40), "pb to drop the dead link", || {
        (count(&pb, "dead link") > before).then_some(())
    });
    let took = frozen.elapsed();
    eprintln!("dead link noticed by the acceptor: {took:?}");
    pa.daemon.thaw();
    assert!(took <= Duration::from_secs(20), "pb noticed after {took:?}");
}
