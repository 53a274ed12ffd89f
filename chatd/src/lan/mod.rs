//! Names on the LAN without any registry (`--lan`): DNS-SD over multicast (`service.rs`
//! announces this node and browses for others) and the table of what was heard (here).
//!
//! An announcement is unsigned and anyone on the LAN can send one, so it is only a hint: it is
//! parsed with bounds ([`Announcement::parse`]), kept in a bounded table, and used by the
//! resolver like a registry record *after* the registry: the key it names must be the pinned
//! one (never overriding a pin), and the peer must prove that key in the Noise handshake.

pub mod interfaces;
pub mod service;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

use peerchat_proto::{Name, PublicKey};

/// The DNS-SD service type chatd announces and browses.
pub const SERVICE_TYPE: &str = "_peerchat._tcp.local.";
/// The TXT record's format version (`v=`).
pub const TXT_VERSION: &str = "1";
/// Most (name, key) pairs the table holds; past it the entry heard longest ago goes.
pub const MAX_ENTRIES: usize = 1024;
/// Most TXT properties an announcement may carry (ours has 3).
const MAX_TXT_PROPERTIES: usize = 16;
/// Most addresses of one announcement that are looked at.
const MAX_ADDRESSES: usize = 16;

/// One validated announcement: a name, a key and where it says it listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    /// The DNS-SD instance's full name (`ServiceRemoved` names it).
    pub fullname: String,
    pub name: Name,
    pub key: PublicKey,
    pub address: SocketAddr,
}

/// Why an announcement was ignored (logged at debug level: anyone can send junk).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BadAnnouncement {
    #[error("not version {TXT_VERSION}")]
    Version,
    #[error("too many TXT properties")]
    TooManyProperties,
    #[error("no valid name")]
    Name,
    #[error("no valid key")]
    Key,
    #[error("port 0")]
    Port,
    #[error("no usable address")]
    Address,
}

impl Announcement {
    /// Validates what DNS-SD resolved: `txt` as (key, value) pairs, the SRV port and the
    /// announced addresses. The first usable address wins, IPv4 first (IPv6 link-local
    /// addresses need a scope and are skipped; unspecified and multicast never name a peer,
    /// nor does loopback on a real LAN). `loopback_lan`: the LAN is loopback alone
    /// (`--lan-interface lo`), so every announcer is on this host and loopback addresses are
    /// the ones to use (they come first).
    pub fn parse(
        fullname: &str,
        txt: &[(String, Option<String>)],
        port: u16,
        addresses: &[IpAddr],
        loopback_lan: bool,
    ) -> Result<Announcement, BadAnnouncement> {
        if txt.len() > MAX_TXT_PROPERTIES {
            return Err(BadAnnouncement::TooManyProperties);
        }
        let get = |k: &str| {
            txt.iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(k))
                .and_then(|(_, v)| v.as_deref())
        };
        if get("v") != Some(TXT_VERSION) {
            return Err(BadAnnouncement::Version);
        }
        let name = get("name")
            .and_then(|n| Name::new(n).ok())
            .ok_or(BadAnnouncement::Name)?;
        let key = get("key")
            .filter(|k| k.len() == 64)
            .and_then(PublicKey::from_hex)
            .ok_or(BadAnnouncement::Key)?;
        if port == 0 {
            return Err(BadAnnouncement::Port);
        }
        let usable = |ip: &&IpAddr| match ip {
            IpAddr::V4(v4) => {
                !((v4.is_loopback() && !loopback_lan)
                    || v4.is_unspecified()
                    || v4.is_multicast()
                    || v4.is_broadcast())
            }
            IpAddr::V6(v6) => {
                !((v6.is_loopback() && !loopback_lan)
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || (v6.segments()[0] & 0xffc0) == 0xfe80)
            }
        };
        let candidates: Vec<&IpAddr> = addresses.iter().take(MAX_ADDRESSES).collect();
        let first = |pred: &dyn Fn(&IpAddr) -> bool| {
            candidates
                .iter()
                .copied()
                .filter(|ip| pred(ip))
                .find(usable)
        };
        let ip = (if loopback_lan {
            first(&|ip| ip.is_loopback() && ip.is_ipv4()).or_else(|| first(&IpAddr::is_loopback))
        } else {
            None
        })
        .or_else(|| first(&IpAddr::is_ipv4))
        .or_else(|| first(&|_| true))
        .ok_or(BadAnnouncement::Address)?;
        Ok(Announcement {
            fullname: fullname.to_string(),
            name,
            key,
            address: SocketAddr::new(*ip, port),
        })
    }
}

/// What the LAN says about a name: one entry per key announced for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LanEntry {
    pub key: PublicKey,
    pub address: String,
}

struct Heard {
    address: String,
    fullname: String,
    /// When it was heard, as a count of announcements (ordering only).
    at: u64,
}

type Entries = HashMap<(Name, [u8; 32]), Heard>;

