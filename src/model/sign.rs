//! The vendor's request signature (README "The upstream protocol, as built"), used for outgoing recharge
//! requests, incoming callbacks and the sandbox.
//!
//! md5 mode: take every parameter except `sign` whose value is not empty,
//! sort by key in byte order, concatenate `key` then `value` for each,
//! append the secret (no key name), MD5, lowercase hex. Values are signed
//! raw (UTF-8, before URL-encoding). hash mode: `sign` is the secret itself.
//!
//! The digest is fed piece by piece, so signing allocates only the sorted
//! list of references and the 32-byte hex output.

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::model::Secret;

/// The parameter that carries the signature; never signed itself.
pub(crate) const SIGN_FIELD: &str = "sign";

/// How the vendor checks a request, chosen per application in its console.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum SignMode {
    /// `md5(k1v1k2v2...secret)`.
    #[default]
    Md5,
    /// The secret itself is the sign.
    Hash,
}

/// Signs and verifies with one secret in one mode.
#[derive(Clone)]
pub struct Signer {
    /// md5 or hash.
    mode: SignMode,
    /// The application secret (32 characters at the vendor).
    secret: Secret,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer for `mode` with `secret`.
    pub fn new(mode: SignMode, secret: Secret) -> Signer {
        Signer { mode, secret }
    }

    /// The mode this signer uses.
    pub fn mode(&self) -> SignMode {
        self.mode
    }

    /// The `sign` value for these parameters.
    pub fn sign<'a, I>(&self, params: I) -> String
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        match self.mode {
            SignMode::Md5 => md5_sign(params, self.secret.expose()),
            SignMode::Hash => self.secret.expose().to_owned(),
        }
    }

    /// Whether `provided` is the right sign for `params` (which may contain
    /// the `sign` field itself: it is skipped). Constant time in the
    /// compared bytes, hex case-insensitive.
    pub fn verify<'a, I>(&self, params: I, provided: &str) -> bool
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let expected = self.sign(params);
        constant_time_eq_ignore_ascii_case(expected.as_bytes(), provided.as_bytes())
    }
}

/// The md5-mode signature of `params` with `secret`.
pub fn md5_sign<'a, I>(params: I, secret: &str) -> String
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut signed: Vec<(&str, &str)> = params
        .into_iter()
        .filter(|(k, v)| *k != SIGN_FIELD && !v.is_empty())
        .collect();
    // Stable sort by raw bytes: `str`'s Ord is byte order, like PHP's ksort
    // on string keys. Stable, so a repeated key keeps its order.
    signed.sort_by(|a, b| a.0.cmp(b.0));
    let mut hasher = Md5::new();
    for (key, value) in signed {
        hasher.update(key.as_bytes());
        hasher.update(value.as_bytes());
    }
    hasher.update(secret.as_bytes());
    hex_lower(&hasher.finalize())
}

pub use crate::units::hex_lower;

/// Compares two byte strings in time that depends only on their lengths,
/// folding ASCII case. A length mismatch returns early: lengths are public
/// (a signature is always 32 hex characters).
pub(crate) fn constant_time_eq_ignore_ascii_case(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = subtle::Choice::from(1u8);
    for (&x, &y) in a.iter().zip(b) {
        // to_ascii_lowercase is a branch-free table/arithmetic operation.
        diff &= x.to_ascii_lowercase().ct_eq(&y.to_ascii_lowercase());
    }
    bool::from(diff)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vendor document's example: sign = MD5(appid1debug1formatjson
    /// notify_urlhttps://www.wapi.cn/notify_urlqq_number5666857 + secret).
    const DOC_PARAMS: [(&str, &str); 5] = [
        ("appid", "1"),
        ("debug", "1"),
        ("format", "json"),
        ("notify_url", "https://www.wapi.cn/notify_url"),
        ("qq_number", "5666857"),
    ];
    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn md5_hex(s: &str) -> String {
        hex_lower(&Md5::digest(s.as_bytes()))
    }

    #[test]
    fn vendor_document_example() {
        let expected = md5_hex(
            "appid1debug1formatjsonnotify_urlhttps://www.wapi.cn/notify_urlqq_number5666857\
             0123456789abcdef0123456789abcdef",
        );
        assert_eq!(md5_sign(DOC_PARAMS, SECRET), expected);
        // Known MD5 vector, so the helper itself is checked too.
        assert_eq!(md5_hex(""), "d41d8cd98f00b204e9800998ecf8427e");
    }

    #[test]
    fn order_empty_values_and_sign_field_do_not_matter() {
        let mut shuffled: Vec<_> = DOC_PARAMS.iter().rev().copied().collect();
        shuffled.push(("sign", "whatever"));
        shuffled.push(("extra", ""));
        assert_eq!(md5_sign(shuffled, SECRET), md5_sign(DOC_PARAMS, SECRET));
    }

    #[test]
    fn keys_sort_by_bytes_not_case() {
        // 'Z' (0x5a) sorts before 'a' (0x61) in byte order.
        let got = md5_sign([("a", "1"), ("Z", "2")], "s");
        assert_eq!(got, md5_hex("Z2a1s"));
    }

    #[test]
    fn verify_is_case_insensitive_and_rejects_wrong() {
        let signer = Signer::new(SignMode::Md5, Secret::new(SECRET));
        let sign = signer.sign(DOC_PARAMS);
        assert!(signer.verify(DOC_PARAMS, &sign));
        assert!(signer.verify(DOC_PARAMS, &sign.to_uppercase()));
        let mut wrong = sign.clone().into_bytes();
        wrong[31] = if wrong[31] == b'0' { b'1' } else { b'0' };
        assert!(!signer.verify(DOC_PARAMS, std::str::from_utf8(&wrong).unwrap()));
        assert!(!signer.verify(DOC_PARAMS, &sign[..31]));
        assert!(!signer.verify(DOC_PARAMS, ""));
    }

    #[test]
    fn hash_mode_signs_with_the_secret() {
        let signer = Signer::new(SignMode::Hash, Secret::new(SECRET));
        assert_eq!(signer.sign(DOC_PARAMS), SECRET);
        assert!(signer.verify([("anything", "x")], &SECRET.to_uppercase()));
        assert!(!signer.verify([], "nope"));
    }
}
