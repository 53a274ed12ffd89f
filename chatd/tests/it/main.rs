//! chatd's integration tests, one test binary (so `cargo test -p chatd` links chatd and the
//! testkit once). `delivery` and most of `frozen` run the daemons in this process
//! (`peerchat_testkit::inproc`); the other modules run the real binaries because they need a
//! pid (kill -9, SIGSTOP, memory use), a daemon's command line, or chatctl itself. See
//! "Testing" in docs/ARCHITECTURE.md.
#![cfg(unix)]

mod broadcast;
mod conversations;
mod delivery;
mod frozen;
mod hostile;
mod lan;
mod legacy;
mod registries;
mod retry;
mod security;
