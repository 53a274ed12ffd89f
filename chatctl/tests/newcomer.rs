//! What a newcomer ran into: configuration and usage errors reported late, twice, as the wrong
//! kind, or not at all. Real binaries (built in `target/`), loopback, temporary directories.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use peerchat_testkit::{bin, chatctl, tempdir, wait_for, Net, Node};

const T: Duration = Duration::from_secs(10);

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// chatctl with a socket where nothing listens.
fn ctl_nowhere(args: &[&str]) -> Output {
    chatctl(Path::new("/nonexistent/peerchat/chatd.sock"), args, None)
}

/// How a daemon run ended: its exit code (None: still running when it logged "ready" or when
/// the deadline passed; it is killed then) and everything it wrote to stderr until then.
struct Run {
    code: Option<i32>,
    stderr: String,
}

/// Runs a daemon with a clean environment (no user config file, no `*_LOG_LEVEL`/`RUST_LOG`
/// unless given) until it exits or logs "ready".
fn run_daemon(name: &str, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(bin(name));
    cmd.args(args)
        .env_clear()
        .env("HOME", dir)
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn daemon");
    let err = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + T;
    let mut text = String::new();
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(line) => {
                let ready = line.contains(" ready");
                text.push_str(&line);
                text.push('\n');
                if ready {
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() > deadline => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
    let code = match child.try_wait() {
        Ok(Some(s)) => s.code(),
        _ => {
            // Exited right after closing stderr, or still running.
            let mut status = None;
            let until = Instant::now() + Duration::from_secs(2);
            while Instant::now() < until {
                if let Ok(Some(s)) = child.try_wait() {
                    status = s.code();
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            status
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    Run { code, stderr: text }
}

/// chatd's usual arguments in `dir`, registry on a port nobody answers.
fn chatd_args(dir: &Path) -> Vec<String> {
    [
        "--name".to_string(),
        "pa".to_string(),
        "--listen".to_string(),
        "127.0.0.1:0".to_string(),
        "--registry".to_string(),
        "127.0.0.1:9".to_string(),
        "--db".to_string(),
        dir.join("pa.db").display().to_string(),
        "--socket".to_string(),
        dir.join("pa.sock").display().to_string(),
    ]
    .into()
}

fn check_config(daemon: &str, dir: &Path, file: &str) -> Run {
    let p = dir.join("c.toml");
    std::fs::write(&p, file).expect("write config");
    run_daemon(
        daemon,
        dir,
        &["--check-config", &p.display().to_string()],
        &[],
    )
}

// A: an invalid log level is refused at start-up, wherever it comes from.

#[test]
fn a_bad_log_level_on_the_command_line_is_refused() {
    let dir = tempdir();
    let mut args = chatd_args(dir.path());
    args.extend(["--log-level".to_string(), "bogus".to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = run_daemon("chatd", dir.path(), &args, &[]);
    assert_eq!(
        r.code,
        Some(2),
        "chatd must refuse --log-level bogus: {}",
        r.stderr
    );
    assert!(
        r.stderr.contains("'bogus'") && r.stderr.contains("--log-level"),
        "{}",
        r.stderr
    );
    // A filter directive keeps working.
    let mut args = chatd_args(dir.path());
    args.extend(["--log-level".to_string(), "chatd=info".to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = run_daemon("chatd", dir.path(), &args, &[]);
    assert!(r.stderr.contains("chatd ready"), "{}", r.stderr);
}

#[test]
fn a_bad_log_level_in_the_environment_names_the_variable() {
    let dir = tempdir();
    let args = chatd_args(dir.path());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = run_daemon(
        "chatd",
        dir.path(),
        &args,
        &[("CHATD_LOG_LEVEL", "warning")],
    );
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(
        r.stderr.contains("CHATD_LOG_LEVEL") && r.stderr.contains("did you mean warn"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_bad_log_level_in_the_file_fails_check_config_and_start_up() {
    let dir = tempdir();
    let r = check_config("chatd", dir.path(), "# logging\nlog_level = \"bogus\"\n");
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("c.toml: line 2"), "{}", r.stderr);
    let mut args = chatd_args(dir.path());
    let conf = dir.path().join("c.toml").display().to_string();
    args.extend(["--config".to_string(), conf]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = run_daemon("chatd", dir.path(), &args, &[]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("line 2"), "{}", r.stderr);
    // registryd shares the code.
    let r = check_config("registryd", dir.path(), "log_level = \"bogus\"\n");
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("line 1"), "{}", r.stderr);
}

// B: --check-config refuses what start-up refuses, naming the file and the line.

#[test]
fn b_check_config_refuses_what_start_up_refuses() {
    let dir = tempdir();
    for (file, line, what) in [
        ("name = \"bad name\"\n", 1, "--name"),
        ("\nretry_initial = 0\n", 2, "more than 0 and at most 86400"),
        ("advertise = \"\"\n", 1, "--advertise"),
        ("log_level = \"bogus\"\n", 1, "--log-level"),
        ("registry = \"not an address\"\n", 1, "HOST:PORT"),
    ] {
        let r = check_config("chatd", dir.path(), file);
        assert_eq!(
            r.code,
            Some(1),
            "{file:?} passed --check-config: {}",
            r.stderr
        );
        let at = format!("c.toml: line {line}");
        assert!(
            r.stderr.contains(&at) && r.stderr.contains(what),
            "{file:?}: want {at:?} and {what:?} in: {}",
            r.stderr
        );
    }
    let r = check_config(
        "chatd",
        dir.path(),
        "name = \"good\"\nretry_initial = 0.5\n",
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
}

#[test]
fn b_a_bad_registry_address_stops_start_up() {
    let dir = tempdir();
    let mut args = chatd_args(dir.path());
    args[5] = "not an address".to_string();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = run_daemon("chatd", dir.path(), &args, &[]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("HOST:PORT"), "{}", r.stderr);
}

// C: a table is reported at its header's line.

#[test]
fn c_a_table_is_reported_at_its_line() {
    let dir = tempdir();
    let r = check_config("chatd", dir.path(), "name = \"pa\"\n\n[section]\nx = 1\n");
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(
        r.stderr.contains("line 3: unknown key `section`"),
        "{}",
        r.stderr
    );
}

// D: an error's cause is printed once.

#[test]
fn d_socket_directory_error_is_printed_once() {
    let dir = tempdir();
    let d1 = dir.path().join("d1");
    std::fs::create_dir(&d1).expect("mkdir");
    let db = d1.join("db").display().to_string();
    let socket = d1.join("db/sub/chatd.sock").display().to_string();
    let r = run_daemon(
        "chatd",
        dir.path(),
        &[
            "--name",
            "dave",
            "--listen",
            "127.0.0.1:0",
            "--registry",
            "127.0.0.1:9",
            "--db",
            &db,
            "--socket",
            &socket,
        ],
        &[],
    );
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    let line = r
        .stderr
        .lines()
        .find(|l| l.starts_with("chatd: "))
        .unwrap_or_default();
    assert!(
        line.contains("cannot create socket directory"),
        "{}",
        r.stderr
    );
    assert_eq!(
        line.matches("Not a directory").count(),
        1,
        "the cause is printed twice: {line}"
    );
}

// I: a bad environment variable is blamed on the variable; booleans take 1/0, yes/no, on/off.

#[test]
fn i_bad_environment_values_name_the_variable() {
    let dir = tempdir();
    let args = chatd_args(dir.path());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = run_daemon("chatd", dir.path(), &args, &[("CHATD_RETRY_MAX", "abc")]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("CHATD_RETRY_MAX"), "{}", r.stderr);
    // The command line wins and is blamed as such.
    let mut with_flag = args.clone();
    with_flag.extend(["--retry-max", "xyz"]);
    let r = run_daemon(
        "chatd",
        dir.path(),
        &with_flag,
        &[("CHATD_RETRY_MAX", "abc")],
    );
    assert!(
        r.stderr.contains("'--retry-max <SECS>'") && !r.stderr.contains("CHATD_RETRY_MAX"),
        "{}",
        r.stderr
    );
}

#[test]
fn i_boolean_variables_take_the_usual_spellings() {
    let dir = tempdir();
    let args = chatd_args(dir.path());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    for (value, legacy) in [
        ("1", true),
        ("on", true),
        ("yes", true),
        ("0", false),
        ("no", false),
    ] {
        let r = run_daemon("chatd", dir.path(), &args, &[("CHATD_LEGACY", value)]);
        let ready = r
            .stderr
            .lines()
            .find(|l| l.contains("chatd ready"))
            .unwrap_or_else(|| panic!("CHATD_LEGACY={value}: chatd did not start: {}", r.stderr));
        assert!(
            ready.contains(&format!("legacy={legacy}")),
            "CHATD_LEGACY={value}: {ready}"
        );
    }
}

// E: doctor in broken states.

#[test]
fn e_doctor_exits_3_with_one_line_and_one_hint_when_chatd_is_down() {
    let out = ctl_nowhere(&["doctor"]);
    assert_eq!(code(&out), 3, "{}{}", stdout(&out), stderr(&out));
    let dir = tempdir();
    let file = dir.path().join("chatd.sock");
    std::fs::write(&file, "not a socket").expect("write");
    let out = chatctl(&file, &["doctor"], None);
    let text = stdout(&out);
    assert_eq!(code(&out), 3, "{text}");
    assert!(
        text.contains("is not a socket") && !text.contains("ok   socket"),
        "a regular file passed the socket check: {text}"
    );
    // A socket nobody answers on: one FAIL line and one hint, not the multi-line message.
    let sock = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&sock).expect("bind"));
    let out = chatctl(&sock, &["doctor"], None);
    let text = stdout(&out);
    assert_eq!(code(&out), 3, "{text}");
    let fails: Vec<&str> = text.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert_eq!(fails.len(), 1, "{text}");
    assert_eq!(text.matches("hint:").count(), 1, "{text}");
    assert!(
        fails[0].contains("does not answer") && !text.contains("tried:"),
        "{text}"
    );
}

#[test]
fn e_doctor_of_an_unregistered_node_skips_the_port_check_in_plain_words() {
    let net = Net::new();
    let _holder = net.node("pa");
    // A second "pa" with another key: the registry refuses it, so it has no address.
    let other = tempdir();
    let node = Node::start(other.path(), "pa", net.registry.addr);
    wait_for(T, "the refused registration", || {
        node.daemon
            .log_text()
            .contains("registration")
            .then_some(())
    });
    let out = node.ctl(&["doctor"]);
    let text = stdout(&out);
    assert_eq!(code(&out), 1, "{text}{}", stderr(&out));
    for debug in [
        "Some(",
        "None",
        "\"\"",
        "invalid socket address",
        "firewall",
    ] {
        assert!(!text.contains(debug), "{debug:?} in: {text}");
    }
    let port = text
        .lines()
        .find(|l| l.contains("peer port"))
        .unwrap_or_default();
    assert!(
        port.starts_with("skip") && port.contains("not registered yet: "),
        "{text}"
    );
    let out = node.ctl(&["--json", "doctor"]);
    let skipped = peerchat_testkit::json_lines(&out.stdout)
        .into_iter()
        .any(|c| c["check"] == "peer port" && c["skipped"] == true);
    assert!(skipped, "{}", stdout(&out));
}

#[test]
fn e_status_and_doctor_say_a_node_behind_nat_is_not_reachable_and_why() {
    let net = Net::new();
    // A node that talks to the registry directly: nothing to report.
    let direct = net.node("pd");
    wait_for(T, "pd's registration", || {
        stdout(&direct.ctl(&["--json", "status"]))
            .contains("\"address\":\"127.0.0.1:")
            .then_some(())
    });
    let text = stdout(&direct.ctl(&["status"]));
    assert!(!text.contains("reachable:"), "{text}");
    assert!(!stdout(&direct.ctl(&["--json", "status"])).contains("behind_nat"));

    // A node whose registrations reach the registry from 127.0.0.2, as through a NAT router.
    let nat = peerchat_testkit::proxy::SourceNat::start(
        net.registry.addr,
        "127.0.0.2".parse().expect("ip"),
    );
    let dir = tempdir();
    let node = Node::start(dir.path(), "pn", nat.addr);
    let status = wait_for(T, "pn's registration", || {
        let out = stdout(&node.ctl(&["--json", "status"]));
        out.contains("\"address\":\"127.0.0.2:").then_some(out)
    });
    assert!(
        status.contains("\"behind_nat\":{\"seen_ip\":\"127.0.0.2\",\"local_ip\":\"127.0.0.1\"}"),
        "{status}"
    );
    let text = stdout(&node.ctl(&["status"]));
    let line = text
        .lines()
        .find(|l| l.starts_with("reachable:"))
        .unwrap_or_default();
    assert!(
        line.contains("no (behind NAT)")
            && line.contains("sees this node at 127.0.0.2")
            && line.contains("sends from 127.0.0.1")
            && line.contains("--advertise"),
        "{text}"
    );
    let out = node.ctl(&["doctor"]);
    let text = stdout(&out);
    assert_eq!(code(&out), 1, "{text}{}", stderr(&out));
    let fail = text
        .lines()
        .find(|l| l.starts_with("FAIL") && l.contains("reachable"))
        .unwrap_or_default();
    assert!(
        fail.contains("behind NAT") && fail.contains("127.0.0.2"),
        "{text}"
    );
    assert!(
        node.daemon.log_text().contains("NAT router in between"),
        "chatd's log does not say it: {}",
        node.daemon.log_text()
    );
}

// F: bad arguments are usage errors (exit 2), found before connecting.

#[test]
fn f_bad_arguments_are_usage_errors_before_connecting() {
    let long = "x".repeat(129);
    for args in [
        &["group", "create", "bad name"][..],
        &["trust", "bad name"],
        &["status", "a b"],
        &["status", ""],
        &["cancel", "a b"],
        &["send", "--id", "a b", "bob", "hi"],
        &["send", "--id", "", "bob", "hi"],
        &["send", "--id", &long, "bob", "hi"],
        &["broadcast", "--id", "a b", "hi"],
    ] {
        let out = ctl_nowhere(args);
        assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
    }
    let out = ctl_nowhere(&["send", "--id", "a b", "bob", "hi"]);
    assert!(stderr(&out).contains("printable ASCII"), "{}", stderr(&out));
}

// G: --json among a message's words does not turn a usage error into JSON.

#[test]
fn g_json_as_a_message_word_keeps_usage_errors_as_text() {
    let out = ctl_nowhere(&["send", "--wait=zz", "bob", "--json"]);
    assert_eq!(code(&out), 2);
    assert!(stdout(&out).is_empty(), "JSON on stdout: {}", stdout(&out));
    assert!(stderr(&out).starts_with("error:"), "{}", stderr(&out));
    let out = ctl_nowhere(&["--json", "send", "--wait=zz", "bob", "hi"]);
    assert_eq!(code(&out), 2);
    let lines = peerchat_testkit::json_lines(&out.stdout);
    assert_eq!(lines.len(), 1, "{}", stdout(&out));
    assert_eq!(lines[0]["error"]["code"], "usage");
}

// H: `--wait 5 bob hi` says how --wait takes its value.

#[test]
fn h_wait_with_a_space_gets_a_hint() {
    let net = Net::new();
    let pa = net.node("pa");
    let out = pa.ctl(&["send", "--wait", "5", "bob", "hi"]);
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert!(stderr(&out).contains("--wait=5"), "{}", stderr(&out));
    // An unknown name that is not a number gets no such hint.
    let out = pa.ctl(&["send", "--wait", "nobody", "hi"]);
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert!(!stderr(&out).contains("--wait="), "{}", stderr(&out));
}

// J: help texts say what the code does, unwrapped.

#[test]
fn j_help_texts() {
    let out = Command::new(bin("chatd"))
        .arg("--help")
        .output()
        .expect("chatd --help");
    let help = stdout(&out);
    let example = help
        .lines()
        .find(|l| l.starts_with("  chatd --name pa "))
        .unwrap_or_default();
    assert!(example.ends_with("127.0.0.1:8888"), "wrapped: {help}");
    let out = ctl_nowhere(&["rotate-key", "--help"]);
    let help = stdout(&out);
    assert!(
        help.contains("--identity") && !help.contains("in the state directory"),
        "{help}"
    );
    let out = ctl_nowhere(&["doctor", "--help"]);
    assert!(
        stdout(&out).contains("3\nif chatd does not answer")
            || stdout(&out).contains("3 if chatd does not answer"),
        "{}",
        stdout(&out)
    );
}

// An absurd --wait or --reconnect-timeout is a usage error, never a panic or a wait that wraps
// around to nothing.
#[test]
fn absurd_waits_are_usage_errors() {
    for args in [
        &["send", "--wait=1e300", "bob", "x"][..],
        &["send", "--wait=1e19", "bob", "x"],
        &["send", "--wait=18446744073709552", "bob", "x"],
        &["send", "--wait=-1", "bob", "x"],
        &["send", "--reconnect-timeout", "1e300", "bob", "x"],
    ] {
        let out = ctl_nowhere(args);
        assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
        assert!(stderr(&out).contains("a year"), "{}", stderr(&out));
    }
}

// A cursor file that cannot be written is refused before anything is printed (otherwise the
// first message would show, then the command fail, and the next run repeat it).
#[test]
fn an_unwritable_cursor_file_is_refused_before_printing() {
    let net = Net::new();
    let pa = net.node("pa");
    let pb = net.node("pb");
    assert_eq!(code(&pa.ctl(&["send", "pb", "hello"])), 0);
    pb.wait_inbox(1, Duration::from_secs(10));
    let missing = net.dir.path().join("no-such-dir").join("cursor");
    let out = pb.ctl(&["inbox", "--cursor-file", missing.to_str().unwrap()]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stdout(&out).is_empty(),
        "printed before failing: {}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains("cannot be written"),
        "{}",
        stderr(&out)
    );
}
