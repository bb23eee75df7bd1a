//! A resolved secret value (how it is written and read is the
//! configuration's business: `config::secret`).

use std::fmt;

/// A resolved secret value. Never printed, never serialized.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value that is already known (tests, sandbox-generated tokens).
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself. Every caller is a place where the secret leaves the
    /// mask: signing, an upstream request, a comparison.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// True for an empty value (an unset credential).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}
