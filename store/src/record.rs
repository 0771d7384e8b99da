//! What one record of the log is, how it is written to bytes, and how its hash is computed.
//!
//! A stored record is one line of JSON: `{"hash":"<hex>","record":{...}}`. The hash is SHA-256 over the
//! previous record's hash (32 raw bytes) followed by the exact bytes of the `record` object. Those bytes
//! are written once, at append, and never re-serialized: verification and export read them as stored.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Largest stored record (envelope included). An export line is one record, so this is also the
/// longest line an import accepts. Kept well under sled's blob threshold (a quarter of its 512 KiB
/// segment): sled writes larger messages to blob files that it never syncs.
pub const MAX_RECORD_BYTES: usize = 32 * 1024;

const INVALID_HEX: u8 = 0xff;

/// The value of each byte as a hex digit, `INVALID_HEX` for bytes that are not one. A valid digit is
/// at most 0x0f, so `high | low` is `INVALID_HEX` exactly when either one is invalid.
const HEX_VALUE: [u8; 256] = {
    let mut table = [INVALID_HEX; 256];
    let mut digit = 0;
    while digit < 16 {
        table[b"0123456789abcdef"[digit] as usize] = digit as u8;
        table[b"0123456789ABCDEF"[digit] as usize] = digit as u8;
        digit += 1;
    }
    table
};

/// A SHA-256 digest, shown and serialized as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Digest32(pub [u8; 32]);

impl Digest32 {
    /// The hash a chain starts from: the "previous hash" of the first record.
    pub const GENESIS: Digest32 = Digest32([0u8; 32]);

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits (either case). Every record read parses two of these, so it is a
    /// table lookup per digit rather than the `hex` crate's general decoder.
    pub fn from_hex(text: &str) -> Option<Digest32> {
        let digits: &[u8; 64] = text.as_bytes().try_into().ok()?;
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
            let (high, low) = (HEX_VALUE[usize::from(pair[0])], HEX_VALUE[usize::from(pair[1])]);
            if high | low == INVALID_HEX {
                return None;
            }
            *byte = (high << 4) | low;
        }
        Some(Digest32(bytes))
    }

    /// The chain link: SHA-256(previous hash || record bytes).
    pub fn chain(prev: &Digest32, record_bytes: &[u8]) -> Digest32 {
        let mut hasher = Sha256::new();
        hasher.update(prev.0);
        hasher.update(record_bytes);
        Digest32(hasher.finalize().into())
    }
}

impl fmt::Debug for Digest32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Display for Digest32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for Digest32 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 64];
        // Cannot fail: the buffer is exactly twice the input.
        hex::encode_to_slice(self.0, &mut buf).map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(std::str::from_utf8(&buf).map_err(serde::ser::Error::custom)?)
    }
}

impl<'de> Deserialize<'de> for Digest32 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // A visitor, not `Cow<str>`: serde fills a `Cow` with an owned copy every time.
        struct HexDigits;
        impl serde::de::Visitor<'_> for HexDigits {
            type Value = Digest32;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("64 hex digits")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Digest32, E> {
                Digest32::from_hex(text).ok_or_else(|| E::custom("expected 64 hex digits"))
            }
        }
        deserializer.deserialize_str(HexDigits)
    }
}

/// The end of the log: the last record's position and hash. Position 0 with the genesis hash is an
/// empty log. Kept outside the log (by the vault, by an auditor), it catches a cut-off tail.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Head {
    pub position: u64,
    pub hash: Digest32,
}

impl Head {
    pub const EMPTY: Head = Head { position: 0, hash: Digest32::GENESIS };
}

impl fmt::Display for Head {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.position, self.hash)
    }
}

impl std::str::FromStr for Head {
    type Err = String;

    /// Parses `POSITION:HASH`, the form `Display` prints.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (position, hash) =
            text.split_once(':').ok_or_else(|| "expected POSITION:HASH, e.g. 42:9f86d0…".to_string())?;
        let position =
            position.trim().parse::<u64>().map_err(|_| format!("'{position}' is not a position (a whole number)"))?;
        let hash = Digest32::from_hex(hash.trim()).ok_or_else(|| "the hash must be 64 hex digits".to_string())?;
        Ok(Head { position, hash })
    }
}

