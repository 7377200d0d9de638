//! One service per SQLite store: the service holds an exclusive lock on `<store>.lock` for its
//! lifetime (an advisory `flock`, released by the kernel when the process ends, however
//! it ends). Two services on one store would both take the same messages and race each
//! other's sink cursor; `aq-ingest resend` must not run beside a service whose writer
//! keeps its cursor in memory. Read-only commands (`report`) need no lock.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use super::{StoreConfig, StoreError};

/// Held while the store is ours; dropping it releases the lock.
#[derive(Debug)]
pub struct StoreLock {
    _file: Option<File>,
}

/// The lock file next to the store: `aq-ingest.db` → `aq-ingest.db.lock`.
fn lock_path(store: &Path) -> PathBuf {
    let mut name = store.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

impl StoreLock {
    /// Takes the lock, or says who holds it.
    pub fn acquire(cfg: &StoreConfig) -> Result<StoreLock, StoreError> {
        if cfg.backend == super::Backend::Postgres {
            // Several instances share a PostgreSQL store by design; the roles only one
            // may run are chosen there (`store::roles`).
            return Ok(StoreLock { _file: None });
        }
        if let Some(dir) = cfg.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
        }
        let path = lock_path(&cfg.path);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| StoreError::Lock {
                path: path.clone(),
                source,
            })?;
        match file.try_lock() {
            Ok(()) => Ok(StoreLock { _file: Some(file) }),
            Err(TryLockError::WouldBlock) => Err(StoreError::InUse {
                store: cfg.path.clone(),
                lock: path,
            }),
            Err(TryLockError::Error(source)) => Err(StoreError::Lock { path, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = StoreConfig {
            path: dir.path().join("sub/aq.db"),
            ..StoreConfig::default()
        };
        let first = StoreLock::acquire(&cfg).unwrap();
        let err = StoreLock::acquire(&cfg).unwrap_err();
        assert!(matches!(err, StoreError::InUse { .. }), "{err}");
        assert!(err.to_string().contains("aq.db.lock"), "{err}");
        drop(first);
        StoreLock::acquire(&cfg).unwrap();
    }
}
