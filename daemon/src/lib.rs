//! What both daemons share at their edges: layered configuration (command line > environment >
//! file > defaults), logging to stderr, signals, systemd readiness notifications, the database lock,
//! and the accept loop with its connection limits.

pub mod accept;
pub mod config;
pub mod limits;
pub mod lock;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod signals;
pub mod startup;