/// Who caused a record: the operating-system user and the host.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Actor {
    pub user: String,
    pub host: String,
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.user, self.host)
    }
}

/// This machine's host name as `hostname` prints it (the kernel's node name, from `uname`): the
/// host of an [`Actor`] on this machine, for the agent and the vault service alike.
pub fn host_name() -> String {
    let name = gethostname::gethostname().to_string_lossy().into_owned();
    if name.is_empty() { "unknown-host".into() } else { name }
}

/// What every event of one batch shares: one command run, by one actor, at one time.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct BatchMeta {
    pub recorded_at: DateTime<Utc>,
    pub actor: Actor,
    pub correlation_id: Uuid,
}

/// An event to append. The payload is compact JSON, fixed when the event is made, so that the bytes
/// hashed are the bytes the caller meant.
#[derive(Clone, Debug)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub kind: String,
    pub schema: u32,
    payload: Box<RawValue>,
}

impl NewEvent {
    /// A new event with a fresh UUID v7 id.
    pub fn new<T: Serialize + ?Sized>(
        kind: impl Into<String>,
        schema: u32,
        payload: &T,
    ) -> Result<NewEvent, serde_json::Error> {
        Self::with_id(Uuid::now_v7(), kind, schema, payload)
    }

    /// An event with a given id: a retried command passes the ids of its first try.
    pub fn with_id<T: Serialize + ?Sized>(
        event_id: Uuid,
        kind: impl Into<String>,
        schema: u32,
        payload: &T,
    ) -> Result<NewEvent, serde_json::Error> {
        Ok(NewEvent { event_id, kind: kind.into(), schema, payload: serde_json::value::to_raw_value(payload)? })
    }

    pub fn payload(&self) -> &RawValue {
        &self.payload
    }
}

/// One record as read back from the log.
#[derive(Clone, Debug)]
pub struct Record {
    pub position: u64,
    pub stream: String,
    pub version: u64,
    pub event_id: Uuid,
    pub kind: String,
    pub schema: u32,
    pub recorded_at: DateTime<Utc>,
    pub actor: Actor,
    pub correlation_id: Uuid,
    pub prev_hash: Digest32,
    pub payload: Box<RawValue>,
    pub hash: Digest32,
}

impl Record {
    /// Deserializes the payload into the caller's type.
    pub fn payload_as<'a, T: Deserialize<'a>>(&'a self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.payload.get())
    }
}

/// The record object as written: field order here is the byte order on disk.
#[derive(Serialize)]
struct RecordOut<'a> {
    position: u64,
    stream: &'a str,
    version: u64,
    event_id: Uuid,
    kind: &'a str,
    schema: u32,
    recorded_at: String,
    actor: &'a Actor,
    correlation_id: Uuid,
    prev_hash: Digest32,
    payload: &'a RawValue,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug))]
struct RecordIn {
    position: u64,
    stream: String,
    version: u64,
    event_id: Uuid,
    kind: String,
    schema: u32,
    #[serde(deserialize_with = "crate::utc_time::deserialize")]
    recorded_at: DateTime<Utc>,
    actor: Actor,
    correlation_id: Uuid,
    prev_hash: Digest32,
    payload: Box<RawValue>,
}

/// The envelope with the record left as raw bytes, for verification.
#[derive(Deserialize)]
pub(crate) struct RawEnvelope<'a> {
    pub hash: Digest32,
    #[serde(borrow)]
    pub record: &'a RawValue,
}

/// Just the fields the chain checks, read from the record's raw bytes.
#[derive(Deserialize)]
pub(crate) struct ChainFields {
    pub position: u64,
    pub prev_hash: Digest32,
}

/// Everything that places a record in its stream, for rebuilding indexes on import.
#[derive(Deserialize)]
pub(crate) struct PlacementFields<'a> {
    pub position: u64,
    #[serde(borrow)]
    pub stream: Cow<'a, str>,
    pub version: u64,
    pub event_id: Uuid,
}

