//! One immutable run of the key index: sorted keys, a Bloom filter, fences.
//!
//! A run file holds unique 128-bit keys in ascending order, each with an
//! optional 64-bit value, then a Bloom filter of the keys and every
//! [`FENCE_STRIDE`]-th key ("fences"). Opening a run reads only the header
//! and the fences (16 bytes per 256 keys); a probe of a sorted set of keys
//! reads the filter blocks and the key blocks those keys fall in, merging
//! nearby reads, so a few keys cost a few small reads and many keys one
//! sequential pass: the cost follows the probe set, not the run.
//!
//! Layout (little-endian):
//! ```text
//! 0   magic "TLKEYRN1" · value width u32 (0 or 8) · fence stride u32
//! 16  entries u64 · bloom blocks u64 · bloom offset u64 · fences offset u64
//! 48  file length u64 · largest value u64 · xxh3-64 of bytes 0..64 and the fences
//! 128 entries (16-byte key [+ 8-byte value]) · Bloom filter · fences
//! ```
//! Files are written under a temporary name, synced and renamed, so a run
//! either exists whole or not at all; the checksum and length catch a file
//! damaged later, and the index is then rebuilt from its table.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use taglake_storage::DirectWriter;

use super::bloom::{self, BLOCK_BYTES, BloomBuilder};
use crate::{Error, Result};

const MAGIC: &[u8; 8] = b"TLKEYRN1";
const HEADER: u64 = 128;
/// Keys between two fences.
pub const FENCE_STRIDE: u64 = 256;
/// Reads closer than this are merged into one.
const COALESCE: u64 = 1 << 20;

/// A run on disk, ready for probes.
#[derive(Debug)]
pub struct Run {
    path: PathBuf,
    file: File,
    width: u64,
    entries: u64,
    bloom_blocks: u64,
    bloom_offset: u64,
    max_value: u64,
    fences: Vec<u128>,
    /// The Bloom filter, when kept in memory (see [`Run::keep_bloom`]).
    bloom: Option<Vec<u8>>,
}

