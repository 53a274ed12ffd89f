//! Layered configuration: command line > environment (`PREFIX_OPTION`) > TOML file > defaults.
//!
//! The file's keys are the long option names with `_` for `-` (`retry_max = 2.5`). Unknown keys
//! and bad values are errors that name the line. The command line and environment come from
//! clap (each option declares its `env`); file values are fed to clap as if typed before the
//! real arguments, but only for options the command line and environment did not set, so clap
//! validates everything the same way.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::ArgMatches;

#[derive(Debug, thiserror::Error)]
/// The I/O error is part of the message, not a `source()` (printed twice with the chain).
pub enum ConfigError {
    #[error("cannot read config file {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Where the file came from: an explicit `--config` must exist; the default may be missing.
pub enum ConfigPath {
    Explicit(PathBuf),
    Default(PathBuf),
    None,
}

/// Parses the process's arguments with the file layered under them. Usage errors (and
/// `--help`/`--version`) exit through clap as usual.
pub fn parse<A: clap::Parser>(
    config_path: impl Fn(&ArgMatches) -> ConfigPath,
) -> Result<A, ConfigError> {
    parse_from(std::env::args_os().collect(), config_path)
}

pub fn parse_from<A: clap::Parser>(
    argv: Vec<OsString>,
    config_path: impl Fn(&ArgMatches) -> ConfigPath,
) -> Result<A, ConfigError> {
    let cmd = A::command();
    let first = cmd
        .clone()
        .try_get_matches_from(&argv)
        .unwrap_or_else(|e| usage_exit(&cmd, &argv, e));
    let (path, text) = match config_path(&first) {
        ConfigPath::None => return Ok(A::from_arg_matches(&first).unwrap_or_else(|e| e.exit())),
        ConfigPath::Explicit(p) => {
            let text = std::fs::read_to_string(&p).map_err(|error| ConfigError::Read {
                path: p.clone(),
                error,
            })?;
            (p, text)
        }
        ConfigPath::Default(p) => match std::fs::read_to_string(&p) {
            Ok(text) => (p, text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(A::from_arg_matches(&first).unwrap_or_else(|e| e.exit()));
            }
            Err(error) => return Err(ConfigError::Read { path: p, error }),
        },
    };
    let injected = file_args(&cmd, &first, &path, &text)?;
    let mut full = Vec::with_capacity(argv.len() + injected.len());
    full.extend(argv.first().cloned());
    full.extend(injected);
    full.extend(argv.into_iter().skip(1));
    match cmd.try_get_matches_from(&full) {
        Ok(m) => Ok(A::from_arg_matches(&m).unwrap_or_else(|e| e.exit())),
        Err(e) => Err(invalid(&path, &text, e)),
    }
}

/// Checks a config file for `--check-config`: syntax, known keys, and values clap accepts.
pub fn check<A: clap::Parser>(path: &Path) -> Result<(), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    let cmd = A::command();
    let bin = OsString::from(cmd.get_name().to_string());
    let empty = cmd
        .clone()
        .try_get_matches_from([bin.clone()])
        .unwrap_or_else(|e| e.exit());
    let injected = file_args(&cmd, &empty, path, &text)?;
    let mut full = vec![bin];
    full.extend(injected);
    cmd.try_get_matches_from(&full)
        .map(|_| ())
        .map_err(|e| invalid(path, &text, e))
}

fn file_args(
    cmd: &clap::Command,
    given: &ArgMatches,
    path: &Path,
    text: &str,
) -> Result<Vec<OsString>, ConfigError> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Invalid {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().replace('\n', "\n  "),
        })?;
    let mut out = Vec::new();
    for (key, value) in &table {
        let bad = |what: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message: format!("line {}: {what}", line_of(text, key)),
        };
        let arg = cmd
            .get_arguments()
            .find(|a| {
                a.get_id().as_str() == key
                    && a.get_long().is_some()
                    && key != "config"
                    && key != "check_config"
            })
            .ok_or_else(|| bad(format!("unknown key `{key}`")))?;
        if matches!(
            given.value_source(key),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let long = format!("--{}", arg.get_long().unwrap_or(key));
        let takes_value = arg.get_action().takes_values();
        match value {
            toml::Value::Boolean(b) if !takes_value => {
                if *b {
                    out.push(OsString::from(long));
                }
            }
            toml::Value::String(s) if takes_value => {
                out.push(OsString::from(format!("{long}={s}")))
            }
            toml::Value::Integer(i) if takes_value => {
                out.push(OsString::from(format!("{long}={i}")))
            }
            toml::Value::Float(f) if takes_value => out.push(OsString::from(format!("{long}={f}"))),
            other => {
                let want = if takes_value {
                    "a string or a number"
                } else {
                    "true or false"
                };
                return Err(bad(format!(
                    "`{key}` must be {want}, not {}",
                    other.type_str()
                )));
            }
        }
    }
    Ok(out)
}

/// The option clap blamed, by its id (`retry_max`), if the error names one.
fn blamed_arg<'a>(cmd: &'a clap::Command, e: &clap::Error) -> Option<(&'a clap::Arg, String)> {
    let shown = e.context().find_map(|(kind, value)| match (kind, value) {
        (clap::error::ContextKind::InvalidArg, clap::error::ContextValue::String(s)) => {
            Some(s.clone())
        }
        _ => None,
    })?;
    let long = shown
        .trim_start_matches("--")
        .split([' ', '=', '<'])
        .next()?;
    let arg = cmd.get_arguments().find(|a| a.get_long() == Some(long))?;
    Some((arg, shown))
}

