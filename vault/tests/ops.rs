//! The operational routes on a real service: `/healthz`, `/readyz` and `/metrics` answer without the
//! token; readiness follows the log (a log found damaged is `503 store_unavailable`); the metrics
//! parse as Prometheus' text format 0.0.4, count requests by route template and status, count the
//! events appended, and no label (nothing in the whole scrape) holds a name or id a request sent.

mod common;

use std::collections::BTreeMap;

use common::*;
use regent_engine::ports::VaultClient;
use regent_vault::{BackgroundServer, ServeConfig};

/// One sample of a scrape.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}

/// `{name="value",...}` at the start of `text`: the labels and what follows the closing brace.
fn parse_labels(text: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = text.strip_prefix('{').ok_or("no {")?;
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let (name, after) = rest.split_once("=\"").ok_or_else(|| format!("no =\" in {rest:?}"))?;
        if !is_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err(format!("unterminated value of {name}")),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?} in {name}")),
                },
                Some((_, '\n')) => return Err(format!("a raw line break in {name}")),
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("label {name} twice"));
        }
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// Prometheus' text exposition format 0.0.4, strictly: every line is `# HELP name text`, `# TYPE
/// name type` (before the family's first sample, once), another comment, or `name{labels} value
/// [timestamp]` of a family declared; no blank line; a line break after the last line.
fn parse_exposition(body: &str) -> Vec<Sample> {
    assert!(body.ends_with('\n'), "the last line ends with a line break");
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = Vec::new();
    for line in body.strip_suffix('\n').unwrap().split('\n') {
        assert!(!line.is_empty(), "a blank line in\n{body}");
        if let Some(comment) = line.strip_prefix('#') {
            let words: Vec<&str> = comment.trim_start().splitn(3, ' ').collect();
            match words.as_slice() {
                ["TYPE", name, kind] => {
                    assert!(is_metric_name(name), "{line}");
                    assert!(["counter", "gauge", "histogram", "summary", "untyped"].contains(kind), "{line}");
                    assert!(types.insert(name.to_string(), kind.to_string()).is_none(), "TYPE twice: {line}");
                    assert!(!samples.iter().any(|s: &Sample| s.name.starts_with(*name)), "TYPE after samples: {line}");
                }
                ["HELP", name, ..] => assert!(is_metric_name(name), "{line}"),
                ["TYPE", ..] | ["HELP", ..] => panic!("malformed: {line}"),
                _ => {}
            }
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or_else(|| panic!("no value: {line}"));
        let name = &line[..name_end];
        assert!(is_metric_name(name), "bad metric name in {line}");
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).unwrap_or_else(|e| panic!("{e}: {line}"))
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let fields: Vec<&str> =
            rest.strip_prefix(' ').unwrap_or_else(|| panic!("no space: {line}")).split(' ').collect();
        assert!(matches!(fields.len(), 1 | 2), "{line}");
        let value = parse_value(fields[0]).unwrap_or_else(|| panic!("bad value: {line}"));
        if let Some(timestamp) = fields.get(1) {
            timestamp.parse::<i64>().unwrap_or_else(|_| panic!("bad timestamp: {line}"));
        }
        let family = types.iter().find(|(family, kind)| {
            name == family.as_str()
                || (kind.as_str() == "histogram"
                    && ["_bucket", "_sum", "_count"].iter().any(|s| name == format!("{family}{s}")))
        });
        let (_, kind) = family.unwrap_or_else(|| panic!("a sample of no declared family: {line}"));
        if kind == "histogram" && name.ends_with("_bucket") {
            assert!(labels.contains_key("le"), "a bucket without le: {line}");
        }
        samples.push(Sample { name: name.to_string(), labels, value });
    }
    samples
}

fn scrape(vault: &Vault) -> (String, Vec<Sample>) {
    let answer = raw(vault.addr(), "GET", "/metrics", &[], b"");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        answer.head.to_ascii_lowercase().contains("\r\ncontent-type: text/plain; version=0.0.4"),
        "the text format's content type: {}",
        answer.head
    );
    let samples = parse_exposition(&answer.body);
    (answer.body, samples)
}

/// The value of the one sample named so with these labels (among others); 0 when there is none.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
        .collect();
    assert!(found.len() <= 1, "more than one {name} {labels:?}: {found:?}");
    found.first().map_or(0.0, |s| s.value)
}

both!(healthz_readyz_and_metrics_answer_without_a_token);
fn healthz_readyz_and_metrics_answer_without_a_token() {
    let vault = Vault::start();
    let health = raw(vault.addr(), "GET", "/healthz", &[], b"");
    assert_eq!((health.status, health.json()["status"].as_str()), (200, Some("alive")), "{}", health.body);
    assert!(health.is_from_service());
    let ready = raw(vault.addr(), "GET", "/readyz", &[], b"");
    assert_eq!((ready.status, ready.json()["status"].as_str()), (200, Some("ready")), "{}", ready.body);
    assert!(ready.is_from_service());
    let (_, samples) = scrape(&vault);
    // The scrape counts itself as in flight.
    assert_eq!(value(&samples, "regent_vault_http_requests_in_flight", &[]), 1.0);
    assert_eq!(
        value(
            &samples,
            "regent_vault_http_requests_total",
            &[("route", "/readyz"), ("method", "GET"), ("status", "200")]
        ),
        1.0
    );
    // The protocol's own health is still there.
    assert_eq!(raw(vault.addr(), "GET", "/v1/health", &[], b"").status, 200);
}