fn corrupt(path: &Path, what: &str) -> Error {
    Error::Index { path: path.to_path_buf(), source: format!("damaged key index run: {what}").into() }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::Index { path: path.to_path_buf(), source: e.into() }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl Run {
    /// Opens a run: reads and checks its header and fences.
    pub fn open(path: &Path) -> Result<Run> {
        let file = File::open(path).map_err(io(path))?;
        let len = file.metadata().map_err(io(path))?.len();
        if len < HEADER {
            return Err(corrupt(path, "shorter than its header"));
        }
        let mut header = [0u8; HEADER as usize];
        file.read_exact_at(&mut header, 0).map_err(io(path))?;
        if &header[0..8] != MAGIC {
            return Err(corrupt(path, "not a key index run"));
        }
        let width = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes")) as u64;
        let stride = u32::from_le_bytes(header[12..16].try_into().expect("4 bytes")) as u64;
        let (entries, bloom_blocks, bloom_offset, fences_offset, length, max_value) = (
            u64_at(&header, 16),
            u64_at(&header, 24),
            u64_at(&header, 32),
            u64_at(&header, 40),
            u64_at(&header, 48),
            u64_at(&header, 56),
        );
        let n_fences = entries.div_ceil(FENCE_STRIDE);
        let consistent = (width == 0 || width == 8)
            && stride == FENCE_STRIDE
            && length == len
            && bloom_offset == HEADER + entries * (16 + width)
            && fences_offset == bloom_offset + bloom_blocks * BLOCK_BYTES as u64
            && fences_offset + n_fences * 16 == len;
        if !consistent {
            return Err(corrupt(path, "header does not match the file"));
        }
        let mut raw = vec![0u8; (n_fences * 16) as usize];
        file.read_exact_at(&mut raw, fences_offset).map_err(io(path))?;
        let mut digest = xxhash_rust::xxh3::Xxh3::new();
        digest.update(&header[0..64]);
        digest.update(&raw);
        if digest.digest() != u64_at(&header, 64) {
            return Err(corrupt(path, "checksum mismatch"));
        }
        let fences = raw.chunks_exact(16).map(|c| u128::from_le_bytes(c.try_into().expect("16 bytes"))).collect();
        Ok(Run {
            path: path.to_path_buf(),
            file,
            width,
            entries,
            bloom_blocks,
            bloom_offset,
            max_value,
            fences,
            bloom: None,
        })
    }

    /// Bytes of the Bloom filter.
    pub fn bloom_bytes(&self) -> u64 {
        self.bloom_blocks * BLOCK_BYTES as u64
    }

    /// Reads the Bloom filter into memory, so later probes do not read it
    /// again (worth it when a run is probed many times, chunk after chunk).
    pub fn keep_bloom(&mut self) -> Result<()> {
        if self.bloom.is_none() {
            let mut buf = vec![0u8; self.bloom_bytes() as usize];
            self.file.read_exact_at(&mut buf, self.bloom_offset).map_err(io(&self.path))?;
            self.bloom = Some(buf);
        }
        Ok(())
    }

    /// The largest value stored (0 without values or keys).
    pub fn max_value(&self) -> u64 {
        self.max_value
    }

    /// Number of keys.
    pub fn len(&self) -> u64 {
        self.entries
    }

    /// Whether the run holds no key.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn entry_bytes(&self) -> u64 {
        16 + self.width
    }

    /// Calls `hit(i, value)` for every `probes[i]` the run holds (`value`
    /// is 0 in runs without values). `probes` must be sorted ascending.
    /// With `use_bloom`, the filter first rules most absent keys out (worth
    /// it when most probes miss); without, every probe reads its key block.
    pub fn probe(&self, probes: &[u128], use_bloom: bool, mut hit: impl FnMut(usize, u64)) -> Result<()> {
        debug_assert!(probes.windows(2).all(|w| w[0] <= w[1]), "probes must be sorted");
        if self.entries == 0 || probes.is_empty() {
            return Ok(());
        }
        let candidates: Vec<usize> =
            if use_bloom { self.bloom_candidates(probes)? } else { (0..probes.len()).collect() };
        // Key blocks: fence f covers entries [f * stride, (f + 1) * stride).
        let block_of = |key: u128| self.fences.partition_point(|f| *f <= key).checked_sub(1);
        let mut buf = Vec::new();
        let mut i = 0;
        while i < candidates.len() {
            let Some(first) = block_of(probes[candidates[i]]) else {
                i += 1;
                continue;
            };
            // Extend the read over the following candidates' blocks while
            // they stay within the coalescing distance.
            let mut last = first;
            let mut j = i + 1;
            while j < candidates.len() {
                let b = block_of(probes[candidates[j]]).unwrap_or(first);
                if (b - first) as u64 * FENCE_STRIDE * self.entry_bytes() > COALESCE {
                    break;
                }
                last = b;
                j += 1;
            }
            let start = first as u64 * FENCE_STRIDE;
            let end = ((last as u64 + 1) * FENCE_STRIDE).min(self.entries);
            let eb = self.entry_bytes() as usize;
            buf.resize(((end - start) * self.entry_bytes()) as usize, 0);
            self.file.read_exact_at(&mut buf, HEADER + start * self.entry_bytes()).map_err(io(&self.path))?;
            let key_at = |k: usize| u128::from_le_bytes(buf[k * eb..k * eb + 16].try_into().expect("16 bytes"));
            let n = (end - start) as usize;
            let mut lo = 0;
            for &c in &candidates[i..j] {
                let key = probes[c];
                // Candidates ascend: search only past the previous position.
                let (mut a, mut b) = (lo, n);
                while a < b {
                    let m = (a + b) / 2;
                    if key_at(m) < key { a = m + 1 } else { b = m }
                }
                lo = a;
                if a < n && key_at(a) == key {
                    let value = if self.width == 8 { u64_at(&buf, a * eb + 16) } else { 0 };
                    hit(c, value);
                }
            }
            i = j;
        }
        Ok(())
    }

    /// The probes the Bloom filter does not rule out, reading only the
    /// filter blocks they fall in.
    fn bloom_candidates(&self, probes: &[u128]) -> Result<Vec<usize>> {
        if let Some(bloom) = &self.bloom {
            let at = |p: u128| bloom::block_of(p, self.bloom_blocks) as usize * BLOCK_BYTES;
            return Ok((0..probes.len())
                .filter(|&k| bloom::block_may_contain(&bloom[at(probes[k])..at(probes[k]) + BLOCK_BYTES], probes[k]))
                .collect());
        }
        let mut out = Vec::new();
        let mut buf = Vec::new();
        let window = COALESCE / BLOCK_BYTES as u64;
        let mut i = 0;
        while i < probes.len() {
            let first = bloom::block_of(probes[i], self.bloom_blocks);
            let mut j = i;
            let mut last = first;
            while j < probes.len() {
                let b = bloom::block_of(probes[j], self.bloom_blocks);
                if b - first >= window {
                    break;
                }
                last = b;
                j += 1;
            }
            buf.resize(((last - first + 1) * BLOCK_BYTES as u64) as usize, 0);
            self.file
                .read_exact_at(&mut buf, self.bloom_offset + first * BLOCK_BYTES as u64)
                .map_err(io(&self.path))?;
            for (k, probe) in probes.iter().enumerate().take(j).skip(i) {
                let at = ((bloom::block_of(*probe, self.bloom_blocks) - first) as usize) * BLOCK_BYTES;
                if bloom::block_may_contain(&buf[at..at + BLOCK_BYTES], *probe) {
                    out.push(k);
                }
            }
            i = j;
        }
        Ok(out)
    }

    /// Reads the run from the start, in key order.
    pub fn cursor(&self) -> Result<Cursor> {
        self.cursor_at_block(0)
    }

    /// Reads the run in key order from the start of the key block that
    /// holds `from` (the fences find it without reading the run): the
    /// first entries may still be below `from`.
    pub fn cursor_near(&self, from: u128) -> Result<Cursor> {
        self.cursor_at_block(self.fences.partition_point(|f| *f <= from).saturating_sub(1) as u64)
    }

    fn cursor_at_block(&self, block: u64) -> Result<Cursor> {
        let start = (block * FENCE_STRIDE).min(self.entries);
        // A file of its own, not a clone: clones share one offset, and
        // cursors over the same run may read side by side.
        let mut file = File::open(&self.path).map_err(io(&self.path))?;
        file.seek(SeekFrom::Start(HEADER + start * self.entry_bytes())).map_err(io(&self.path))?;
        Ok(Cursor {
            reader: BufReader::with_capacity(1 << 20, file),
            left: self.entries - start,
            width: self.width as usize,
            path: self.path.clone(),
        })
    }
}

