//! What both daemons share at their edges: layered configuration (command line > environment >
//! file > defaults), logging to stderr, signals, and systemd readiness notifications.

pub mod config;
pub mod limits;
pub mod logging;
pub mod notify;
pub mod signals;
pub mod startup;
