//! What a node is started with ([`Config`]; `main.rs` fills it from the command line, tests
//! directly). A leaf below `lib.rs`: the crate root imports it, it imports only the types of its
//! fields.

use std::path::PathBuf;
use std::time::Duration;

use peerchat_proto::Name;

use crate::delivery::RetryPolicy;
use crate::store::Retention;

#[derive(Debug, Clone)]
pub struct Config {
    pub name: Name,
    /// Host to register instead of the source address the registry sees.
    pub advertise_host: Option<String>,
    /// Port to register instead of the listener's.
    pub advertise_port: Option<u16>,
    /// Registry endpoints (HOST:PORT each, in order of preference); empty: no registry.
    pub registry: Vec<String>,
    pub socket: PathBuf,
    pub db: PathBuf,
    /// The identity key file (made at first start).
    pub identity: PathBuf,
    pub retry: RetryPolicy,
    /// Accept and send the seed's unframed, unauthenticated messages.
    pub legacy: bool,
    /// What to remove and when (default: keep everything).
    pub retention: Retention,
    /// Announce this node and learn others' names on the LAN (DNS-SD over multicast).
    pub lan: bool,
    /// `--lan-interface`: the interfaces (by name) to announce and browse on; empty: every
    /// non-loopback interface.
    pub lan_interfaces: Vec<String>,
    /// Group allowed to use the control socket (mode 0660); `None`: owner only (0600).
    pub socket_group: Option<String>,
    /// `--metrics`: serve Prometheus text on this (loopback) address; `None`: off.
    pub metrics: Option<std::net::SocketAddr>,
}

impl Config {
    /// Defaults for everything but the name and paths.
    pub fn new(name: Name, socket: PathBuf, db: PathBuf) -> Config {
        Config {
            name,
            advertise_host: None,
            advertise_port: None,
            registry: vec!["127.0.0.1:8888".into()],
            socket,
            identity: db.with_extension("key"),
            db,
            retry: RetryPolicy {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(300),
                lifetime: Duration::from_secs(7 * 24 * 3600),
            },
            legacy: false,
            lan: false,
            lan_interfaces: Vec::new(),
            retention: Retention::default(),
            socket_group: None,
            metrics: None,
        }
    }
}
