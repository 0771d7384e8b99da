//! `GET /v1/log` (admin): the service's whole log in the store's export format, a `regent-log`
//! header naming the head and then each record's stored bytes, one a line, so that
//! `regent audit verify --file` checks it like an agent's export. The log holds no secret (PINs
//! only as HMACs under a key derived from the admin token, no private key), so nothing is
//! redacted: the bytes are the ones the chain covers.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use regent_store::{ExportHeader, FORMAT_NAME, FORMAT_VERSION};

use crate::api::{self, ApiError, ApiPath, known_vault, valid_machine_id};
use crate::protocol::LOG_EXPORT_CONTENT_TYPE;
use crate::service::App;
use crate::storage::Storage as _;
use crate::storage::export::LogExport;

pub(crate) async fn export_log(State(app): State<Arc<App>>) -> Result<Response, ApiError> {
    let export = app.storage.export().await?;
    answer(&app, export)
}

/// `GET /v1/vaults/{vault}/machines/{machine_id}/log` (admin): the records the vault keeps of one
/// machine's log (live or removed), in the same format: the agent's stored bytes, which hold no
/// secret (the agent keeps none in its log), up to the last record the vault's log says it keeps.
pub(crate) async fn export_machine_log(
    State(app): State<Arc<App>>,
    ApiPath((vault, machine_id)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    known_vault(&vault)?;
    valid_machine_id(&machine_id)?;
    if app.storage.vault_info(&vault).await?.is_none() {
        return Err(ApiError::vault_not_found(&vault));
    }
    let export = app
        .storage
        .machine_log(&vault, &machine_id)
        .await?
        .ok_or_else(|| api::machine_not_found(&vault, &machine_id))?;
    answer(&app, export)
}

fn answer(app: &App, LogExport { head, chunks }: LogExport) -> Result<Response, ApiError> {
    let header =
        ExportHeader { format: FORMAT_NAME.into(), format_version: FORMAT_VERSION, writer: app.writer.clone(), head };
    let mut first = serde_json::to_vec(&header).map_err(|e| ApiError::internal(format!("the header: {e}")))?;
    first.push(b'\n');
    let records = futures_util::stream::unfold(chunks, |mut chunks| async move {
        let chunk = chunks.recv().await?.map_err(|detail| {
            // The answer is cut off here; the admin sees a broken transfer, the operator why.
            tracing::warn!(%detail, "an export of the log stopped part way");
            std::io::Error::other(detail)
        });
        Some((chunk, chunks))
    });
    let body = futures_util::stream::iter([Ok::<_, std::io::Error>(first)]);
    let body = futures_util::StreamExt::chain(body, records);
    Ok(([(header::CONTENT_TYPE, LOG_EXPORT_CONTENT_TYPE)], Body::from_stream(body)).into_response())
}
