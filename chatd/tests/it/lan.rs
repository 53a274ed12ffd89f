//! `--lan` (issue 20): two chatd binaries in network namespaces of their own, joined by a veth
//! pair, with no registryd at all, find each other by DNS-SD over multicast and chat by name
//! both ways; an impostor announcing a pinned name is refused both ways. And with
//! `--lan-interface lo` two nodes on one host find each other over loopback while nothing of
//! DNS-SD leaves on the other interfaces. Needs root (network namespaces) and `ip`; without
//! them the tests say so and pass without running.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use peerchat_testkit::{bin, chatctl, json_lines, spawn_logged, tempdir, wait_for, Daemon};

const T: Duration = Duration::from_secs(30);

/// Two network namespaces joined by a veth pair on 10.232.N.0/24, deleted on drop (also when
/// the test fails).
struct Lan {
    namespaces: [String; 2],
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Lan {
    fn new() -> Result<Lan, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root".into());
        }
        let id = std::process::id();
        let lan = Lan {
            namespaces: [format!("pclan-a-{id}"), format!("pclan-b-{id}")],
        };
        for ns in &lan.namespaces {
            ip(&["netns", "add", ns])?;
        }
        let (va, vb) = (format!("pcva{id}"), format!("pcvb{id}"));
        let [a, b] = &lan.namespaces;
        ip(&[
            "link", "add", &va, "netns", a, "type", "veth", "peer", "name", &vb, "netns", b,
        ])?;
        let subnet = id % 250;
        for (ns, dev, host) in [(a, &va, 1), (b, &vb, 2)] {
            let addr = format!("10.232.{subnet}.{host}/24");
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "addr", "add", &addr, "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "multicast", "on", "up"])?;
            ip(&["-n", ns, "route", "add", "224.0.0.0/4", "dev", dev])?;
        }
        Ok(lan)
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth pair, and with it the other end.
        for ns in &self.namespaces {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

struct LanNode {
    daemon: Daemon,
    socket: std::path::PathBuf,
}

/// chatd NAME with `--lan --registry none` inside namespace `ns`, its files in `dir` under
/// `file` (so an impostor can use the same name with other files).
fn start(dir: &Path, ns: &str, name: &str, file: &str) -> LanNode {
    start_with(dir, ns, name, file, &["--listen", "0.0.0.0:0"])
}

fn start_with(dir: &Path, ns: &str, name: &str, file: &str, extra: &[&str]) -> LanNode {
    let socket = dir.join(format!("{file}.sock"));
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .arg(bin("chatd"))
        .args(["--name", name, "--lan", "--registry", "none"])
        .args(extra)
        .args(["--retry-initial", "0.2", "--retry-max", "1"])
        .arg("--socket")
        .arg(&socket)
        .arg("--db")
        .arg(dir.join(format!("{file}.db")));
    let (daemon, _) = spawn_logged(cmd, &dir.join(format!("{file}.log")), "chatd ready");
    LanNode { daemon, socket }
}

fn json(node: &LanNode, args: &[&str]) -> Vec<serde_json::Value> {
    let mut a = vec!["--json"];
    a.extend(args);
    json_lines(&chatctl(&node.socket, &a, None).stdout)
}

/// `peers`' entry for `name`, once it is there.
fn wait_peer(node: &LanNode, name: &str, key: &str) -> serde_json::Value {
    wait_for(T, &format!("{name} heard on the LAN ({key})"), || {
        json(node, &["peers"])
            .into_iter()
            .find(|p| p["name"] == name && p["key"] == key)
    })
}

fn bodies(node: &LanNode) -> Vec<String> {
    json(node, &["inbox"])
        .iter()
        .filter_map(|m| m["body"].as_str().map(str::to_string))
        .collect()
}

fn wait_body(node: &LanNode, body: &str) {
    wait_for(T, &format!("{body:?} received"), || {
        bodies(node).iter().any(|b| b == body).then_some(())
    });
}

/// Sends; returns the message id, or `None` if chatd refused the send (with its stderr).
fn send(from: &LanNode, to: &str, body: &str) -> Result<String, String> {
    let out = chatctl(&from.socket, &["--json", "send", to, body], None);
    if out.status.success() {
        Ok(json_lines(&out.stdout)[0]["id"]
            .as_str()
            .expect("id")
            .to_string())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The error recorded for message `id`'s recipient, once it contains `what` (the first
/// attempt may fail otherwise: the last address it had for the name is gone).
fn wait_error(from: &LanNode, id: &str, what: &str) -> String {
    wait_for(T, &format!("an attempt to fail with {what:?}"), || {
        let v = json(from, &["status", id]);
        let r = &v.first()?["recipients"][0];
        r["error"]
            .as_str()
            .filter(|e| e.contains(what))
            .map(str::to_string)
    })
}

#[test]
fn two_nodes_without_a_registry_chat_by_name_on_the_lan_and_refuse_an_impostor() {
    let lan = match Lan::new() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("SKIPPED: the LAN test needs root and `ip` to make network namespaces ({e})");
            return;
        }
    };
    let dir = tempdir();
    let [a, b] = &lan.namespaces;
    let pa = start(dir.path(), a, "pa", "pa");
    let mut pb = start(dir.path(), b, "pb", "pb");

    // Each hears the other (a new key, from the LAN), and they chat by name both ways.
    let heard = wait_peer(&pa, "pb", "new");
    assert_eq!(heard["source"], "lan", "{heard}");
    wait_peer(&pb, "pa", "new");
    send(&pa, "pb", "hello pb").expect("send");
    wait_body(&pb, "hello pb");
    send(&pb, "pa", "hello pa").expect("send");
    wait_body(&pa, "hello pa");
    let pinned = wait_peer(&pa, "pb", "pinned");

    // pb goes; an impostor takes the name pb (another key) at the same place on the LAN.
    pb.daemon.terminate(Duration::from_secs(10));
    let impostor = start(dir.path(), b, "pb", "impostor");
    let changed = wait_peer(&pa, "pb", "changed");
    assert_ne!(changed["fingerprint"], pinned["fingerprint"]);

    // pa never sends to it: the send is refused, or its attempts fail, as a key change.
    match send(&pa, "pb", "for pb only") {
        Err(refusal) => assert!(refusal.contains("key_changed"), "{refusal}"),
        Ok(id) => {
            wait_error(&pa, &id, "key of pb changed");
        }
    }
    // And pa refuses the impostor's messages as pb's.
    let id = send(&impostor, "pa", "I am pb").expect("the impostor's send is accepted locally");
    wait_error(&impostor, &id, "your key is not the one bound to pb");
    assert_eq!(
        bodies(&pa),
        ["hello pa"],
        "pa took nothing from the impostor"
    );
    assert!(
        !bodies(&impostor).iter().any(|b| b == "for pb only"),
        "the impostor got pb's message"
    );
    drop(impostor);
    drop(pa);
    drop(lan);
}

/// A network namespace of its own for a loopback LAN: `lo` as the host has it (up, without the
/// MULTICAST flag), and a veth pair standing for the real network (an address and multicast on
/// the first end, whose outgoing frames are captured: no DNS-SD may appear there). Deleted on
/// drop. (A veth pair, not a dummy interface: not every kernel has the dummy module.)
struct LoopbackLan {
    ns: String,
    /// The captured interface (one end of a veth pair).
    dummy: String,
    subnet: u32,
}

impl LoopbackLan {
    fn new() -> Result<LoopbackLan, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root".into());
        }
        let id = std::process::id();
        let lan = LoopbackLan {
            ns: format!("pclo-{id}"),
            dummy: format!("pcv{id}"),
            subnet: id % 250,
        };
        ip(&["netns", "add", &lan.ns])?;
        let n = lan.ns.as_str();
        ip(&["-n", n, "link", "set", "lo", "up"])?;
        let peer = format!("{}p", lan.dummy);
        ip(&[
            "-n", n, "link", "add", &lan.dummy, "type", "veth", "peer", "name", &peer,
        ])?;
        let addr = format!("10.233.{}.1/24", lan.subnet);
        ip(&["-n", n, "addr", "add", &addr, "dev", &lan.dummy])?;
        ip(&["-n", n, "link", "set", &lan.dummy, "multicast", "on", "up"])?;
        ip(&["-n", n, "link", "set", &peer, "up"])?;
        Ok(lan)
    }
}

