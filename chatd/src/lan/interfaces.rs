//! `--lan-interface`: which network interfaces DNS-SD runs on, checked against the system's at
//! start (a name that is not there is a start-up error, not a silent LAN of nothing).

use std::collections::BTreeSet;

/// Where DNS-SD runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every interface but loopback (the default: the LAN is the real network).
    NonLoopback,
    /// Only these interfaces. `loopback_only`: every address they have is a loopback one, so
    /// the "LAN" is this machine and loopback addresses in announcements are the ones to use.
    Named {
        names: Vec<String>,
        loopback_only: bool,
    },
}

impl Selection {
    /// Whether loopback addresses in announcements may be used (only when loopback is the
    /// whole LAN: otherwise such an address names the announcer's host, never a peer here).
    pub fn accepts_loopback(&self) -> bool {
        matches!(
            self,
            Selection::Named {
                loopback_only: true,
                ..
            }
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InterfaceError {
    #[error(
        "--lan-interface: no network interface named {name:?} with an address (there are: {known})"
    )]
    Unknown { name: String, known: String },
    #[error("--lan-interface: at most {max} interfaces")]
    TooMany { max: usize },
    #[error("--lan-interface: cannot list the network interfaces: {0}")]
    List(std::io::Error),
}

/// Checks `names` (empty: the default) against the interfaces the system has now.
pub fn select(names: &[String]) -> Result<Selection, InterfaceError> {
    if names.is_empty() {
        return Ok(Selection::NonLoopback);
    }
    let max = crate::cli::MAX_LAN_INTERFACES;
    let wanted: BTreeSet<&String> = names.iter().collect();
    if wanted.len() > max {
        return Err(InterfaceError::TooMany { max });
    }
    let all = if_addrs::get_if_addrs().map_err(InterfaceError::List)?;
    for name in &wanted {
        if !all.iter().any(|i| &i.name == *name) {
            let known: BTreeSet<&str> = all.iter().map(|i| i.name.as_str()).collect();
            return Err(InterfaceError::Unknown {
                name: name.to_string(),
                known: known.into_iter().collect::<Vec<_>>().join(", "),
            });
        }
    }
    let loopback_only = all
        .iter()
        .filter(|i| wanted.contains(&i.name))
        .all(|i| i.is_loopback());
    Ok(Selection::Named {
        names: wanted.into_iter().cloned().collect(),
        loopback_only,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_interface_is_an_error_naming_the_known_ones() {
        let e = select(&["pc-no-such-if0".into()]).unwrap_err().to_string();
        assert!(e.contains("\"pc-no-such-if0\""), "{e}");
        assert!(e.contains("there are: "), "{e}");
        assert_eq!(select(&[]).unwrap(), Selection::NonLoopback);
    }

    #[test]
    fn loopback_alone_is_a_loopback_lan() {
        // Every test host has a loopback interface with 127.0.0.1; find its name.
        let Some(lo) = if_addrs::get_if_addrs()
            .unwrap()
            .into_iter()
            .find(|i| i.is_loopback())
        else {
            return;
        };
        let s = select(std::slice::from_ref(&lo.name)).unwrap();
        assert!(s.accepts_loopback(), "{s:?}");
        assert!(!Selection::NonLoopback.accepts_loopback());
    }
}
