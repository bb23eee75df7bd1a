//! The state folder itself: private to vipd's user, and writable before
//! anything in it is read.
//!
//! The store holds rotated OAuth tokens and every order, so the folder is
//! created `0700` and every file in it made `0600`, whatever the umask vipd
//! was started with (the unit's `UMask=0077` covers only systemd). A folder
//! that already exists with looser modes is the operator's to change: it
//! is named in a warning, never changed.
//!
//! A folder vipd cannot write in (a read-only mount, another user's files,
//! a full disk) is said to be that, before sled opens it: it is not
//! damage, and restoring a backup or accepting damage are the wrong steps.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use super::LedgerError;

/// Creates `dir` (`0700`) if it is missing, warns when it exists with
/// group or other permissions, and fails with [`LedgerError::NotWritable`]
/// when vipd cannot write in it or in one of its files.
pub(crate) fn prepare(dir: &Path) -> Result<(), LedgerError> {
    let not_writable = |reason: String| LedgerError::NotWritable {
        path: dir.display().to_string(),
        reason,
    };
    if !dir.is_dir() {
        create(dir).map_err(not_writable)?;
    } else if let Ok(meta) = std::fs::metadata(dir) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                dir = %dir.display(),
                "the state folder is open to other users (mode {mode:04o}); it holds tokens and \
                 the ledger: `chmod 700` it"
            );
        }
    }
    probe(dir).map_err(not_writable)
}

/// Creates `dir` `0700` if it is missing (its parents too), whatever the
/// umask; nothing else (a folder that exists is [`prepare`]'s to judge).
pub fn create(dir: &Path) -> Result<(), String> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create it: {e}"))?;
    // The mode asked for is masked by the umask; this one is not.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("cannot make it private: {e}"))
}

/// Makes every file under `dir` `0600` and every folder `0700` (sled
/// creates its files with the process's umask). Returns how many it
/// changed.
pub(crate) fn make_private(dir: &Path) -> std::io::Result<usize> {
    let mut changed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        let want = if meta.is_dir() {
            changed += make_private(&entry.path())?;
            0o700
        } else if meta.is_file() {
            0o600
        } else {
            continue;
        };
        if meta.permissions().mode() & 0o777 != want {
            std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(want))?;
            changed += 1;
        }
    }
    Ok(changed)
}

/// Whether vipd can write in `dir` and to each file already in it (root
/// passes permission checks, not a read-only mount). Writes nothing but a
/// probe file it removes.
fn probe(dir: &Path) -> Result<(), String> {
    let test = dir.join(".vipd-write-probe");
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&test)
        .map_err(|e| format!("cannot create a file in it: {e}"))?;
    let _ = std::fs::remove_file(&test);
    let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot list it: {e}"))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_file() {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
    }
    Ok(())
}

/// Whether sled's error is the file system refusing writes (permissions,
/// a read-only mount, no space): not damage.
pub(crate) fn refused_write(e: &sled::Error) -> bool {
    match e {
        sled::Error::Io(io) => matches!(
            io.kind(),
            std::io::ErrorKind::PermissionDenied
                | std::io::ErrorKind::ReadOnlyFilesystem
                | std::io::ErrorKind::StorageFull
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_new_folder_is_private_whatever_the_umask() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("a/state");
        prepare(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        std::fs::write(dir.join("db"), "x").unwrap();
        std::fs::set_permissions(dir.join("db"), std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::create_dir(dir.join("blobs")).unwrap();
        std::fs::write(dir.join("blobs/1"), "x").unwrap();
        std::fs::set_permissions(dir.join("blobs/1"), std::fs::Permissions::from_mode(0o664))
            .unwrap();
        assert!(make_private(&dir).unwrap() >= 2);
        assert_eq!(mode(&dir.join("db")), 0o600);
        assert_eq!(mode(&dir.join("blobs")), 0o700);
        assert_eq!(mode(&dir.join("blobs/1")), 0o600);
        assert_eq!(make_private(&dir).unwrap(), 0, "nothing left to change");
        assert!(!dir.join(".vipd-write-probe").exists());
    }
}
