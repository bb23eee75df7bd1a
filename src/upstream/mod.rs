//! Everything that speaks to the two upstream APIs: the signer, the
//! recharge client and its outcome classes, the membership (vip-info)
//! client, and the token refresh client.
//!
//! This is the only module that builds `reqwest` clients. Errors that leave
//! it never carry a URL (`reqwest::Error::without_url`): URLs hold access
//! tokens and, in hash mode, the secret itself.

mod fields;
pub mod guard;
pub mod lenient;
pub mod outcome;
pub mod recharge;
pub mod reply;

pub mod token;
pub mod vipinfo;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

pub use crate::model::sign;
pub use crate::model::{HttpMethod, SignMode, Signer};
pub use outcome::{Outcome, OutcomeClass, Wire, classify};
pub use recharge::{Attempt, RechargeClient, RechargeEndpoint, RechargeReply, RechargeRequest};
pub use token::TokenClient;
pub use vipinfo::{Membership, VipInfo, VipInfoClient, VipInfoError};

/// Unix time as the vendor sees it: the wall clock plus an offset learned
/// from 10004 replies, shared by every client of one provider.
#[derive(Debug)]
pub struct VendorClock {
    /// The wall clock (the system's in the daemon).
    base: Arc<dyn crate::model::Clock>,
    /// Seconds to add to it.
    offset_secs: AtomicI64,
}

impl Default for VendorClock {
    fn default() -> Self {
        VendorClock::on(crate::model::clock::system())
    }
}

impl VendorClock {
    /// The vendor's time on `base`, with no offset yet.
    pub fn on(base: Arc<dyn crate::model::Clock>) -> VendorClock {
        VendorClock {
            base,
            offset_secs: AtomicI64::new(0),
        }
    }

    /// Unix seconds, corrected.
    pub(crate) fn now_unix(&self) -> i64 {
        self.base.unix() + self.offset_secs.load(Ordering::Relaxed)
    }

    /// Sets the offset so that now equals `server_now`; returns it.
    pub fn correct_to(&self, server_now: i64) -> i64 {
        let offset = server_now - self.base.unix();
        self.offset_secs.store(offset, Ordering::Relaxed);
        offset
    }

    /// The current offset in seconds.
    pub fn offset(&self) -> i64 {
        self.offset_secs.load(Ordering::Relaxed)
    }
}

/// The shared HTTP client: one connection pool for all providers. Timeouts
/// are set per request from each provider's configuration.
pub fn http_client() -> reqwest::Client {
    client_builder()
        .build()
        .expect("the HTTP client has no fallible options set")
}

/// The settings every client of the daemon shares.
fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .user_agent(concat!("vipd/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(30))
        // Vendors answer over plain HTTP/1.1; never follow a redirect with
        // signed parameters to somewhere we did not configure.
        .redirect(reqwest::redirect::Policy::none())
}

/// Why a body could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    /// More than this many bytes arrived.
    TooLarge(usize),
    /// The connection broke while reading.
    Transport(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::TooLarge(limit) => write!(f, "reply body over {limit} bytes"),
            ReadError::Transport(reason) => write!(f, "reply body broke off: {reason}"),
        }
    }
}

/// Reads a response body, refusing more than `limit` bytes (upstream
/// garbage can be arbitrarily large; we stop reading, we never buffer it).
pub(crate) async fn read_capped(
    mut resp: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, ReadError> {
    if resp.content_length().is_some_and(|len| len > limit as u64) {
        return Err(ReadError::TooLarge(limit));
    }
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(ReadError::TooLarge(limit));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(ReadError::Transport(error_chain(&e))),
        }
    }
}

/// Sorts a transport error into "never left" and "may have arrived".
/// Connect errors (refused, DNS, TLS handshake, connect timeout) never
/// left; everything else may have been written.
pub(crate) fn wire_of_error(e: &reqwest::Error) -> Wire<'static> {
    let connect = e.is_connect();
    let reason = error_chain(e);
    if connect {
        Wire::NeverSent { reason }
    } else {
        Wire::NoReply { reason }
    }
}

/// `reqwest::Error::without_url` takes self; this borrows.
trait WithoutUrlRef {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrlRef for reqwest::Error {
    fn without_url_ref(&self) -> String {
        // The Display of a reqwest error appends " for url (...)" when it
        // has one; the chain below is built from sources, which never do.
        let mut out = match self.url() {
            Some(url) => {
                let full = self.to_string();
                let suffix = format!(" for url ({url})");
                full.strip_suffix(&suffix)
                    .unwrap_or("request failed")
                    .to_owned()
            }
            None => self.to_string(),
        };
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            out.push_str(": ");
            out.push_str(&s.to_string());
            source = s.source();
        }
        out
    }
}

/// An error and its sources on one line, with any URL removed.
pub(crate) fn error_chain(e: &reqwest::Error) -> String {
    e.without_url_ref()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_correction_moves_now() {
        let clock = VendorClock::default();
        let system = crate::model::Clock::unix(&crate::model::SystemClock);
        let offset = clock.correct_to(system + 1_000);
        assert!((999..=1_001).contains(&offset), "{offset}");
        assert!((clock.now_unix() - system - 1_000).abs() <= 1);
    }
}