both!(metrics_count_by_route_template_and_status_and_no_label_names_what_a_request_sent);
fn metrics_count_by_route_template_and_status_and_no_label_names_what_a_request_sent() {
    let vault = Vault::start();
    let vault_name = "acme-tenant-7f3q";
    let machine_name = "host-zq81-unusual";
    let request_id = "req-4c1e-distinct";
    let credentials = vault.vault_with_credentials(vault_name);
    let client = quick_client(None);
    let machine = machine_id(&client.register(&register_request(&credentials, None, machine_name, request_id, None)));
    // A refusal on the same route: the request id again, with another machine name.
    let (reason, _) =
        refusal(&client.register(&register_request(&credentials, None, "host-other-9x", request_id, None)));
    assert_eq!(reason.to_string(), "request_id_conflict");
    // Paths holding the names: a route matched (a read without its signed headers), and none.
    let read = raw(vault.addr(), "GET", &format!("/v1/vaults/{vault_name}/machines/{machine}/log-head"), &[], b"");
    assert_eq!(read.status, 400, "{}", read.body);
    let unknown = raw(vault.addr(), "GET", &format!("/v1/vaults/{vault_name}/{machine}/nothing"), &[], b"");
    assert_eq!(unknown.status, 404);
    let odd = raw(vault.addr(), "BREW", &format!("/{machine_name}"), &[], b"");
    assert!(odd.status >= 400, "{}", odd.head);

    let (body, samples) = scrape(&vault);
    let registrations = "/v1/vaults/{vault}/registrations";
    let requests = "regent_vault_http_requests_total";
    let count = |route: &str, method: &str, status: &str| {
        value(&samples, requests, &[("route", route), ("method", method), ("status", status)])
    };
    assert_eq!(count(registrations, "POST", "200"), 1.0, "{body}");
    assert_eq!(count(registrations, "POST", "409"), 1.0, "{body}");
    assert_eq!(count("/v1/vaults/{vault}/machines/{machine_id}/log-head", "GET", "400"), 1.0, "{body}");
    assert_eq!(count("unmatched", "GET", "404"), 1.0, "{body}");
    assert!(
        samples.iter().any(|s| s.name == requests && s.labels["route"] == "unmatched" && s.labels["method"] == "other")
    );
    assert_eq!(
        value(
            &samples,
            "regent_vault_http_request_duration_seconds_count",
            &[("route", registrations), ("method", "POST")]
        ),
        2.0
    );
    let inf = value(
        &samples,
        "regent_vault_http_request_duration_seconds_bucket",
        &[("route", registrations), ("method", "POST"), ("le", "+Inf")],
    );
    assert_eq!(inf, 2.0);
    // Every event the service wrote, the registration's (grouped) and the admin's, and nothing else.
    assert_eq!(value(&samples, "regent_vault_log_events_appended_total", &[]), vault.log_position() as f64);

    // Each label value is the route table's, a method it uses, `other`, `unmatched`, a status or a
    // bucket bound.
    let templates: Vec<&str> = regent_vault::protocol::ROUTES.iter().map(|r| r.path).collect();
    for sample in &samples {
        for (label, value) in &sample.labels {
            let allowed = match label.as_str() {
                "route" => templates.contains(&value.as_str()) || value == "unmatched",
                "method" => ["GET", "POST", "DELETE", "other"].contains(&value.as_str()),
                "status" => value.len() == 3 && value.parse::<u16>().is_ok(),
                "le" => value.parse::<f64>().is_ok() || value == "+Inf",
                "state" => ["in_use", "idle", "max"].contains(&value.as_str()),
                _ => false,
            };
            assert!(allowed, "label {label}={value:?} of {sample:?}");
        }
    }
    // A service on PostgreSQL shows its pool (within a second of starting), and only such a one.
    let pool = samples.iter().filter(|s| s.name == "regent_vault_db_pool_connections").count();
    match backend() {
        Backend::Postgres => {
            std::thread::sleep(std::time::Duration::from_millis(1100));
            let again = raw(vault.addr(), "GET", "/metrics", &[], b"");
            assert!(again.body.contains("regent_vault_db_pool_connections{state=\"max\"} 32"), "{}", again.body);
        }
        Backend::Sled => assert_eq!(pool, 0, "no pool, no pool gauges"),
    }
    // And nothing a request sent is anywhere in the scrape.
    for sent in
        [vault_name, machine_name, "host-other-9x", request_id, &machine, &credentials.certificate.thumbprint, "BREW"]
    {
        assert!(!body.contains(sent), "the scrape holds {sent:?}:\n{body}");
    }
}

#[test]
fn a_log_found_damaged_is_not_ready_and_says_so_without_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let server = BackgroundServer::start(ServeConfig::new(dir.path(), loopback())).unwrap();
    let admin = regent_vault::AdminClient::from_token_file(server.url(), server.admin_token_path(), None).unwrap();
    admin.create_vault("damaged").unwrap();
    server.shutdown().unwrap();
    // The durable head says records up to 9 reached the disk: the log, holding 1, lost 8.
    std::fs::write(dir.path().join("log/regent-durable-head"), format!("9:{}\n", "ab".repeat(32))).unwrap();

    let server = BackgroundServer::start(ServeConfig::new(dir.path(), loopback())).unwrap();
    let ready = raw(server.local_addr(), "GET", "/readyz", &[], b"");
    assert_eq!((ready.status, ready.error_code().as_str()), (503, "store_unavailable"), "{}", ready.body);
    assert!(ready.is_from_service());
    let message = ready.json()["message"].as_str().unwrap().to_string();
    assert!(message.contains("damaged") && message.contains("record"), "{message}");
    assert!(!message.contains(&dir.path().display().to_string()), "anyone may ask: no path in {message}");
    // Alive all the same: a restart would not mend it.
    assert_eq!(raw(server.local_addr(), "GET", "/healthz", &[], b"").status, 200);
    server.shutdown().unwrap();
}
