//! registryd as an operator meets it: one registryd per database, `registryd release` beside a
//! running one, the help texts, start-up errors and how fast it stops.

use std::process::{Command, Output};
use std::time::Duration;

use peerchat_testkit::identity::Signer;
use peerchat_testkit::registry_wire::ask;
use peerchat_testkit::{bin, tempdir, wait_for, Daemon, Registry};

fn registryd(args: &[&str]) -> Output {
    Command::new(bin("registryd"))
        .args(args)
        .env_remove("REGISTRYD_DB")
        .env_remove("REGISTRYD_CONFIG")
        .env_remove("REGISTRYD_TTL")
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A start-up error: exit 1, and one line on stderr that names the problem, without the OS error
/// text twice.
fn assert_one_clear_line(out: &Output, wanted: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected:\n{err}");
    let line = lines[0];
    assert!(line.starts_with("registryd: "), "{line}");
    for w in wanted {
        assert!(line.contains(w), "{w:?} missing in: {line}");
    }
    assert!(line.matches("os error").count() <= 1, "doubled: {line}");
}

#[test]
fn a_second_registryd_on_the_same_database_is_refused() {
    let dir = tempdir();
    let reg = Registry::start(dir.path());
    let db = reg.db.to_str().unwrap();
    // Without the lock the second one serves on: it is killed after 10 s and the test fails.
    let log = dir.path().join("second.log");
    let child = Command::new(bin("registryd"))
        .args(["--listen", "127.0.0.1:0", "--db", db])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // Killed on drop, also when the wait below fails.
    let mut second = Daemon { child, log };
    let status = wait_for(
        Duration::from_secs(10),
        "the second registryd to exit",
        || second.child.try_wait().unwrap(),
    );
    let err = second.log_text();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(!err.contains("registryd ready"), "{err}");
    assert!(err.contains("another registryd"), "{err}");
    assert!(err.contains(db), "which database: {err}");
    assert!(
        err.contains(&format!("{db}.lock")),
        "which lock file: {err}"
    );
    // The lock belongs to the process: once it is gone (even by kill -9), a new one starts.
    let mut reg = reg;
    reg.daemon.kill9();
    let again = Registry::start(dir.path());
    assert_eq!(again.db, reg.db);
}

#[test]
fn release_works_beside_a_running_registryd() {
    let dir = tempdir();
    let reg = Registry::start(dir.path());
    let a = Signer::new(1);
    let r = ask(reg.addr, &[a.register("pa", 7000, 1)]);
    assert!(r[0].get("ok").is_some(), "{r:?}");
    let out = registryd(&["release", "pa", "--db", reg.db.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("released pa"), "{}", stderr(&out));
    wait_for(Duration::from_secs(10), "the release to be seen", || {
        let r = ask(reg.addr, &[r#"{"id":1,"op":"lookup","name":"pa"}"#]);
        r[0].get("error").map(|_| ())
    });
    let out = registryd(&[
        "release",
        "--legacy-offline",
        "--db",
        reg.db.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn release_help_and_usage_name_the_command() {
    let out = registryd(&["release", "--help"]);
    assert!(out.status.success());
    let help = stdout(&out);
    assert!(help.contains("Usage: registryd release"), "{help}");
    assert!(!help.contains("Usage: release"), "{help}");

    let out = registryd(&["release"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("give a NAME or --legacy-offline"), "{err}");
    assert!(err.contains("registryd release"), "{err}");

    let out = registryd(&["release", "pa", "--legacy-offline"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn sigterm_ends_an_idle_registryd_promptly() {
    let dir = tempdir();
    let mut reg = Registry::start(dir.path());
    // One round trip, so that it is past start-up and serving.
    let r = ask(reg.addr, &[r#"{"id":1,"op":"list"}"#]);
    assert!(r[0].get("ok").is_some(), "{r:?}");
    let took = reg.daemon.terminate(Duration::from_secs(10));
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert!(
        reg.daemon.log_text().contains("registryd stopping"),
        "{}",
        reg.daemon.log_text()
    );
}

#[test]
fn startup_errors_are_one_clear_line() {
    let dir = tempdir();
    // A database in a directory that cannot be created (its parent is a file).
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let db = file.join("sub/registry.db");
    let out = registryd(&["--listen", "127.0.0.1:0", "--db", db.to_str().unwrap()]);
    assert_one_clear_line(&out, &[file.to_str().unwrap()]);

    // A directory instead of a database file.
    let out = registryd(&[
        "--listen",
        "127.0.0.1:0",
        "--db",
        dir.path().to_str().unwrap(),
    ]);
    assert_one_clear_line(&out, &[dir.path().to_str().unwrap(), "is a directory"]);

    // `release` on a directory.
    let out = registryd(&["release", "pa", "--db", dir.path().to_str().unwrap()]);
    assert_one_clear_line(&out, &[dir.path().to_str().unwrap(), "is a directory"]);

    // The port is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let db = dir.path().join("r.db");
    let out = registryd(&["--listen", &addr, "--db", db.to_str().unwrap()]);
    assert_one_clear_line(&out, &[&addr, "cannot listen"]);

    // An unreadable (here: missing) config file.
    let missing = dir.path().join("missing.toml");
    let out = registryd(&["--config", missing.to_str().unwrap()]);
    assert_one_clear_line(&out, &[missing.to_str().unwrap()]);
}
