//! Where plugins' HTTP requests may not go: the daemon itself.
//!
//! A plugin that could reach the admin API or the callback listener could
//! resolve orders, reload, recharge, or post a forged callback, around
//! every guard. So `vipd.http` refuses loopback, unspecified and
//! link-local addresses (cloud metadata services live there too) and the
//! daemon's own listen addresses, unless the operator lists the exact
//! `host:port` in `plugins.http_allow`.
//!
//! Names are checked where they are resolved: the plugin client's
//! resolver drops forbidden addresses from every answer, so a name that
//! re-resolves to 127.0.0.1 between a check and the connection (DNS
//! rebinding) still cannot reach loopback.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// Addresses no plugin request may connect to (unless allowed by name).
pub(crate) fn forbidden_ip(ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_unspecified() || v4.is_link_local(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.is_unspecified() || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

/// What one configuration allows plugins to reach.
#[derive(Debug, Clone, Default)]
pub(crate) struct Destinations {
    /// `host:port` (lower case) allowed although forbidden otherwise.
    pub allow: Vec<String>,
    /// The daemon's own listeners.
    pub own: Vec<SocketAddr>,
}

impl Destinations {
    /// Whether `url` may be requested; `Ok(true)` when it is allowed
    /// explicitly (and so goes through a client without the resolver
    /// guard), `Ok(false)` when it goes through the guarded client.
    pub fn check(&self, url: &url::Url) -> Result<bool, String> {
        let host = url.host_str().unwrap_or("").to_ascii_lowercase();
        let port = url.port_or_known_default().unwrap_or(0);
        let bare = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim_end_matches('.');
        if self.allow.iter().any(|a| *a == format!("{host}:{port}")) {
            return Ok(true);
        }
        let refuse = |why: &str| {
            Err(format!(
                "{host}:{port} is {why}, which plugins may not reach; list it in plugins.http_allow to allow it"
            ))
        };
        if let Ok(ip) = bare.parse::<IpAddr>() {
            if forbidden_ip(ip) {
                return refuse("a loopback, unspecified or link-local address");
            }
            if self
                .own
                .iter()
                .any(|a| a.ip() == ip || (a.ip().is_unspecified() && a.port() == port))
            {
                return refuse("one of the daemon's own listeners");
            }
        }
        if bare == "localhost" || bare.ends_with(".localhost") {
            return refuse("loopback");
        }
        Ok(false)
    }
}

/// A resolver that never answers with a forbidden address.
struct GuardedResolver;

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| !forbidden_ip(a.ip()))
                .collect();
            if found.is_empty() {
                return Err(format!(
                    "{host} resolves to no address plugins may reach (loopback, unspecified and link-local are refused; see plugins.http_allow)"
                )
                .into());
            }
            Ok(Box::new(found.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The client for plugins' requests: the daemon's client settings, and a
/// resolver that refuses forbidden addresses.
pub(crate) fn plugin_http_client() -> reqwest::Client {
    super::client_builder()
        .dns_resolver(Arc::new(GuardedResolver))
        .build()
        .expect("the HTTP client has no fallible options set")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest() -> Destinations {
        Destinations {
            allow: vec!["127.0.0.1:8080".into()],
            own: vec![
                "10.1.2.3:9611".parse().unwrap(),
                "0.0.0.0:9610".parse().unwrap(),
            ],
        }
    }

    #[test]
    fn loopback_and_own_listeners_are_refused_unless_allowed() {
        let d = dest();
        let check = |u: &str| d.check(&url::Url::parse(u).unwrap());
        for refused in [
            "http://127.0.0.1:9610/api/orders",
            "http://127.9.9.9/",
            "http://[::1]:9611/notify/wapi",
            "http://[::ffff:127.0.0.1]/",
            "http://0.0.0.0:9611/",
            "http://169.254.169.254/latest/meta-data",
            "http://localhost:9610/",
            "http://LOCALHOST./",
            "http://10.1.2.3:9611/notify/wapi",
            "http://192.168.1.5:9610/api/reload",
        ] {
            let r = check(refused);
            assert!(r.is_err(), "{refused}: {r:?}");
        }
        assert_eq!(check("http://127.0.0.1:8080/hook"), Ok(true));
        assert_eq!(
            check("https://qyapi.weixin.qq.com/cgi-bin/webhook"),
            Ok(false)
        );
        assert_eq!(check("http://192.168.1.5:8000/"), Ok(false));
    }

    #[tokio::test]
    async fn the_resolver_drops_loopback_answers() {
        let r =
            reqwest::dns::Resolve::resolve(&GuardedResolver, "localhost".parse().unwrap()).await;
        assert!(r.is_err());
    }
}