/// Writes the stored bytes of one record and returns them with its hash. Public so that another
/// log (the vault's on PostgreSQL) writes the same bytes and the same chain as this store.
pub fn encode(
    position: u64,
    stream: &str,
    version: u64,
    meta: &BatchMeta,
    event: &NewEvent,
    prev_hash: &Digest32,
) -> Result<(Vec<u8>, Digest32), serde_json::Error> {
    let body = serde_json::to_vec(&RecordOut {
        position,
        stream,
        version,
        event_id: event.event_id,
        kind: &event.kind,
        schema: event.schema,
        recorded_at: crate::utc_time::format(&meta.recorded_at),
        actor: &meta.actor,
        correlation_id: meta.correlation_id,
        prev_hash: *prev_hash,
        payload: &event.payload,
    })?;
    Ok(stored_line(&body, prev_hash))
}

/// Writes a record read back, as [`encode`] would have written it, after `prev_hash`: for a copy
/// of a log that is rewritten on purpose (`rechain_export`), never for a stored record.
pub(crate) fn encode_again(record: &Record, prev_hash: &Digest32) -> Result<(Vec<u8>, Digest32), serde_json::Error> {
    let body = serde_json::to_vec(&RecordOut {
        position: record.position,
        stream: &record.stream,
        version: record.version,
        event_id: record.event_id,
        kind: &record.kind,
        schema: record.schema,
        recorded_at: crate::utc_time::format(&record.recorded_at),
        actor: &record.actor,
        correlation_id: record.correlation_id,
        prev_hash: *prev_hash,
        payload: &record.payload,
    })?;
    Ok(stored_line(&body, prev_hash))
}

/// The stored line of a record's bytes and its hash.
fn stored_line(body: &[u8], prev_hash: &Digest32) -> (Vec<u8>, Digest32) {
    let hash = Digest32::chain(prev_hash, body);
    let mut stored = Vec::with_capacity(body.len() + 90);
    stored.extend_from_slice(STORED_PREFIX);
    stored.extend_from_slice(hash.to_hex().as_bytes());
    stored.extend_from_slice(STORED_MIDDLE);
    stored.extend_from_slice(body);
    stored.push(b'}');
    (stored, hash)
}

const STORED_PREFIX: &[u8] = b"{\"hash\":\"";
const STORED_MIDDLE: &[u8] = b"\",\"record\":";

/// Splits a stored line into its hash and the exact bytes of its `record` object, and parses the
/// record's bytes as `T`.
///
/// The layout `encode` writes is split without a JSON parser: a third of the cost of reading a log
/// went into parsing the envelope only to find where the record starts. The fast split needs the
/// body to start with `{`, end with `}`, be UTF-8 and parse in full as `T`; anything else (spaces,
/// another key order, an extra key after the record) goes through serde's envelope, so both paths
/// read the same lines the same way.
pub(crate) fn split_and_parse<'a, T: Deserialize<'a>>(
    stored: &'a [u8],
) -> Result<(Digest32, &'a [u8], T), serde_json::Error> {
    split_and_parse_checked(stored, Utf8::Unknown)
}

/// Whether the caller already checked that a line is UTF-8 (an export's lines are checked as they
/// are read), so the fast split need not check it again.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Utf8 {
    Unknown,
    Checked,
}

pub(crate) fn split_and_parse_checked<'a, T: Deserialize<'a>>(
    stored: &'a [u8],
    utf8: Utf8,
) -> Result<(Digest32, &'a [u8], T), serde_json::Error> {
    if let Some((hash, body)) = fast_split(stored, utf8)
        && let Ok(parsed) = serde_json::from_slice(body)
    {
        return Ok((hash, body, parsed));
    }
    let envelope: RawEnvelope<'a> = serde_json::from_slice(stored)?;
    let body = envelope.record.get().as_bytes();
    Ok((envelope.hash, body, serde_json::from_slice(body)?))
}

