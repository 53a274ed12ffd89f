//! Outgoing messages: one `outbox` row per message, one `deliveries` row per recipient with its
//! own state. A recipient's rows are delivered in `out_seq` order (the order they were accepted).
//!
//! A recipient's pending (`queued` or `sent`, not final) rows all lie above its `pending_floor`
//! (schema 7): every query for one recipient's pending rows scans the primary key from there,
//! and every change that can end a row's pending state calls [`advance_floor`](transitions::advance_floor). Queries over
//! every recipient (`pending_recipients`, `outbox_pending`) read the whole table; they run at
//! start and for `chatctl outbox`, not per message.
//!
//! One file per job: `sql` (the shared statements), `enqueue` (accepting a message),
//! `delivery_reads` (what the delivery engine reads), `transitions` (state changes and the
//! pending floor), `reports` (counts, message status, the `outbox` pages), `history` (sent messages for
//! `export`).

mod delivery_reads;
mod enqueue;
mod history;
mod reports;
mod sql;
mod transitions;

pub use delivery_reads::Outgoing;
pub use enqueue::SendOutcome;
pub use reports::DeliveryRow;
#[cfg(test)]
pub(super) use sql::{ADVANCE_FLOOR, HAS_PENDING, TAKE_BATCH};
pub use sql::{ADVANCE_FLOOR_PAST, DELIVERED_RANGE, INSERT_DELIVERY, INSERT_OUTBOX};
