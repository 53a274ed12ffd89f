//! Everything chatd says to other nodes on the wire, both directions: the Noise handshake
//! ([`noise`]), the encrypted link ([`conn::PeerConn`]), the accepting side ([`server`]), the
//! seed's raw-text protocol ([`legacy`]) and the errors they share ([`error::LinkError`]).
//!
//! Only this module touches Noise state. The sending side (`crate::delivery`) dials, writes the
//! preamble and calls [`noise::initiate`]; from then on it only sees frames.
//!
//! Inside, the dependencies go one way: `error` ← `conn` ← `noise` ← `server`, and `legacy`
//! (← `server`) needs only `error`.

pub mod conn;
pub mod error;
pub mod legacy;
pub mod noise;
pub mod server;

pub use conn::PeerConn;
pub use error::LinkError;
