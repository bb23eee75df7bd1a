//! Who holds a listener's connections, so that no one peer can hold them
//! all: each peer address may hold at most a share of the cap, and when
//! the cap is reached a new connection takes the place of an idle one (no
//! request in progress: still sending its headers, or kept alive between
//! requests), the busiest peer's oldest first. A connection in the middle
//! of a request is never closed for another; only when every connection
//! is mid-request is a new one refused.
//!
//! The vendor's signed callbacks then get through while a peer holds
//! hundreds of idle connections, or reopens them as fast as they close.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

/// The connections of one listener.
#[derive(Debug)]
pub(crate) struct Table {
    max_total: usize,
    max_per_peer: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    conns: HashMap<u64, Conn>,
    per_peer: HashMap<IpAddr, usize>,
}

#[derive(Debug)]
struct Conn {
    peer: IpAddr,
    since: Instant,
    busy: Arc<AtomicUsize>,
    close: CancellationToken,
}

/// Why a connection was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Its peer holds its share, all of it mid-request.
    PeerFull,
    /// The listener is full, every connection mid-request.
    Full,
}

/// A connection's place in the table; leaving it (drop) frees the place.
#[derive(Debug)]
pub(crate) struct Slot {
    table: Arc<Table>,
    id: u64,
    /// Requests in progress on the connection.
    pub busy: Arc<AtomicUsize>,
    /// Cancelled when another connection takes this one's place.
    pub close: CancellationToken,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.table.lock().remove(self.id);
    }
}

/// Counts a request in progress while it lives.
pub(crate) struct InRequest(Arc<AtomicUsize>);

impl InRequest {
    pub fn enter(busy: &Arc<AtomicUsize>) -> InRequest {
        busy.fetch_add(1, Ordering::SeqCst);
        InRequest(busy.clone())
    }
}

impl Drop for InRequest {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Table {
    /// A table for `max_total` connections, each peer holding at most a
    /// quarter of them (at least 4).
    pub fn new(max_total: usize) -> Arc<Table> {
        Arc::new(Table {
            max_total: max_total.max(1),
            max_per_peer: (max_total / 4).max(4),
            inner: Mutex::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a connection from `peer`, closing an idle one to make room
    /// when its peer's share or the listener is full; says whose it closed.
    pub(crate) fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<(Slot, Option<IpAddr>), Refused> {
        let mut inner = self.lock();
        let mut closed = None;
        if inner.per_peer.get(&peer).copied().unwrap_or(0) >= self.max_per_peer {
            // A peer over its share makes room among its own.
            let own = inner
                .oldest_idle(|c| c.peer == peer)
                .ok_or(Refused::PeerFull)?;
            inner.evict(own);
            closed = Some(peer);
        }
        if inner.conns.len() >= self.max_total {
            let busiest = inner.busiest_with_idle().ok_or(Refused::Full)?;
            let victim = inner
                .oldest_idle(|c| c.peer == busiest)
                .ok_or(Refused::Full)?;
            inner.evict(victim);
            closed = Some(busiest);
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let conn = Conn {
            peer,
            since: Instant::now(),
            busy: Arc::default(),
            close: CancellationToken::new(),
        };
        let slot = Slot {
            table: self.clone(),
            id,
            busy: conn.busy.clone(),
            close: conn.close.clone(),
        };
        *inner.per_peer.entry(peer).or_default() += 1;
        inner.conns.insert(id, conn);
        Ok((slot, closed))
    }

    /// Open connections, and those of `peer`.
    pub fn count(&self, peer: IpAddr) -> (usize, usize) {
        let inner = self.lock();
        (
            inner.conns.len(),
            inner.per_peer.get(&peer).copied().unwrap_or(0),
        )
    }
}

impl Inner {
    fn remove(&mut self, id: u64) -> Option<Conn> {
        let conn = self.conns.remove(&id)?;
        if let Some(n) = self.per_peer.get_mut(&conn.peer) {
            *n -= 1;
            if *n == 0 {
                self.per_peer.remove(&conn.peer);
            }
        }
        Some(conn)
    }

    fn evict(&mut self, id: u64) {
        if let Some(conn) = self.remove(id) {
            conn.close.cancel();
        }
    }

    fn oldest_idle(&self, which: impl Fn(&Conn) -> bool) -> Option<u64> {
        self.conns
            .iter()
            .filter(|(_, c)| which(c) && c.busy.load(Ordering::SeqCst) == 0)
            .min_by_key(|(id, c)| (c.since, **id))
            .map(|(id, _)| *id)
    }

    /// The peer holding the most connections among those with an idle one.
    fn busiest_with_idle(&self) -> Option<IpAddr> {
        let mut idle: HashMap<IpAddr, usize> = HashMap::new();
        for c in self.conns.values() {
            if c.busy.load(Ordering::SeqCst) == 0 {
                idle.entry(c.peer).or_default();
            }
        }
        idle.into_keys()
            .max_by_key(|p| (self.per_peer.get(p).copied().unwrap_or(0), *p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, n])
    }

    #[test]
    fn one_peer_holds_at_most_its_share_and_makes_room_among_its_own() {
        let t = Table::new(16);
        let greedy: Vec<Slot> = (0..4).map(|_| t.admit(ip(2)).unwrap().0).collect();
        assert_eq!(t.count(ip(2)), (4, 4));
        // Over its share: its oldest idle connection is closed for the new.
        let (fifth, closed) = t.admit(ip(2)).unwrap();
        assert_eq!(closed, Some(ip(2)));
        assert!(greedy[0].close.is_cancelled());
        assert_eq!(t.count(ip(2)), (4, 4));
        // All of its share mid-request: refused.
        let _busy: Vec<InRequest> = greedy[1..]
            .iter()
            .chain([&fifth])
            .map(|s| InRequest::enter(&s.busy))
            .collect();
        assert_eq!(t.admit(ip(2)).unwrap_err(), Refused::PeerFull);
        // Another peer still gets in.
        assert!(t.admit(ip(1)).is_ok());
    }

    #[test]
    fn a_full_listener_closes_the_busiest_peers_oldest_idle_connection() {
        let t = Table::new(8);
        let a: Vec<Slot> = (0..4).map(|_| t.admit(ip(2)).unwrap().0).collect();
        let b: Vec<Slot> = (0..3).map(|_| t.admit(ip(3)).unwrap().0).collect();
        let (mid, _) = t.admit(ip(4)).unwrap();
        let _working = InRequest::enter(&mid.busy);
        assert_eq!(t.count(ip(1)).0, 8);
        let (vendor, closed) = t.admit(ip(1)).unwrap();
        assert_eq!(closed, Some(ip(2)));
        assert!(a[0].close.is_cancelled(), "the busiest peer's oldest");
        assert!(!b.iter().any(|s| s.close.is_cancelled()));
        assert!(!mid.close.is_cancelled(), "never one mid-request");
        drop(vendor);
        assert_eq!(t.count(ip(1)), (7, 0), "a dropped slot frees its place");
        // Everyone mid-request: a new connection is refused.
        let t = Table::new(2);
        let (x, _) = t.admit(ip(2)).unwrap();
        let (y, _) = t.admit(ip(3)).unwrap();
        let _r = (InRequest::enter(&x.busy), InRequest::enter(&y.busy));
        assert_eq!(t.admit(ip(1)).unwrap_err(), Refused::Full);
    }
}
