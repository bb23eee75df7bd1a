//! Serving a router on a listener that the internet can reach, without
//! letting slow or hostile peers hold the daemon.
//!
//! `axum::serve` has no header timeout, no connection cap and no bound on
//! how long a connection lives; a peer that trickles headers or a body, or
//! opens connections and idles, would hold sockets (and file handles that
//! membership reads and payments need) for ever. This loop adds:
//!
//! - a cap on open connections per listener, and a share of it per peer
//!   address; past either, a new connection takes the place of an idle
//!   one (`conns.rs`), or is accepted and closed at once when every
//!   connection is mid-request (so the kernel's queue does not fill);
//! - a header read timeout ([`HEADER_TIMEOUT`]);
//! - a lifetime for every connection ([`CONNECTION_LIFETIME`]), which
//!   bounds a slow body and an idle keep-alive alike;
//! - back-off when `accept` fails (out of file handles), instead of a spin.
//!
//! Bodies are bounded before they are read by [`limit_body`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::conns::{InRequest, Table};

/// Headers must arrive within this.
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// No connection lives longer (callbacks and admin calls take well under
/// a second; clients reconnect).
pub(crate) const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// Open connections per listener.
pub(crate) const MAX_CONNECTIONS: usize = 256;
/// How long shutdown waits for requests in flight.
const DRAIN: Duration = Duration::from_secs(5);

/// The limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub lifetime: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: MAX_CONNECTIONS,
            header_timeout: HEADER_TIMEOUT,
            lifetime: CONNECTION_LIFETIME,
        }
    }
}

impl Limits {
    /// The defaults, with the connection cap lowered to a quarter of the
    /// process's file-handle limit: the two listeners together then hold
    /// at most half, and membership reads, payments, the store and the
    /// plugins keep the rest.
    pub(crate) fn for_file_limit(nofile: u64) -> Limits {
        Limits {
            max_connections: MAX_CONNECTIONS.min((nofile / 4).max(8) as usize),
            ..Limits::default()
        }
    }
}

/// Raises the soft file-handle limit to the hard one (systemd's default
/// soft limit is 1024) and returns it.
pub(crate) fn raise_file_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

/// A listener the serve loop takes connections from: TCP, or the local
/// control socket.
pub trait Accept: Send + 'static {
    /// One connection.
    type Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static;
    /// The next connection, its peer's address (whose share of the cap it
    /// takes), how logs name the peer, and who the peer is when the
    /// listener can tell (a local user).
    fn next(&self) -> impl Future<Output = std::io::Result<Accepted<Self::Io>>> + Send;
}

/// A connection taken: the stream, the peer's address and name, and who
/// it is when known.
pub type Accepted<Io> = (Io, IpAddr, String, Option<Caller>);

/// Who made a request: a named admin token (`token ops`), or the local
/// user on the control socket. Recorded as who made each manual change.
#[derive(Debug, Clone)]
pub struct Caller(pub Arc<str>);

/// The name of Unix user `uid` (`uid N` when it has none).
pub fn user_name(uid: u32) -> String {
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0u8; 1024];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwuid_r writes into `pw` and `buf`, both ours and large
    // enough as said; `found` is null or points at `pw`.
    let rc =
        unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr().cast(), buf.len(), &mut found) };
    if rc != 0 || found.is_null() || pw.pw_name.is_null() {
        return format!("uid {uid}");
    }
    // SAFETY: pw_name points into `buf`, NUL-terminated by getpwuid_r.
    unsafe { std::ffi::CStr::from_ptr(pw.pw_name) }
        .to_string_lossy()
        .into_owned()
}

impl Accept for TcpListener {
    type Io = tokio::net::TcpStream;
    async fn next(&self) -> std::io::Result<Accepted<Self::Io>> {
        let (stream, peer): (_, SocketAddr) = self.accept().await?;
        // Replies are small: do not let Nagle hold them for an ACK.
        let _ = stream.set_nodelay(true);
        Ok((stream, peer.ip(), peer.to_string(), None))
    }
}