impl Drop for LoopbackLan {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.ns]);
    }
}

/// What left on an interface while [`Capture`] ran.
#[derive(Debug, Default)]
struct Seen {
    /// Our own probe datagram (so a capture that saw nothing really looked).
    probe: bool,
    /// mDNS (UDP port 5353, IPv4 or IPv6).
    mdns: usize,
    frames: usize,
}

/// Every frame leaving `dev` in namespace `ns`, read by a thread that joined the namespace
/// (setns changes only the calling thread) with a raw packet socket.
struct Capture {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Result<Seen, String>>,
}

impl Capture {
    fn start(lan: &LoopbackLan) -> Capture {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (ns, dev, subnet) = (lan.ns.clone(), lan.dummy.clone(), lan.subnet);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || capture(&ns, &dev, subnet, &flag, ready_tx));
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the capture started");
        Capture { stop, thread }
    }

    fn finish(self) -> Seen {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread
            .join()
            .expect("capture thread")
            .expect("capture")
    }
}

fn capture(
    ns: &str,
    dev: &str,
    subnet: u32,
    stop: &std::sync::atomic::AtomicBool,
    ready: std::sync::mpsc::Sender<()>,
) -> Result<Seen, String> {
    use std::os::fd::AsRawFd;
    let netns = std::fs::File::open(format!("/var/run/netns/{ns}")).map_err(|e| e.to_string())?;
    // SAFETY: a valid namespace fd; only this thread moves.
    if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!("setns: {}", std::io::Error::last_os_error()));
    }
    let all = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2); the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, all as i32) };
    if fd < 0 {
        return Err(format!("socket: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: fd is ours and open.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let name = std::ffi::CString::new(dev).map_err(|e| e.to_string())?;
    // SAFETY: a NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    // SAFETY: sockaddr_ll is plain data; zeroed is a valid start.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = all;
    sll.sll_ifindex = index as i32;
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    // SAFETY: valid pointers and sizes for bind(2) and setsockopt(2).
    unsafe {
        if libc::bind(
            sock.as_raw_fd(),
            &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        ) != 0
            || libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &timeout as *const libc::timeval as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as u32,
            ) != 0
        {
            return Err(format!("bind: {}", std::io::Error::last_os_error()));
        }
    }
    // The probe: a datagram that leaves on the captured interface (its subnet's broadcast
    // address: no neighbour to resolve first).
    let probe =
        std::net::UdpSocket::bind(format!("10.233.{subnet}.1:0")).map_err(|e| e.to_string())?;
    probe.set_broadcast(true).map_err(|e| e.to_string())?;
    probe
        .send_to(b"pc-probe", format!("10.233.{subnet}.255:9"))
        .map_err(|e| e.to_string())?;
    let _ = ready.send(());
    let mut seen = Seen::default();
    let mut buf = vec![0u8; 65536];
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        // SAFETY: buf is valid for its length.
        let n = unsafe {
            libc::recv(
                sock.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                0,
            )
        };
        if n <= 0 {
            continue;
        }
        let f = &buf[..n as usize];
        seen.frames += 1;
        let udp = match f.get(12..14) {
            Some([0x08, 0x00]) if f.get(23) == Some(&17) => {
                let ihl = usize::from(f.get(14).copied().unwrap_or(0) & 15) * 4;
                f.get(14 + ihl..14 + ihl + 8)
            }
            Some([0x86, 0xdd]) if f.get(20) == Some(&17) => f.get(54..62),
            _ => None,
        };
        if let Some(u) = udp {
            let (sport, dport) = (
                u16::from_be_bytes([u[0], u[1]]),
                u16::from_be_bytes([u[2], u[3]]),
            );
            if sport == 5353 || dport == 5353 {
                seen.mdns += 1;
            }
            if dport == 9 && f.ends_with(b"pc-probe") {
                seen.probe = true;
            }
        }
    }
    Ok(seen)
}

