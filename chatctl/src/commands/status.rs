//! `chatctl status`: this node at a glance.

use peerchat_client::Client;

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
