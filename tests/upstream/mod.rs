//! The real clients against the real sandbox (and a misbehaving upstream)
//! over loopback: every outcome class reached over the wire (here),
//! membership reads in every dress, callbacks, token refresh, and every
//! fault knob (`reads.rs`).

mod reads;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::json;
use vipd::config::{Config, Provider, Secret};
use vipd::sandbox::{self, SandboxHandle};
use vipd::upstream::token::{TokenClient, TokenError};
use vipd::upstream::vipinfo::{Format, Membership, VipInfoClient, VipInfoError};
use vipd::upstream::{
    Attempt, OutcomeClass, RechargeClient, RechargeRequest, Signer, VendorClock, http_client,
};

async fn setup(extra_provider: &str, extra_sandbox: &str) -> (Config, SandboxHandle) {
    let mut c = config(extra_provider, extra_sandbox);
    let sb = sandbox::start(&c, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    c.point_providers_at(&sb.base_url());
    (c, sb)
}

fn recharge_client(c: &Config, clock: Arc<VendorClock>) -> RechargeClient {
    let Provider::Recharge(p) = &c.providers["wapi"] else {
        unreachable!()
    };
    RechargeClient::new(
        http_client(),
        vipd::engine::clients::recharge_endpoint(p),
        clock,
    )
}

fn vip_client(c: &Config, format: Format) -> VipInfoClient {
    let Provider::QqConnect(q) = &c.providers["qq"] else {
        unreachable!()
    };
    VipInfoClient::new(
        http_client(),
        &q.base_url,
        &q.oauth_consumer_key,
        format,
        Duration::from_secs(2),
    )
}

async fn recharge(client: &RechargeClient, target: &str, notify: Option<&str>) -> Attempt {
    client
        .send(&RechargeRequest {
            path: "/api/164/310",
            target,
            notify_url: notify,
            extra: &[],
        })
        .await
}

async fn alice_end(c: &Config) -> i64 {
    let a = c.account("alice").unwrap();
    vip_client(c, Format::Json)
        .fetch(&a.openid, &a.access_token)
        .await
        .unwrap()
        .end(Membership::QqVip)
        .unwrap()
}

#[tokio::test]
async fn sync_recharge_is_accepted_billed_and_extends() {
    let (c, sb) = setup("", "  mode: sync").await;
    let before = alice_end(&c).await;
    let attempt = recharge(&recharge_client(&c, Default::default()), "5666857", None).await;
    assert_eq!(
        attempt.outcome.class,
        OutcomeClass::Accepted,
        "{}",
        attempt.outcome.detail
    );
    let reply = attempt.outcome.reply.unwrap();
    assert_eq!(reply.price, Some(vipd::units::Fen(1211)));
    assert!(reply.orderid.is_some());
    assert!(
        attempt.params.iter().all(|(k, _)| k != "sign"),
        "the sign is never kept"
    );
    assert_eq!(alice_end(&c).await, before + 30 * 86_400);
    let orders = sb.orders();
    assert_eq!(orders.len(), 1);
    assert!(orders[0].billed);
    sb.shutdown().await;
}

#[tokio::test]
async fn async_recharge_is_pending_then_calls_back_signed() {
    let (c, sb) = setup("", "  mode: async\n  callback_delay: 100ms").await;
    let (receiver, addr) = Receiver::start().await;
    let notify = format!("http://{addr}/notify/wapi");
    let before = alice_end(&c).await;
    let attempt = recharge(
        &recharge_client(&c, Default::default()),
        "5666857",
        Some(&notify),
    )
    .await;
    assert_eq!(
        attempt.outcome.class,
        OutcomeClass::Pending,
        "{}",
        attempt.outcome.detail
    );
    let orderid = attempt.outcome.reply.unwrap().orderid.unwrap();
    let hits = receiver.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(hits.len(), 1);
    let fields = &hits[0];
    let get = |k: &str| {
        fields
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("orderid"), Some(orderid.as_str()));
    assert_eq!(get("status"), Some("success"));
    let signer = Signer::new(Default::default(), Secret::new(SECRET));
    let sign = get("sign").unwrap();
    assert!(signer.verify(fields.iter().map(|(k, v)| (k.as_str(), v.as_str())), sign));
    // A tampered field no longer verifies.
    let tampered = fields.iter().map(|(k, v)| {
        if k == "price" {
            (k.as_str(), "0.01")
        } else {
            (k.as_str(), v.as_str())
        }
    });
    assert!(!signer.verify(tampered, sign));
    assert_eq!(alice_end(&c).await, before + 30 * 86_400);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(sb.orders()[0].callbacks_acked, 1);
    sb.shutdown().await;
}

#[tokio::test]
async fn debug_mode_is_never_billed() {
    let (c, sb) = setup("    debug: true", "  mode: sync").await;
    let before = alice_end(&c).await;
    let attempt = recharge(&recharge_client(&c, Default::default()), "5666857", None).await;
    assert_eq!(attempt.outcome.class, OutcomeClass::Debug);
    assert!(attempt.params.contains(&("debug".into(), "1".into())));
    assert_eq!(alice_end(&c).await, before);
    assert!(!sb.orders()[0].billed);
    sb.shutdown().await;
}

#[tokio::test]
async fn clock_skew_is_corrected_from_curtime_and_retried_once() {
    let (c, sb) = setup("", "  mode: sync").await;
    let clock = Arc::new(VendorClock::default());
    clock.correct_to(crate::common::now() - 3_600); // our clock is an hour slow
    let attempt = recharge(&recharge_client(&c, clock.clone()), "5666857", None).await;
    assert_eq!(
        attempt.outcome.class,
        OutcomeClass::Accepted,
        "{}",
        attempt.outcome.detail
    );
    let offset = attempt.clock_corrected.expect("the clock was corrected");
    assert!(offset.abs() <= 2, "offset after correction: {offset}");
    let orders = sb.orders();
    assert_eq!(
        orders.iter().map(|o| o.codeid).collect::<Vec<_>>(),
        [10004, 10000]
    );
    assert_eq!(orders.iter().filter(|o| o.billed).count(), 1);
    sb.shutdown().await;
}

#[tokio::test]
async fn not_billed_classes_over_the_wire() {
    // transient
    let (c, sb) = setup(
        "",
        "  mode: sync\n  faults: { recharge: { transient_rate: 1.0 } }",
    )
    .await;
    let a = recharge(&recharge_client(&c, Default::default()), "5666857", None).await;
    assert_eq!(
        (a.outcome.class, a.outcome.reply.unwrap().codeid),
        (OutcomeClass::Transient, 10021)
    );
    sb.shutdown().await;
    // exhausted
    let (c, sb) = setup("", "  mode: sync\n  balance: 10.00").await;
    let a = recharge(&recharge_client(&c, Default::default()), "5666857", None).await;
    assert_eq!(
        (a.outcome.class, a.outcome.reply.unwrap().codeid),
        (OutcomeClass::Exhausted, 10022)
    );
    // rejected: a QQ number the vendor does not know
    let a = recharge(&recharge_client(&c, Default::default()), "999", None).await;
    assert_eq!(
        (a.outcome.class, a.outcome.reply.unwrap().codeid),
        (OutcomeClass::Rejected, 10019)
    );
    assert!(sb.orders().iter().all(|o| !o.billed));
    sb.shutdown().await;
}

#[tokio::test]
async fn config_class_for_wrong_secret_appid_and_path() {
    let (mut c, sb) = setup("", "  mode: sync").await;
    let good = recharge_client(&c, Default::default());
    let wrong_path = good
        .send(&RechargeRequest {
            path: "/api/164/999",
            target: "5666857",
            notify_url: None,
            extra: &[],
        })
        .await;
    assert_eq!(wrong_path.outcome.reply.unwrap().codeid, 10009);
    assert_eq!(wrong_path.outcome.class, OutcomeClass::Config);
    if let Some(Provider::Recharge(p)) = c.providers.get_mut("wapi") {
        p.secret = Secret::new("ffffffffffffffffffffffffffffffff");
    }
    let a = recharge(&recharge_client(&c, Default::default()), "5666857", None).await;
    assert_eq!(
        (a.outcome.class, a.outcome.reply.unwrap().codeid),
        (OutcomeClass::Config, 10003)
    );
    if let Some(Provider::Recharge(p)) = c.providers.get_mut("wapi") {
        p.appid = "2".into();
    }
    let a = recharge(&recharge_client(&c, Default::default()), "5666857", None).await;
    assert_eq!(
        (a.outcome.class, a.outcome.reply.unwrap().codeid),
        (OutcomeClass::Config, 10005)
    );
    sb.shutdown().await;
}

#[tokio::test]
async fn lost_replies_are_unknown_and_were_billed() {
    for (knob, extra) in [
        ("http500_rate", ""),
        ("garbage_rate", ""),
        ("hang_rate", ", hang_for: 3s"),
    ] {
        let (c, sb) = setup(
            "",
            &format!("  mode: sync\n  faults: {{ recharge: {{ {knob}: 1.0{extra} }} }}"),
        )
        .await;
        let mut client_config = c.clone();
        if let Some(Provider::Recharge(p)) = client_config.providers.get_mut("wapi") {
            p.timeout = Duration::from_millis(500);
        }
        let a = recharge(
            &recharge_client(&client_config, Default::default()),
            "5666857",
            None,
        )
        .await;
        assert_eq!(
            a.outcome.class,
            OutcomeClass::Unknown,
            "{knob}: {}",
            a.outcome.detail
        );
        assert!(a.outcome.class.may_be_billed());
        let orders = sb.orders();
        assert!(
            orders[0].billed,
            "{knob}: the sandbox billed before losing the reply"
        );
        assert!(orders[0].fault.is_some());
        sb.shutdown().await;
    }
}

#[tokio::test]
async fn connection_refused_is_not_sent() {
    let mut c = config("", "");
    c.point_providers_at(&format!("http://127.0.0.1:{}", closed_port()));
    let a = recharge(&recharge_client(&c, Default::default()), "5666857", None).await;
    assert_eq!(
        a.outcome.class,
        OutcomeClass::NotSent,
        "{}",
        a.outcome.detail
    );
    assert!(!a.outcome.class.may_be_billed());
}

#[tokio::test]
async fn get_method_signs_the_same_way() {
    let (c, sb) = setup("    method: GET", "  mode: sync").await;
    let a = recharge(&recharge_client(&c, Default::default()), "5666857", None).await;
    assert_eq!(
        a.outcome.class,
        OutcomeClass::Accepted,
        "{}",
        a.outcome.detail
    );
    assert_eq!(sb.orders()[0].method, "GET");
    sb.shutdown().await;
}
