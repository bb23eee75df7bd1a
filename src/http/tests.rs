//! The routers' pure parts: tokens, scopes, hosts and origins.

/// The token is compared exactly (it was compared ignoring case, as a
/// hex signature is); the scheme ignoring case, as RFC 9110 says.
#[test]
fn bearer_tokens_match_exactly() {
    let token = crate::config::Secret::new("s3cret-tok");
    let ok = |h: &str| super::authorized(Some(h), &token);
    assert!(ok("Bearer s3cret-tok"));
    assert!(ok("bearer s3cret-tok"));
    assert!(ok("BEARER s3cret-tok"));
    for wrong in [
        "Bearer S3CRET-TOK",
        "Bearer s3cret-to",
        "Bearer s3cret-tokk",
        "Basic s3cret-tok",
        "Bearers3cret-tok",
        "s3cret-tok",
        "Bearer ",
        "",
    ] {
        assert!(!ok(wrong), "{wrong:?} accepted");
    }
    assert!(!super::authorized(None, &token));
}

#[test]
fn the_read_scope_is_reads_of_status_orders_plan_and_metrics() {
    use axum::http::Method;
    for path in [
        "/api/orders/0b1e/trace",
        "/api/accounts/alice/trace",
        "/metrics",
        "/api/status",
        "/api/orders",
        "/api/orders/count",
        "/api/plan",
    ] {
        assert!(super::read_scope(&Method::GET, path), "{path}");
        assert!(!super::read_scope(&Method::POST, path), "{path}");
    }
    for path in [
        "/api/store/backup",
        "/api/reload",
        "/api/recharge",
        "/api/orders/k/resolve",
        "/api/orders//trace",
        "/api/orders/a/b/trace",
        "/api/accounts/alice",
    ] {
        assert!(!super::read_scope(&Method::GET, path), "{path}");
    }
}

#[test]
fn loopback_hosts() {
    for ok in [
        "localhost",
        "localhost:9610",
        "127.0.0.1:9610",
        "127.5.5.5",
        "[::1]:9610",
        "[::1]",
    ] {
        assert!(super::loopback_host(ok), "{ok}");
    }
    for bad in [
        "evil.example",
        "evil.example:9610",
        "10.0.0.1:9610",
        "localhost.evil.example",
        "",
        "[::2]:1",
    ] {
        assert!(!super::loopback_host(bad), "{bad}");
    }
}

/// A store's failure is answered by its kind, whatever the backend: ask
/// again later (503) when the store cannot be reached or cannot keep a
/// write, 404 and 409 for what the caller asked, 500 for damage.
#[test]
fn store_failures_are_answered_by_their_kind() {
    use super::{LedgerError, StatusCode, store_status};
    let cases = [
        (LedgerError::NotFound("k".into()), StatusCode::NOT_FOUND),
        (
            LedgerError::Refused {
                key: "k".into(),
                why: "approved already".into(),
            },
            StatusCode::CONFLICT,
        ),
        (
            LedgerError::Unavailable("connection closed".into()),
            StatusCode::SERVICE_UNAVAILABLE,
        ),
        (
            LedgerError::NotDurable("No space left on device".into()),
            StatusCode::SERVICE_UNAVAILABLE,
        ),
        (
            LedgerError::Fenced("lease ran out".into()),
            StatusCode::SERVICE_UNAVAILABLE,
        ),
        (
            LedgerError::Corrupt {
                key: "k".into(),
                reason: "does not decode".into(),
            },
            StatusCode::INTERNAL_SERVER_ERROR,
        ),
    ];
    for (e, want) in cases {
        assert_eq!(store_status(&e), want, "{e}");
    }
}
