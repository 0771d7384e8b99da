//! The admin's client, behind `regent vault create / credentials / pin / machines / export`. Blocking; talks
//! to the service directly (no proxy, environment proxies ignored).

use std::path::Path;
use std::time::Duration;

use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::{StatusCode, Url};
use secrecy::SecretString;
use serde::de::DeserializeOwned;

use crate::error::{AdminError, ClientError, chain_text};
use crate::http;
use crate::protocol::transparency::Hash;
use crate::protocol::{
    ConsistencyProof, CreateVault, CredentialsFile, DownloadCredentials, Fleet, FleetAudit, Health, IssuedPin,
    LoggedHead, MachineInfo, Machines, VaultInfo,
};
use crate::token::{bearer, read_token_file};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

pub struct AdminClient {
    base: String,
    token: SecretString,
    client: Client,
}

impl std::fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminClient").field("base", &self.base).field("token", &"<redacted>").finish()
    }
}

impl AdminClient {
    /// A client for the service at `server_url` (`http://` or `https://`), trusting the system roots
    /// plus `ca_file` (PEM or DER).
    pub fn new(server_url: &str, token: SecretString, ca_file: Option<&Path>) -> Result<AdminClient, AdminError> {
        http::join_url(server_url, &["v1"]).map_err(|_| AdminError::BadUrl { url: server_url.to_string() })?;
        let tls = crate::tls::client_config(ca_file)?;
        let client = http::build_client(&tls, None, CONNECT_TIMEOUT, REQUEST_TIMEOUT).map_err(ClientError::Http)?;
        Ok(AdminClient { base: server_url.trim().to_string(), token, client })
    }

    /// As [`AdminClient::new`], with the token read from a file (the service's `admin.token`).
    pub fn from_token_file(
        server_url: &str,
        token_file: &Path,
        ca_file: Option<&Path>,
    ) -> Result<AdminClient, AdminError> {
        AdminClient::new(server_url, read_token_file(token_file)?, ca_file)
    }

    /// A client for the calls that need no token (health, the checkpoint); an admin call answers
    /// [`AdminError::Unauthorized`].
    pub fn without_token(server_url: &str, ca_file: Option<&Path>) -> Result<AdminClient, AdminError> {
        AdminClient::new(server_url, SecretString::from(String::new()), ca_file)
    }

    /// Whether the service answers at all (no token needed).
    pub fn health(&self) -> Result<(), AdminError> {
        self.service_health().map(|_| ())
    }

    /// What the service says of itself (no token needed): its protocol and its checkpoint key.
    pub fn service_health(&self) -> Result<Health, AdminError> {
        let url = self.url(&["health"])?;
        self.call::<Health>(self.client.get(url.clone()), &url, false)
    }

    /// The transparency log's latest checkpoint, the signed note's text (no token needed). Not
    /// verified here: the caller checks it with the key it trusts.
    pub fn checkpoint(&self) -> Result<String, AdminError> {
        let url = self.url(&["checkpoint"])?;
        let response = self.send(self.client.get(url.clone()), &url, false)?;
        let status = response.status().as_u16();
        let bytes = http::read_body(response, http::MAX_ADMIN_ANSWER_BYTES)
            .map_err(|detail| AdminError::Protocol { status, detail })?;
        String::from_utf8(bytes)
            .map_err(|_| AdminError::Protocol { status, detail: "the checkpoint is not UTF-8 text".into() })
    }

    /// The proof that the transparency log's tree of `from` leaves is a prefix of its tree of `to`
    /// leaves (no token needed): the hashes to check with `verify_consistency` against the roots of
    /// the two checkpoints the caller holds (empty for equal sizes). The service refuses
    /// ([`AdminError::Refused`], `bad_request`) a `from` of 0, a `from` past `to`, and a `to` past
    /// its tree.
    pub fn consistency(&self, from: u64, to: u64) -> Result<Vec<Hash>, AdminError> {
        let mut url = self.url(&["checkpoint", "consistency"])?;
        url.query_pairs_mut().append_pair("from", &from.to_string()).append_pair("to", &to.to_string());
        let answer = self.call::<ConsistencyProof>(self.client.get(url.clone()), &url, false)?;
        http::proof_hashes(&answer, from, to).map_err(|detail| AdminError::Protocol { status: 200, detail })
    }

    /// A machine's latest logged head, proved under the latest checkpoint, with consistency from
    /// the tree of `from` leaves.
    pub fn machine_proof(&self, vault: &str, machine_id: &str, from: Option<u64>) -> Result<LoggedHead, AdminError> {
        let mut url = self.url(&["vaults", vault, "machines", machine_id, "proof"])?;
        if let Some(from) = from {
            url.query_pairs_mut().append_pair("from", &from.to_string());
        }
        self.call::<LoggedHead>(self.client.get(url.clone()), &url, true)
    }

    pub fn create_vault(&self, name: &str) -> Result<VaultInfo, AdminError> {
        let url = self.url(&["vaults"])?;
        self.call(self.client.post(url.clone()).json(&CreateVault { name: name.to_string() }), &url, true)
    }

    pub fn vault(&self, name: &str) -> Result<VaultInfo, AdminError> {
        let url = self.url(&["vaults", name])?;
        self.call(self.client.get(url.clone()), &url, true)
    }

    /// Downloads new credentials for `vault`, valid for `validity` (default 48 hours; whole seconds,
    /// at most 30 days). The previous download of the vault stops being accepted.
    pub fn download_credentials(&self, vault: &str, validity: Option<Duration>) -> Result<CredentialsFile, AdminError> {
        let validity_seconds = match validity {
            Some(d) if d.as_secs() == 0 => {
                return Err(AdminError::InvalidInput("the validity must be at least one second".into()));
            }
            Some(d) => Some(d.as_secs()),
            None => None,
        };
        let url = self.url(&["vaults", vault, "credentials"])?;
        self.call(self.client.post(url.clone()).json(&DownloadCredentials { validity_seconds }), &url, true)
    }

