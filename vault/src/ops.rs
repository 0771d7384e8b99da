//! The routes a service manager and a load balancer call: `GET /healthz` (the process answers)
//! and `GET /readyz` (it can serve: `App::ready`, which asks the storage). `GET /metrics` is
//! [`crate::metrics`]. None needs the token, changes anything, or says more than the state of the
//! service (no vault, machine or path).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::protocol::{ErrorBody, ErrorCode, Liveness, Readiness};
use crate::service::App;

/// `GET /healthz`: 200 while the process answers, whatever its log's state (a restart does not
/// mend a disk; `/readyz` says whether to send it requests).
pub(crate) async fn healthz() -> axum::Json<Liveness> {
    axum::Json(Liveness { status: "alive".into() })
}

/// `GET /readyz`: 200 when the log would take a change; 503 `store_unavailable` saying why not.
pub(crate) async fn readyz(State(app): State<Arc<App>>) -> Response {
    match app.ready().await {
        Ok(()) => axum::Json(Readiness { status: "ready".into() }).into_response(),
        Err(why) => {
            let body =
                ErrorBody { error: ErrorCode::StoreUnavailable, reason: None, message: format!("not ready: {why}") };
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
        }
    }
}