fn fast_split(stored: &[u8], utf8: Utf8) -> Option<(Digest32, &[u8])> {
    let hex_end = STORED_PREFIX.len() + 64;
    let body_start = hex_end + STORED_MIDDLE.len();
    let fits = stored.len() > body_start + 1
        && stored.starts_with(STORED_PREFIX)
        && stored[hex_end..].starts_with(STORED_MIDDLE)
        && stored[body_start] == b'{'
        && stored.ends_with(b"}}");
    if !fits {
        return None;
    }
    let hash = Digest32::from_hex(std::str::from_utf8(&stored[STORED_PREFIX.len()..hex_end]).ok()?)?;
    let body = &stored[body_start..stored.len() - 1];
    // serde skips over ignored strings without checking them; the body must be UTF-8 all the same.
    if utf8 == Utf8::Unknown {
        std::str::from_utf8(body).ok()?;
    }
    Some((hash, body))
}

/// Reads a record object laid out exactly as `encode` writes it, without serde's field machinery
/// (most of the cost of reading a record). Anything else (another key order, spaces, an escape or a
/// control character in a string, a number serde would refuse, an extra key) gives None and goes
/// to serde, so every record reads the same either way and every error is serde's.
fn read_written_layout(body: &[u8]) -> Option<RecordIn> {
    let mut at = Layout { bytes: body, pos: 0 };
    at.literal(b"{\"position\":")?;
    let position = at.number()?;
    at.literal(b",\"stream\":\"")?;
    let stream = at.plain_string()?.to_owned();
    at.literal(b",\"version\":")?;
    let version = at.number()?;
    at.literal(b",\"event_id\":\"")?;
    let event_id = Uuid::try_parse(at.plain_string()?).ok()?;
    at.literal(b",\"kind\":\"")?;
    let kind = at.plain_string()?.to_owned();
    at.literal(b",\"schema\":")?;
    let schema = u32::try_from(at.number()?).ok()?;
    at.literal(b",\"recorded_at\":\"")?;
    let recorded_at = crate::utc_time::parse(at.plain_string()?)?;
    at.literal(b",\"actor\":{\"user\":\"")?;
    let user = at.plain_string()?.to_owned();
    at.literal(b",\"host\":\"")?;
    let host = at.plain_string()?.to_owned();
    at.literal(b"},\"correlation_id\":\"")?;
    let correlation_id = Uuid::try_parse(at.plain_string()?).ok()?;
    at.literal(b",\"prev_hash\":\"")?;
    let prev_hash = Digest32::from_hex(at.plain_string()?)?;
    at.literal(b",\"payload\":")?;
    // The payload runs to the object's closing brace; serde checks that it is one JSON value.
    let payload = body.get(at.pos..body.len().checked_sub(1)?)?;
    let (first, last) = (payload.first()?, payload.last()?);
    if body.last() != Some(&b'}') || first.is_ascii_whitespace() || last.is_ascii_whitespace() {
        return None;
    }
    let payload: Box<RawValue> = serde_json::from_slice(payload).ok()?;
    let actor = Actor { user, host };
    Some(RecordIn {
        position,
        stream,
        version,
        event_id,
        kind,
        schema,
        recorded_at,
        actor,
        correlation_id,
        prev_hash,
        payload,
    })
}

/// A cursor over a record object in the writer's layout.
struct Layout<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Layout<'a> {
    fn literal(&mut self, literal: &[u8]) -> Option<()> {
        let rest = self.bytes.get(self.pos..)?;
        rest.starts_with(literal).then(|| self.pos += literal.len())
    }

    /// A JSON unsigned integer as serde reads one into a `u64`: digits, no leading zero.
    fn number(&mut self) -> Option<u64> {
        let rest = self.bytes.get(self.pos..)?;
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || (digits > 1 && rest[0] == b'0') {
            return None;
        }
        let value =
            rest[..digits].iter().try_fold(0u64, |n, &d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))?;
        self.pos += digits;
        Some(value)
    }

    /// The rest of a string whose opening quote was read, up to its closing quote, if it holds no
    /// escape and no control character (those go to serde).
    fn plain_string(&mut self) -> Option<&'a str> {
        let rest = self.bytes.get(self.pos..)?;
        let len = rest.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        if rest[len] != b'"' {
            return None;
        }
        let text = std::str::from_utf8(&rest[..len]).ok()?;
        self.pos += len + 1;
        Some(text)
    }
}