impl Accept for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;
    /// Every local user shares one share: the socket's mode already says
    /// who may connect.
    async fn next(&self) -> std::io::Result<Accepted<Self::Io>> {
        let (stream, _) = self.accept().await?;
        // The kernel says who connected; the CLI cannot pretend otherwise.
        let who = stream
            .peer_cred()
            .ok()
            .map(|c| Caller(user_name(c.uid()).into()));
        Ok((stream, IpAddr::from([0, 0, 0, 0]), "local".to_owned(), who))
    }
}

/// Serves `router` on `listener` until `stop`, then lets requests in
/// flight finish (within a bound).
pub async fn serve(
    listener: impl Accept,
    router: axum::Router,
    limits: Limits,
    name: &'static str,
    stop: CancellationToken,
) {
    let table = Table::new(limits.max_connections);
    let graceful = GracefulShutdown::new();
    let mut refused_logged = false;
    let mut crowded_logged = false;
    loop {
        let (stream, ip, peer, who) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.next() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and the like: wait for handles to come back.
                    tracing::warn!(listener = name, error = %e, "accept failed; retrying shortly");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let slot = match table.admit(ip) {
            Ok((slot, None)) => {
                crowded_logged = false;
                slot
            }
            Ok((slot, Some(whose))) => {
                if !crowded_logged {
                    tracing::warn!(listener = name, %peer, crowded_by = %whose, max = limits.max_connections, "connections full: closing idle ones (no request in progress) to make room, the busiest peer's first");
                    crowded_logged = true;
                }
                slot
            }
            Err(why) => {
                if !refused_logged {
                    let (open, of_peer) = table.count(ip);
                    tracing::warn!(listener = name, %peer, open, of_peer, max = limits.max_connections, "connections full ({why:?}), every one mid-request; closing new ones until some end");
                    refused_logged = true;
                }
                drop(stream);
                continue;
            }
        };
        refused_logged = false;
        let service = TowerToHyperService::new(Tracked {
            router: router.clone(),
            busy: slot.busy.clone(),
            who,
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout);
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        let lifetime = limits.lifetime;
        tokio::spawn(async move {
            tokio::select! {
                ended = tokio::time::timeout(lifetime, conn) => match ended {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::debug!(listener = name, %peer, error = %e, "connection ended")
                    }
                    Err(_) => {
                        tracing::debug!(listener = name, %peer, "connection closed at its lifetime")
                    }
                },
                _ = slot.close.cancelled() => {
                    tracing::debug!(listener = name, %peer, "idle connection closed to make room")
                }
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!(
            listener = name,
            "connections still open at shutdown; closed"
        );
    }
}

/// The router, counting the requests in progress on one connection (a
/// connection with none may be closed to make room for another).
#[derive(Clone)]
struct Tracked {
    router: axum::Router,
    busy: Arc<AtomicUsize>,
    /// Who the connection's peer is, when the listener knows.
    who: Option<Caller>,
}

impl<B> tower_service::Service<Request<B>> for Tracked
where
    axum::Router: tower_service::Service<Request<B>>,
    <axum::Router as tower_service::Service<Request<B>>>::Future: Send + 'static,
{
    type Response = <axum::Router as tower_service::Service<Request<B>>>::Response;
    type Error = <axum::Router as tower_service::Service<Request<B>>>::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        tower_service::Service::<Request<B>>::poll_ready(&mut self.router, cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        if let Some(who) = &self.who {
            req.extensions_mut().insert(who.clone());
        }
        let working = InRequest::enter(&self.busy);
        let reply = self.router.call(req);
        Box::pin(async move {
            let reply = reply.await;
            drop(working);
            reply
        })
    }
}

/// Answers 413 to a request whose `Content-Length` passes `max`, before a
/// byte of its body is read. (Bodies without a length are still cut at
/// `max` by the routers' `DefaultBodyLimit`.)
pub(crate) async fn limit_body(max: usize, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        // The body stays unread on the connection: it cannot carry
        // another request, and the client must not try.
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            [(header::CONNECTION, "close")],
            format!("body over {max} bytes"),
        )
            .into_response();
    }
    next.run(req).await
}
