//! What regent's agent and its vault say to each other, and the codes both speak in. Pure: types,
//! constants and the bytes a request signs; no I/O, no HTTP client or server.
//!
//! - [`vault`] (its items are also at the crate root): the vault's wire protocol, JSON over HTTP(S)
//!   under `/v1`: the bodies and answers, the exact bytes each signed request signs, the limits, and
//!   the table of routes the service's router is built from ([`ROUTES`]). `vault/README.md`
//!   describes it in full.
//! - [`Reason`]: why the agent refused a step (`credentials_expired`, `vault_unreachable`, ...): what
//!   the engine records and the binary prints, and what the vault names in a refusal the agent
//!   records.
//! - [`ErrorCode`]: why the vault refused a request (`log_head_conflict`, `nonce_replayed`, ...).
//!
//! Each code enum has one snake_case string per variant, the same in `code()`, `Display` and serde,
//! and an `Unknown` variant that keeps a code a newer peer sent, so an answer still reads: text
//! becomes a code once, where it arrives (serde), and is matched as a type after that.

mod code;
mod error_code;
mod reason;
pub mod transparency;
pub mod vault;

pub use error_code::ErrorCode;
pub use reason::Reason;
pub use vault::*;

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trips<T>(all: &[T], unknown: T)
    where
        T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug + std::fmt::Display,
    {
        let mut seen = std::collections::HashSet::new();
        for code in all {
            let text = code.to_string();
            assert!(seen.insert(text.clone()), "twice: {text}");
            assert!(!text.is_empty() && text.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{text}");
            let json = serde_json::to_value(code).unwrap();
            assert_eq!(json, serde_json::Value::String(text.clone()), "{code:?} goes on the wire as its code");
            assert_eq!(&serde_json::from_value::<T>(json).unwrap(), code, "{text} reads back as itself");
        }
        // A newer peer's code reads as Unknown, keeping its text, and goes out again unchanged.
        let json = serde_json::json!("sent_by_a_newer_peer");
        let read: T = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(read, unknown);
        assert_eq!(read.to_string(), "sent_by_a_newer_peer");
        assert_eq!(serde_json::to_value(&read).unwrap(), json);
        // Not a string: not a code.
        assert!(serde_json::from_value::<T>(serde_json::json!(7)).is_err());
    }

    #[test]
    fn every_reason_round_trips_as_its_code_and_an_unknown_one_survives() {
        round_trips(&Reason::ALL, Reason::Unknown("sent_by_a_newer_peer".into()));
        for reason in Reason::ALL {
            assert_eq!(Reason::from_code(reason.code()), reason);
        }
        assert_eq!(Reason::from_code("nonsense"), Reason::Unknown("nonsense".into()));
    }

    #[test]
    fn every_error_code_round_trips_as_its_code_and_an_unknown_one_survives() {
        round_trips(&ErrorCode::ALL, ErrorCode::Unknown("sent_by_a_newer_peer".into()));
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_code(code.code()), code);
        }
    }

    #[test]
    fn codes_spelled_as_reasons_name_those_reasons() {
        for code in ErrorCode::ALL {
            if let Some(reason) = code.as_reason() {
                assert_eq!(reason.code(), code.code());
            }
        }
        assert_eq!(ErrorCode::PinChecksLocked.as_reason(), None, "its reason is security_pin_invalid, named apart");
    }

    #[test]
    fn an_error_body_reads_codes_it_does_not_know() {
        let body: ErrorBody =
            serde_json::from_str(r#"{"error":"quota_exceeded","reason":"vault_full","message":"m"}"#).unwrap();
        assert_eq!(body.error, ErrorCode::Unknown("quota_exceeded".into()));
        assert_eq!(body.reason, Some(Reason::Unknown("vault_full".into())));
        let body: ErrorBody = serde_json::from_str(r#"{"error":"log_head_conflict","message":"m"}"#).unwrap();
        assert_eq!((body.error, body.reason), (ErrorCode::LogHeadConflict, None));
        let sent = ErrorBody { error: ErrorCode::ClockSkew, reason: Some(Reason::VaultError), message: "m".into() };
        assert_eq!(
            serde_json::to_string(&sent).unwrap(),
            r#"{"error":"clock_skew","reason":"vault_error","message":"m"}"#
        );
    }
}