    /// Issues a security PIN for `vault`: 8 digits, good for 5 minutes, usable once.
    pub fn issue_pin(&self, vault: &str) -> Result<IssuedPin, AdminError> {
        let url = self.url(&["vaults", vault, "pins"])?;
        self.call(self.client.post(url.clone()), &url, true)
    }

    /// The machines registered to `vault`, oldest first.
    pub fn machines(&self, vault: &str) -> Result<Vec<MachineInfo>, AdminError> {
        let url = self.url(&["vaults", vault, "machines"])?;
        self.call::<Machines>(self.client.get(url.clone()), &url, true).map(|m| m.machines)
    }

    /// One page of `vault`'s fleet: at most `limit` machines (the service's default without it),
    /// after `after` (an earlier page's `next`).
    pub fn fleet(&self, vault: &str, limit: Option<usize>, after: Option<&str>) -> Result<Fleet, AdminError> {
        let mut url = self.url(&["vaults", vault, "fleet"])?;
        {
            let mut query = url.query_pairs_mut();
            if let Some(limit) = limit {
                query.append_pair("limit", &limit.to_string());
            }
            if let Some(after) = after {
                query.append_pair("after", after);
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        self.call::<Fleet>(self.client.get(url.clone()), &url, true)
    }

    /// One page of `vault`'s fleet audit, filtered by `query` (each pair a query parameter of
    /// `GET /v1/vaults/{vault}/audit`: `machine`, `since`, `until`, `kind`, `actor`, `outcome`,
    /// `limit`, `after`).
    pub fn audit(&self, vault: &str, query: &[(&str, String)]) -> Result<FleetAudit, AdminError> {
        let mut url = self.url(&["vaults", vault, "audit"])?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        self.call::<FleetAudit>(self.client.get(url.clone()), &url, true)
    }

    /// Removes a machine from `vault`; returns what it was.
    pub fn remove_machine(&self, vault: &str, machine_id: &str) -> Result<MachineInfo, AdminError> {
        let url = self.url(&["vaults", vault, "machines", machine_id])?;
        self.call(self.client.delete(url.clone()), &url, true)
    }

    fn url(&self, segments: &[&str]) -> Result<Url, AdminError> {
        let mut all = vec!["v1"];
        all.extend_from_slice(segments);
        http::join_url(&self.base, &all).map_err(|_| AdminError::BadUrl { url: self.base.clone() })
    }

    /// The service's whole log (`GET /v1/log`): a reader of the export as the service streams it
    /// (a `regent-log` header, then each record's stored line). Read to its end, it is the log up to
    /// the header's head; a transfer cut short is a read error. The caller verifies what it read.
    pub fn export_log(&self) -> Result<impl std::io::Read + Send + 'static, AdminError> {
        let url = self.url(&["log"])?;
        self.send(self.client.get(url.clone()), &url, true)
    }

    /// The records the vault keeps of one machine's log, in the store's export format, streamed.
    pub fn export_machine_log(
        &self,
        vault: &str,
        machine_id: &str,
    ) -> Result<impl std::io::Read + Send + 'static, AdminError> {
        let url = self.url(&["vaults", vault, "machines", machine_id, "log"])?;
        self.send(self.client.get(url.clone()), &url, true)
    }

    fn call<T: DeserializeOwned>(&self, request: RequestBuilder, url: &Url, admin: bool) -> Result<T, AdminError> {
        let response = self.send(request, url, admin)?;
        let status = response.status();
        let bytes = http::read_body(response, http::MAX_ADMIN_ANSWER_BYTES)
            .map_err(|detail| AdminError::Protocol { status: status.as_u16(), detail })?;
        serde_json::from_slice(&bytes).map_err(|e| AdminError::Protocol {
            status: status.as_u16(),
            detail: format!("the answer cannot be read: {e}"),
        })
    }

    /// Sends the request (with the token for an admin call); a success is the service's answer to
    /// read, anything else the error it says.
    fn send(&self, request: RequestBuilder, url: &Url, admin: bool) -> Result<Response, AdminError> {
        let request = if admin {
            let value = bearer(&self.token);
            let mut header = reqwest::header::HeaderValue::from_str(&value).map_err(|_| {
                AdminError::InvalidInput("the admin token holds characters a header cannot carry".into())
            })?;
            header.set_sensitive(true);
            request.header(reqwest::header::AUTHORIZATION, header)
        } else {
            request
        };
        let response = request.send().map_err(|e| AdminError::Unreachable {
            url: self.base.clone(),
            // A TLS failure says what is wrong with the certificate and how to trust a private CA.
            detail: crate::tls::describe_failure(&e).unwrap_or_else(|| chain_text(&e)),
        })?;
        let status = response.status();
        if !http::from_service(&response) {
            return Err(AdminError::Protocol {
                status: status.as_u16(),
                detail: format!("{url} is not a regent vault service"),
            });
        }
        if status.is_success() {
            return Ok(response);
        }
        let body = http::error_body(response);
        Err(match status {
            StatusCode::UNAUTHORIZED => AdminError::Unauthorized,
            StatusCode::NOT_FOUND => AdminError::NotFound { code: body.error, message: body.message },
            StatusCode::CONFLICT => AdminError::Conflict { code: body.error, message: body.message },
            _ => AdminError::Refused { status: status.as_u16(), code: body.error, message: body.message },
        })
    }
}