/// Sequential reader of a run's entries.
pub struct Cursor {
    reader: BufReader<File>,
    left: u64,
    width: usize,
    path: PathBuf,
}

impl Cursor {
    /// The next `(key, value)`, `None` at the end.
    pub fn next_entry(&mut self) -> Result<Option<(u128, u64)>> {
        if self.left == 0 {
            return Ok(None);
        }
        let mut b = [0u8; 24];
        self.reader.read_exact(&mut b[..16 + self.width]).map_err(io(&self.path))?;
        self.left -= 1;
        let key = u128::from_le_bytes(b[..16].try_into().expect("16 bytes"));
        let value = if self.width == 8 { u64_at(&b, 16) } else { 0 };
        Ok(Some((key, value)))
    }
}

/// Writes a run from keys given in strictly ascending order.
pub struct RunWriter {
    tmp: PathBuf,
    path: PathBuf,
    /// Runs are written once and read back rarely: past the page cache.
    out: DirectWriter,
    width: u64,
    entries: u64,
    bloom: BloomBuilder,
    fences: Vec<u128>,
    last: Option<u128>,
    max_value: u64,
}

impl RunWriter {
    /// Starts a run at `path` for at most `max_entries` keys (the filter's
    /// size), with 8-byte values when `with_values`.
    pub fn create(path: &Path, with_values: bool, max_entries: u64) -> Result<RunWriter> {
        let tmp = path.with_extension("tmp");
        let mut out = DirectWriter::create(&tmp).map_err(io(&tmp))?;
        out.write_all(&[0u8; HEADER as usize]).map_err(io(&tmp))?;
        Ok(RunWriter {
            out,
            tmp,
            path: path.to_path_buf(),
            width: if with_values { 8 } else { 0 },
            entries: 0,
            bloom: BloomBuilder::new(max_entries),
            fences: Vec::new(),
            last: None,
            max_value: 0,
        })
    }

