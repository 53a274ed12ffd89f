//! What every part of a running node shares.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use peerchat_proto::Name;

use crate::delivery::Delivery;
use crate::identity::Identity;
use crate::lan::LanTable;
use crate::lease::Lease;
use crate::registries::Registries;
use crate::resolver::Resolver;
use crate::store::Store;

pub struct Node {
    pub name: Name,
    pub store: Store,
    pub resolver: Arc<Resolver>,
    pub delivery: Arc<Delivery>,
    pub registry: Arc<Registries>,
    pub identity: Arc<Identity>,
    pub lease: Arc<Lease>,
    /// The registry's view of the names delivery waits for and of conversation peers.
    pub presence: Arc<crate::presence::PresenceWatch>,
    pub listen: SocketAddr,
    pub legacy: bool,
    /// What was heard on the LAN (`--lan`).
    pub lan: Option<Arc<LanTable>>,
    pub started: Instant,
    pub started_at_ms: u64,
    /// The database file (for `backup`).
    pub db: std::path::PathBuf,
    /// Held while a `backup` runs (one at a time).
    pub backup_running: tokio::sync::Mutex<()>,
}

impl Node {
    /// The address the registry last confirmed for us (empty until the first registration).
    pub fn address(&self) -> String {
        self.lease.address()
    }
}
