//! Whether others can reach us at the address the registry registered: a node behind a NAT
//! router registers the router's address (the registry records the source address it sees,
//! with our port), and nothing on the router forwards that port to us. chatd cannot tell from
//! inside whether a forward exists, but it can tell that a router is in between: the registry
//! saw another IP address than the one we sent from. `chatctl status` and `doctor` then say so
//! instead of letting senders elsewhere retry in silence.

use std::net::{IpAddr, SocketAddr};

use peerchat_proto::control::BehindNat;

/// `registered`: the address the registry confirmed (`IP:PORT`, or `HOST:PORT` for an
/// advertised DNS name); `local_ip`: the source address of the connection that registered;
/// `advertised`: whether the operator chose the address (`--advertise`): then it is theirs to
/// get right, and no NAT is reported.
pub fn behind_nat(
    registered: &str,
    local_ip: Option<IpAddr>,
    advertised: bool,
) -> Option<BehindNat> {
    if advertised {
        return None;
    }
    let seen = registered.parse::<SocketAddr>().ok()?.ip().to_canonical();
    let local = local_ip?.to_canonical();
    (seen != local).then(|| BehindNat {
        seen_ip: seen.to_string(),
        local_ip: local.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn the_same_address_is_no_nat() {
        assert_eq!(behind_nat("10.0.0.2:7000", ip("10.0.0.2"), false), None);
        assert_eq!(
            behind_nat("[2001:db8::2]:7000", ip("2001:db8::2"), false),
            None
        );
        // The registry writes IPv4-mapped sources as plain IPv4; a dual-stack socket may not.
        assert_eq!(
            behind_nat("10.0.0.2:7000", ip("::ffff:10.0.0.2"), false),
            None
        );
    }

    #[test]
    fn another_address_is_a_nat() {
        assert_eq!(
            behind_nat("203.0.113.7:7000", ip("192.168.1.20"), false),
            Some(BehindNat {
                seen_ip: "203.0.113.7".into(),
                local_ip: "192.168.1.20".into(),
            })
        );
    }

    #[test]
    fn an_advertised_or_unknown_address_is_not_judged() {
        assert_eq!(
            behind_nat("203.0.113.7:7000", ip("192.168.1.20"), true),
            None
        );
        assert_eq!(
            behind_nat("chat.example.org:7000", ip("192.168.1.20"), false),
            None
        );
        assert_eq!(behind_nat("203.0.113.7:7000", None, false), None);
    }
}
