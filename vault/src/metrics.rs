//! `GET /metrics`: the service's metrics in Prometheus' text exposition format (0.0.4), and the
//! axum middleware that measures every request.
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `regent_vault_http_requests_total` | counter | `route`, `method`, `status` |
//! | `regent_vault_http_request_duration_seconds` | histogram | `route`, `method` |
//! | `regent_vault_http_requests_in_flight` | gauge | |
//! | `regent_vault_log_events_appended_total` | counter | |
//!
//! **No label holds anything a request chose.** `route` is the template of a route of
//! [`protocol::ROUTES`] (`/v1/vaults/{vault}/registrations`, never the path asked for), taken from
//! axum's [`MatchedPath`] and kept only if the table holds it, else `unmatched`; `method` is `GET`,
//! `POST` or `DELETE` (the methods the table uses), else `other`; `status` is the answer's. So no
//! vault name, machine id or machine name reaches a label, and a client cannot grow the number of
//! series (`tests/ops.rs` searches a scrape for the names and ids its requests used).
//!
//! A request whose client went away before the answer (its future dropped) leaves the in-flight
//! gauge and is not counted.
//!
//! Why tikv's `prometheus` crate: it writes the Prometheus text format 0.0.4 that Prometheus scrapes
//! by default, keeps each service's metrics in a [`Registry`] of its own (so services started in one
//! process, as the tests do, do not share counts), and needs no background task. `prometheus-client`
//! (the Prometheus org's) writes only OpenMetrics text (its own content type, `# EOF`, counters'
//! families named without `_total`); `metrics` with `metrics-exporter-prometheus` records through a
//! process-wide recorder and, without its HTTP listener, needs a task of ours to drain histograms.
//!
//! Extension point: a storage backend with a pool (PostgreSQL) registers its pool gauges
//! (connections in use, idle, waits) in the same registry when it is opened, next to
//! `regent_vault_log_events_appended_total`; there is no placeholder for them until then.

use std::sync::Arc;
use std::time::Instant;

use axum::Extension;
use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use prometheus::{
    Encoder as _, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use crate::error::VaultError;
use crate::protocol::{self, ErrorBody, ErrorCode, METRICS_CONTENT_TYPE};

/// The `route` of a request no route of the table matched.
pub(crate) const UNMATCHED: &str = "unmatched";
/// The `method` of a request whose method the table does not use for that route.
const OTHER: &str = "other";

/// Request latencies of this service: a registration is answered after an fsync (about 1 to 15 ms
/// on the dev VM under load); a log-head report walks up to 256 records.
const LATENCY_BUCKETS: [f64; 13] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// One running service's metrics.
pub(crate) struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    in_flight: IntGauge,
    events_appended: IntCounter,
}

impl Metrics {
    pub(crate) fn new() -> Result<Metrics, VaultError> {
        let failed = |e: prometheus::Error| VaultError::Metrics(e.to_string());
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("regent_vault_http_requests_total", "Requests answered, by route template, method and status."),
            &["route", "method", "status"],
        )
        .map_err(failed)?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "regent_vault_http_request_duration_seconds",
                "Time from a request's headers to its answer, by route template and method.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route", "method"],
        )
        .map_err(failed)?;
        let in_flight =
            IntGauge::new("regent_vault_http_requests_in_flight", "Requests being answered now.").map_err(failed)?;
        let events_appended = IntCounter::new(
            "regent_vault_log_events_appended_total",
            "Events written to the vault's log (registrations, PIN checks, admin changes, log heads).",
        )
        .map_err(failed)?;
        registry.register(Box::new(requests.clone())).map_err(failed)?;
        registry.register(Box::new(duration.clone())).map_err(failed)?;
        registry.register(Box::new(in_flight.clone())).map_err(failed)?;
        registry.register(Box::new(events_appended.clone())).map_err(failed)?;
        Ok(Metrics { registry, requests, duration, in_flight, events_appended })
    }

    /// The events-appended counter, for the storage (a handle on the same
    /// value).
    pub(crate) fn events_appended(&self) -> IntCounter {
        self.events_appended.clone()
    }

    /// The database pool's gauges (`in_use`, `idle`, and the pool's `max`), registered only by a
    /// service that has a pool.
    pub(crate) fn pool_gauges(&self) -> Result<IntGaugeVec, VaultError> {
        let failed = |e: prometheus::Error| VaultError::Metrics(e.to_string());
        let gauges = IntGaugeVec::new(
            Opts::new(
                "regent_vault_db_pool_connections",
                "Connections of the database pool, by state (in_use, idle, max).",
            ),
            &["state"],
        )
        .map_err(failed)?;
        self.registry.register(Box::new(gauges.clone())).map_err(failed)?;
        Ok(gauges)
    }

    /// Everything registered, in the text format.
    fn render(&self) -> Result<Vec<u8>, prometheus::Error> {
        let mut buffer = Vec::new();
        prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        Ok(buffer)
    }
}