/// The names heard on the LAN, at most [`MAX_ENTRIES`] (name, key) pairs. Entries leave when
/// their announcement is withdrawn or its DNS records expire (`service.rs` passes on
/// `ServiceRemoved`), or to make room.
#[derive(Default)]
pub struct LanTable {
    entries: Mutex<(Entries, u64)>,
}

impl LanTable {
    fn entries(&self) -> std::sync::MutexGuard<'_, (Entries, u64)> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `a` (replacing what the same name and key said before); returns whether it is
    /// new or changed.
    pub fn insert(&self, a: Announcement) -> bool {
        let mut guard = self.entries();
        let (entries, tick) = &mut *guard;
        *tick += 1;
        let k = (a.name, a.key.0);
        let address = a.address.to_string();
        let changed = entries.get(&k).is_none_or(|h| h.address != address);
        if !entries.contains_key(&k) && entries.len() >= MAX_ENTRIES {
            let oldest = entries
                .iter()
                .min_by_key(|(_, h)| h.at)
                .map(|(k, _)| k.clone());
            if let Some(o) = oldest {
                entries.remove(&o);
            }
        }
        entries.insert(
            k,
            Heard {
                address,
                fullname: a.fullname,
                at: *tick,
            },
        );
        changed
    }

    /// Forgets the entries announced under `fullname` (withdrawn or expired); returns their
    /// names.
    pub fn remove(&self, fullname: &str) -> Vec<Name> {
        let mut gone = Vec::new();
        self.entries().0.retain(|(name, _), h| {
            let keep = h.fullname != fullname;
            if !keep {
                gone.push(name.clone());
            }
            keep
        });
        gone
    }

    /// Every key announced for `name`, the most recently heard first.
    pub fn lookup(&self, name: &Name) -> Vec<LanEntry> {
        let guard = self.entries();
        let mut found: Vec<(&Heard, LanEntry)> = guard
            .0
            .iter()
            .filter(|((n, _), _)| n == name)
            .map(|((_, k), h)| {
                (
                    h,
                    LanEntry {
                        key: PublicKey(*k),
                        address: h.address.clone(),
                    },
                )
            })
            .collect();
        found.sort_by_key(|(h, _)| std::cmp::Reverse(h.at));
        found.into_iter().map(|(_, e)| e).collect()
    }

    /// Every entry, by name.
    pub fn all(&self) -> Vec<(Name, LanEntry)> {
        let mut v: Vec<(Name, LanEntry)> = self
            .entries()
            .0
            .iter()
            .map(|((n, k), h)| {
                (
                    n.clone(),
                    LanEntry {
                        key: PublicKey(*k),
                        address: h.address.clone(),
                    },
                )
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.address.cmp(&b.1.address)));
        v
    }
}

/// Why the LAN's entries for a name cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unusable {
    /// Nothing is announced for the name.
    Nothing,
    /// The name is pinned to another key than any announced (`key_changed`).
    NotThePinnedKey { offered: PublicKey },
    /// Nothing is pinned and several keys are announced for the name: no way to tell which.
    Ambiguous { keys: usize },
}

