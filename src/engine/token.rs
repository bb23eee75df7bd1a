//! Access tokens (README "Membership reads"): which token a read uses, and refreshing it.
//!
//! - A stored pair (rotated by vipd) is used over the configured one, as
//!   long as it descends from the configured grant; when the operator
//!   configures a new grant, the new one wins.
//! - A token with a known expiry is refreshed ahead of it (7 days, or half
//!   its lifetime when that is shorter); any token the API calls expired or
//!   invalid is refreshed once, and the read retried.
//! - The rotated pair is written and made durable **before** the new token
//!   is used: the refresh token it replaces no longer works.
//! - One refresh per account at a time, so two checks never spend the same
//!   single-use refresh token.

use std::sync::Arc;

use md5::{Digest, Md5};

use super::{Engine, Runtime};
use crate::config::{Account, Secret};
use crate::ledger::StoredToken;
use crate::model::sign::hex_lower;

/// How long before expiry a token is refreshed, at most.
const REFRESH_AHEAD_SECS: i64 = 7 * 86_400;

/// The credentials a read uses now.
pub(super) struct Credentials {
    pub access_token: Secret,
    pub refresh_token: Option<Secret>,
    pub expires_at: Option<i64>,
    pub lifetime: Option<i64>,
    /// When the stored pair was rotated (`None`: the configured pair).
    pub rotated_at: Option<i64>,
}

/// Identifies the configured grant (not reversible to the tokens).
fn grant_of(account: &Account) -> String {
    let mut h = Md5::new();
    h.update(account.access_token.expose().as_bytes());
    h.update([0]);
    if let Some(r) = &account.refresh_token {
        h.update(r.expose().as_bytes());
    }
    hex_lower(&h.finalize())
}

impl Engine {
    /// The stored pair when it descends from the configured grant, else
    /// the configured pair.
    pub(super) async fn credentials(&self, account: &Account) -> Credentials {
        match self.store.stored_token(&account.name).await {
            Ok(Some(t)) if t.grant == grant_of(account) => Credentials {
                access_token: Secret::new(t.access_token),
                refresh_token: t.refresh_token.map(Secret::new),
                expires_at: t.expires_at,
                lifetime: t.lifetime,
                rotated_at: Some(t.rotated_at),
            },
            other => {
                if let Err(e) = other {
                    tracing::error!(account = %account.name, error = %e, "cannot read the stored token; using the configured one");
                }
                Credentials {
                    access_token: account.access_token.clone(),
                    refresh_token: account.refresh_token.clone(),
                    expires_at: None,
                    lifetime: None,
                    rotated_at: None,
                }
            }
        }
    }

    /// Whether vipd can refresh `creds` at all.
    pub(super) fn can_refresh(&self, rt: &Runtime, account: &Account, creds: &Credentials) -> bool {
        rt.reader_of(account).client_secret.is_some() && creds.refresh_token.is_some()
    }

    /// The access token for a read from `creds`, refreshed first when it
    /// expires soon.
    pub(super) async fn access_token(
        &self,
        rt: &Runtime,
        account: &Account,
        creds: Credentials,
    ) -> Secret {
        let now = self.clock.unix();
        let ahead = creds
            .lifetime
            .map_or(REFRESH_AHEAD_SECS, |l| (l / 2).min(REFRESH_AHEAD_SECS));
        let due = creds.expires_at.is_some_and(|e| now >= e - ahead);
        if due && self.can_refresh(rt, account, &creds) {
            match self
                .refresh(rt, account, creds.rotated_at, "expires soon")
                .await
            {
                Ok(token) => return token,
                Err(e) => {
                    tracing::warn!(account = %account.name, "token refresh ahead of expiry failed: {e}; using the current token")
                }
            }
        }
        creds.access_token
    }

    /// Trades the refresh token for a new pair, stores it durably, and
    /// returns the new access token. `seen` is the rotation the caller
    /// saw: if another task rotated since, its token is used instead.
    pub(super) async fn refresh(
        &self,
        rt: &Runtime,
        account: &Account,
        seen: Option<i64>,
        why: &str,
    ) -> Result<Secret, String> {
        let lock = {
            let mut map = self.refreshing.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(account.name.clone())
                .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(())))
                .clone()
        };
        let _one = lock.lock().await;
        let creds = self.credentials(account).await;
        if creds.rotated_at != seen {
            return Ok(creds.access_token);
        }
        let reader = rt.reader_of(account);
        let (Some(client_secret), Some(refresh_token)) =
            (&reader.client_secret, &creds.refresh_token)
        else {
            return Err("no refresh token or client_secret configured".into());
        };
        let fresh = reader
            .tokens
            .refresh(&reader.client_id, client_secret, refresh_token)
            .await
            .map_err(|e| e.to_string())?;
        let now = self.clock.unix();
        let lifetime = fresh.expires_in.as_secs() as i64;
        let stored = StoredToken {
            access_token: fresh.access_token.expose().to_owned(),
            // QQ rotates the refresh token; if a reply carries none, the
            // old one stays valid.
            refresh_token: fresh
                .refresh_token
                .as_ref()
                .or(creds.refresh_token.as_ref())
                .map(|s| s.expose().to_owned()),
            expires_at: (lifetime > 0).then_some(now + lifetime),
            lifetime: (lifetime > 0).then_some(lifetime),
            rotated_at: now.max(seen.unwrap_or(0) + 1),
            grant: grant_of(account),
        };
        self.store
            .put_token(&account.name, &stored)
            .await
            .map_err(|e| format!("cannot store the rotated token: {e}"))?;
        // The old refresh token is spent: the new pair must survive a
        // crash before anything relies on it.
        self.store
            .durable()
            .await
            .map_err(|e| format!("the rotated token is not durable: {e}"))?;
        tracing::info!(
            account = %account.name,
            expires = %crate::timefmt::utc(now + lifetime),
            "access token refreshed ({why}); the rotated pair is stored"
        );
        Ok(fresh.access_token)
    }
}
