//! Knowing when the store is damaged.
//!
//! A ledger that silently forgot orders pays them again, so the store is
//! checked at every open against a **seal** kept beside it.
//!
//! - The store holds a ledger id (`m/id`, random, made at creation) and a
//!   change counter (`m/seq`) that counts every order write. Writers
//!   count in memory after their insert; each group-commit round writes
//!   the count into the store before its flush, so the counter sits in
//!   sled's log after every change it counts.
//! - The seal file (`seal` in the state folder) holds the id and the
//!   highest counter known to be on stable storage: the group-commit
//!   thread writes the counter, makes the store durable, then writes the
//!   counter to the seal and fsyncs it. So the seal never runs ahead of
//!   what power loss can take away.
//! - At open, the store must carry the seal's id and a counter at least
//!   the seal's. A deleted or replaced `db` (no id, or another id), a
//!   truncated or damaged log that sled rolled back to an earlier point,
//!   and an older copy of `db` put back all fail that; so does a record
//!   that no longer decodes (checked by a scan of every order and budget).
//!
//! The file has two 64-byte slots written in turn, each with a checksum:
//! a write torn by power loss spoils one slot, and the other still holds
//! the previous counter (which is only lower, so still safe to check
//! against). One `fsync` a group commit; no rename, no directory sync.
//!
//! What it cannot see: the whole state folder, seal and all, replaced by
//! an older copy. `vipd store restore` is the way back to a backup, and
//! it holds new orders until an operator releases them.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use md5::{Digest, Md5};

const MAGIC: &[u8; 8] = b"VIPDSEAL";
const VERSION: u32 = 1;
const SLOT: usize = 64;
/// Bytes covered by the checksum: magic, version, id, seq.
const BODY: usize = 8 + 4 + 16 + 8;

/// What the seal says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seal {
    /// The ledger id the store must carry.
    pub id: [u8; 16],
    /// The change counter known durable.
    pub seq: u64,
}

fn encode(seal: Seal) -> [u8; SLOT] {
    let mut b = [0u8; SLOT];
    b[..8].copy_from_slice(MAGIC);
    b[8..12].copy_from_slice(&VERSION.to_be_bytes());
    b[12..28].copy_from_slice(&seal.id);
    b[28..36].copy_from_slice(&seal.seq.to_be_bytes());
    let sum = Md5::digest(&b[..BODY]);
    b[BODY..BODY + 16].copy_from_slice(&sum);
    b
}

fn decode(b: &[u8]) -> Option<Seal> {
    if b.len() < SLOT || &b[..8] != MAGIC || b[8..12] != VERSION.to_be_bytes() {
        return None;
    }
    if Md5::digest(&b[..BODY])[..] != b[BODY..BODY + 16] {
        return None;
    }
    Some(Seal {
        id: b[12..28].try_into().ok()?,
        seq: u64::from_be_bytes(b[28..36].try_into().ok()?),
    })
}

/// Reads the seal: `Ok(None)` when there is no seal file, an error when
/// there is one but neither slot is valid.
pub fn read(path: &Path) -> Result<Option<Seal>, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read the seal {}: {e}", path.display())),
    };
    bytes
        .chunks(SLOT)
        .take(2)
        .filter_map(decode)
        .max_by_key(|s| s.seq)
        .map(Some)
        .ok_or_else(|| {
            format!(
                "the seal {} is unreadable (both slots fail their checksum)",
                path.display()
            )
        })
}

/// Writes seals in turn into the two slots.
#[derive(Debug)]
pub struct SealWriter {
    file: File,
    id: [u8; 16],
    next_slot: u64,
    /// The last counter written.
    pub sealed: u64,
}

impl SealWriter {
    /// Opens (or creates) the seal file for the ledger `id`, whose counter
    /// on stable storage is `seq`, and writes that down at once.
    pub fn create(path: &Path, id: [u8; 16], seq: u64) -> std::io::Result<SealWriter> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let mut w = SealWriter {
            file,
            id,
            next_slot: 0,
            sealed: 0,
        };
        // Both slots, so that no stale slot of another ledger survives.
        w.write(seq)?;
        w.write(seq)?;
        if let Some(parent) = path.parent() {
            File::open(parent)?.sync_all()?;
        }
        Ok(w)
    }

    /// Records that changes up to `seq` are on stable storage.
    pub fn write(&mut self, seq: u64) -> std::io::Result<()> {
        let slot = self.next_slot % 2;
        self.file
            .write_all_at(&encode(Seal { id: self.id, seq }), slot * SLOT as u64)?;
        self.file.sync_data()?;
        self.next_slot += 1;
        self.sealed = seq;
        Ok(())
    }
}

/// A fresh ledger id.
pub(crate) fn new_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    let mut rng = fastrand::Rng::new();
    // Mixed with the time, so two stores made in the same instant by
    // differently seeded generators still differ.
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let h = Md5::digest([rng.u128(..).to_be_bytes(), t.to_be_bytes()].concat());
    id.copy_from_slice(&h);
    id
}

/// The id as hex, for messages.
pub(crate) fn hex(id: &[u8; 16]) -> String {
    crate::units::hex_lower(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_alternate_and_a_torn_slot_falls_back_to_the_other() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seal");
        assert_eq!(read(&path).unwrap(), None);
        let id = new_id();
        let mut w = SealWriter::create(&path, id, 3).unwrap();
        w.write(7).unwrap();
        assert_eq!(read(&path).unwrap(), Some(Seal { id, seq: 7 }));
        w.write(9).unwrap();
        assert_eq!(read(&path).unwrap().unwrap().seq, 9);
        // Tear the newest slot (slot 1 after writes 3, 3, 7, 9).
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[SLOT + 30] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(read(&path).unwrap().unwrap().seq, 7);
        // Both torn: unreadable, never "no seal".
        bytes[30] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert!(read(&path).unwrap_err().contains("unreadable"));
        std::fs::write(&path, b"").unwrap();
        assert!(read(&path).is_err());
    }

    #[test]
    fn ids_differ() {
        assert_ne!(new_id(), new_id());
    }
}
