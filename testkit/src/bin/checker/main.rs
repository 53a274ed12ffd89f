//! `checker N KILLS`: see `unix.rs`. The checker drives Unix processes and sockets.

#[cfg(unix)]
mod unix;

#[cfg(unix)]
fn main() -> std::process::ExitCode {
    unix::main()
}

#[cfg(not(unix))]
fn main() {
    eprintln!("checker runs on Unix only");
    std::process::exit(2);
}
