//! The state directory at start: created, checked for writability (a probe file is
//! created, written, synced and removed) and locked against a second daemon
//! (`flock` on `<state_dir>/lock`, which holds the holder's pid), all before any
//! history is read.

use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Name of the lock file in the state directory.
pub const LOCK_FILE: &str = "lock";

#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    #[error("state directory {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "state directory {path} is not writable ({source}); nothing could be saved, so nagare does not start"
    )]
    NotWritable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "state directory {path} is in use by another nagare (pid {holder}, holding {lock}); stop it or use another --state-dir"
    )]
    Locked {
        path: PathBuf,
        lock: PathBuf,
        holder: String,
    },
    #[error("cannot lock {lock}: {source}")]
    Lock {
        lock: PathBuf,
        source: std::io::Error,
    },
}

/// The held lock of a state directory; released when dropped (or when the process
/// ends, however it ends).
#[derive(Debug)]
pub struct StateDirLock {
    _file: std::fs::File,
    pub path: PathBuf,
}

/// Creates `dir` if needed and checks that files can be created, written, synced and
/// removed in it.
pub fn prepare(dir: &Path) -> Result<(), StateDirError> {
    std::fs::create_dir_all(dir).map_err(|source| StateDirError::Create {
        path: dir.to_path_buf(),
        source,
    })?;
    let probe = dir.join(format!(".write-probe.{}", std::process::id()));
    let res = (|| {
        let mut f = std::fs::File::create(&probe)?;
        f.write_all(b"nagare write probe\n")?;
        f.sync_all()?;
        drop(f);
        std::fs::remove_file(&probe)
    })();
    res.map_err(|source| {
        let _ = std::fs::remove_file(&probe);
        StateDirError::NotWritable {
            path: dir.to_path_buf(),
            source,
        }
    })
}

/// Takes the exclusive lock of `dir` (without waiting) and writes our pid into it.
pub fn lock(dir: &Path) -> Result<StateDirLock, StateDirError> {
    let path = dir.join(LOCK_FILE);
    let err = |source| StateDirError::Lock {
        lock: path.clone(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(err)?;
    // SAFETY: flock on a descriptor we own; no memory is passed.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let mut holder = String::new();
            let _ = f.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(StateDirError::Locked {
                path: dir.to_path_buf(),
                lock: path.clone(),
                holder: if holder.is_empty() {
                    "unknown".into()
                } else {
                    holder.chars().take(32).collect()
                },
            });
        }
        return Err(err(e));
    }
    f.set_len(0).map_err(err)?;
    f.rewind().map_err(err)?;
    writeln!(f, "{}", std::process::id()).map_err(err)?;
    f.sync_all().map_err(err)?;
    Ok(StateDirLock { _file: f, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock(dir.path()).unwrap();
        let pid = std::process::id().to_string();
        assert_eq!(std::fs::read_to_string(&held.path).unwrap().trim(), pid);
        // flock locks belong to the open file description: a second open conflicts
        match lock(dir.path()) {
            Err(StateDirError::Locked { holder, .. }) => assert_eq!(holder, pid),
            other => panic!("{other:?}"),
        }
        drop(held);
        lock(dir.path()).unwrap();
    }

    #[test]
    fn a_path_under_a_regular_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        assert!(prepare(&file.join("state")).is_err());
        assert!(prepare(dir.path()).is_ok());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "probe removed"
        );
    }
}
