//! The warehouse writer lock: one writing command at a time.
//!
//! Why: several writers allocate ids by reading the largest one and
//! appending the next (member keys, tag snapshot numbers, experiment ids),
//! and some commit to more than one table in steps (features then a tag
//! snapshot; communities, model and snapshot). Delta never conflicts on two
//! blind appends, so two such commands at once would hand out one id twice
//! or interleave their steps. Every command that writes the warehouse holds
//! this lock for its whole run; readers (`sql`, `serve`, `audience`) never
//! take it and never wait for it.
//!
//! How: an exclusive OS file lock (`flock`) on
//! `<warehouse>/_taglake/writer.lock`. The kernel releases it when the
//! holder's process ends, however it ends (a SIGKILL or a crash included),
//! so a killed writer never blocks the next one and there is no stale lease
//! to break. After locking, the holder writes its command line, pid, host
//! and start time into the file; a writer that is refused names them:
//!
//! ```text
//! warehouse /data/warehouse is being written by `taglake tag` (pid 1234 on etl-1, since 2026-11-02 03:00:12 UTC); use --wait to queue
//! ```
//!
//! The holder empties the file when it lets go, so a file that still names
//! a holder when the lock is free was left by a writer that was killed: the
//! next holder learns about it from [`WriterLock::interrupted`].
//!
//! Library functions that allocate ids or commit several tables take a
//! `&WriterLock` as proof that the caller holds it ([`WriterLock::check`]
//! refuses a lock of another warehouse); a [`WriterLock`] can only be made
//! by [`Warehouse::lock_writer`].
//!
//! The lock is only as good as the file system's `flock`: local disks, and
//! NFS v4 (where Linux maps `flock` to byte-range locks), hold it for every
//! machine that mounts the warehouse.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use crate::{Error, ParamMessage, Result, Warehouse};

/// Folder of taglake's own files inside the warehouse (not a table).
pub const STATE_DIR: &str = "_taglake";

/// Whether [`Warehouse::lock_writer`] waits for the current holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Fail at once, naming the holder.
    No,
    /// Block until the holder lets go (or dies).
    Yes,
}

/// Who holds (or last held) the writer lock.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Holder {
    /// The command line, e.g. `taglake tag --as-of 2026-11-01`.
    pub command: String,
    /// Process id.
    pub pid: u32,
    /// Host name.
    pub host: String,
    /// When it took the lock.
    pub since: DateTime<Utc>,
}

impl Holder {
    fn me(command: &str) -> Holder {
        Holder { command: command.to_string(), pid: std::process::id(), host: host_name(), since: Utc::now() }
    }

