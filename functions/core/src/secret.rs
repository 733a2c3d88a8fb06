//! Secrets: never printed, compared only in constant time.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The shortest secret accepted for any source (bytes; for `standard`, after
/// base64 decoding): shorter ones can be guessed or were pasted wrong.
pub const MIN_SECRET_BYTES: usize = 16;

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
    /// Constant-time equality that also hides the length: both sides are
    /// hashed first, so a short guess takes as long as a long one.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        let a = Sha256::digest(&self.0);
        let b = Sha256::digest(candidate);
        a.ct_eq(&b).into()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert!(!format!("{:?}", Some(&s)).contains("hunter2"));
    }

    #[test]
    fn matches_exactly() {
        let s = Secret::new("hunter2");
        assert!(s.matches(b"hunter2"));
        assert!(!s.matches(b"hunter3"));
        assert!(!s.matches(b"hunter"));
        assert!(!s.matches(b""));
    }
}
