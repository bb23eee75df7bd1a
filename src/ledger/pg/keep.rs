//! How a node keeps its lease: renewed every third of its length on a
//! connection of its own, with the live nodes read at each renewal.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::PgError;
use super::lease::{self, Lease};

/// The nodes whose lease held at the last look, with when each runs out
/// by this node's monotonic clock.
#[derive(Debug, Default)]
pub(super) struct Live(Vec<(String, Instant)>);

impl Live {
    pub(super) fn names(&self, now: Instant) -> Vec<String> {
        self.0
            .iter()
            .filter(|(_, until)| *until > now)
            .map(|(n, _)| n.clone())
            .collect()
    }
}

/// Reads which nodes' leases hold, into `live`.
pub(super) async fn look_at_nodes(
    client: &impl tokio_postgres::GenericClient,
    live: &Mutex<Live>,
) -> Result<(), PgError> {
    let seen = Instant::now();
    let nodes = lease::nodes(client).await?;
    let mut now_live = Vec::new();
    for n in nodes.into_iter().filter(|n| n.lease_left > 0.0) {
        now_live.push((n.name, seen + Duration::from_secs_f64(n.lease_left)));
    }
    *live.lock().unwrap_or_else(|p| p.into_inner()) = Live(now_live);
    Ok(())
}

/// Renews the lease every third of its length until `stop`, on a
/// connection of its own (a pool busy with checks must not starve it);
/// reports a lease the database says is gone on `lost` (sticky).
pub(super) async fn keep_lease(
    settings: tokio_postgres::Config,
    lease: Lease,
    ttl: Duration,
    live: Arc<Mutex<Live>>,
    lost: watch::Sender<Option<String>>,
    stop: CancellationToken,
) {
    let mut last_renewed = Instant::now();
    let mut client: Option<tokio_postgres::Client> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(ttl / 3) => {}
        }
        let attempt = async {
            if client.as_ref().is_none_or(|c| c.is_closed()) {
                let (c, conn) = settings.connect(tokio_postgres::NoTls).await?;
                tokio::spawn(conn);
                client = Some(c);
            }
            let c = client.as_ref().expect("connected above");
            match lease::renew(c, &lease, ttl).await? {
                true => look_at_nodes(c, &live).await.map(|()| true),
                false => Ok(false),
            }
        };
        let renewed = match tokio::time::timeout(ttl / 3, attempt).await {
            Ok(r) => r,
            Err(_) => Err(PgError::Pool(
                "no answer within a third of the lease".into(),
            )),
        };
        match renewed {
            Ok(true) => last_renewed = Instant::now(),
            Ok(false) => {
                let why = format!(
                    "node {} lost its lease (fence {}): it ran out while the node was cut off, \
                     or another start took the name; this node must not pay any more",
                    lease.node, lease.fence
                );
                tracing::error!("{why}");
                let _ = lost.send(Some(why));
                return;
            }
            Err(e) => {
                client = None;
                let gone = last_renewed.elapsed() >= ttl;
                tracing::warn!(
                    node = %lease.node,
                    error = %e,
                    lease_ran_out = gone,
                    "cannot renew the lease; no payment until the database answers"
                );
            }
        }
    }
}
