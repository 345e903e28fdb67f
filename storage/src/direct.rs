//! Sequential writes of large files that bypass the page cache.
//!
//! A buffered write copies every byte into the page cache, and pages the
//! cache takes from free memory are the costliest memory a process can
//! touch: the kernel must find and map them, and on a virtual machine
//! that returns free memory to its host (free page reporting, as on the
//! machine this project is measured on) the host must fault each one back
//! in. Writing a new file there cost ~1.7 CPU-seconds a GB (`dd` of 3 GB
//! to a new file: 5.1 s of system time; the same through `O_DIRECT`: 0.4 s),
//! and those copies were 6–7 % of an orders backfill's CPU for its key runs
//! alone. Files written once and read back rarely (the key index's runs:
//! the spills of one ingest and the index itself) gain nothing from the
//! cache, so [`DirectWriter`] writes them with `O_DIRECT` from one aligned
//! buffer: the device reads the buffer, and no page is copied or cached.
//!
//! Where the file system refuses direct I/O (tmpfs, some network and FUSE
//! file systems refuse `O_DIRECT` at open or at the first write) and on
//! systems other than Linux, the same writer writes through the cache.
//! Either way the bytes on disk are the same: the last block, padded to the
//! alignment for the device, is cut back to the exact length at
//! [`DirectWriter::finish`].

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Alignment of the buffer, the file offsets and the write lengths for
/// `O_DIRECT`: the page size, a multiple of every device's logical block.
const ALIGN: usize = 4096;
/// Bytes written per system call. Direct writes wait for the device, so
/// fewer, larger writes keep it streaming.
const BUFFER: usize = 2 << 20;

/// A file written sequentially from its start, through `O_DIRECT` where
/// the file system allows it (see the module docs).
pub struct DirectWriter {
    path: PathBuf,
    /// `None` once finished.
    file: Option<File>,
    direct: bool,
    /// `BUFFER + ALIGN` bytes; the aligned region starts at `start`.
    buf: Vec<u8>,
    start: usize,
    /// Bytes waiting in the aligned region.
    len: usize,
    /// Bytes written to the file.
    flushed: u64,
}

impl DirectWriter {
    /// Creates (or truncates) the file at `path`.
    pub fn create(path: &Path) -> std::io::Result<DirectWriter> {
        let (file, direct) = match open_direct(path) {
            Ok(file) => (file, true),
            Err(_) => (File::create(path)?, false),
        };
        let buf = vec![0u8; BUFFER + ALIGN];
        let start = buf.as_ptr().align_offset(ALIGN);
        Ok(DirectWriter { path: path.to_path_buf(), file: Some(file), direct, buf, start, len: 0, flushed: 0 })
    }

    /// Whether the writes bypass the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// Bytes written so far (buffered or not).
    pub fn position(&self) -> u64 {
        self.flushed + self.len as u64
    }

    /// Appends `data`.
    pub fn write_all(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            let n = (BUFFER - self.len).min(data.len());
            let at = self.start + self.len;
            self.buf[at..at + n].copy_from_slice(&data[..n]);
            self.len += n;
            data = &data[n..];
            if self.len == BUFFER {
                self.flush_region(BUFFER)?;
            }
        }
        Ok(())
    }

    /// Writes the first `n` bytes of the aligned region (a multiple of
    /// [`ALIGN`] when direct) and empties it.
    fn flush_region(&mut self, n: usize) -> std::io::Result<()> {
        let region = self.start..self.start + n;
        let Some(file) = self.file.as_mut() else { return Err(std::io::Error::other("written after finish")) };
        match file.write_all(&self.buf[region.clone()]) {
            Ok(()) => {}
            // The file system took the flag at open but refuses direct
            // writes: nothing is written yet, so go on through the cache.
            Err(e) if self.direct && self.flushed == 0 && e.raw_os_error() == Some(EINVAL) => {
                let mut file = File::create(&self.path)?;
                file.write_all(&self.buf[region])?;
                self.file = Some(file);
                self.direct = false;
            }
            Err(e) => return Err(e),
        }
        self.flushed += n as u64;
        self.len = 0;
        Ok(())
    }

    /// Writes what is buffered and returns the file, exactly
    /// [`DirectWriter::position`] bytes long and open for (buffered)
    /// writing, to patch a header and sync. Takes `&mut self` so that a
    /// writer owned by a Parquet writer can be finished in place; writes
    /// after it fail.
    pub fn finish(&mut self) -> std::io::Result<File> {
        let total = self.position();
        if self.len > 0 {
            let n = if self.direct { self.len.next_multiple_of(ALIGN) } else { self.len };
            let at = self.start + self.len;
            self.buf[at..self.start + n].fill(0);
            self.flush_region(n)?;
        }
        let file = self.file.take().ok_or_else(|| std::io::Error::other("finished twice"))?;
        if !self.direct {
            return Ok(file);
        }
        drop(file);
        let file = OpenOptions::new().write(true).open(&self.path)?;
        file.set_len(total)?;
        Ok(file)
    }
}

