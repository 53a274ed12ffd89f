//! A TCP proxy for peer links: records every byte that crosses it, and can flip one byte of the
//! first encrypted transport record the client sends (after the preamble and the two client
//! handshake messages), to show that tampering is detected.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

pub struct Proxy {
    pub addr: SocketAddr,
    target: Arc<Mutex<Option<SocketAddr>>>,
    /// Every byte seen, both directions, in arrival order.
    pub captured: Arc<Mutex<Vec<u8>>>,
    pub flip: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let target: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let captured: Arc<Mutex<Vec<u8>>> = Arc::default();
        let flip = Arc::new(AtomicBool::new(false));
        let (t, c, f) = (target.clone(), captured.clone(), flip.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Some(to) = *t.lock().unwrap() else {
                    continue;
                };
                let Ok(server) = TcpStream::connect(to) else {
                    continue;
                };
                let flip_now = f.load(Ordering::SeqCst);
                pump(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    c.clone(),
                    flip_now,
                );
                pump(server, client, c.clone(), false);
            }
        });
        Proxy {
            addr,
            target,
            captured,
            flip,
        }
    }

    pub fn set_target(&self, to: SocketAddr) {
        *self.target.lock().unwrap() = Some(to);
    }

    /// New connections are closed at once (a partition, as far as the dialer can tell); links
    /// already through stay up.
    pub fn clear_target(&self) {
        *self.target.lock().unwrap() = None;
    }

    pub fn captured(&self) -> Vec<u8> {
        self.captured.lock().unwrap().clone()
    }
}

/// Copies `from` → `to` on a thread. With `flip`, parses the client's stream (11-byte preamble,
/// then u16-length records) and inverts one byte in the middle of the third record, the first
/// transport record.
fn pump(mut from: TcpStream, mut to: TcpStream, log: Arc<Mutex<Vec<u8>>>, flip: bool) {
    std::thread::spawn(move || {
        let mut offset: usize = 0; // bytes of the stream seen so far
        let mut next_record = peerchat_proto::peer::PREAMBLE.len(); // where the next length is
        let mut records = 0;
        let mut flip_at: Option<usize> = None;
        let mut pending_len: Vec<u8> = Vec::new();
        let mut buf = [0u8; 16384];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let chunk = &mut buf[..n];
            if flip {
                for (i, b) in chunk.iter_mut().enumerate() {
                    let pos = offset + i;
                    if Some(pos) == flip_at {
                        *b ^= 0xff;
                    }
                    if pos >= next_record && pos < next_record + 2 {
                        pending_len.push(*b);
                        if pending_len.len() == 2 {
                            let len = u16::from_be_bytes([pending_len[0], pending_len[1]]) as usize;
                            pending_len.clear();
                            if records == 2 {
                                flip_at = Some(next_record + 2 + len / 2);
                            }
                            records += 1;
                            next_record += 2 + len;
                        }
                    }
                }
            }
            offset += n;
            log.lock().unwrap().extend_from_slice(chunk);
            if to.write_all(chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

/// Forwards every TCP connection to `target` from another source address, as a NAT router
/// does (MASQUERADE): the server sees `from` (e.g. 127.0.0.2), the client its own address.
/// Put in front of registryd, it makes a node look "behind NAT" on loopback.
pub struct SourceNat {
    pub addr: SocketAddr,
}

impl SourceNat {
    pub fn start(target: SocketAddr, from: std::net::IpAddr) -> SourceNat {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind nat");
        let addr = listener.local_addr().expect("nat addr");
        listener.set_nonblocking(true).expect("nonblocking");
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                while let Ok((mut client, _)) = listener.accept().await {
                    tokio::spawn(async move {
                        let socket = tokio::net::TcpSocket::new_v4()?;
                        socket.bind(SocketAddr::new(from, 0))?;
                        let mut server = socket.connect(target).await?;
                        tokio::io::copy_bidirectional(&mut client, &mut server).await?;
                        Ok::<_, std::io::Error>(())
                    });
                }
            });
        });
        SourceNat { addr }
    }
}
