//! What the agent's client and the admin client share: building a blocking reqwest client on our
//! TLS config, URLs under `/v1`, reading the service's error bodies, and asking a proxy directly why
//! it refused a tunnel.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use regent_engine::ports::ProxyConfig;
use reqwest::Url;
use reqwest::blocking::{Client, Response};
use secrecy::ExposeSecret;
use zeroize::Zeroizing;

use crate::protocol::transparency::Hash;
use crate::protocol::{ConsistencyProof, ErrorBody, ErrorCode, SERVICE_HEADER};

/// The longest answer the agent reads (its answers are a few hundred bytes).
pub(crate) const MAX_ANSWER_BYTES: u64 = 1024 * 1024;
/// The longest answer the admin client reads: a machine list of a few hundred thousand machines.
pub(crate) const MAX_ADMIN_ANSWER_BYTES: u64 = 256 * 1024 * 1024;

/// `http://host:port` for a proxy, with an IPv6 host bracketed. Never carries the credentials.
pub(crate) fn proxy_url(proxy: &ProxyConfig) -> String {
    if proxy.host.contains(':') && !proxy.host.starts_with('[') {
        format!("http://[{}]:{}", proxy.host, proxy.port)
    } else {
        format!("http://{}:{}", proxy.host, proxy.port)
    }
}

/// A blocking client: our TLS config, the given proxy or none at all (environment proxies are never
/// consulted: the agent's own setting is the only one that applies), and the timeouts.
pub(crate) fn build_client(
    tls: &rustls::ClientConfig,
    proxy: Option<&ProxyConfig>,
    connect_timeout: Duration,
    timeout: Duration,
) -> Result<Client, String> {
    let mut builder = Client::builder()
        .tls_backend_preconfigured(tls.clone())
        .connect_timeout(connect_timeout)
        .timeout(timeout)
        .user_agent(concat!("regent-vault-client/", env!("CARGO_PKG_VERSION")))
        // Only our own redirects would be followed, and the service never redirects: a redirect is
        // something else answering, and following it could send a signed request elsewhere.
        .redirect(reqwest::redirect::Policy::none());
    builder = match proxy {
        // Idle connections are dropped before the service drops them (30 s), so a reused
        // connection is never one the service is closing.
        None => builder.no_proxy().pool_idle_timeout(Duration::from_secs(20)),
        Some(proxy) => {
            if proxy.host.trim().is_empty() || proxy.port == 0 {
                return Err("the proxy needs a host and a port between 1 and 65535".into());
            }
            let mut p = reqwest::Proxy::all(proxy_url(proxy))
                .map_err(|e| format!("the proxy {}:{} cannot be used: {e}", proxy.host, proxy.port))?;
            if let Some((user, password)) = &proxy.credentials {
                p = p.basic_auth(user, password.expose_secret());
            }
            // No reuse through a proxy: tinyproxy closes a client connection after each request while
            // forwarding the service's keep-alive answer, and a request sent on that dying
            // connection fails after it was sent (it cannot be retried safely).
            builder.proxy(p).pool_max_idle_per_host(0)
        }
    };
    builder.build().map_err(|e| format!("the HTTP client cannot be built: {}", crate::error::chain_text(&e)))
}

/// `base` with `segments` appended as path segments (each percent-encoded as needed).
pub(crate) fn join_url(base: &str, segments: &[&str]) -> Result<Url, String> {
    let mut url = Url::parse(base.trim()).map_err(|e| format!("{base:?} is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("{base:?} is not an http:// or https:// URL"));
    }
    url.set_query(None);
    url.set_fragment(None);
    {
        let mut path = url.path_segments_mut().map_err(|()| format!("{base:?} cannot carry a path"))?;
        path.pop_if_empty();
        path.extend(segments);
    }
    Ok(url)
}

pub(crate) fn from_service(response: &Response) -> bool {
    response.headers().contains_key(SERVICE_HEADER)
}

/// Reads a body of at most `limit` bytes: a broken or hostile server cannot make the client hold
/// more than that.
pub(crate) fn read_body(response: Response, limit: u64) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    response.take(limit + 1).read_to_end(&mut bytes).map_err(|e| format!("the answer could not be read: {e}"))?;
    if bytes.len() as u64 > limit {
        return Err(format!("the answer is larger than {limit} bytes"));
    }
    Ok(bytes)
}

/// The service's error body, or a stand-in when the body is not one (its code, `unknown`, is no
/// code of the protocol: it says there was none).
pub(crate) fn error_body(response: Response) -> ErrorBody {
    let status = response.status();
    match read_body(response, MAX_ANSWER_BYTES).map(|bytes| serde_json::from_slice::<ErrorBody>(&bytes)) {
        Ok(Ok(body)) => body,
        _ => ErrorBody {
            error: ErrorCode::Unknown("unknown".into()),
            reason: None,
            message: format!("HTTP {status} without an error body"),
        },
    }
}

/// The hashes of a consistency proof answered for `from` and `to`: an answer for other sizes, or a
/// hash that is not 64 hex digits, is not the proof asked for. Whether it proves anything is the
/// caller's check, against the roots of the checkpoints it holds.
pub(crate) fn proof_hashes(answer: &ConsistencyProof, from: u64, to: u64) -> Result<Vec<Hash>, String> {
    if (answer.from, answer.to) != (from, to) {
        return Err(format!(
            "the vault answered a consistency proof from {} to {} where {from} to {to} was asked for",
            answer.from, answer.to
        ));
    }
    answer
        .proof
        .iter()
        .enumerate()
        .map(|(n, text)| {
            let mut hash = [0u8; 32];
            hex::decode_to_slice(text, &mut hash)
                .map(|()| hash)
                .map_err(|_| format!("hash {n} of the consistency proof is not 64 hex digits"))
        })
        .collect()
}

/// Asks the proxy for a tunnel to `target` (host:port) ourselves, with the same credentials, and
/// returns its status code. reqwest reports a refused tunnel without the status (hyper-util keeps
/// only 407 apart), and tinyproxy answers a wrong password with 401: this tells them apart.
pub(crate) fn probe_tunnel_status(proxy: &ProxyConfig, target: &str, timeout: Duration) -> Option<u16> {
    let address = (proxy.host.trim_matches(|c| c == '[' || c == ']'), proxy.port).to_socket_addrs().ok()?.next()?;
    let mut stream = TcpStream::connect_timeout(&address, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    let mut request = Zeroizing::new(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"));
    if let Some((user, password)) = &proxy.credentials {
        let pair = Zeroizing::new(format!("{user}:{}", password.expose_secret()));
        request.push_str(&format!("Proxy-Authorization: Basic {}\r\n", STANDARD.encode(pair.as_bytes())));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    // The status line is all we need: "HTTP/1.x NNN ...".
    let mut buffer = [0u8; 64];
    let mut filled = 0;
    while filled < 13 {
        match stream.read(&mut buffer[filled..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => filled += n,
        }
    }
    let line = std::str::from_utf8(&buffer[..filled]).ok()?;
    let mut parts = line.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/"))?;
    parts.next()?.parse().ok()
}
