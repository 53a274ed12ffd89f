//! "Never lose a message": the Jepsen-style checker (`peerchat_testkit::checker`) with real
//! registryd and chatd processes, A and B killed with SIGKILL at random moments while A accepts
//! and delivers. Uses the daemons built in `target/` (run `cargo build` first).
//!
//! The seed is random each run and printed with the report; set `CHECKER_SEED` to replay one.

use peerchat_testkit::checker::{run, Config};

#[test]
fn kill9_never_loses_duplicates_or_reorders() {
    let mut config = Config::new(2_000, 4);
    if let Some(seed) = std::env::var("CHECKER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        config.seed = seed;
    }
    config.verbose = true;
    let report = run(&config);
    eprintln!("{report}");
    assert_eq!(report.accepted, 2_000, "every send accepted\n{report}");
    assert_eq!(report.kills, 4, "every kill done\n{report}");
    assert_eq!(report.lost, 0, "lost\n{report}");
    assert_eq!(report.duplicated, 0, "duplicated\n{report}");
    assert_eq!(report.reordered, 0, "reordered\n{report}");
    assert_eq!(report.unexpected, 0, "unexpected\n{report}");
    assert!(report.passed(), "{report}");
}
