//! `--metrics`: what a scrape answers. The registered metrics (`observe.rs`), plus the queue
//! gauges, which are read from the database at scrape time: at most once per
//! [`QUEUED_REFRESH`], so that scrapes, however frequent, cost the DB thread at most one read
//! of the pending deliveries per period.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use peerchat_daemon::metrics::{Exporter, Render};
use tracing::warn;

use crate::observe::{render_queued, Queued, QUEUED_TOP};
use crate::store::Store;

/// How long a reading of the queue gauges is reused.
pub const QUEUED_REFRESH: Duration = Duration::from_secs(5);

pub fn render(exporter: Arc<Exporter>, store: Store) -> Render {
    let cache: Arc<Mutex<Option<(Instant, Queued)>>> = Arc::default();
    Arc::new(move || {
        let (exporter, store, cache) = (exporter.clone(), store.clone(), cache.clone());
        Box::pin(async move {
            let mut text = exporter.render();
            text.push_str(&render_queued(&queued(&store, &cache).await));
            text
        })
    })
}

/// The queue gauges, from the cache while it is fresh. A failed read keeps the last values.
async fn queued(store: &Store, cache: &Mutex<Option<(Instant, Queued)>>) -> Queued {
    let cached =
        |c: &Mutex<Option<(Instant, Queued)>>| c.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if let Some((at, q)) = cached(cache) {
        if at.elapsed() < QUEUED_REFRESH {
            return q;
        }
    }
    match store.queued_by_recipient(QUEUED_TOP).await {
        Ok(q) => {
            *cache.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), q.clone()));
            q
        }
        Err(e) => {
            warn!(error = %e, "metrics: could not read the queue");
            cached(cache).map(|(_, q)| q).unwrap_or_default()
        }
    }
}
