//! One test binary (one link) for the crate: issue/parse round trips, every refusal, OpenSSL interop,
//! signatures, redaction, and the never-panics properties.

mod common;
mod interop;
mod properties;
mod refusals;
mod roundtrip;
