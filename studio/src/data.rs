//! What the pages read: the live tag set, the stored snapshots' metadata
//! and the movement between the last two snapshots.
//!
//! The tags come from `taglake_serve::live::Live`, the session `taglake
//! serve` keeps current: it looks at the warehouse every refresh interval
//! and swaps in a new snapshot (bitmaps warmed) without a restart. A
//! request takes the tag set once ([`Data::tags`]) and computes all its
//! figures from it, so one page never mixes two snapshots.
//!
//! Snapshot metadata (`taglake_tagger::snapshot::info`: each tag's rule,
//! description and member count) never changes once committed, so it is
//! read once per snapshot and kept; snapshots pruned from the warehouse are
//! dropped from the cache. The movement between the newest snapshot and
//! the one before (`snapshot::diff`, what `taglake tags diff` prints) reads
//! every bitmap of both, so it is computed once per pair, on first use.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use taglake_query::TagSet;
use taglake_serve::live::Live;
use taglake_storage::Warehouse;
use taglake_tagger::snapshot::{self, SnapshotInfo, TagDiff};

use crate::Result;

/// Most snapshots the history charts read (the newest ones).
pub const MAX_HISTORY: usize = 120;

/// The movement between a pair of snapshots (from, to), kept.
type KeptDiff = ((i64, i64), Arc<Vec<TagDiff>>);

/// The studio's view of the warehouse.
pub struct Data {
    live: Arc<Live>,
    infos: Mutex<BTreeMap<i64, Arc<SnapshotInfo>>>,
    diff: tokio::sync::Mutex<Option<KeptDiff>>,
}

/// The newest snapshot's metadata and the stored snapshots before it.
pub struct Snapshots {
    /// Metadata of the snapshot the tag set is.
    pub current: Arc<SnapshotInfo>,
    /// The stored snapshots up to and including the current one, oldest
    /// first (at most [`MAX_HISTORY`]).
    pub history: Vec<Arc<SnapshotInfo>>,
}

impl Snapshots {
    /// The snapshot before the current one, if one is stored.
    pub fn previous(&self) -> Option<&Arc<SnapshotInfo>> {
        let n = self.history.len();
        (n >= 2).then(|| &self.history[n - 2])
    }
}

impl Data {
    /// The view over a live session.
    pub fn new(live: Arc<Live>) -> Data {
        Data { live, infos: Mutex::new(BTreeMap::new()), diff: tokio::sync::Mutex::new(None) }
    }

    /// The warehouse.
    pub fn warehouse(&self) -> &Warehouse {
        self.live.warehouse()
    }

    /// The live session (for SQL over `members`).
    pub fn live(&self) -> &Arc<Live> {
        &self.live
    }

    /// The tag set served now, with its snapshot number; `None` before the
    /// warehouse is first tagged.
    pub fn tags(&self) -> Option<(Arc<TagSet>, i64)> {
        let tags = self.live.tags()?;
        let v = tags.snapshot?;
        Some((tags, v))
    }

    /// The metadata of `current` and of the stored snapshots up to it.
    pub async fn snapshots(&self, current: i64) -> Result<Snapshots> {
        let versions = snapshot::versions(self.warehouse()).await?;
        let wanted: Vec<i64> = versions.into_iter().filter(|&v| v <= current).collect();
        let wanted = &wanted[wanted.len().saturating_sub(MAX_HISTORY)..];
        let missing: Vec<i64> = {
            let mut infos = self.infos.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            infos.retain(|v, _| wanted.contains(v) || *v == current);
            wanted.iter().copied().chain([current]).filter(|v| !infos.contains_key(v)).collect()
        };
        for v in missing {
            let info = Arc::new(snapshot::info(self.warehouse(), Some(v)).await?);
            self.infos.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(v, info);
        }
        let infos = self.infos.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let history: Vec<Arc<SnapshotInfo>> = wanted.iter().filter_map(|v| infos.get(v).cloned()).collect();
        let current = infos.get(&current).cloned().expect("loaded above");
        Ok(Snapshots { current, history })
    }

    /// Who entered and left each tag between two snapshots, as `taglake
    /// tags diff --from FROM --to TO` counts them; kept for the last pair asked.
    pub async fn diff(&self, from: i64, to: i64) -> Result<Arc<Vec<TagDiff>>> {
        let mut kept = self.diff.lock().await;
        if let Some((pair, rows)) = kept.as_ref()
            && *pair == (from, to)
        {
            return Ok(rows.clone());
        }
        let rows = Arc::new(snapshot::diff(self.warehouse(), from, to).await?);
        *kept = Some(((from, to), rows.clone()));
        Ok(rows)
    }
}
