//! The sandbox's recharge API: checks a request the way the vendor does,
//! bills, and answers in sync or async mode; async orders settle later and
//! call back, signed.
//!
//! Faults that lose the reply (HTTP 500, garbage, hang) strike **after**
//! billing: the nastiest real case, a paid order whose reply never
//! arrived, is the one the daemon must survive.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use super::Shared;
use super::faults::{ReplyFault, roll_reply_fault};
use super::world::{App, OrderRecord, OrderState, World};
use crate::model::SandboxMode;
use crate::units::Fen;

/// A reply before faults: the vendor's JSON fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The status code.
    pub codeid: i64,
    /// The vendor's words.
    pub message: String,
    /// Billed orders only.
    pub orderid: Option<String>,
    /// Billed orders only.
    pub price: Option<Fen>,
}

impl Reply {
    fn refuse(codeid: i64, message: impl Into<String>) -> Reply {
        Reply {
            codeid,
            message: message.into(),
            orderid: None,
            price: None,
        }
    }

    /// The JSON body, shaped like the vendor's (numbers as strings).
    pub fn body(&self, now: i64) -> String {
        serde_json::json!({
            "codeid": self.codeid,
            "message": self.message,
            "orderid": self.orderid.clone().unwrap_or_default(),
            "price": self.price.map(|p| p.to_string()).unwrap_or_default(),
            "curtime": now.to_string(),
            "retdata": if self.codeid == 10024 {
                serde_json::json!({"debug": true, "note": "虚拟调试数据"})
            } else {
                serde_json::json!([])
            },
        })
        .to_string()
    }
}

/// Work to do after replying: settle an async order.
#[derive(Debug, Clone)]
pub struct Settle {
    /// The vendor order id.
    pub orderid: String,
    /// Account index.
    pub account: usize,
    /// Membership, seconds, and price of the product.
    pub sku: super::world::Sku,
    /// Where to call back.
    pub notify_url: Option<String>,
    /// How to sign and name the callback.
    pub app: App,
    /// Wait this long first.
    pub delay: Duration,
    /// The order succeeds (else it fails and is refunded).
    pub success: bool,
    /// Never call back.
    pub drop: bool,
    /// Call back twice.
    pub duplicate: bool,
}

/// Decides a recharge request against the world: validation in the
/// vendor's order, then billing. Returns the reply, the fault to apply to
/// it, and the settlement to run for an async order.
pub fn decide(
    world: &mut World,
    method: &Method,
    path: &str,
    params: &[(String, String)],
    now: i64,
) -> (Reply, Option<ReplyFault>, Option<Settle>) {
    let seq = world.orders.len() as u64 + 1;
    let mut record = OrderRecord {
        seq,
        orderid: None,
        received_at: now,
        method: method.to_string(),
        path: path.to_owned(),
        provider: None,
        product: None,
        target: None,
        account: None,
        codeid: 0,
        billed: false,
        price: None,
        state: OrderState::Refused,
        fault: None,
        callbacks_sent: 0,
        callbacks_acked: 0,
        notify_url: param(params, "notify_url").map(str::to_owned),
    };
    let outcome = check_and_bill(world, &mut record, path, params, now);
    let (reply, settle) = match outcome {
        Ok(ok) => ok,
        Err(reply) => (reply, None),
    };
    record.codeid = reply.codeid;
    // Only billed replies can be lost to a fault; a refusal is answered.
    let fault = if record.billed {
        roll_reply_fault(&world.control.recharge, &mut world.rng)
    } else {
        None
    };
    record.fault = fault;
    world.orders.push(record);
    (reply, fault, settle)
}

fn check_and_bill(
    world: &mut World,
    record: &mut OrderRecord,
    path: &str,
    params: &[(String, String)],
    now: i64,
) -> Result<(Reply, Option<Settle>), Reply> {
    let get = |k: &str| param(params, k).filter(|v| !v.is_empty());
    let appid =
        get("appid").ok_or_else(|| Reply::refuse(10001, "appid必须指定,可以我的应用里面查看"))?;
    let sign = get("sign").ok_or_else(|| Reply::refuse(10002, "sign值必须指定"))?;
    let app = world
        .apps
        .get(appid)
        .cloned()
        .ok_or_else(|| Reply::refuse(10005, "appid错误,请检查appid值"))?;
    record.provider = Some(app.provider.clone());
    let pairs = params.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    if !app.signer.verify(pairs, sign) {
        return Err(Reply::refuse(10003, "sign值验证不通过"));
    }
    if let Some(time) = get("time") {
        let time: i64 = time
            .parse()
            .map_err(|_| Reply::refuse(10017, "time必须是整型"))?;
        if (time - now).abs() > 600 {
            return Err(Reply::refuse(10004, "时差不能超过10分钟"));
        }
    }
    let sku = world
        .skus
        .get(&(appid.to_owned(), path.to_owned()))
        .cloned()
        .ok_or_else(|| Reply::refuse(10009, "api接口不存在"))?;
    record.product = Some(sku.name.clone());
    let target = get(&app.target_param).ok_or_else(|| Reply::refuse(10015, "参数个数错误"))?;
    record.target = Some(target.to_owned());
    let account = *world
        .by_qq
        .get(target)
        .ok_or_else(|| Reply::refuse(10019, format!("{} {target} 不存在", app.target_param)))?;
    record.account = Some(world.accounts[account].name.clone());
    if get("debug") == Some("1") {
        return Err(Reply::refuse(10024, "调试模式数据"));
    }
    let control = &world.control;
    if world.rng.f64() < control.recharge.transient_rate {
        return Err(Reply::refuse(10021, "服务器发生错误"));
    }
    if let Some(balance) = control.balance {
        if balance < sku.price {
            return Err(Reply::refuse(10022, "帐户余额不足,请充值!"));
        }
        world.control.balance = Some(Fen(balance.0 - sku.price.0));
    }
    let orderid = world.fresh_id("SB");
    record.orderid = Some(orderid.clone());
    record.billed = true;
    record.price = Some(sku.price);
    let price = sku.price;
    let reply = |codeid, message: &str| Reply {
        codeid,
        message: message.to_owned(),
        orderid: Some(orderid.clone()),
        price: Some(price),
    };
    match world.control.mode {
        SandboxMode::Sync => {
            world.extend(account, sku.extends, sku.adds_secs, now);
            record.state = OrderState::Succeeded;
            Ok((reply(10000, "操作成功!"), None))
        }
        SandboxMode::Async => {
            record.state = OrderState::Pending;
            let knobs = &world.control.recharge;
            let (fail, drop, duplicate) = (
                knobs.fail_rate,
                knobs.drop_callback_rate,
                knobs.duplicate_callback_rate,
            );
            let settle = Settle {
                orderid: orderid.clone(),
                account,
                notify_url: record.notify_url.clone(),
                app,
                delay: world.control.callback_delay.get(),
                success: world.rng.f64() >= fail,
                drop: world.rng.f64() < drop,
                duplicate: world.rng.f64() < duplicate,
                sku,
            };
            Ok((reply(10023, "订单提交成功,等待回调结果"), Some(settle)))
        }
    }
}

