//! chat-bench: see `unix_main.rs`. The benchmark drives Unix processes and sockets.

#[cfg(unix)]
mod baseline;
#[cfg(unix)]
mod chat;
#[cfg(unix)]
mod floor;
#[cfg(unix)]
mod procfs;
#[cfg(unix)]
mod registry;
#[cfg(unix)]
mod report;
#[cfg(unix)]
mod unix_main;

#[cfg(unix)]
fn main() {
    unix_main::main()
}

#[cfg(not(unix))]
fn main() {
    eprintln!("chat-bench runs on Unix only");
    std::process::exit(2);
}
