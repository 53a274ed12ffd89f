//! `--metrics ADDR` (both daemons): Prometheus text over HTTP on a loopback address.
//!
//! The values are `metrics` handles ([`Exporter::counter`], …) registered with a
//! `metrics-exporter-prometheus` recorder that belongs to the daemon (no global recorder: tests
//! run several daemons in one process, each with its own numbers). The exporter's own HTTP
//! listener is not used: it binds inside `build()` with no way to learn an OS-chosen port and
//! runs outside our shutdown and connection limits. Instead the daemon binds the listener itself
//! ([`bind`], before it reports ready, so a bad address is a start-up error) and [`serve`]s
//! `GET /metrics` with hyper through [`crate::accept`] (at most [`MAX_CONNECTIONS`], each bounded
//! in time), stopping with the daemon.
//!
//! Without `--metrics` the handles are no-ops ([`Exporter::disabled`]): nothing is recorded.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Metadata, Recorder, SharedString};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

/// Most scrapes served at once.
pub const MAX_CONNECTIONS: usize = 16;
/// A scrape connection (request and reply) may last at most this long.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// How often recorded histogram samples are folded into their buckets when nobody scrapes
/// (otherwise they would pile up in memory until the next scrape).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Histogram buckets, in seconds: from half a millisecond (a commit on a fast disk) to ten
/// minutes (a delivery that waited for a retry).
pub const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0, 600.0,
];

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("{0} is not a loopback address (the metrics are not authenticated); use 127.0.0.1:PORT or [::1]:PORT")]
    NotLoopback(SocketAddr),
    #[error("--metrics {addr}: cannot listen: {error}")]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
}

/// The metrics the daemon records, and how to render them.
pub struct Exporter {
    recorder: Option<PrometheusRecorder>,
}

impl Exporter {
    /// Records nothing (no `--metrics`).
    pub fn disabled() -> Exporter {
        Exporter { recorder: None }
    }

    /// Records into a Prometheus recorder of its own.
    pub fn enabled() -> Exporter {
        let builder = PrometheusBuilder::new();
        // BUCKETS is not empty, the one reason `set_buckets` fails; keep the default (summaries)
        // rather than panic if that ever changes.
        let builder = match builder.set_buckets(BUCKETS) {
            Ok(b) => b,
            Err(_) => PrometheusBuilder::new(),
        };
        Exporter {
            recorder: Some(builder.build_recorder()),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.recorder.is_some()
    }

    pub fn counter(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
    ) -> Counter {
        match &self.recorder {
            None => Counter::noop(),
            Some(r) => {
                r.describe_counter(KeyName::from(name), None, SharedString::from(help));
                r.register_counter(&key(name, labels), &metadata())
            }
        }
    }

    pub fn gauge(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
    ) -> Gauge {
        match &self.recorder {
            None => Gauge::noop(),
            Some(r) => {
                r.describe_gauge(KeyName::from(name), None, SharedString::from(help));
                r.register_gauge(&key(name, labels), &metadata())
            }
        }
    }

    pub fn histogram(&self, name: &'static str, help: &'static str) -> Histogram {
        match &self.recorder {
            None => Histogram::noop(),
            Some(r) => {
                r.describe_histogram(KeyName::from(name), None, SharedString::from(help));
                r.register_histogram(&key(name, &[]), &metadata())
            }
        }
    }

    /// The Prometheus text of everything registered (empty when disabled).
    pub fn render(&self) -> String {
        self.recorder
            .as_ref()
            .map(|r| r.handle().render())
            .unwrap_or_default()
    }

    fn upkeep(&self) {
        if let Some(r) = &self.recorder {
            r.handle().run_upkeep();
        }
    }
}

fn key(name: &'static str, labels: &[(&'static str, &str)]) -> Key {
    let labels: Vec<Label> = labels
        .iter()
        .map(|(k, v)| Label::new(*k, v.to_string()))
        .collect();
    Key::from_parts(name, labels)
}

fn metadata() -> Metadata<'static> {
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()))
}

