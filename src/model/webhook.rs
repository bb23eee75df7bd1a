//! Signed outgoing webhooks (README "Signed webhooks"), Stripe's scheme:
//! a `vipd-signature: t=UNIX,v1=HEX` header, where `HEX` is
//! HMAC-SHA256 under the receiver's secret of the timestamp, a dot and the
//! body exactly as sent, and a `vipd-event-id` header to de-duplicate on.
//! A receiver recomputes `v1`, compares in constant time, and refuses a
//! timestamp outside its window (a replay); [`verify`] is that receiver,
//! the one the README's Python and shell snippets follow.

use hmac::{KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The header that carries the timestamp and the signature.
pub(crate) const SIGNATURE_HEADER: &str = "vipd-signature";
/// The header that carries the event id.
pub(crate) const EVENT_ID_HEADER: &str = "vipd-event-id";
/// How far a receiver should let a timestamp be from its own clock.
pub const WINDOW_SECS: i64 = 300;

type HmacSha256 = hmac::Hmac<Sha256>;

/// `v1` for `body` sent at `t`, in lower-case hex.
pub fn v1(secret: &[u8], t: i64, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    crate::units::hex_lower(&mac.finalize().into_bytes())
}

/// The `vipd-signature` header's value.
pub fn signature(secret: &[u8], t: i64, body: &[u8]) -> String {
    format!("t={t},v1={}", v1(secret, t, body))
}

/// Why a receiver refuses a delivery.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("no t= or no v1= in the signature header")]
    Malformed,
    #[error("the timestamp is {0} s from now, outside the window")]
    OutsideWindow(i64),
    #[error("no v1 signature matches the body")]
    Mismatch,
}

/// What a receiver does with a delivery at its own time `now`: the
/// header parsed (several `v1=` are allowed, as during a secret's
/// rotation), the timestamp within [`WINDOW_SECS`], one `v1` equal to the
/// one recomputed, compared in constant time.
pub fn verify(secret: &[u8], header: &str, body: &[u8], now: i64) -> Result<(), Refused> {
    let mut t = None;
    let mut given = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => given.push(v),
            _ => {}
        }
    }
    let t = t.ok_or(Refused::Malformed)?;
    if given.is_empty() {
        return Err(Refused::Malformed);
    }
    let off = now - t;
    if off.abs() > WINDOW_SECS {
        return Err(Refused::OutsideWindow(off));
    }
    let expected = v1(secret, t, body);
    let matches = given
        .iter()
        .any(|g| bool::from(g.as_bytes().ct_eq(expected.as_bytes())));
    if matches {
        Ok(())
    } else {
        Err(Refused::Mismatch)
    }
}

/// A new event id: 16 random bytes in hex, for a delivery the plugin
/// gave no id of its own.
pub(crate) fn new_event_id() -> String {
    format!("evt_{:032x}", fastrand::u128(..))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"whsec-0123456789abcdef";
    const BODY: &[u8] = br#"{"event":"approval_required"}"#;

    /// The same digest as Python's `hmac` and `openssl dgst -hmac`
    /// (computed with both for this test).
    #[test]
    fn the_signature_matches_python_and_openssl() {
        assert_eq!(
            signature(SECRET, 1_800_000_000, BODY),
            "t=1800000000,v1=a0f5346623e78c23f4bd9ea75e4c111d5f8e5fd1ff6306456fcc12e5ccebbb4c"
        );
    }

    #[test]
    fn a_receiver_takes_its_own_and_refuses_forgeries_and_replays() {
        let t = 1_800_000_000;
        let header = signature(SECRET, t, BODY);
        assert_eq!(verify(SECRET, &header, BODY, t + 10), Ok(()));
        assert_eq!(
            verify(SECRET, &header, br#"{"event":"renewal_approved"}"#, t),
            Err(Refused::Mismatch),
            "another body"
        );
        assert_eq!(
            verify(b"another secret", &header, BODY, t),
            Err(Refused::Mismatch)
        );
        assert_eq!(
            verify(SECRET, &header, BODY, t + WINDOW_SECS + 1),
            Err(Refused::OutsideWindow(WINDOW_SECS + 1)),
            "a replay after the window"
        );
        let moved = header.replace("t=1800000000", "t=1800000400");
        assert_eq!(
            verify(SECRET, &moved, BODY, t + 400),
            Err(Refused::Mismatch),
            "a replay with a fresh timestamp"
        );
        assert_eq!(verify(SECRET, "v1=abc", BODY, t), Err(Refused::Malformed));
        let rotated = format!("{header},v1=0000");
        assert_eq!(verify(SECRET, &rotated, BODY, t), Ok(()));
    }

    #[test]
    fn event_ids_differ() {
        assert_ne!(new_event_id(), new_event_id());
        assert_eq!(new_event_id().len(), 36);
    }
}
