//! `--metrics`: the registry's counters, rendered by `peerchat_daemon::metrics`.
//!
//! - `registryd_names`: names in the table (a gauge, read at scrape time);
//! - `registryd_lookups_total{result}`: lookups (JSON `lookup` and the seed's `GET`), `found` or
//!   `not_found`;
//! - `registryd_registrations_total{protocol}`: registrations accepted (`json` signed ones,
//!   `seed` text ones; renewals count);
//! - `registryd_refusals_total{code}`: requests answered with an error other than a lookup's
//!   `not_found`, by the protocol's error code. Codes are a closed set (`proto::registry::code`);
//!   anything else is counted as `other`, so the label set stays bounded.

use std::sync::Arc;

use metrics::{Counter, Gauge};
use peerchat_daemon::metrics::{Exporter, Render};
use peerchat_proto::registry::code;

use crate::table::Table;

/// Every code a refusal is labelled with (the last, `other`, catches anything new).
const CODES: &[&str] = &[
    code::BAD_REQUEST,
    code::INVALID_NAME,
    code::NOT_FOUND,
    code::CONFLICT,
    code::STORAGE,
    code::BUSY,
    code::LIMITED,
    code::KEY_MISMATCH,
    code::BAD_SIGNATURE,
    code::REPLAY,
    "other",
];

pub struct Metrics {
    names: Gauge,
    found: Counter,
    not_found: Counter,
    registered_json: Counter,
    registered_seed: Counter,
    refusals: Vec<Counter>,
}

impl Metrics {
    pub fn new(x: &Exporter) -> Metrics {
        let lookups = "Lookups answered, by result.";
        let registrations = "Registrations (and renewals) accepted, by protocol.";
        Metrics {
            names: x.gauge("registryd_names", "Names in the registry's table.", &[]),
            found: x.counter("registryd_lookups_total", lookups, &[("result", "found")]),
            not_found: x.counter(
                "registryd_lookups_total",
                lookups,
                &[("result", "not_found")],
            ),
            registered_json: x.counter(
                "registryd_registrations_total",
                registrations,
                &[("protocol", "json")],
            ),
            registered_seed: x.counter(
                "registryd_registrations_total",
                registrations,
                &[("protocol", "seed")],
            ),
            refusals: CODES
                .iter()
                .map(|c| {
                    x.counter(
                        "registryd_refusals_total",
                        "Requests refused, by error code.",
                        &[("code", c)],
                    )
                })
                .collect(),
        }
    }

    pub fn looked_up(&self, found: bool) {
        if found {
            self.found.increment(1)
        } else {
            self.not_found.increment(1)
        }
    }

    pub fn registered(&self, seed: bool) {
        if seed {
            self.registered_seed.increment(1)
        } else {
            self.registered_json.increment(1)
        }
    }

    pub fn refused(&self, code: &str) {
        let i = CODES
            .iter()
            .position(|c| *c == code)
            .unwrap_or(CODES.len() - 1);
        self.refusals[i].increment(1);
    }
}

/// A scrape: the names gauge read from the table now, then everything rendered.
pub fn render(exporter: Arc<Exporter>, metrics: Arc<Metrics>, table: Arc<Table>) -> Render {
    Arc::new(move || {
        metrics.names.set(table.len() as f64);
        let text = exporter.render();
        Box::pin(std::future::ready(text))
    })
}
