//! Membership reads in every dress, token refresh, callback knobs, and
//! upstreams that misbehave.

use super::*;

#[tokio::test]
async fn membership_reads_json_xml_and_strings_agree() {
    let (c, sb) = setup("", "").await;
    let a = c.account("alice").unwrap();
    let json = vip_client(&c, Format::Json)
        .fetch(&a.openid, &a.access_token)
        .await
        .unwrap();
    let xml = vip_client(&c, Format::Xml)
        .fetch(&a.openid, &a.access_token)
        .await
        .unwrap();
    assert_eq!(json, xml);
    assert!(json.is_qq_vip);
    let end = json.end(Membership::QqVip).unwrap();
    assert!((end - crate::common::now() - 2 * 86_400).abs() < 10);
    assert_eq!(json.end(Membership::QqHaohua), None);
    post_json(
        &format!("{}/_sandbox/control", sb.base_url()),
        json!({"vip_info": {"string_numbers_rate": 1.0}}),
    )
    .await;
    let raw = reqwest::get(format!(
        "{}/user/get_vip_rich_info?access_token=tok-a&oauth_consumer_key=101234567&openid=OPENID-A&format=json",
        sb.base_url()
    ))
    .await
    .unwrap();
    assert_eq!(raw.headers()["content-type"], "text/html; charset=utf-8");
    let body = raw.text().await.unwrap();
    assert!(
        body.contains(&format!("\"qq_vip_end\":\"{end}\"")),
        "{body}"
    );
    let strings = vip_client(&c, Format::Json)
        .fetch(&a.openid, &a.access_token)
        .await
        .unwrap();
    assert_eq!(strings, json);
    // Bob lapsed yesterday: an end in the past, not a member.
    let b = c.account("bob").unwrap();
    let bob = vip_client(&c, Format::Json)
        .fetch(&b.openid, &b.access_token)
        .await
        .unwrap();
    assert!(!bob.is_qq_vip && bob.end(Membership::QqVip).unwrap() < crate::common::now());
    sb.shutdown().await;
}

#[tokio::test]
async fn token_problems_are_typed() {
    let (c, sb) = setup("", "").await;
    let a = c.account("alice").unwrap();
    let client = vip_client(&c, Format::Json);
    let wrong = client
        .fetch(&a.openid, &Secret::new("nope"))
        .await
        .unwrap_err();
    assert!(
        matches!(wrong, VipInfoError::Api { ret: 100013, .. }) && wrong.is_token_problem(),
        "{wrong}"
    );
    let url = format!("{}/_sandbox/accounts/alice", sb.base_url());
    assert_eq!(post_json(&url, json!({"expire_tokens": true})).await, 204);
    let expired = client.fetch(&a.openid, &a.access_token).await.unwrap_err();
    assert!(
        matches!(expired, VipInfoError::Api { ret: 100014, .. }),
        "{expired}"
    );
    assert_eq!(post_json(&url, json!({"revoke_tokens": true})).await, 204);
    let revoked = client.fetch(&a.openid, &a.access_token).await.unwrap_err();
    assert!(
        matches!(revoked, VipInfoError::Api { ret: 100015, .. }),
        "{revoked}"
    );
    // A transient API error is not a token problem.
    post_json(
        &format!("{}/_sandbox/control", sb.base_url()),
        json!({"vip_info": {"transient_rate": 1.0}}),
    )
    .await;
    let b = c.account("bob").unwrap();
    let busy = client.fetch(&b.openid, &b.access_token).await.unwrap_err();
    assert!(
        matches!(busy, VipInfoError::Api { ret: -1, .. }) && !busy.is_token_problem(),
        "{busy}"
    );
    sb.shutdown().await;
}

#[tokio::test]
async fn token_refresh_rotates_and_refresh_tokens_work_once() {
    let (c, sb) = setup("", "").await;
    let a = c.account("alice").unwrap();
    let tokens = TokenClient::new(http_client(), &sb.base_url(), Duration::from_secs(2));
    let app_key = Secret::new("app-key");
    let fresh = tokens
        .refresh("101234567", &app_key, a.refresh_token.as_ref().unwrap())
        .await
        .unwrap();
    assert_eq!(fresh.expires_in, Duration::from_secs(7_776_000));
    let info = vip_client(&c, Format::Json)
        .fetch(&a.openid, &fresh.access_token)
        .await
        .unwrap();
    assert!(info.is_qq_vip);
    let again = tokens
        .refresh("101234567", &app_key, a.refresh_token.as_ref().unwrap())
        .await;
    assert!(
        matches!(again, Err(TokenError::Refused { code: 100013, .. })),
        "{again:?}"
    );
    let next = tokens
        .refresh("101234567", &app_key, fresh.refresh_token.as_ref().unwrap())
        .await;
    assert!(next.is_ok());
    let bad_key = tokens
        .refresh("101234567", &Secret::new("wrong"), &Secret::new("x"))
        .await;
    assert!(
        matches!(bad_key, Err(TokenError::Refused { code: 100009, .. })),
        "{bad_key:?}"
    );
    sb.shutdown().await;
}