/// Refuses an address that is not loopback: the text tells who talks to whom and how much, and
/// has no authentication.
pub fn check_loopback(addr: SocketAddr) -> Result<(), MetricsError> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(MetricsError::NotLoopback(addr))
    }
}

/// The value parser of `--metrics` (both daemons): a socket address on loopback.
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = s
        .parse()
        .map_err(|_| format!("expected IP:PORT on loopback, e.g. 127.0.0.1:9464 (got {s:?})"))?;
    check_loopback(addr).map_err(|e| e.to_string())?;
    Ok(addr)
}

/// Checks and binds `--metrics ADDR` (call before reporting ready).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, MetricsError> {
    check_loopback(addr)?;
    TcpListener::bind(addr)
        .await
        .map_err(|error| MetricsError::Bind { addr, error })
}

/// What a scrape answers: the Prometheus text, built on demand (a daemon may add lines it
/// computes at scrape time to [`Exporter::render`]'s).
pub type Render = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = String> + Send>> + Send + Sync>;

/// Serves `GET /metrics` on `listener` until `stop` completes; runs the recorder's upkeep
/// meanwhile. Connections are tracked in `tasks`.
pub async fn serve(
    listener: TcpListener,
    exporter: Arc<Exporter>,
    render: Render,
    stop: impl Future<Output = ()>,
    tasks: &TaskTracker,
) {
    let options = crate::accept::Options {
        max_connections: MAX_CONNECTIONS,
        max_per_address: None,
        accept_backoff: crate::accept::ACCEPT_BACKOFF,
        on_accept_error: |e| tracing::warn!(error = %e, "metrics accept failed"),
        on_refused: |_, _| tracing::debug!("too many metrics connections; one was closed"),
    };
    let upkeep = async {
        loop {
            tokio::time::sleep(UPKEEP_EVERY).await;
            exporter.upkeep();
        }
    };
    let accept = crate::accept::serve(listener, options, stop, tasks, |(stream, _)| {
        connection(stream, render.clone())
    });
    tokio::select! {
        _ = accept => {}
        _ = upkeep => {}
    }
}

async fn connection(stream: tokio::net::TcpStream, render: Render) {
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let render = render.clone();
        async move { Ok::<_, std::convert::Infallible>(answer(req, render).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    if let Ok(Err(e)) = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await {
        tracing::debug!(error = %e, "metrics connection failed");
    }
}

async fn answer(req: Request<Incoming>, render: Render) -> Response<Full<Bytes>> {
    let (status, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => (StatusCode::OK, render().await),
        (&Method::GET, _) => (StatusCode::NOT_FOUND, "not found; try /metrics\n".into()),
        _ => (StatusCode::METHOD_NOT_ALLOWED, "only GET /metrics\n".into()),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str("text/plain; version=0.0.4; charset=utf-8")
    {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_addresses_are_accepted() {
        assert!(check_loopback("127.0.0.1:9100".parse().unwrap()).is_ok());
        assert!(check_loopback("[::1]:9100".parse().unwrap()).is_ok());
        for bad in ["0.0.0.0:9100", "192.168.1.2:9100", "[::]:9100"] {
            let e = check_loopback(bad.parse().unwrap())
                .unwrap_err()
                .to_string();
            assert!(e.contains("not a loopback address"), "{e}");
        }
    }

    #[test]
    fn a_disabled_exporter_records_and_renders_nothing() {
        let x = Exporter::disabled();
        x.counter("t_total", "help", &[]).increment(1);
        assert_eq!(x.render(), "");
    }

    #[test]
    fn an_enabled_exporter_renders_counters_and_histogram_buckets() {
        let x = Exporter::enabled();
        x.counter("t_messages_total", "Messages.", &[("kind", "a")])
            .increment(3);
        x.histogram("t_latency_seconds", "Latency.").record(0.002);
        let text = x.render();
        assert!(text.contains("# HELP t_messages_total Messages."), "{text}");
        assert!(text.contains("t_messages_total{kind=\"a\"} 3"), "{text}");
        assert!(
            text.contains("t_latency_seconds_bucket{le=\"0.0025\"} 1"),
            "{text}"
        );
    }
}