/// The router with every request measured (routes and fallbacks alike), and the metrics handed to
/// [`scrape`].
pub(crate) fn instrument(router: Router, metrics: Arc<Metrics>) -> Router {
    router.layer(from_fn_with_state(metrics, track))
}

/// The labels of a request: only values of the route table, never the path or method as sent.
fn labels(request: &Request) -> (&'static str, &'static str) {
    let method = request.method().as_str();
    let template = request
        .extensions()
        .get::<MatchedPath>()
        .and_then(|matched| protocol::ROUTES.iter().find(|route| route.path == matched.as_str()))
        .map_or(UNMATCHED, |route| route.path);
    let method =
        protocol::ROUTES.iter().map(|route| route.method.as_str()).find(|known| *known == method).unwrap_or(OTHER);
    (template, method)
}

/// Takes one off the in-flight gauge however the request ends, a dropped future included.
struct InFlight(IntGauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

async fn track(State(metrics): State<Arc<Metrics>>, mut request: Request, next: Next) -> Response {
    let (route, method) = labels(&request);
    metrics.in_flight.inc();
    let _in_flight = InFlight(metrics.in_flight.clone());
    let started = Instant::now();
    request.extensions_mut().insert(metrics.clone());
    let response = next.run(request).await;
    metrics.duration.with_label_values(&[route, method]).observe(started.elapsed().as_secs_f64());
    metrics.requests.with_label_values(&[route, method, response.status().as_str()]).inc();
    response
}

/// `GET /metrics`.
pub(crate) async fn scrape(metrics: Option<Extension<Arc<Metrics>>>) -> Response {
    let rendered = match metrics {
        Some(Extension(metrics)) => metrics.render().map_err(|e| e.to_string()),
        None => Err("the router was built without its metrics".to_string()),
    };
    match rendered {
        Ok(body) => {
            let mut response = body.into_response();
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(METRICS_CONTENT_TYPE));
            response
        }
        Err(detail) => {
            tracing::error!(%detail, "the metrics cannot be written");
            let body = ErrorBody {
                error: ErrorCode::Internal,
                reason: None,
                message: format!("the metrics cannot be written: {detail}"),
            };
            (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(body)).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_content_type_is_the_text_format_the_encoder_writes() {
        assert_eq!(METRICS_CONTENT_TYPE, prometheus::TEXT_FORMAT);
    }

    #[test]
    fn labels_come_from_the_route_table_only() {
        let request = |method: &str, path: &str| {
            axum::http::Request::builder().method(method).uri(path).body(axum::body::Body::empty()).unwrap()
        };
        assert_eq!(labels(&request("GET", "/v1/vaults/secret-name")), (UNMATCHED, "GET"));
        assert_eq!(labels(&request("BREW", "/v1/vaults/secret-name")), (UNMATCHED, OTHER));
        assert_eq!(labels(&request("PUT", "/")), (UNMATCHED, OTHER));
    }
}
