//! chatd's integration tests, one test binary (so `cargo test -p chatd` links chatd and the
//! testkit once). The modules run the real binaries (kill -9, SIGSTOP, memory use, log
//! timing, chatctl itself).
#![cfg(unix)]

mod broadcast;
mod hostile;
mod legacy;
mod retry;
mod security;