impl std::io::Write for DirectWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        DirectWriter::write_all(self, buf)
    }

    /// Bytes are written when the buffer fills and at
    /// [`DirectWriter::finish`]; Parquet's flushes change nothing.
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(target_os = "linux")]
const EINVAL: i32 = libc::EINVAL;
#[cfg(not(target_os = "linux"))]
const EINVAL: i32 = 22;

#[cfg(target_os = "linux")]
fn open_direct(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new().write(true).create(true).truncate(true).custom_flags(libc::O_DIRECT).open(path)
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_path: &Path) -> std::io::Result<File> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn written(dir: &Path, pieces: &[Vec<u8>]) -> (Vec<u8>, bool) {
        let path = dir.join("f");
        let mut w = DirectWriter::create(&path).unwrap();
        for p in pieces {
            w.write_all(p).unwrap();
        }
        let position = w.position();
        let direct = w.is_direct();
        drop(w.finish().unwrap());
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len() as u64, position);
        (bytes, direct)
    }

    #[test]
    fn a_file_of_any_length_reads_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0, 1, ALIGN - 1, ALIGN, ALIGN + 1, BUFFER - 1, BUFFER, BUFFER + 1, 2 * BUFFER + 123] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let (bytes, _) = written(dir.path(), std::slice::from_ref(&data));
            assert_eq!(bytes, data, "length {len}");
        }
    }

    #[test]
    fn a_header_patched_after_finish_lands_at_the_start() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h");
        let mut w = DirectWriter::create(&path).unwrap();
        w.write_all(&[0u8; 128]).unwrap();
        w.write_all(&vec![9u8; BUFFER + 5]).unwrap();
        let file = w.finish().unwrap();
        file.write_all_at(b"HEAD", 0).unwrap();
        file.sync_all().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..4], b"HEAD");
        assert!(bytes[4..128].iter().all(|b| *b == 0));
        assert!(bytes[128..].iter().all(|b| *b == 9));
        assert_eq!(bytes.len(), 128 + BUFFER + 5);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_file_on_tmpfs_reads_back_exactly() {
        // tmpfs refuses O_DIRECT before Linux 6.6 and takes it since.
        let Ok(dir) = tempfile::tempdir_in("/dev/shm") else { return };
        let data: Vec<u8> = (0..BUFFER + 77).map(|i| (i % 13) as u8).collect();
        let (bytes, _) = written(dir.path(), std::slice::from_ref(&data));
        assert_eq!(bytes, data);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn pieces_of_any_sizes_read_back_as_their_concatenation(
            sizes in proptest::collection::vec(0usize..(BUFFER / 3), 0..8),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let pieces: Vec<Vec<u8>> = sizes
                .iter()
                .enumerate()
                .map(|(k, &n)| (0..n).map(|i| (i + k * 31) as u8).collect())
                .collect();
            let (bytes, _) = written(dir.path(), &pieces);
            prop_assert_eq!(bytes, pieces.concat());
        }
    }
}
