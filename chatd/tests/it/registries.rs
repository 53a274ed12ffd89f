//! Several registries (issue 20): chatd registers with every one, moves to the next when one
//! stops answering (a frozen one: the timeout; a killed one: refused connections) and comes back
//! to the first when it answers again, and a lookup takes the freshest signed record of the
//! independent registries. Two registryd binaries with their own databases on loopback; the
//! nodes in-process.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use peerchat_proto::control::{DeliveryState, NodeStatus, Request, Response};
use peerchat_testkit::inproc::{accepted_id, send_request, InProcNode};
use peerchat_testkit::{tempdir, wait_for, Registry};

const T: Duration = Duration::from_secs(30);

fn registry(dir: &Path, sub: &str) -> Registry {
    let d = dir.join(sub);
    std::fs::create_dir_all(&d).unwrap();
    Registry::start(&d)
}

/// A node that lists `registries` (in that order), with a fast retry policy.
fn node(dir: &Path, name: &str, registries: &[SocketAddr]) -> InProcNode {
    let list: Vec<String> = registries.iter().map(|a| a.to_string()).collect();
    InProcNode::start_with(dir, name, registries[0], configure(list))
}

fn configure(list: Vec<String>) -> Arc<dyn Fn(&mut chatd::Config) + Send + Sync> {
    Arc::new(move |c: &mut chatd::Config| {
        c.registry = list.clone();
        c.retry.initial = Duration::from_millis(200);
        c.retry.max = Duration::from_secs(1);
    })
}

fn status(node: &InProcNode) -> NodeStatus {
    match node.call(Request::Status) {
        Ok(Response::Status(s)) => s,
        other => panic!("status: {other:?}"),
    }
}

/// Waits until `node` is registered with every registry it lists.
fn wait_registered_everywhere(node: &InProcNode) {
    wait_for(T, "registered with every registry", || {
        let s = status(node);
        (s.registries.len() >= 2 && s.registries.iter().all(|r| r.registered.is_some()))
            .then_some(())
    });
}

/// Sends and waits (bounded) for delivery; returns the final state.
fn send_and_wait(from: &InProcNode, to: &str, body: &str, within: Duration) -> DeliveryState {
    let id = accepted_id(from.call(send_request(to, body, None)));
    let reply = from.call(Request::Wait {
        msg_id: id.clone(),
        timeout_ms: Some(within.as_millis() as u64),
    });
    let Ok(Response::MessageInfo(info)) = reply else {
        panic!("wait {id}: {reply:?}");
    };
    info.recipients[0].state
}

/// Restarts `node` on a new peer port (it moved), with `registries`.
fn move_node(node: &mut InProcNode, registries: &[SocketAddr]) {
    node.stop();
    node.listen = "127.0.0.1:0".parse().unwrap();
    node.configure = configure(registries.iter().map(|a| a.to_string()).collect());
    node.restart();
}

#[test]
fn a_registry_that_stops_answering_hands_over_to_the_next_and_comes_back_later() {
    let dir = tempdir();
    let mut r1 = registry(dir.path(), "r1");
    let r2 = registry(dir.path(), "r2");
    let both = [r1.addr, r2.addr];
    let pa = node(dir.path(), "pa", &both);
    let mut pb = node(dir.path(), "pb", &both);
    wait_registered_everywhere(&pa);
    wait_registered_everywhere(&pb);
    assert_eq!(
        status(&pa).registry,
        r1.addr.to_string(),
        "the first listed"
    );
    assert_eq!(send_and_wait(&pa, "pb", "one", T), DeliveryState::Delivered);

    // r1 freezes (accepts connections, answers nothing: only the timeout tells), and pb moves:
    // the first registry cannot say where to, the second can.
    r1.daemon.freeze();
    move_node(&mut pb, &both);
    assert_eq!(
        send_and_wait(&pa, "pb", "two", T),
        DeliveryState::Delivered,
        "delivered through the second registry; pa's log:\n{}",
        pa.log_text()
    );
    let s = status(&pa);
    assert_eq!(s.registry, r2.addr.to_string(), "{s:?}");
    assert!(s.registry_reachable);
    assert!(!s.registries[0].reachable, "{s:?}");

    // r1 is killed; pb moves again; sends keep working.
    r1.daemon.kill9();
    move_node(&mut pb, &both);
    assert_eq!(
        send_and_wait(&pa, "pb", "three", T),
        DeliveryState::Delivered
    );

    // r1 comes back on its port (its database kept): pa registers with it again and uses it.
    let r1_dir = dir.path().join("r1");
    let r1 = Registry::start_on(&r1_dir, &r1.addr.to_string());
    wait_for(T, "pa back on the first registry", || {
        let s = status(&pa);
        (s.registry == r1.addr.to_string() && s.registries[0].registered.is_some()).then_some(())
    });
    assert_eq!(pb.wait_inbox(3, T), ["one", "two", "three"]);
}

#[test]
fn a_lookup_takes_the_freshest_signed_record_of_independent_registries() {
    let dir = tempdir();
    let r1 = registry(dir.path(), "r1");
    let r2 = registry(dir.path(), "r2");
    let both = [r1.addr, r2.addr];
    let pa = node(dir.path(), "pa", &both);
    let mut pb = node(dir.path(), "pb", &both);
    wait_registered_everywhere(&pb);
    assert_eq!(send_and_wait(&pa, "pb", "one", T), DeliveryState::Delivered);
    // pb moves and registers with r2 only: r1 (listed first by pa, and answering) keeps pb's
    // old signed record, r2 has the newer one.
    move_node(&mut pb, &[r2.addr]);
    assert_eq!(
        send_and_wait(&pa, "pb", "two", T),
        DeliveryState::Delivered,
        "pa must take r2's newer record over r1's; pa's log:\n{}\npb's log:\n{}",
        pa.log_text(),
        pb.log_text()
    );
    assert_eq!(
        status(&pa).registry,
        r1.addr.to_string(),
        "r1 still answers"
    );
    // Both registries list pb; `peers` shows the freshest (the new address), from a registry.
    let Ok(Response::Peers { peers, .. }) = pa.call(Request::Peers) else {
        panic!("peers")
    };
    let p = peers.iter().find(|p| p.name.as_str() == "pb").unwrap();
    assert_eq!(p.address, pb.listen.to_string());
    assert_eq!(p.source.as_deref(), Some("registry"));
}