    /// Appends a key (greater than the previous one) and its value.
    pub fn push(&mut self, key: u128, value: u64) -> Result<()> {
        if self.last.is_some_and(|l| l >= key) {
            return Err(Error::Index {
                path: self.tmp.clone(),
                source: format!("keys out of order at entry {} (this is likely a bug in taglake)", self.entries).into(),
            });
        }
        self.last = Some(key);
        if self.entries.is_multiple_of(FENCE_STRIDE) {
            self.fences.push(key);
        }
        self.bloom.insert(key);
        self.out.write_all(&key.to_le_bytes()).map_err(io(&self.tmp))?;
        if self.width == 8 {
            self.out.write_all(&value.to_le_bytes()).map_err(io(&self.tmp))?;
            self.max_value = self.max_value.max(value);
        }
        self.entries += 1;
        Ok(())
    }

    /// Keys written so far.
    pub fn len(&self) -> u64 {
        self.entries
    }

    /// Whether no key was written.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Writes the filter, fences and header, syncs and moves the file into
    /// place; returns the opened run.
    pub fn finish(mut self) -> Result<Run> {
        let bloom_offset = HEADER + self.entries * (16 + self.width);
        let bloom = self.bloom.to_bytes();
        self.out.write_all(&bloom).map_err(io(&self.tmp))?;
        let fences_offset = bloom_offset + bloom.len() as u64;
        let fences: Vec<u8> = self.fences.iter().flat_map(|f| f.to_le_bytes()).collect();
        self.out.write_all(&fences).map_err(io(&self.tmp))?;
        let length = fences_offset + fences.len() as u64;
        let mut header = [0u8; HEADER as usize];
        header[0..8].copy_from_slice(MAGIC);
        header[8..12].copy_from_slice(&(self.width as u32).to_le_bytes());
        header[12..16].copy_from_slice(&(FENCE_STRIDE as u32).to_le_bytes());
        let fields = [
            (16, self.entries),
            (24, self.bloom.blocks()),
            (32, bloom_offset),
            (40, fences_offset),
            (48, length),
            (56, self.max_value),
        ];
        for (at, v) in fields {
            header[at..at + 8].copy_from_slice(&v.to_le_bytes());
        }
        let mut digest = xxhash_rust::xxh3::Xxh3::new();
        digest.update(&header[0..64]);
        digest.update(&fences);
        header[64..72].copy_from_slice(&digest.digest().to_le_bytes());
        let file = self.out.finish().map_err(io(&self.tmp))?;
        file.write_all_at(&header, 0).map_err(io(&self.tmp))?;
        file.sync_all().map_err(io(&self.tmp))?;
        drop(file);
        std::fs::rename(&self.tmp, &self.path).map_err(io(&self.path))?;
        Run::open(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn write(dir: &Path, name: &str, entries: &BTreeMap<u128, u64>, with_values: bool) -> Run {
        let mut w = RunWriter::create(&dir.join(name), with_values, entries.len() as u64).unwrap();
        for (k, v) in entries {
            w.push(*k, *v).unwrap();
        }
        w.finish().unwrap()
    }

    fn probe_all(run: &Run, probes: &[u128], bloom: bool) -> Vec<(usize, u64)> {
        let mut hits = Vec::new();
        run.probe(probes, bloom, |i, v| hits.push((i, v))).unwrap();
        hits
    }

    /// Cursors over one run read side by side (the final merge of an
    /// ingest reads each run in several key ranges at once) each get their
    /// own entries, past their read buffers; a cursor near a key starts at
    /// or before it, never after.
    #[test]
    fn cursors_over_one_run_read_side_by_side() {
        let dir = tempfile::tempdir().unwrap();
        let entries: BTreeMap<u128, u64> = (0..200_000u128).map(|i| (i * 7, i as u64)).collect();
        let run = write(dir.path(), "r.run", &entries, true);
        let from = 100_000u128 * 7 + 3;
        let (mut a, mut b) = (run.cursor().unwrap(), run.cursor_near(from).unwrap());
        let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
        loop {
            let (x, y) = (a.next_entry().unwrap(), b.next_entry().unwrap());
            got_a.extend(x);
            got_b.extend(y);
            if x.is_none() && y.is_none() {
                break;
            }
        }
        assert_eq!(got_a, entries.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>());
        let first = got_b[0].0;
        assert!(first <= from && from - first < FENCE_STRIDE as u128 * 7, "{first}");
        assert_eq!(got_b, entries.range(first..).map(|(k, v)| (*k, *v)).collect::<Vec<_>>());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Probing agrees with a map, with and without the filter, for
        /// sizes around the fence stride and keys bunched or spread.
        #[test]
        fn probes_agree_with_a_map(
            keys in proptest::collection::btree_map(any::<u128>(), any::<u64>(), 0..1500),
            extra in proptest::collection::vec(any::<u128>(), 0..600),
            spread in any::<bool>(),
            with_values in any::<bool>(),
        ) {
            let keys: BTreeMap<u128, u64> = if spread {
                keys
            } else {
                // Bunched: consecutive keys, as a sequence of hashes never is.
                keys.into_iter().enumerate().map(|(i, (_, v))| (1_000 + i as u128 * 3, v)).collect()
            };
            let dir = tempfile::tempdir().unwrap();
            let run = write(dir.path(), "r.run", &keys, with_values);
            prop_assert_eq!(run.len(), keys.len() as u64);
            let mut probes: Vec<u128> = keys.keys().step_by(3).copied().chain(extra).chain([0, 1_001, u128::MAX]).collect();
            probes.sort_unstable();
            probes.dedup();
            let want: Vec<(usize, u64)> = probes
                .iter()
                .enumerate()
                .filter_map(|(i, p)| keys.get(p).map(|v| (i, if with_values { *v } else { 0 })))
                .collect();
            prop_assert_eq!(&probe_all(&run, &probes, true), &want);
            prop_assert_eq!(&probe_all(&run, &probes, false), &want);
            let mut c = run.cursor().unwrap();
            let mut read = Vec::new();
            while let Some((k, v)) = c.next_entry().unwrap() {
                read.push((k, v));
            }
            let all: Vec<(u128, u64)> = keys.iter().map(|(k, v)| (*k, if with_values { *v } else { 0 })).collect();
            prop_assert_eq!(read, all);
        }
    }

    #[test]
    fn damage_is_detected_and_order_is_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let keys: BTreeMap<u128, u64> = (0..1000u128).map(|k| (k * 7, k as u64)).collect();
        let run = write(dir.path(), "r.run", &keys, true);
        let path = run.path().to_path_buf();
        drop(run);
        let bytes = std::fs::read(&path).unwrap();
        // Truncated.
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        assert!(Run::open(&path).unwrap_err().to_string().contains("damaged key index run"));
        // A fence flipped.
        let mut flipped = bytes.clone();
        let n = flipped.len();
        flipped[n - 3] ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        assert!(Run::open(&path).unwrap_err().to_string().contains("checksum"));
        // Not a run at all.
        std::fs::write(&path, vec![7u8; 200]).unwrap();
        assert!(Run::open(&path).unwrap_err().to_string().contains("not a key index run"));
        let mut w = RunWriter::create(&dir.path().join("bad.run"), false, 2).unwrap();
        w.push(5, 0).unwrap();
        assert!(w.push(5, 0).is_err());
        // An empty run is valid.
        let empty = RunWriter::create(&dir.path().join("e.run"), false, 0).unwrap().finish().unwrap();
        assert!(empty.is_empty());
        assert!(probe_all(&empty, &[1, 2], true).is_empty());
    }
}
