//! `checker N KILLS`: the "never lose a message" checker (see `peerchat_testkit::checker`)
//! against the chatd, registryd and chatctl built next to this executable.
//!
//! Exit status: 0 when nothing was lost, duplicated, reordered or unexpected and the run went as
//! planned; 1 otherwise; 2 on a usage error.

use std::process::ExitCode;
use std::time::Duration;

use peerchat_testkit::checker::{run, Config};

const USAGE: &str = "\
usage: checker [OPTIONS] MESSAGES KILLS

Sends MESSAGES numbered messages from chatd A to chatd B over A's control socket while killing
A and/or B with kill -9 KILLS times at random moments, then checks B's inbox: nothing lost,
duplicated, reordered or unexpected. Uses the chatd/registryd next to this executable.

options:
  --window N         sends in flight on the control connection (default 128)
  --seed S           seed of the random kill moments, targets and downtimes
  --max-downtime MS  longest time a killed node stays down (default 300)
  --drain-timeout S  how long to wait for A's outbox to drain (default 120 + MESSAGES/1000)
  --keep             keep the directory with databases and logs (always kept on failure)
  --quiet            no progress on stderr";

pub fn main() -> ExitCode {
    match parse(std::env::args().skip(1).collect()) {
        Ok(config) => {
            eprintln!(
                "checker: {} messages, {} kills, window {}, binaries in {}",
                config.messages,
                config.kills,
                config.window,
                peerchat_testkit::bin_dir().display()
            );
            let report = run(&config);
            println!("{report}");
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("checker: {e}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn parse(args: Vec<String>) -> Result<Config, String> {
    let mut positional = Vec::new();
    let mut window = None;
    let mut seed = None;
    let mut downtime = None;
    let mut drain = None;
    let mut keep = false;
    let mut quiet = false;
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| -> Result<u64, String> {
            let v = it.next().ok_or(format!("{name} needs a value"))?;
            v.parse()
                .map_err(|_| format!("{name}: not a number: {v:?}"))
        };
        match a.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "--window" => window = Some(value("--window")?),
            "--seed" => seed = Some(value("--seed")?),
            "--max-downtime" => downtime = Some(value("--max-downtime")?),
            "--drain-timeout" => drain = Some(value("--drain-timeout")?),
            "--keep" => keep = true,
            "--quiet" => quiet = true,
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            _ => positional.push(a),
        }
    }
    let [messages, kills] = positional.as_slice() else {
        return Err("expected MESSAGES and KILLS".into());
    };
    let messages: u64 = messages
        .parse()
        .ok()
        .filter(|&n| n > 0)
        .ok_or(format!("MESSAGES: not a positive number: {messages:?}"))?;
    let kills: u32 = kills
        .parse()
        .map_err(|_| format!("KILLS: not a number: {kills:?}"))?;
    let mut config = Config::new(messages, kills);
    if let Some(w) = window {
        config.window = (w as usize).max(1);
    }
    if let Some(s) = seed {
        config.seed = s;
    }
    if let Some(ms) = downtime {
        config.max_downtime = Duration::from_millis(ms.max(1));
    }
    if let Some(s) = drain {
        config.drain_timeout = Duration::from_secs(s);
    }
    config.keep_dir = keep;
    config.verbose = !quiet;
    Ok(config)
}
