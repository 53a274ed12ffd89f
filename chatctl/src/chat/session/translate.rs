//! chatd's conversation types (protocol.md §2.9) as the app's view model.

use std::collections::HashMap;

use peerchat_proto::control::{
    ConvKey, ConversationInfo, DeliveryState, Direction, Entry, PresenceState,
};

use super::super::model::{parse_time, ConvId, Msg, Summary, Tick};

pub fn conv(key: &ConvKey) -> ConvId {
    ConvId(key.to_string())
}

/// Each recipient's delivery state of our messages (a group message has several), to show
/// the least advanced one.
#[derive(Default)]
pub struct Deliveries(HashMap<String, HashMap<String, (DeliveryState, Option<String>)>>);

/// Messages whose states are kept; beyond it the table starts afresh (only ticks of old
/// messages can then be less precise until the next history load).
const MAX_TRACKED: usize = 10_000;

impl Deliveries {
    pub fn set(&mut self, id: &str, to: &str, state: DeliveryState, error: Option<String>) {
        if self.0.len() >= MAX_TRACKED && !self.0.contains_key(id) {
            self.0.clear();
        }
        self.0
            .entry(id.to_string())
            .or_default()
            .insert(to.to_string(), (state, error));
    }

    /// The message's tick: failed if any recipient failed, else its least advanced state.
    pub fn tick(&self, id: &str) -> Tick {
        let Some(states) = self.0.get(id) else {
            return Tick::Queued;
        };
        let rank = |s: DeliveryState| match s {
            DeliveryState::Queued => 0,
            DeliveryState::Sent => 1,
            DeliveryState::Delivered => 2,
            DeliveryState::Failed | DeliveryState::Cancelled => 3,
        };
        if let Some((s, e)) = states.values().find(|(s, _)| rank(*s) == 3) {
            return Tick::from_state(s.as_str(), e.as_deref());
        }
        let least = states.values().map(|(s, _)| *s).min_by_key(|s| rank(*s));
        Tick::from_state(least.map_or("queued", DeliveryState::as_str), None)
    }
}

pub fn entry(e: Entry, deliveries: &mut Deliveries) -> Msg {
    let outgoing = e.direction == Direction::Out;
    for d in &e.delivery {
        deliveries.set(&e.id, d.to.as_ref(), d.state, d.error.clone());
    }
    let at = match (&e.received_at, outgoing) {
        (Some(r), false) => parse_time(r),
        _ => parse_time(&e.sent_at),
    };
    Msg {
        tick: outgoing.then(|| deliveries.tick(&e.id)),
        id: e.id,
        seq: e.pos,
        from: e.from.to_string(),
        outgoing,
        body: e.body,
        at,
    }
}

pub fn summary(c: &ConversationInfo) -> Summary {
    Summary {
        id: conv(&c.with),
        unread: u32::try_from(c.unread).unwrap_or(u32::MAX),
        online: match (c.with.is_group(), c.presence) {
            (true, _) => None,
            (false, Some(PresenceState::Online)) => Some(true),
            (false, Some(PresenceState::Offline)) => Some(false),
            (false, _) => None,
        },
        last_activity: c.last.as_ref().map(|l| parse_time(&l.at)),
    }
}