#[test]
fn two_nodes_on_one_host_chat_by_name_over_loopback_and_nothing_leaves_on_other_interfaces() {
    let lan = match LoopbackLan::new() {
        Ok(l) => l,
        Err(e) if e == "not root" || e.starts_with("ip: ") => {
            eprintln!("SKIPPED: the loopback LAN test needs root and `ip` to make a network namespace ({e})");
            return;
        }
        Err(e) => panic!("setting up the namespace: {e}"),
    };
    let capture = Capture::start(&lan);
    let dir = tempdir();
    let on_lo = ["--listen", "127.0.0.1:0", "--lan-interface", "lo"];
    let pa = start_with(dir.path(), &lan.ns, "pa", "pa", &on_lo);
    let pb = start_with(dir.path(), &lan.ns, "pb", "pb", &on_lo);

    // Each hears the other at its loopback address, and they chat by name both ways.
    let heard = wait_peer(&pa, "pb", "new");
    assert_eq!(heard["source"], "lan", "{heard}");
    assert!(
        heard["address"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{heard}"
    );
    wait_peer(&pb, "pa", "new");
    send(&pa, "pb", "hello pb").expect("send");
    wait_body(&pb, "hello pb");
    send(&pb, "pa", "hello pa").expect("send");
    wait_body(&pa, "hello pa");
    drop((pa, pb));

    let seen = capture.finish();
    assert!(
        seen.probe,
        "the capture saw nothing, not even its probe: {seen:?}"
    );
    assert_eq!(seen.mdns, 0, "DNS-SD left on {}: {seen:?}", lan.dummy);
    eprintln!("frames that left on {} meanwhile (the probe; IGMP/MLD membership reports of mdns-sd's start-up join): {}", lan.dummy, seen.frames);
    drop(lan);
}

#[test]
fn a_lan_interface_that_is_not_there_is_a_start_up_error() {
    let dir = tempdir();
    let out = Command::new(bin("chatd"))
        .args(["--name", "pa", "--registry", "none", "--lan"])
        .args(["--lan-interface", "lo,pc-no-such0"])
        .arg("--socket")
        .arg(dir.path().join("pa.sock"))
        .arg("--db")
        .arg(dir.path().join("pa.db"))
        .output()
        .expect("run chatd");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no network interface named \"pc-no-such0\""),
        "{err}"
    );
    assert!(!dir.path().join("pa.sock").exists(), "nothing started");
    // Without --lan the option is a usage error (2): it would do nothing.
    let out = Command::new(bin("chatd"))
        .args(["--name", "pa", "--lan-interface", "lo"])
        .output()
        .expect("run chatd");
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