#[tokio::test]
async fn callback_knobs_drop_duplicate_and_fail() {
    let (receiver, addr) = Receiver::start().await;
    let notify = format!("http://{addr}/notify/wapi");
    let cases = [
        ("drop_callback_rate: 1.0", 0, "success"),
        ("duplicate_callback_rate: 1.0", 2, "success"),
        ("fail_rate: 1.0", 1, "failed"),
    ];
    for (knob, expected_hits, status) in cases {
        receiver.hits.lock().unwrap().clear();
        let (c, sb) = setup(
            "",
            &format!(
                "  callback_delay: 50ms\n  balance: 100.00\n  faults: {{ recharge: {{ {knob} }} }}"
            ),
        )
        .await;
        let a = recharge(
            &recharge_client(&c, Default::default()),
            "5666857",
            Some(&notify),
        )
        .await;
        assert_eq!(a.outcome.class, OutcomeClass::Pending);
        let hits = receiver
            .wait_for(expected_hits.max(1), Duration::from_secs(2))
            .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let hits = if expected_hits == 0 {
            receiver.hits()
        } else {
            hits
        };
        assert_eq!(hits.len(), expected_hits, "{knob}");
        for h in &hits {
            assert!(
                h.contains(&("status".into(), status.into())),
                "{knob}: {h:?}"
            );
        }
        let control = get_json(&format!("{}/_sandbox/control", sb.base_url())).await;
        let order = &sb.orders()[0];
        if status == "failed" {
            assert!(!order.billed, "a failed order is refunded");
            assert_eq!(control["balance"], "100.00");
        } else {
            assert!(order.billed);
            assert_eq!(control["balance"], "87.89");
        }
        sb.shutdown().await;
    }
}

#[tokio::test]
async fn latency_knob_delays_replies() {
    let (c, sb) = setup("", "  faults: { vip_info: { latency: 300ms } }").await;
    let a = c.account("alice").unwrap();
    let started = Instant::now();
    vip_client(&c, Format::Json)
        .fetch(&a.openid, &a.access_token)
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    sb.shutdown().await;
}

#[tokio::test]
async fn vip_info_faults_are_clear_errors() {
    for (knob, want) in [("garbage_rate", "malformed"), ("http500_rate", "HTTP 500")] {
        let (c, sb) = setup("", &format!("  faults: {{ vip_info: {{ {knob}: 1.0 }} }}")).await;
        let a = c.account("alice").unwrap();
        let e = vip_client(&c, Format::Json)
            .fetch(&a.openid, &a.access_token)
            .await
            .unwrap_err();
        assert!(e.to_string().contains(want), "{knob}: {e}");
        sb.shutdown().await;
    }
    let (c, sb) = setup(
        "",
        "  faults: { vip_info: { hang_rate: 1.0, hang_for: 5s } }",
    )
    .await;
    let a = c.account("alice").unwrap();
    let Provider::QqConnect(q) = &c.providers["qq"] else {
        unreachable!()
    };
    let impatient = VipInfoClient::new(
        http_client(),
        &q.base_url,
        "101234567",
        Format::Json,
        Duration::from_millis(300),
    );
    let e = impatient
        .fetch(&a.openid, &a.access_token)
        .await
        .unwrap_err();
    assert!(matches!(e, VipInfoError::Transport(_)), "{e}");
    sb.shutdown().await;
}

#[tokio::test]
async fn bad_upstream_bodies_never_panic() {
    let huge = vec![b'x'; 30 * 1024 * 1024];
    let cases: Vec<(u16, Vec<u8>, &str)> = vec![
        (
            200,
            b"<html><body>Service Unavailable</body></html>".to_vec(),
            "not JSON",
        ),
        (
            200,
            br#"{"codeid":10000,"message":"ok","ord"#.to_vec(),
            "not JSON",
        ),
        (200, br#"{"codeid":"abc","message":"x"}"#.to_vec(), "codeid"),
        (200, huge, "over"),
    ];
    for (status, body, needle) in cases {
        let addr = evil_upstream(status, body).await;
        let mut c = config("", "");
        c.point_providers_at(&format!("http://{addr}"));
        let a = recharge(&recharge_client(&c, Default::default()), "5666857", None).await;
        assert_eq!(a.outcome.class, OutcomeClass::Unknown, "{needle}");
        assert!(
            a.outcome.detail.contains(needle),
            "{needle}: {}",
            a.outcome.detail
        );
        let acct = c.account("alice").unwrap();
        let e = vip_client(&c, Format::Json)
            .fetch(&acct.openid, &acct.access_token)
            .await
            .unwrap_err();
        assert!(matches!(e, VipInfoError::Malformed(_)), "{e}");
    }
    // XML with unknown tags is fine; XML that is cut short is an error.
    let addr = evil_upstream(
        200,
        b"<data><ret>0</ret><mystery>1</mystery><qq_vip_end>1700000000</qq_vip_end></data>"
            .to_vec(),
    )
    .await;
    let mut c = config("", "");
    c.point_providers_at(&format!("http://{addr}"));
    let acct = c.account("alice").unwrap().clone();
    let info = vip_client(&c, Format::Xml)
        .fetch(&acct.openid, &acct.access_token)
        .await
        .unwrap();
    assert_eq!(info.end(Membership::QqVip), Some(1_700_000_000));
    let addr = evil_upstream(200, b"<data><ret>0</ret><qq_vip_end>17".to_vec()).await;
    c.point_providers_at(&format!("http://{addr}"));
    let e = vip_client(&c, Format::Xml)
        .fetch(&acct.openid, &acct.access_token)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not XML"), "{e}");
}

#[tokio::test]
async fn transport_errors_never_show_the_token() {
    let mut c = config("", "");
    c.point_providers_at(&format!("http://127.0.0.1:{}", closed_port()));
    let acct = c.account("alice").unwrap();
    let e = vip_client(&c, Format::Json)
        .fetch(&acct.openid, &acct.access_token)
        .await
        .unwrap_err();
    let text = format!("{e} {e:?}");
    assert!(!text.contains("tok-a"), "{text}");
    assert!(matches!(e, VipInfoError::Transport(_)));
}
