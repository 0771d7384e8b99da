//! The operating system's CSPRNG.

use crate::SecretsError;

/// Fills buffers from the operating system's cryptographically secure random number generator
/// (`getrandom(2)` on Linux). Stateless; `OsRandom` is just a handle.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsRandom;

impl OsRandom {
    /// Fills `bytes` with random bytes, or fails with [`SecretsError::Random`]; never returns
    /// partially filled output as success.
    pub fn fill(&self, bytes: &mut [u8]) -> Result<(), SecretsError> {
        getrandom::fill(bytes).map_err(|source| SecretsError::Random { source })
    }
}