    /// Whether the holder's process still runs. Only known for a holder on
    /// this host (`None` elsewhere, or where `/proc` is missing).
    pub fn alive(&self) -> Option<bool> {
        if self.host != host_name() || !Path::new("/proc/self").exists() {
            return None;
        }
        Some(Path::new(&format!("/proc/{}", self.pid)).exists())
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` (pid {} on {}, since {})",
            self.command,
            self.pid,
            self.host,
            self.since.format("%Y-%m-%d %H:%M:%S UTC")
        )
    }
}

/// The host name, from the kernel (Linux) or the environment.
fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()))
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown host".into())
}

/// Proof that this process holds the warehouse writer lock; dropping it
/// lets go. See the [module docs](self).
#[derive(Debug)]
pub struct WriterLock {
    file: File,
    root: PathBuf,
    holder: Holder,
    interrupted: Option<Holder>,
}

impl WriterLock {
    /// Who holds it: this process.
    pub fn holder(&self) -> &Holder {
        &self.holder
    }

    /// The writer that held the lock before and was killed before letting
    /// go (its entry was still in the lock file), if any.
    pub fn interrupted(&self) -> Option<&Holder> {
        self.interrupted.as_ref()
    }

    /// Fails unless this is the lock of `wh`.
    pub fn check(&self, wh: &Warehouse) -> Result<()> {
        if self.root == wh.root() {
            return Ok(());
        }
        Err(Error::WrongLock { locked: self.root.clone(), warehouse: wh.root().to_path_buf() })
    }
}

impl Drop for WriterLock {
    fn drop(&mut self) {
        // Emptied while still locked: the next holder sees a clean release.
        // The kernel releases the lock when the file is closed.
        let _ = self.file.set_len(0);
    }
}

/// Path of the lock file of a warehouse.
pub fn lock_path(root: &Path) -> PathBuf {
    root.join(STATE_DIR).join("writer.lock")
}

/// What the lock file names: `Some` holder, or `None` when it is empty
/// (never taken, or released cleanly). Does not lock; a reader (`status`)
/// uses it to say who is writing or who was killed while writing.
pub fn last_holder(root: &Path) -> Option<Holder> {
    let text = std::fs::read_to_string(lock_path(root)).ok()?;
    serde_json::from_str(&text).ok()
}

impl Warehouse {
    /// Takes the writer lock for `command` (the command line to show a
    /// refused writer), waiting for the current holder if `wait` says so.
    /// Hold the returned guard for the whole command.
    pub fn lock_writer(&self, command: &str, wait: Wait) -> Result<WriterLock> {
        let path = lock_path(self.root());
        let io = |source| Error::Io { path: path.clone(), source };
        std::fs::create_dir_all(path.parent().expect("lock file has a folder")).map_err(io)?;
        // Never truncate on open: the file holds the current holder's entry.
        let mut file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) if wait == Wait::Yes => file.lock().map_err(io)?,
            Err(TryLockError::WouldBlock) => {
                return Err(Error::Locked {
                    warehouse: self.root().to_path_buf(),
                    holder: refused_by(&path),
                    queue: ParamMessage::text("use ").then_param("wait").then_text(" to queue"),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        let mut previous = String::new();
        file.read_to_string(&mut previous).map_err(io)?;
        let interrupted = serde_json::from_str(&previous).ok();
        let holder = Holder::me(command);
        let entry = serde_json::to_string(&holder).expect("a holder serializes");
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(entry.as_bytes()).and_then(|()| file.sync_data()).map_err(io)?;
        Ok(WriterLock { file, root: self.root().to_path_buf(), holder, interrupted })
    }
}

/// The holder named in a lock file we could not lock. Right after taking
/// the lock, a holder has not written its entry yet: read again briefly.
fn refused_by(path: &Path) -> String {
    for _ in 0..50 {
        if let Some(h) = std::fs::read_to_string(path).ok().and_then(|t| serde_json::from_str::<Holder>(&t).ok()) {
            return h.to_string();
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    "another taglake process (it has not written its name yet)".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused_with_the_holders_name_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let wh = Warehouse::open(dir.path()).unwrap();
        let first = wh.lock_writer("taglake tag --as-of 2026-11-01", Wait::No).unwrap();
        assert!(first.interrupted().is_none());
        first.check(&wh).unwrap();
        let err = wh.lock_writer("taglake cluster", Wait::No).unwrap_err().to_string();
        let since = first.holder().since.format("%Y-%m-%d %H:%M:%S UTC");
        assert_eq!(
            err,
            format!(
                "warehouse {} is being written by `taglake tag --as-of 2026-11-01` (pid {} on {}, since {since}); \
                 use `wait` to queue",
                wh.root().display(),
                std::process::id(),
                host_name()
            )
        );
        assert_eq!(last_holder(wh.root()).as_ref(), Some(first.holder()));
        drop(first);
        assert_eq!(last_holder(wh.root()), None, "a clean release empties the file");
        let second = wh.lock_writer("taglake cluster", Wait::No).unwrap();
        assert!(second.interrupted().is_none(), "the first let go cleanly");
    }

    #[test]
    fn a_waiting_writer_gets_the_lock_when_the_holder_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let wh = Warehouse::open(dir.path()).unwrap();
        let first = wh.lock_writer("first", Wait::No).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = {
            let wh = wh.clone();
            std::thread::spawn(move || {
                let lock = wh.lock_writer("second", Wait::Yes).unwrap();
                tx.send(lock.holder().command.clone()).unwrap();
            })
        };
        // While the first holds it, the second cannot have it.
        assert!(rx.recv_timeout(std::time::Duration::from_millis(200)).is_err());
        drop(first);
        assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(60)).unwrap(), "second");
        waiter.join().unwrap();
    }

    #[test]
    fn a_holder_that_never_let_go_is_reported_and_a_lock_of_another_warehouse_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let wh = Warehouse::open(dir.path().join("a")).unwrap();
        // What a killed holder leaves: its entry, and no lock (the kernel
        // dropped it with the process).
        let gone = Holder { command: "taglake cluster".into(), pid: 4_000_000, host: host_name(), since: Utc::now() };
        std::fs::create_dir_all(wh.root().join(STATE_DIR)).unwrap();
        std::fs::write(lock_path(wh.root()), serde_json::to_string(&gone).unwrap()).unwrap();
        assert_eq!(last_holder(wh.root()).unwrap().alive(), Some(false));
        let lock = wh.lock_writer("taglake cluster", Wait::No).unwrap();
        assert_eq!(lock.interrupted(), Some(&gone));
        assert_eq!(last_holder(wh.root()).unwrap().alive(), Some(true), "the new holder is this process");
        let other = Warehouse::open(dir.path().join("b")).unwrap();
        let err = lock.check(&other).unwrap_err().to_string();
        assert!(err.contains("writer lock of warehouse") && err.contains("/a") && err.contains("/b"), "{err}");
    }
}
