//! The dense member-id dictionary.
//!
//! Members get a dense `u32` key the first time any table mentions them
//! (stored as a Delta `long`, since Delta has no unsigned types). Keys are
//! append-only and never reused: every bitmap and per-member array later is
//! indexed by them, so renumbering would silently corrupt tag snapshots.
//! New keys are handed out in input order, which makes a re-run after a
//! crash assign exactly the keys a clean run would have.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::Int64Type;
use taglake_storage::{Table, Warehouse};

use crate::{Error, Result};

/// External member id → dense key, with the keys assigned in this run.
#[derive(Debug, Default)]
pub struct MemberDictionary {
    keys: HashMap<String, i64, xxhash_rust::xxh3::Xxh3DefaultBuilder>,
    next: i64,
    added: Vec<(String, i64)>,
}

impl MemberDictionary {
    /// Loads the dictionary from the warehouse.
    pub async fn load(wh: &Warehouse) -> Result<Self> {
        let mut d = MemberDictionary::default();
        for b in wh.read(Table::MemberIds, None).await? {
            let ids = b.column(0).as_string::<i32>();
            let keys = b.column(1).as_primitive::<Int64Type>();
            for i in 0..b.num_rows() {
                let k = keys.value(i);
                d.keys.insert(ids.value(i).to_string(), k);
                d.next = d.next.max(k + 1);
            }
        }
        Ok(d)
    }

    /// Number of members known.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// No member known.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key of a known member.
    pub fn get(&self, id: &str) -> Option<i64> {
        self.keys.get(id).copied()
    }

    /// The key of a member, assigning the next one when it is new.
    pub fn get_or_assign(&mut self, id: &str) -> Result<i64> {
        if let Some(k) = self.keys.get(id) {
            return Ok(*k);
        }
        if self.next > u32::MAX as i64 {
            return Err(Error::source("member_ids", "more than 4,294,967,296 members: dense u32 keys are exhausted"));
        }
        let k = self.next;
        self.next += 1;
        self.keys.insert(id.to_string(), k);
        self.added.push((id.to_string(), k));
        Ok(k)
    }

    /// Members added in this run.
    pub fn added(&self) -> usize {
        self.added.len()
    }

    /// Commits the members added in this run (one commit; none if nothing
    /// was added).
    pub async fn commit(&mut self, wh: &Warehouse) -> Result<()> {
        if self.added.is_empty() {
            return Ok(());
        }
        let ids = StringArray::from_iter_values(self.added.iter().map(|a| a.0.as_str()));
        let keys = Int64Array::from_iter_values(self.added.iter().map(|a| a.1));
        let batch = RecordBatch::try_new(Table::MemberIds.arrow_schema(), vec![Arc::new(ids), Arc::new(keys)])
            .map_err(Error::internal("building member_ids"))?;
        let mut w = wh.append(Table::MemberIds).await?;
        w.write(batch).await?;
        w.commit().await?;
        self.added.clear();
        Ok(())
    }
}
