//! chat-bench: see `unix_main.rs`. The benchmark drives Unix processes and sockets.

#[cfg(unix)]
mod baseline;
#[cfg(unix)]
mod chat;
#[cfg(unix)]
mod cli;
#[cfg(unix)]
mod disk;
#[cfg(unix)]
mod environment;
#[cfg(unix)]
mod fan;
#[cfg(unix)]
mod floor;
#[cfg(unix)]
mod latency;
#[cfg(unix)]
mod pipeline;
#[cfg(unix)]
mod procfs;
#[cfg(unix)]
mod redis;
#[cfg(unix)]
mod registry;
#[cfg(unix)]
mod registry_scale;
#[cfg(unix)]
mod report;
#[cfg(unix)]
mod runs;
#[cfg(unix)]
mod targets;
#[cfg(unix)]
mod throughput;
#[cfg(unix)]
mod unix_main;
#[cfg(unix)]
mod util;

#[cfg(unix)]
fn main() {
    unix_main::main()
}

#[cfg(not(unix))]
fn main() {
    eprintln!("chat-bench runs on Unix only");
    std::process::exit(2);
}
