//! The orders still in motion, kept decoded in memory.
//!
//! An order's transitions follow each other within seconds (planned,
//! sent, the reply, the callback, the verification), and each reads the
//! order before changing it. Reading it back from sled and decoding it
//! every time costs more than the change itself, so the ledger keeps a
//! copy of every open order (planned, sent, pending, unknown) it has
//! written since it opened. sled stays the record: the copy is replaced
//! only after sled took the write, and an order no copy holds (closed, or
//! not written since the open) is read from sled as before. Closed orders
//! leave, even those still waiting for their renewal to show (one more
//! write, minutes later): the map holds the orders in flight, not the
//! day's payments.

use std::collections::HashMap;
use std::sync::Mutex;

use super::Order;

/// The open orders written since the store opened, by key.
#[derive(Debug, Default)]
pub(super) struct Resident {
    orders: Mutex<HashMap<String, Order>>,
}

impl Resident {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Order>> {
        self.orders.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `order` as sled now holds it.
    pub(super) fn written(&self, order: &Order) {
        let mut orders = self.lock();
        if order.state.is_open() {
            orders.insert(order.key.clone(), order.clone());
        } else {
            orders.remove(&order.key);
        }
    }

    /// The copy of `key`, when one is kept.
    pub(super) fn get(&self, key: &str) -> Option<Order> {
        self.lock().get(key).cloned()
    }

    /// How many orders are kept.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }
}