/// The first value of `key` in a request's parameters.
pub(crate) fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Reads a request's parameters from the query and, for POST, the form body.
pub(crate) fn request_params(uri: &Uri, body: &[u8]) -> Vec<(String, String)> {
    let mut params: Vec<(String, String)> = uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    params.extend(form_urlencoded::parse(body).into_owned());
    params
}

/// The HTTP handler for every recharge path.
pub async fn handle(
    State(sb): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let params = request_params(&uri, &body);
    let latency = sb.world().control.recharge.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let now = sb.clock.unix();
    let (reply, fault, settle, hang) = {
        let mut world = sb.world();
        let (reply, fault, settle) = decide(&mut world, &method, uri.path(), &params, now);
        (reply, fault, settle, world.control.recharge.hang_duration())
    };
    if let Some(job) = settle {
        let shared = sb.clone();
        sb.tasks
            .spawn(async move { settle_later(shared, job).await });
    }
    match fault {
        Some(ReplyFault::Http500) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error").into_response()
        }
        Some(ReplyFault::Garbage) => html("<html><body><h1>502 Bad Gateway</h1></body></html>"),
        Some(ReplyFault::Hang) => {
            tokio::select! {
                _ = tokio::time::sleep(hang) => {}
                _ = sb.cancel.cancelled() => {}
            }
            json_as_html(reply.body(sb.clock.unix()))
        }
        None => json_as_html(reply.body(now)),
    }
}

/// Vendors label JSON as text/html; so does the sandbox, to keep clients honest.
pub(crate) fn json_as_html(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

fn html(body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

/// Settles an async order after its delay and delivers the callback.
async fn settle_later(sb: Arc<Shared>, job: Settle) {
    tokio::select! {
        _ = tokio::time::sleep(job.delay) => {}
        _ = sb.cancel.cancelled() => return,
    }
    let now = sb.clock.unix();
    {
        let mut world = sb.world();
        if job.success {
            world.extend(job.account, job.sku.extends, job.sku.adds_secs, now);
        } else if let Some(balance) = world.control.balance {
            world.control.balance = Some(Fen(balance.0 + job.sku.price.0));
        }
        if let Some(order) = world.order_mut(&job.orderid) {
            order.state = if job.success {
                OrderState::Succeeded
            } else {
                OrderState::Failed
            };
            order.billed = job.success;
        }
    }
    let Some(url) = job.notify_url.clone().filter(|_| !job.drop) else {
        return;
    };
    let qq = sb.world().accounts[job.account].qq_number.clone();
    let map = &job.app.callback;
    let mut fields: HashMap<String, String> = HashMap::new();
    fields.insert(map.order_field.clone(), job.orderid.clone());
    let status = if job.success { "success" } else { "failed" };
    fields.insert(map.status_field.clone(), status.to_owned());
    fields.insert(map.price_field.clone(), job.sku.price.to_string());
    fields.insert(job.app.target_param.clone(), qq);
    fields.insert("time".into(), now.to_string());
    let sign = job
        .app
        .signer
        .sign(fields.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    fields.insert(map.sign_field.clone(), sign);
    if let Ok(mut sent) = sb.sent.lock() {
        sent.insert(
            job.orderid.clone(),
            (url.clone(), fields.clone(), map.reply.clone()),
        );
    }
    let deliveries = if job.duplicate { 2 } else { 1 };
    for _ in 0..deliveries {
        deliver(&sb, &job, &url, &fields).await;
    }
}

/// POSTs one callback, retrying a few times until the receiver answers
/// HTTP 200 with the configured reply, as vendors do.
async fn deliver(sb: &Shared, job: &Settle, url: &str, fields: &HashMap<String, String>) {
    let Ok(_slot) = sb.callback_slots.acquire().await else {
        return;
    };
    let mut backoff = Duration::from_millis(300);
    for _ in 0..4 {
        let sent = sb
            .http
            .post(url)
            .form(fields)
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        let acked = match sent {
            Ok(resp) if resp.status() == StatusCode::OK => resp
                .text()
                .await
                .is_ok_and(|body| body.trim() == job.app.callback.reply),
            _ => false,
        };
        if let Some(order) = sb.world().order_mut(&job.orderid) {
            order.callbacks_sent += 1;
            order.callbacks_acked += u32::from(acked);
        }
        if acked {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = sb.cancel.cancelled() => return,
        }
        backoff *= 2;
    }
}