/// Reads a stored record. This does not check the hash: `verify` does.
pub fn decode(stored: &[u8]) -> Result<Record, serde_json::Error> {
    decode_parts(stored, Utf8::Unknown).map(|(_, record)| record)
}

/// A stored record and the exact bytes of its `record` object, which its hash covers.
pub(crate) fn decode_parts(stored: &[u8], utf8: Utf8) -> Result<(&[u8], Record), serde_json::Error> {
    let (hash, body, r) = match fast_split(stored, utf8) {
        Some((hash, body)) => match read_written_layout(body) {
            Some(record) => (hash, body, record),
            None => (hash, body, serde_json::from_slice::<RecordIn>(body)?),
        },
        None => split_and_parse_checked::<RecordIn>(stored, utf8)?,
    };
    Ok((
        body,
        Record {
            position: r.position,
            stream: r.stream,
            version: r.version,
            event_id: r.event_id,
            kind: r.kind,
            schema: r.schema,
            recorded_at: r.recorded_at,
            actor: r.actor,
            correlation_id: r.correlation_id,
            prev_hash: r.prev_hash,
            payload: r.payload,
            hash,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> BatchMeta {
        BatchMeta {
            recorded_at: DateTime::from_timestamp(1_700_000_000, 123_456_000).unwrap_or_default(),
            actor: Actor { user: "ops".into(), host: "srv1".into() },
            correlation_id: Uuid::nil(),
        }
    }

    #[test]
    fn encoded_record_decodes_and_its_hash_covers_the_record_bytes() {
        let event = NewEvent::new("FoldersChosen", 1, &serde_json::json!({"a": "x\ny"})).unwrap();
        let (stored, hash) = encode(7, "registration", 3, &meta(), &event, &Digest32::GENESIS).unwrap();
        assert!(!stored.contains(&b'\n'), "a stored record must be one line");
        let record = decode(&stored).unwrap();
        assert_eq!(record.position, 7);
        assert_eq!(record.version, 3);
        assert_eq!(record.hash, hash);
        assert_eq!(record.payload.get(), r#"{"a":"x\ny"}"#);
        let raw: RawEnvelope = serde_json::from_slice(&stored).unwrap();
        assert_eq!(Digest32::chain(&Digest32::GENESIS, raw.record.get().as_bytes()), hash);
    }

    #[test]
    fn the_fast_split_reads_what_serde_reads_and_other_layouts_still_read() {
        let event = NewEvent::new("K", 1, &serde_json::json!({"nested": {"hash": "x", "record": "}}"}})).unwrap();
        let (stored, hash) = encode(1, "s", 1, &meta(), &event, &Digest32::GENESIS).unwrap();
        let text = String::from_utf8(stored.clone()).unwrap();
        let body = text[text.find("\"record\":").unwrap() + 9..text.len() - 1].to_string();
        let serde_split =
            |line: &str| serde_json::from_str::<RawEnvelope>(line).map(|e| (e.hash, e.record.get().to_string())).ok();
        let split = |line: &str| {
            split_and_parse::<serde::de::IgnoredAny>(line.as_bytes())
                .ok()
                .map(|(h, b, _)| (h, String::from_utf8(b.to_vec()).unwrap()))
        };
        assert_eq!(split(&text), Some((hash, body.clone())));
        let hex = hash.to_hex();
        for line in [
            format!("{{\"record\":{body},\"hash\":\"{hex}\"}}"),
            format!("{{ \"hash\": \"{hex}\", \"record\": {body} }}"),
            format!("{{\"hash\":\"{}\",\"record\":{body}}}", hex.to_uppercase()),
            format!("{{\"hash\":\"{hex}\",\"record\":{body} }}"),
            format!("{{\"hash\":\"{hex}\",\"record\":{body} }}}}"),
            format!("{{\"hash\":\"{hex}\",\"record\":{body}x}}"),
            format!("{{\"hash\":\"{hex}\",\"record\":{body},\"hash\":\"{hex}\"}}"),
            format!("{{\"hash\":\"{hex}\",\"record\":{body},\"extra\":{{\"a\":1}}}}"),
            format!("{{\"hash\":\"{}\",\"record\":{body}}}", &hex[..63]),
        ] {
            assert_eq!(split(&line), serde_split(&line), "{line}");
        }
    }

    fn serde_reads(body: &[u8]) -> Option<String> {
        serde_json::from_slice::<RecordIn>(body).ok().map(|r| format!("{r:?}"))
    }

    fn encoded_body(stream: &str, kind: &str, user: &str, host: &str, position: u64, schema: u32) -> Vec<u8> {
        let meta = BatchMeta {
            recorded_at: DateTime::from_timestamp(1_700_000_000 + position as i64 % 1_000_000, 5_000)
                .unwrap_or_default(),
            actor: Actor { user: user.into(), host: host.into() },
            correlation_id: Uuid::now_v7(),
        };
        let payload = serde_json::json!({"note": kind, "n": position, "list": [1, "two", null]});
        let event = NewEvent::new(kind, schema, &payload).unwrap();
        let (stored, _) = encode(position, stream, position / 2, &meta, &event, &Digest32([7; 32])).unwrap();
        stored[STORED_PREFIX.len() + 64 + STORED_MIDDLE.len()..stored.len() - 1].to_vec()
    }

    proptest::proptest! {
        #[test]
        fn the_written_layout_reads_as_serde_reads_it(
            stream in "\\PC{0,12}|[\"\\\\\u{0}-\u{1f}a-z]{0,6}",
            kind in "\\PC{0,12}",
            user in "[\"\\\\\u{0}-\u{1f}\u{7f}-\u{10ffff}a-z]{0,6}",
            host in "\\PC{0,8}",
            position in proptest::prelude::any::<u64>(),
            schema in proptest::prelude::any::<u32>(),
        ) {
            let body = encoded_body(&stream, &kind, &user, &host, position, schema);
            let fast = read_written_layout(&body).map(|r| format!("{r:?}"));
            let plain = |s: &str| !s.chars().any(|c| c == '"' || c == '\\' || c < ' ');
            if [&stream, &kind, &user, &host].iter().all(|s| plain(s)) {
                proptest::prop_assert!(fast.is_some(), "the writer's own layout must take the fast path");
            }
            if fast.is_some() {
                proptest::prop_assert_eq!(fast, serde_reads(&body));
            }
        }

        #[test]
        fn a_changed_byte_reads_as_serde_reads_it_or_goes_to_serde(
            at in 0usize..400,
            byte in proptest::prelude::any::<u8>(),
        ) {
            let mut body = encoded_body("registration", "FoldersChosen", "ops", "srv1", 42, 2);
            let at = at % body.len();
            body[at] = byte;
            if let Some(fast) = read_written_layout(&body) {
                proptest::prop_assert_eq!(Some(format!("{fast:?}")), serde_reads(&body), "byte {} at {}", byte, at);
            }
        }
    }

    #[test]
    fn near_misses_of_the_layout_go_to_serde() {
        let body = String::from_utf8(encoded_body("s", "K", "ops", "srv1", 7, 2)).unwrap();
        assert!(read_written_layout(body.as_bytes()).is_some());
        for changed in [
            body.replace("\"position\":7", "\"position\":07"),
            body.replace("\"position\":7", "\"position\":7.0"),
            body.replace("\"position\":7", "\"position\":18446744073709551616"),
            body.replace("\"schema\":2", "\"schema\":4294967296"),
            body.replace("\"kind\":\"K\"", "\"kind\":\"\\u004b\""),
            body.replace("\"payload\":", "\"payload\": "),
            body.replace("\"version\":3,", "\"version\":3,\"extra\":1,"),
            body.replace("}}", "},\"kind\":\"L\"}"),
        ] {
            assert_ne!(changed, body);
            assert!(read_written_layout(changed.as_bytes()).is_none(), "{changed}");
        }
    }

    #[test]
    fn head_parses_what_it_prints_and_refuses_garbage() {
        let head = Head { position: 42, hash: Digest32([0xab; 32]) };
        assert_eq!(head.to_string().parse::<Head>(), Ok(head));
        assert!("42".parse::<Head>().is_err());
        assert!("x:abcd".parse::<Head>().is_err());
        assert!("3:abcd".parse::<Head>().is_err());
    }
}
