//! `--lan`: announces this node with DNS-SD over multicast and browses for the others, through
//! the mdns-sd crate (its own thread; we read its events on the runtime). The record format is
//! in docs/protocol.md 3.10.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use mdns_sd::{IfKind, ServiceDaemon, ServiceEvent, ServiceInfo};
use peerchat_proto::{Name, PublicKey};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::interfaces::Selection;
use super::{Announcement, LanTable, SERVICE_TYPE, TXT_VERSION};

/// How long shutdown waits for the withdrawal (goodbye packets) to go out.
const GOODBYE_WAIT: Duration = Duration::from_millis(500);

/// What we announce.
pub struct Ours {
    pub name: Name,
    pub key: PublicKey,
    pub port: u16,
}

/// The DNS-SD instance name: `pc-` and the first 16 hex digits of the key. Unique per key (so
/// two keys claiming one name are two instances, and both are seen), and short (a DNS label
/// has 63 bytes, a name up to 64); the name itself travels in the TXT record.
pub fn instance_name(key: &PublicKey) -> String {
    format!("pc-{}", &key.to_hex()[..16])
}

/// Starts announcing and browsing on the interfaces of `selection`; the returned future runs
/// until `stop`, then withdraws the announcement. Errors only if mdns-sd cannot start.
pub fn start(
    ours: Ours,
    selection: &Selection,
    table: Arc<LanTable>,
    on_heard: impl Fn(&Name) + Send + 'static,
    stop: CancellationToken,
) -> Result<impl std::future::Future<Output = ()>, mdns_sd::Error> {
    let daemon = ServiceDaemon::new()?;
    // mdns-sd starts on every interface, loopback included; the selection is sent before
    // `register` and `browse` (its commands run in order), so no query or announcement goes
    // out anywhere else. (Its thread may already have joined the mDNS group on the others,
    // which the kernel reports with IGMP/MLD: see docs/security.md.)
    match selection {
        Selection::NonLoopback => {
            daemon.disable_interface(vec![IfKind::LoopbackV4, IfKind::LoopbackV6])?
        }
        Selection::Named { names, .. } => {
            daemon.disable_interface(IfKind::All)?;
            daemon.enable_interface(names.iter().map(IfKind::from).collect::<Vec<_>>())?;
        }
    }
    let loopback_lan = selection.accepts_loopback();
    let instance = instance_name(&ours.key);
    let host = format!("{instance}.local.");
    let mut txt = HashMap::new();
    txt.insert("v".to_string(), TXT_VERSION.to_string());
    txt.insert("name".to_string(), ours.name.to_string());
    txt.insert("key".to_string(), ours.key.to_hex());
    let info =
        ServiceInfo::new(SERVICE_TYPE, &instance, &host, "", ours.port, txt)?.enable_addr_auto();
    let fullname = info.get_fullname().to_string();
    daemon.register(info)?;
    let events = daemon.browse(SERVICE_TYPE)?;
    let on = match selection {
        Selection::NonLoopback => "every non-loopback interface".to_string(),
        Selection::Named { names, .. } => names.join(","),
    };
    info!(instance = %instance, port = ours.port, interfaces = %on, "announcing this node on the LAN (DNS-SD {SERVICE_TYPE})");
    Ok(async move {
        loop {
            let event = tokio::select! {
                _ = stop.cancelled() => break,
                e = events.recv_async() => match e {
                    Ok(e) => e,
                    Err(_) => {
                        warn!("the LAN browser stopped; names are no longer learned from the LAN");
                        stop.cancelled().await;
                        break;
                    }
                },
            };
            handle(event, &ours.key, loopback_lan, &table, &on_heard);
        }
        // Withdraw (goodbye packets), so others forget us now rather than at the TTL.
        if let Ok(done) = daemon.unregister(&fullname) {
            let _ = tokio::time::timeout(GOODBYE_WAIT, done.recv_async()).await;
        }
        let _ = daemon.shutdown();
    })
}

fn handle(
    event: ServiceEvent,
    own_key: &PublicKey,
    loopback_lan: bool,
    table: &LanTable,
    on_heard: &impl Fn(&Name),
) {
    match event {
        ServiceEvent::ServiceResolved(s) => {
            let txt: Vec<(String, Option<String>)> = s
                .txt_properties
                .iter()
                .take(64)
                .map(|p| {
                    let v = p.val().and_then(|v| std::str::from_utf8(v).ok());
                    (p.key().to_string(), v.map(str::to_string))
                })
                .collect();
            let addrs: Vec<IpAddr> = s
                .addresses
                .iter()
                .take(64)
                .map(|a| a.to_ip_addr())
                .collect();
            match Announcement::parse(&s.fullname, &txt, s.port, &addrs, loopback_lan) {
                Ok(a) if a.key == *own_key => {}
                Ok(a) => {
                    let name = a.name.clone();
                    let (key, address) = (a.key.fingerprint(), a.address);
                    if table.insert(a) {
                        info!(name = %name, fingerprint = %key, address = %address, "heard a name on the LAN");
                        on_heard(&name);
                    }
                }
                Err(e) => {
                    debug!(instance = %s.fullname.escape_debug(), error = %e, "ignored a LAN announcement")
                }
            }
        }
        ServiceEvent::ServiceRemoved(_, fullname) => {
            for name in table.remove(&fullname) {
                info!(name = %name, "a name left the LAN");
            }
        }
        _ => {}
    }
}
