//! The tags a session answers from: every bitmap of the current snapshot,
//! held in memory, plus the members that exist.
//!
//! Tags are bitmaps over dense member keys, so an audience is bitmap algebra
//! and a count is a cardinality. Loading them once per session (a few MB
//! per tag at 10 M members) is what lets a count take microseconds instead
//! of a scan. `NOT tag` needs to know who exists: that is the `universe`,
//! the keys of the `members` table, so members ingested after the last tag
//! run count as having no tag. `in_experiment` is derived here too: the
//! members of every running experiment's cohort.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use roaring::RoaringBitmap;
use taglake_storage::scan::{Wanted, scan, table_files};
use taglake_storage::{Table, Warehouse};

use crate::{Error, Result};

/// Name of the derived tag holding the members of running experiments.
pub const IN_EXPERIMENT: &str = "in_experiment";

/// One tag as SQL and audiences see it.
#[derive(Debug)]
pub struct Tag {
    /// Tag name (a column of `members`).
    pub name: String,
    /// Family the tag belongs to (`tier`, `community`, …).
    pub family: String,
    /// Member keys with the tag.
    pub bitmap: RoaringBitmap,
}

/// The tags of one snapshot and the member universe.
#[derive(Debug, Default)]
pub struct TagSet {
    /// Snapshot version, `None` when the warehouse was never tagged.
    pub snapshot: Option<i64>,
    /// Tags in catalog order, then `in_experiment`.
    pub tags: Vec<Tag>,
    /// Keys of every member in `members`.
    pub universe: RoaringBitmap,
    index: HashMap<String, usize>,
}

impl TagSet {
    /// Builds a tag set from parts (tags keep their order).
    pub fn new(snapshot: Option<i64>, tags: Vec<Tag>, universe: RoaringBitmap) -> TagSet {
        let index = tags.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
        TagSet { snapshot, tags, universe, index }
    }

    /// Loads the newest snapshot (or `snapshot`), the member universe and
    /// the running experiments. `None` when there is no `members` table.
    pub async fn load(wh: &Warehouse, snapshot: Option<i64>) -> Result<Option<Arc<TagSet>>> {
        if wh.version(Table::Members).await?.is_none() {
            return Ok(None);
        }
        let universe = member_keys(wh).await?;
        let versions = taglake_tagger::snapshot::versions(wh).await?;
        let mut tags = Vec::new();
        let mut version = None;
        if snapshot.is_some() || !versions.is_empty() {
            let info = taglake_tagger::snapshot::info(wh, snapshot).await?;
            let (v, bitmaps) = taglake_tagger::snapshot::bitmaps(wh, Some(info.snapshot), None).await?;
            version = Some(v);
            let family: HashMap<&str, &str> = info.tags.iter().map(|t| (t.name.as_str(), t.family.as_str())).collect();
            for (name, bitmap) in bitmaps {
                let family = family.get(name.as_str()).copied().unwrap_or_default().to_string();
                tags.push(Tag { name, family, bitmap });
            }
        }
        let running = crate::experiment::running_members(wh, chrono::Utc::now()).await?;
        tags.retain(|t| t.name != IN_EXPERIMENT);
        tags.push(Tag { name: IN_EXPERIMENT.into(), family: "experiment".into(), bitmap: running });
        Ok(Some(Arc::new(TagSet::new(version, tags, universe))))
    }

    /// Position of a tag by name.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// A tag by position.
    pub fn tag(&self, i: usize) -> &Tag {
        &self.tags[i]
    }

    /// Tag names in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tags.iter().map(|t| t.name.as_str())
    }

    /// The tags of one family, in order.
    pub fn family(&self, family: &str) -> Vec<usize> {
        (0..self.tags.len()).filter(|&i| self.tags[i].family == family).collect()
    }

    /// "did you mean" for an unknown tag name.
    pub fn suggest(&self, name: &str) -> Option<&str> {
        taglake_storage::suggest(name, self.names())
    }
}

/// The `member_key` of every row of `members`.
async fn member_keys(wh: &Warehouse) -> Result<RoaringBitmap> {
    let files = table_files(wh, Table::Members).await?;
    let t = Table::Members;
    let parts = Mutex::new(Vec::new());
    tokio::task::block_in_place(|| {
        scan::<_, Error>(t, &files, &[Wanted::plain(t, "member_key")], |b| {
            let keys = b.column(0).as_primitive::<Int64Type>();
            let mut bm = RoaringBitmap::new();
            for k in keys.iter().flatten() {
                let k = u32::try_from(k)
                    .map_err(|_| Error::Corrupt(format!("members has a member_key out of range: {k}")))?;
                bm.insert(k);
            }
            parts.lock().expect("keys").push(bm);
            Ok(())
        })
    })?;
    Ok(parts.into_inner().expect("keys").into_iter().fold(RoaringBitmap::new(), |a, b| a | b))
}