/// Which of the LAN's `entries` for a name to use against its `pinned` key: the pinned key's
/// entry (an announcement never overrides a pin, even while an impostor announces too); with
/// nothing pinned, the one key announced (trust on first use), never a guess among several.
pub fn choose(entries: &[LanEntry], pinned: Option<PublicKey>) -> Result<LanEntry, Unusable> {
    let Some(first) = entries.first() else {
        return Err(Unusable::Nothing);
    };
    match pinned {
        Some(p) => entries
            .iter()
            .find(|e| e.key == p)
            .cloned()
            .ok_or(Unusable::NotThePinnedKey { offered: first.key }),
        None if entries.len() == 1 => Ok(first.clone()),
        None => Err(Unusable::Ambiguous {
            keys: entries.len(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txt(pairs: &[(&str, &str)]) -> Vec<(String, Option<String>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Some(v.to_string())))
            .collect()
    }

    const KEY: &str = "0101010101010101010101010101010101010101010101010101010101010101";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn announcements_are_validated() {
        let good = txt(&[("v", "1"), ("name", "pb"), ("key", KEY)]);
        let a = Announcement::parse(
            "f",
            &good,
            7000,
            &[ip("127.0.0.1"), ip("fe80::1"), ip("10.1.2.3")],
            false,
        )
        .unwrap();
        assert_eq!(a.name.as_str(), "pb");
        assert_eq!(a.address.to_string(), "10.1.2.3:7000");
        let only_v6 =
            Announcement::parse("f", &good, 7000, &[ip("fe80::1"), ip("2001:db8::5")], false);
        assert_eq!(only_v6.unwrap().address.to_string(), "[2001:db8::5]:7000");
        let bad = |t: &[(String, Option<String>)], port: u16, addrs: &[IpAddr]| {
            Announcement::parse("f", t, port, addrs, false).unwrap_err()
        };
        let lan = [ip("10.1.2.3")];
        assert_eq!(
            bad(&txt(&[("name", "pb"), ("key", KEY)]), 7000, &lan),
            BadAnnouncement::Version
        );
        assert_eq!(
            bad(
                &txt(&[("v", "2"), ("name", "pb"), ("key", KEY)]),
                7000,
                &lan
            ),
            BadAnnouncement::Version
        );
        assert_eq!(
            bad(
                &txt(&[("v", "1"), ("name", "p b"), ("key", KEY)]),
                7000,
                &lan
            ),
            BadAnnouncement::Name
        );
        let long = "x".repeat(65);
        assert_eq!(
            bad(
                &txt(&[("v", "1"), ("name", &long), ("key", KEY)]),
                7000,
                &lan
            ),
            BadAnnouncement::Name
        );
        assert_eq!(
            bad(
                &txt(&[("v", "1"), ("name", "pb"), ("key", "01")]),
                7000,
                &lan
            ),
            BadAnnouncement::Key
        );
        assert_eq!(bad(&good, 0, &lan), BadAnnouncement::Port);
        assert_eq!(
            bad(
                &good,
                7000,
                &[ip("127.0.0.1"), ip("224.0.0.251"), ip("0.0.0.0")]
            ),
            BadAnnouncement::Address
        );
        assert_eq!(
            bad(&good, 7000, &[ip("::1"), ip("127.0.0.2")]),
            BadAnnouncement::Address,
            "loopback is refused on a real LAN"
        );
        let many: Vec<(String, Option<String>)> =
            (0..17).map(|i| (format!("k{i}"), None)).collect();
        assert_eq!(bad(&many, 7000, &lan), BadAnnouncement::TooManyProperties);
    }

    #[test]
    fn loopback_addresses_are_used_only_when_loopback_is_the_lan() {
        let good = txt(&[("v", "1"), ("name", "pb"), ("key", KEY)]);
        let on_lo = |addrs: &[IpAddr]| {
            Announcement::parse("f", &good, 7000, addrs, true).map(|a| a.address.to_string())
        };
        // On a loopback LAN every announcer is on this host: its loopback address comes first.
        assert_eq!(
            on_lo(&[ip("10.1.2.3"), ip("::1"), ip("127.0.0.1")]),
            Ok("127.0.0.1:7000".into())
        );
        assert_eq!(on_lo(&[ip("::1")]), Ok("[::1]:7000".into()));
        assert_eq!(on_lo(&[ip("10.1.2.3")]), Ok("10.1.2.3:7000".into()));
        assert_eq!(
            on_lo(&[ip("0.0.0.0"), ip("224.0.0.251")]),
            Err(BadAnnouncement::Address)
        );
    }

    #[test]
    fn an_announcement_never_overrides_a_pin() {
        let e = |k: u8| LanEntry {
            key: PublicKey([k; 32]),
            address: format!("10.0.0.{k}:7000"),
        };
        // The impostor (2) is heard last, so it comes first.
        assert_eq!(choose(&[e(2), e(1)], Some(PublicKey([1; 32]))), Ok(e(1)));
        assert_eq!(
            choose(&[e(2)], Some(PublicKey([1; 32]))),
            Err(Unusable::NotThePinnedKey {
                offered: PublicKey([2; 32])
            })
        );
        assert_eq!(choose(&[e(2)], None), Ok(e(2)));
        assert_eq!(
            choose(&[e(2), e(1)], None),
            Err(Unusable::Ambiguous { keys: 2 })
        );
    }

    #[test]
    fn the_table_is_bounded_and_keeps_one_entry_per_key() {
        let t = LanTable::default();
        let ann = |name: &str, key: u8, port: u16| Announcement {
            fullname: format!("{name}-{key}"),
            name: Name::new(name).unwrap(),
            key: PublicKey([key; 32]),
            address: SocketAddr::new(ip("10.0.0.1"), port),
        };
        assert!(t.insert(ann("pb", 1, 7000)));
        assert!(!t.insert(ann("pb", 1, 7000)));
        assert!(t.insert(ann("pb", 1, 7001)));
        assert!(t.insert(ann("pb", 2, 7002)));
        let found = t.lookup(&Name::new("pb").unwrap());
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].key, PublicKey([2; 32]), "most recent first");
        assert_eq!(t.remove("pb-2"), vec![Name::new("pb").unwrap()]);
        assert_eq!(t.lookup(&Name::new("pb").unwrap()).len(), 1);
        for i in 0..(MAX_ENTRIES + 10) {
            t.insert(ann(&format!("n{i}"), 3, 7000));
        }
        assert_eq!(t.all().len(), MAX_ENTRIES);
        assert!(
            t.lookup(&Name::new("pb").unwrap()).is_empty(),
            "the oldest went"
        );
    }
}
