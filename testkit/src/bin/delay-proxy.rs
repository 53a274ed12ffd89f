//! `delay-proxy LISTEN TARGET DELAY_MS JITTER_MS`: a TCP proxy adding DELAY_MS ± JITTER_MS of
//! latency in each direction (see `peerchat_testkit::delay_proxy`). Used by `.ci/netfaults.sh`.

#[cfg(unix)]
fn main() -> std::process::ExitCode {
    use std::net::{SocketAddr, TcpListener};
    use std::time::Duration;

    use peerchat_testkit::delay_proxy::{serve, Latency};

    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match args.as_slice() {
        [listen, target, delay, jitter] => (|| {
            let listen: SocketAddr = listen.parse().ok()?;
            let target: SocketAddr = target.parse().ok()?;
            let base = Duration::from_millis(delay.parse().ok()?);
            let jitter = Duration::from_millis(jitter.parse().ok()?);
            (jitter <= base).then_some((listen, target, Latency { base, jitter }))
        })(),
        _ => None,
    };
    let Some((listen, target, latency)) = parsed else {
        eprintln!("usage: delay-proxy LISTEN_ADDR:PORT TARGET_ADDR:PORT DELAY_MS JITTER_MS (JITTER_MS <= DELAY_MS)");
        return std::process::ExitCode::from(2);
    };
    let listener = match TcpListener::bind(listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("delay-proxy: cannot listen on {listen}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Err(e) = serve(listener, target, latency) {
        eprintln!("delay-proxy: accept failed: {e}");
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}

#[cfg(not(unix))]
fn main() {
    eprintln!("delay-proxy runs on Unix only");
    std::process::exit(2);
}
