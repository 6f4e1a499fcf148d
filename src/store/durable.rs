//! What makes a sled flush durable.
//!
//! sled 0.34 writes its log to one file, `db`, and "flushes" it with `sync_file_range`, which
//! starts and waits for the writeback of the written range and nothing more: it neither flushes
//! the disk's write cache nor commits the file's metadata, so the file size that covers the new
//! bytes may not survive a power cut (on ext4 everything since the last journal commit, a few
//! seconds, is gone). It syncs the file properly only from its background flusher, once a
//! second. Files it creates (`conf`, and `blobs/<lsn>` for a page too large for the log) are
//! never synced, nor are the directory entries naming them.
//!
//! [`DataSync`] adds what is missing after each flush: `fdatasync` of `db` (data, the disk's
//! cache and the size that covers it, not timestamps), and of any blob not synced yet. Together
//! with sled's flush just before it, a batch is on the disk when [`DataSync::sync`] returns; one
//! call per group commit, however many deliveries it carries.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

/// The files of one sled database, synced after each of its flushes.
#[derive(Debug)]
pub struct DataSync {
    db: File,
    blobs: PathBuf,
    /// Blob files known to be on disk.
    synced_blobs: Mutex<HashSet<OsString>>,
}

impl DataSync {
    /// Opens the files of the sled database at `path` (already opened by sled, so they exist),
    /// and makes what sled created on disk durable: its files, their names in `path`, and the
    /// name of `path` in its parent.
    pub fn open(path: &Path) -> io::Result<Self> {
        let db = File::options().read(true).write(true).open(path.join("db"))?;
        db.sync_all()?;
        File::open(path.join("conf"))?.sync_all()?;
        let blobs = path.join("blobs");
        let sync = Self { db, blobs, synced_blobs: Mutex::default() };
        sync.sync_blobs()?;
        sync_dir(path)?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        Ok(sync)
    }

    /// Makes everything sled has flushed durable; call after each `flush`.
    pub fn sync(&self) -> io::Result<()> {
        self.db.sync_data()?;
        self.sync_blobs()
    }

    /// Syncs blob files not synced yet, then the directory naming them. A blob is written once
    /// and never changed, so each is synced once; sled removes them when no longer needed.
    fn sync_blobs(&self) -> io::Result<()> {
        let entries = match std::fs::read_dir(&self.blobs) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut synced = self.synced_blobs.lock().unwrap_or_else(PoisonError::into_inner);
        let mut present = HashSet::new();
        let mut added = false;
        for entry in entries {
            let name = entry?.file_name();
            if !synced.contains(&name) {
                match File::open(self.blobs.join(&name)) {
                    Ok(file) => file.sync_data()?,
                    // Removed by sled since the listing: nothing left to make durable.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
                added = true;
            }
            present.insert(name);
        }
        if added {
            sync_dir(&self.blobs)?;
        }
        *synced = present;
        Ok(())
    }
}

/// `fsync` of a directory: the names in it, as created or removed so far, are on disk.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_files_of_an_open_sled_database_are_found_and_synced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let db = sled::Config::new().path(&path).open().unwrap();
        let sync = DataSync::open(&path).unwrap();
        let synced = || sync.synced_blobs.lock().unwrap().clone();
        db.insert(b"k", vec![7u8; 1024]).unwrap();
        db.flush().unwrap();
        sync.sync().unwrap();
        // A blob (a value too large for sled's log) is synced once, and forgotten once removed.
        std::fs::create_dir_all(path.join("blobs")).unwrap();
        std::fs::write(path.join("blobs").join("42"), b"blob").unwrap();
        sync.sync().unwrap();
        assert!(synced().contains(&OsString::from("42")));
        std::fs::remove_file(path.join("blobs").join("42")).unwrap();
        sync.sync().unwrap();
        assert!(synced().is_empty());
    }

    #[test]
    fn a_database_that_is_not_there_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(DataSync::open(dir.path()).unwrap_err().kind(), io::ErrorKind::NotFound);
    }
}
