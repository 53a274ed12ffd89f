//! Sending to a seed (legacy) peer: one short connection per message, raw text, no
//! acknowledgement (`crate::peer::legacy`). Only with `--legacy`; otherwise its messages fail.

use peerchat_proto::Name;

use super::dial;
use super::ended::AttemptError;
use super::window::{WINDOW, WINDOW_BYTES};
use crate::peer::legacy::{self, MAX_LEGACY_BODY};
use crate::store::Store;

/// Sends `to`'s pending messages (up to a window's worth) to the seed at `address`; each is
/// `sent` for good once written (or `failed`, if it cannot go to a seed).
pub async fn send_pending(
    store: &Store,
    to: &Name,
    address: &str,
    enabled: bool,
) -> Result<(), AttemptError> {
    let (batch, _) = store
        .take_batch(to.clone(), 0, WINDOW, WINDOW_BYTES)
        .await?;
    for m in batch {
        let refusal = if !enabled {
            Some(format!(
                "{to} is a legacy (seed) peer; start chatd with --legacy to send to it"
            ))
        } else if m.body.len() > MAX_LEGACY_BODY {
            Some(format!(
                "body over {MAX_LEGACY_BODY} bytes cannot go to a legacy peer"
            ))
        } else {
            None
        };
        if let Some(err) = refusal {
            store.mark_failed(to.clone(), m.seq, err).await?;
            store.observe().failed(to.as_str(), 1);
            continue;
        }
        let stream = dial::tcp(address).await?;
        legacy::send(stream, &m.body).await?;
        // The seed never acknowledges: `sent` is as far as it goes.
        store.mark_sent_final(to.clone(), m.seq).await?;
    }
    Ok(())
}
