//! registryd's time limits on connections and its expiry sweep. A leaf: the accept loop
//! (`lib.rs`) and the connection modules import it.

use std::time::Duration;

/// How long a new connection may take to send its first complete request.
pub const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an established connection may stay silent between requests.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long writing one reply may take before the client is dropped.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often leases that ran out are announced to watching connections (`watch`).
pub const EXPIRY_SWEEP: Duration = Duration::from_millis(250);
