//! The one place upstream clients are built from the configuration: the
//! configuration names providers, `upstream` speaks to them, and this file
//! is where the two meet.

use std::sync::Arc;

use crate::config::{QqConnectProvider, RechargeProvider};
use crate::upstream::{RechargeClient, RechargeEndpoint, TokenClient, VendorClock, VipInfoClient};

/// The membership client of a `qq_connect` provider.
pub fn vip_info(q: &QqConnectProvider, http: &reqwest::Client) -> VipInfoClient {
    VipInfoClient::new(
        http.clone(),
        &q.base_url,
        &q.oauth_consumer_key,
        q.format,
        q.timeout,
    )
}

/// The token refresh client of a `qq_connect` provider.
pub fn tokens(q: &QqConnectProvider, http: &reqwest::Client) -> TokenClient {
    TokenClient::new(http.clone(), &q.base_url, q.timeout)
}

/// What the recharge client of a `recharge` provider needs.
pub fn recharge_endpoint(r: &RechargeProvider) -> RechargeEndpoint {
    RechargeEndpoint {
        base_url: r.base_url.clone(),
        appid: r.appid.clone(),
        signer: r.signer(),
        method: r.method,
        debug: r.debug,
        target_param: r.target_param.clone(),
        timeout: r.timeout,
    }
}

/// The recharge client of a `recharge` provider, on `clock`.
pub fn recharge(
    r: &RechargeProvider,
    http: &reqwest::Client,
    clock: Arc<VendorClock>,
) -> RechargeClient {
    RechargeClient::new(http.clone(), recharge_endpoint(r), clock)
}