/// The environment variable that supplied the bad value, if the error is about an option that
/// was not on the command line but has its variable set.
fn blamed_env(cmd: &clap::Command, argv: &[OsString], e: &clap::Error) -> Option<(String, String)> {
    let (arg, shown) = blamed_arg(cmd, e)?;
    let var = arg.get_env()?;
    std::env::var_os(var)?;
    let long = format!("--{}", arg.get_long()?);
    let on_command_line = argv.iter().skip(1).any(|a| {
        let a = a.to_string_lossy();
        a == long || a.starts_with(&format!("{long}="))
    });
    (!on_command_line).then(|| (var.to_string_lossy().into_owned(), shown))
}

/// Exits through clap for a usage error, except that a bad value from an environment variable
/// is blamed on the variable (clap would name the option, which the user never typed).
fn usage_exit(cmd: &clap::Command, argv: &[OsString], e: clap::Error) -> ! {
    if let Some((var, shown)) = blamed_env(cmd, argv, &e) {
        let rendered = e.render().to_string();
        let message = rendered.replacen(
            &format!("'{shown}'"),
            &format!("{var} (the environment variable of {shown})"),
            1,
        );
        eprint!("{message}");
        std::process::exit(2);
    }
    e.exit()
}

fn invalid(path: &Path, text: &str, e: clap::Error) -> ConfigError {
    // Name the line of the offending key when clap says which option it was.
    let rendered = e.render().to_string();
    let first = rendered
        .lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ")
        .to_string();
    let key = e.context().find_map(|(kind, value)| match (kind, value) {
        (clap::error::ContextKind::InvalidArg, clap::error::ContextValue::String(s)) => s
            .trim_start_matches("--")
            .split([' ', '=', '<'])
            .next()
            .map(|k| k.replace('-', "_")),
        _ => None,
    });
    let message = match key {
        Some(k) if text.lines().any(|l| is_key_line(l, &k)) => {
            format!("line {}: {first}", line_of(text, &k))
        }
        _ => first,
    };
    ConfigError::Invalid {
        path: path.to_path_buf(),
        message,
    }
}

fn is_key_line(line: &str, key: &str) -> bool {
    let l = line.trim_start();
    l.strip_prefix(key)
        .is_some_and(|rest| rest.trim_start().starts_with('='))
}

/// A table header for `key`: `[key]`, `[key.sub]`, `[[key]]`.
fn is_table_line(line: &str, key: &str) -> bool {
    let l = line.trim_start().trim_start_matches('[').trim_start();
    line.trim_start().starts_with('[')
        && l.strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with([']', '.']))
}

/// The 1-based line where the top-level `key` is set (`key = …` or a `[key]` table header).
/// Keys come from the parsed table, so one of the two forms is present; quoted keys and
/// dotted keys (`key.sub = 1`) fall back to the first line mentioning the key.
fn line_of(text: &str, key: &str) -> usize {
    let find = |f: &dyn Fn(&str) -> bool| text.lines().position(f).map(|i| i + 1);
    find(&|l| is_key_line(l, key))
        .or_else(|| find(&|l| is_table_line(l, key)))
        .or_else(|| find(&|l| l.contains(key)))
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct T {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long, env = "PCTEST_NAME", default_value = "dflt")]
        name: String,
        #[arg(long, default_value_t = 5)]
        ttl: u64,
        #[arg(long)]
        legacy: bool,
    }

    fn run(file: &str, args: &[&str]) -> Result<T, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, file).unwrap();
        let mut argv: Vec<OsString> = vec!["t".into()];
        argv.extend(args.iter().map(OsString::from));
        parse_from::<T>(argv, |_| ConfigPath::Explicit(p.clone()))
    }

    #[test]
    fn precedence_and_errors() {
        let t = run("name = \"file\"\nttl = 9\nlegacy = true\n", &[]).unwrap();
        assert_eq!((t.name.as_str(), t.ttl, t.legacy), ("file", 9, true));
        let t = run("name = \"file\"\n", &["--name", "cli"]).unwrap();
        assert_eq!(t.name, "cli");
        let e = run("# comment\nbogus = 1\n", &[]).unwrap_err().to_string();
        assert!(
            e.contains("line 2") && e.contains("unknown key `bogus`"),
            "{e}"
        );
        let e = run("name = \"x\"\nttl = \"soon\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2"), "{e}");
        let e = run("ttl = \n", &[]).unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn a_table_is_reported_at_its_header() {
        let e = run("ttl = 3\n\n[section]\nx = 1\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 3: unknown key `section`"),
            "a [section] header is on line 3: {e}"
        );
        let e = run("[[arr]]\nx = 1\n", &[]).unwrap_err().to_string();
        assert!(e.contains("line 1: unknown key `arr`"), "{e}");
        let e = run("\"ttl\" = \"x\"\n", &[]).unwrap_err().to_string();
        assert!(!e.contains("line 0"), "{e}");
    }
}
