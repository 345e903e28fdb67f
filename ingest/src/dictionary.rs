//! The dense member-id dictionary.
//!
//! Members get a dense `u32` key the first time any table mentions them
//! (stored as a Delta `long`, since Delta has no unsigned types). Keys are
//! append-only and never reused: every bitmap and per-member array later is
//! indexed by them, so renumbering would silently corrupt tag snapshots.
//! New keys are handed out in the order members are first met, so a re-run
//! after a crash assigns exactly the keys a clean run would have.
//!
//! The dictionary is the `member_ids` table; lookups go through its key
//! index ([`crate::keys`]), a batch of ids at a time, so an ingest holds the
//! members it meets, never the whole member base.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use taglake_storage::{Table, Warehouse};

use crate::keys::{KeyIndex, KeyKind, Resident, text_key};
use crate::{Error, Result};

/// External member id → dense key, with the keys assigned in this run.
#[derive(Debug)]
pub struct MemberDictionary {
    index: KeyIndex,
    /// The whole dictionary in memory, when asked for and it fits.
    resident: Option<Resident>,
    next: i64,
    /// Keys assigned in this run, by id hash.
    new: HashMap<u128, i64>,
    /// The same, as rows for `member_ids`, in assignment order.
    added: Vec<(String, i64)>,
}

impl MemberDictionary {
    /// Opens the dictionary of a warehouse (`memory` bounds a rebuild of
    /// its index).
    pub async fn open(wh: &Warehouse, memory: usize) -> Result<Self> {
        let index = KeyIndex::open(wh, KeyKind::MemberIds, memory).await?;
        let next = index.max_value().map(|m| m as i64 + 1).unwrap_or(0);
        Ok(MemberDictionary { index, resident: None, next, new: HashMap::new(), added: Vec::new() })
    }

    /// Bytes held in memory by [`MemberDictionary::keep_in_memory`].
    pub fn resident_bytes(&self) -> u64 {
        if self.resident.is_some() { self.index.resident_bytes() } else { 0 }
    }

    /// Holds the whole dictionary in memory when it takes at most `budget`
    /// bytes (20 per member): an ingest that looks members up chunk after
    /// chunk then reads it once instead of once per chunk.
    pub fn keep_in_memory(&mut self, budget: u64) -> Result<()> {
        if self.resident.is_none() && self.index.resident_bytes() <= budget {
            self.resident = Some(self.index.resident()?);
        }
        Ok(())
    }

    /// The key the next new member gets.
    pub fn next_key(&self) -> i64 {
        self.next
    }

    /// The dictionary's key index.
    pub fn index(&self) -> &KeyIndex {
        &self.index
    }

    /// The key index, for a caller that commits new members itself.
    pub fn into_index(self) -> KeyIndex {
        self.index
    }

    /// The keys of `hashes` (member id hashes from [`text_key`], sorted
    /// ascending and distinct): `None` for a member not known.
    pub fn lookup(&self, hashes: &[u128]) -> Result<Vec<Option<i64>>> {
        let mut out: Vec<Option<i64>> = hashes.iter().map(|h| self.new.get(h).copied()).collect();
        let open: Vec<usize> = (0..hashes.len()).filter(|&i| out[i].is_none()).collect();
        let probes: Vec<u128> = open.iter().map(|&i| hashes[i]).collect();
        let found = match &self.resident {
            Some(r) => r.lookup(&probes),
            // Most ids an ingest meets are known: read key blocks directly.
            None => self.index.lookup(&probes, false)?,
        };
        for (j, v) in found.into_iter().enumerate() {
            out[open[j]] = v.map(|k| k as i64);
        }
        Ok(out)
    }

    /// Gives `id` (whose hash is `hash`, not known yet) the next key.
    pub fn assign(&mut self, id: &str, hash: u128) -> Result<i64> {
        debug_assert_eq!(hash, text_key(id));
        if let Some(k) = self.new.get(&hash) {
            return Ok(*k);
        }
        if self.next > u32::MAX as i64 {
            return Err(Error::source("member_ids", "more than 4,294,967,296 members: dense u32 keys are exhausted"));
        }
        let k = self.next;
        self.next += 1;
        self.new.insert(hash, k);
        self.added.push((id.to_string(), k));
        Ok(k)
    }

    /// Members added in this run.
    pub fn added(&self) -> usize {
        self.added.len()
    }

    /// Commits the members added in this run (one commit; none if nothing
    /// was added), then records them in the index.
    pub async fn commit(&mut self, wh: &Warehouse) -> Result<()> {
        if self.added.is_empty() {
            return Ok(());
        }
        let ids = StringArray::from_iter_values(self.added.iter().map(|a| a.0.as_str()));
        let keys = Int64Array::from_iter_values(self.added.iter().map(|a| a.1));
        let batch = RecordBatch::try_new(Table::MemberIds.arrow_schema(), vec![Arc::new(ids), Arc::new(keys)])
            .map_err(Error::internal("building member_ids"))?;
        let mut w = wh.file_writer(Table::MemberIds, Table::MemberIds.arrow_schema())?;
        w.write(batch).await?;
        let adds = w.finish().await?;
        wh.commit_files(Table::MemberIds, &[], &adds).await?;
        let state = wh.state(Table::MemberIds).await?.expect("just committed");
        let entries: Vec<(u128, u64)> = self.new.iter().map(|(h, k)| (*h, *k as u64)).collect();
        let run = self.index.sort_into_run(entries)?;
        self.index.commit(vec![run], state)?;
        self.added.clear();
        self.new.clear();
        self.resident = None;
        Ok(())
    }
}
