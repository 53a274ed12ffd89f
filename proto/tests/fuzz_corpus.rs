//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through the fuzz targets' own code
//! (`fuzz/targets.rs`), on stable Rust, so every `cargo test` checks that no input the fuzzer
//! kept makes a parser panic. Fuzzing itself needs nightly and cargo-fuzz: see `fuzz/README.md`.

#[path = "../../fuzz/targets.rs"]
mod targets;

use std::path::PathBuf;

/// Feeds every file of `fuzz/corpus/<target>/` to `run`. Fails if the directory is missing or
/// empty, so a lost corpus cannot pass silently.
fn replay(target: &str, run: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus directory {} is missing: {e}", dir.display()));
    let mut count = 0;
    for entry in entries {
        let path = entry.expect("read corpus directory entry").path();
        if !path.is_file() {
            continue;
        }
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(
            outcome.is_ok(),
            "fuzz target {target} panicked on {} ({} bytes)",
            path.display(),
            data.len()
        );
        count += 1;
    }
    assert!(count > 0, "corpus directory {} is empty", dir.display());
}

#[test]
fn peer_frame_corpus() {
    replay("peer_frame", targets::peer_frame);
}

#[test]
fn control_request_corpus() {
    replay("control_request", targets::control_request);
}

#[test]
fn registry_request_corpus() {
    replay("registry_request", targets::registry_request);
}

#[test]
fn registry_legacy_corpus() {
    replay("registry_legacy", targets::registry_legacy);
}
