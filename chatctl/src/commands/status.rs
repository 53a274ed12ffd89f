//! `chatctl status`: this node at a glance.

use peerchat_client::Client;
use peerchat_proto::control::NodeStatus;

use crate::exit::{self, Failure};
use crate::output;

pub fn run(mut client: Client, json: bool) -> Result<i32, Failure> {
    let s = client.status()?;
    if json {
        output::json(&s);
        return Ok(exit::OK);
    }
    let c = &s.counts;
    output::line(&format!("name:       {}", s.name));
    match (&s.registration_error, s.address.is_empty()) {
        (Some(e), _) => output::line(&format!(
            "address:    not registered: {}",
            crate::safe_text::one_line(e)
        )),
        (None, true) => output::line("address:    (not registered yet)"),
        (None, false) => output::line(&format!("address:    {}", s.address)),
    }
    if let Some(why) = nat_statement(&s) {
        output::line(&format!("reachable:  no (behind NAT): {why}"));
    }
    output::line(&format!("listen:     {}", s.listen));
    output::line(&format!(
        "registry:   {} ({})",
        s.registry,
        if s.registry_reachable {
            "reachable"
        } else {
            "unreachable"
        }
    ));
    // With several registries, each one and how it stands (the line above is the one in use).
    if s.registries.len() > 1 {
        for (i, r) in s.registries.iter().enumerate() {
            output::line(&format!(
                "{}{}",
                if i == 0 {
                    "registries: "
                } else {
                    "            "
                },
                standing(r, r.address == s.registry)
            ));
        }
    }
    if s.lan {
        output::line("lan:        announcing and browsing names (DNS-SD)");
    }
    output::line(&format!(
        "started:    {} (up {}s)",
        s.started_at, s.uptime_secs
    ));
    output::line(&format!("socket:     {}", client.socket().display()));
    output::line(&format!("inbox:      {} messages", c.inbox));
    output::line(&format!(
        "outbox:     {} messages; deliveries: {} queued, {} sent, {} delivered, {} failed, {} cancelled",
        c.outbox, c.queued, c.sent, c.delivered, c.failed, c.cancelled
    ));
    Ok(exit::OK)
}

/// Why other nodes cannot reach us, when the registry saw us behind a NAT router (shared with
/// `doctor`). Addresses come from chatd and the registry: shown through `safe_text`.
pub fn nat_statement(s: &NodeStatus) -> Option<String> {
    let nat = s.behind_nat.as_ref()?;
    let port = s.address.rsplit(':').next().unwrap_or("");
    let text = format!(
        "the registry sees this node at {seen} (registered {address}), but chatd sends from \
         {local}: a NAT router is in between, and other nodes' connections to {address} reach \
         this node only if the router forwards port {port} to {local}:{port}; set --advertise to \
         an address that does",
        seen = nat.seen_ip,
        local = nat.local_ip,
        address = s.address,
    );
    Some(crate::safe_text::one_line(&text).into_owned())
}

/// One registry's line: `ADDR reachable|unreachable[, registered as A][: error][ (in use)]`.
fn standing(r: &peerchat_proto::control::RegistryStanding, in_use: bool) -> String {
    let mut line = format!(
        "{} {}",
        crate::safe_text::one_line(&r.address),
        if r.reachable {
            "reachable"
        } else {
            "unreachable"
        }
    );
    if let Some(a) = &r.registered {
        line.push_str(&format!(
            ", registered as {}",
            crate::safe_text::one_line(a)
        ));
    }
    if let Some(e) = &r.error {
        line.push_str(&format!(": {}", crate::safe_text::one_line(e)));
    }
    if in_use {
        line.push_str(" (in use)");
    }
    line
}
