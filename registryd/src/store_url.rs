//! `--store URL`: where registryd keeps its table. `sqlite:PATH` (one machine, the default) or
//! `etcd://HOST:PORT[,HOST:PORT...][/PREFIX]` (any number of registryd instances in front of one
//! etcd cluster).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::table::DEFAULT_ETCD_PREFIX;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    Sqlite(PathBuf),
    Etcd(EtcdUrl),
}

/// An etcd cluster's client endpoints and the key prefix the registry lives under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdUrl {
    /// `http://HOST:PORT` each.
    pub endpoints: Vec<String>,
    /// Starts and ends with `/`.
    pub prefix: String,
}

impl fmt::Display for EtcdUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hosts: Vec<&str> = self
            .endpoints
            .iter()
            .map(|e| e.trim_start_matches("http://"))
            .collect();
        write!(f, "etcd://{}{}", hosts.join(","), self.prefix)
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::Sqlite(p) => write!(f, "sqlite:{}", p.display()),
            StoreUrl::Etcd(e) => e.fmt(f),
        }
    }
}

impl FromStr for StoreUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<StoreUrl, String> {
        if let Some(path) = s.strip_prefix("sqlite:") {
            if path.is_empty() {
                return Err(
                    "sqlite: needs a file path, e.g. sqlite:/var/lib/peerchat/registry.db".into(),
                );
            }
            return Ok(StoreUrl::Sqlite(PathBuf::from(path)));
        }
        if let Some(rest) = s.strip_prefix("etcd://") {
            return parse_etcd(rest).map(StoreUrl::Etcd);
        }
        Err(format!(
            "{s:?} is not a store URL: use sqlite:PATH or etcd://HOST:PORT[,HOST:PORT...][/PREFIX]"
        ))
    }
}

fn parse_etcd(rest: &str) -> Result<EtcdUrl, String> {
    let (hosts, prefix) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, crate::table::DEFAULT_ETCD_PREFIX),
    };
    let mut endpoints = Vec::new();
    for host in hosts.split(',') {
        let (h, port) = host
            .rsplit_once(':')
            .ok_or_else(|| format!("etcd endpoint {host:?} needs HOST:PORT"))?;
        let bracketed = h.starts_with('[') && h.ends_with(']');
        let valid_host = !h.is_empty()
            && (bracketed
                || h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'));
        if !valid_host || port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!("etcd endpoint {host:?} is not HOST:PORT"));
        }
        endpoints.push(format!("http://{h}:{port}"));
    }
    let mut prefix = prefix.to_string();
    if prefix == "/" {
        return Err("the etcd prefix must not be / alone: give e.g. /peerchat/".into());
    }
    if prefix.chars().any(|c| c.is_control() || c == ' ') {
        return Err(format!(
            "etcd prefix {prefix:?} has spaces or control characters"
        ));
    }
    if !prefix.ends_with('/') {
        prefix.push('/');
    }
    Ok(EtcdUrl { endpoints, prefix })
}

impl Default for EtcdUrl {
    fn default() -> EtcdUrl {
        EtcdUrl {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            prefix: DEFAULT_ETCD_PREFIX.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_stores() {
        assert_eq!(
            "sqlite:/tmp/r.db".parse::<StoreUrl>(),
            Ok(StoreUrl::Sqlite("/tmp/r.db".into()))
        );
        let e: StoreUrl = "etcd://10.0.0.1:2379,localhost:2380".parse().unwrap();
        assert_eq!(
            e,
            StoreUrl::Etcd(EtcdUrl {
                endpoints: vec![
                    "http://10.0.0.1:2379".into(),
                    "http://localhost:2380".into()
                ],
                prefix: "/peerchat/".into()
            })
        );
        assert_eq!(
            e.to_string(),
            "etcd://10.0.0.1:2379,localhost:2380/peerchat/"
        );
        let p: StoreUrl = "etcd://h:1/reg/a".parse().unwrap();
        assert!(matches!(p, StoreUrl::Etcd(EtcdUrl { prefix, .. }) if prefix == "/reg/a/"));
    }

    #[test]
    fn refuses_wrong_urls() {
        for bad in [
            "",
            "sqlite:",
            "etcd://",
            "etcd://host",
            "etcd://host:0",
            "etcd://host:99999",
            "etcd://ho st:1",
            "etcd://h:1/",
            "mysql://h:1",
            "/var/lib/registry.db",
        ] {
            assert!(bad.parse::<StoreUrl>().is_err(), "{bad:?} accepted");
        }
    }
}
