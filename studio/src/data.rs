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

use std::collections::{BTreeMap, HashMap};
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

/// Most (snapshot, audience) counts kept for the saved audiences' history.
const MAX_KEPT_COUNTS: usize = 100_000;

/// The studio's view of the warehouse.
pub struct Data {
    live: Arc<Live>,
    infos: Mutex<BTreeMap<i64, Arc<SnapshotInfo>>>,
    diff: tokio::sync::Mutex<Option<KeptDiff>>,
    /// (snapshot, audience in tag names) → members (`None`: the audience
    /// names a tag the snapshot lacks). A snapshot never changes, so a
    /// count once made stands.
    counts: Mutex<HashMap<(i64, String), Option<u64>>>,
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
        Data {
            live,
            infos: Mutex::new(BTreeMap::new()),
            diff: tokio::sync::Mutex::new(None),
            counts: Mutex::new(HashMap::new()),
        }
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

    /// The members of each audience (written in tag names only, as
    /// `taglake_query::audience::display` writes a parsed one) in snapshot
    /// `v`: `None` for one naming a tag the snapshot lacks. Counts once
    /// made are kept; the snapshot's tags are read only for the missing.
    pub async fn counts_at(&self, v: i64, audiences: &[String]) -> Result<Vec<Option<u64>>> {
        let kept = |counts: &HashMap<(i64, String), Option<u64>>| -> Vec<Option<Option<u64>>> {
            audiences.iter().map(|a| counts.get(&(v, a.clone())).copied()).collect()
        };
        let found = kept(&self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        if found.iter().all(Option::is_some) {
            return Ok(found.into_iter().flatten().collect());
        }
        let tags = match self.tags() {
            Some((t, current)) if current == v => t,
            _ => match TagSet::load(self.warehouse(), Some(v)).await? {
                Some(t) => Arc::new(t),
                None => return Ok(vec![None; audiences.len()]),
            },
        };
        let mut out = Vec::with_capacity(audiences.len());
        for (a, found) in audiences.iter().zip(found) {
            let n = match found {
                Some(n) => n,
                None => match taglake_query::audience::parse(a, &tags) {
                    Ok(node) => Some(taglake_query::audience::count(&node, &tags)?),
                    Err(_) => None,
                },
            };
            out.push(n);
        }
        let mut counts = self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if counts.len() + audiences.len() > MAX_KEPT_COUNTS {
            counts.clear();
        }
        for (a, n) in audiences.iter().zip(&out) {
            counts.insert((v, a.clone()), *n);
        }
        Ok(out)
    }
}
