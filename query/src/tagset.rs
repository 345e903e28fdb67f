//! The tags a session answers from: the tags of one snapshot, each bitmap
//! read the first time a query needs it, plus the members that exist.
//!
//! Tags are bitmaps over dense member keys, so an audience is bitmap algebra
//! and a count is a cardinality. At 10 M members a snapshot of ~4,800 tags
//! holds ~0.7 GB of bitmaps; reading all of them for every `taglake sql` or
//! `audience count` would cost seconds and that memory before the first
//! answer. So a [`TagSet`] opens with names and families only, and each
//! bitmap is read on first use from its own row of the snapshot's Parquet
//! files (page index + row selection: one page, not the column), then kept.
//! A server calls [`TagSet::warm`] once to hold them all.
//!
//! `NOT tag` needs to know who exists: that is the [`TagSet::universe`], the
//! keys of the `members` table (also read on first use), so members ingested
//! after the last tag run count as having no tag. `in_experiment` is derived
//! here too: the members of every running experiment's cohort.

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Int32Type, Int64Type};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection, RowSelector,
};
use parquet::file::metadata::PageIndexPolicy;
use rayon::prelude::*;
use roaring::RoaringBitmap;
use taglake_storage::scan::{Wanted, scan, table_files};
use taglake_storage::{Table, Warehouse};

use crate::attribute::{Attribute, Condition};
use crate::bits::Bits;
use crate::{Cause, Error, Result};

/// Name of the derived tag holding the members of running experiments.
pub const IN_EXPERIMENT: &str = "in_experiment";

/// Where a tag's bitmap is stored: file, row group, row within it.
#[derive(Debug, Clone, Copy)]
struct Location {
    file: usize,
    row_group: usize,
    row: usize,
}

/// One tag as SQL and audiences see it.
#[derive(Debug)]
pub struct Tag {
    /// Tag name (a column of `members`).
    pub name: String,
    /// Family the tag belongs to (`tier`, `community`, …).
    pub family: String,
    /// Its value in the family's column when the family is exclusive
    /// (`gold` for `tier_gold`), else `None`.
    pub value: Option<String>,
    bitmap: OnceLock<Bits>,
    location: Option<Location>,
}

impl Tag {
    /// A tag whose members are already known.
    pub fn new(name: impl Into<String>, family: impl Into<String>, bitmap: RoaringBitmap) -> Tag {
        Tag {
            name: name.into(),
            family: family.into(),
            value: None,
            bitmap: OnceLock::from(Bits::from_roaring(&bitmap)),
            location: None,
        }
    }

    /// The same tag as the member of an exclusive family with this value.
    pub fn with_value(self, value: impl Into<String>) -> Tag {
        Tag { value: Some(value.into()), ..self }
    }
}

/// A family whose tags never share a member, so a member has at most one
/// value in it: SQL shows it as one text column of `members`.
#[derive(Debug)]
pub struct Family {
    /// Family name (`tier`).
    pub name: String,
    /// Its tags, in catalog order.
    pub tags: Vec<usize>,
    /// Per member key, 1 + the index in `tags` of the member's tag (0: none),
    /// built on first use.
    index: OnceLock<ValueIndex>,
}

/// Member key → value of one family: two bytes a member while the family
/// has fewer than 65,535 tags.
#[derive(Debug)]
enum ValueIndex {
    Small(Vec<u16>),
    Large(Vec<u32>),
}

impl Family {
    /// The tag (an index into [`Family::tags`]) holding `key`, if any.
    pub fn of(&self, key: u32) -> Option<usize> {
        let v = match self.index.get()? {
            ValueIndex::Small(v) => v.get(key as usize).map(|&x| x as usize),
            ValueIndex::Large(v) => v.get(key as usize).map(|&x| x as usize),
        };
        v.filter(|&x| x > 0).map(|x| x - 1)
    }
}

#[derive(Debug)]
struct TagFile {
    path: PathBuf,
    meta: ArrowReaderMetadata,
    bitmap_column: usize,
}

/// The tags of one snapshot and the member universe.
#[derive(Debug, Default)]
pub struct TagSet {
    /// Snapshot version, `None` when the warehouse was never tagged.
    pub snapshot: Option<i64>,
    /// Tags in catalog order, then `in_experiment`.
    pub tags: Vec<Tag>,
    universe: OnceLock<RoaringBitmap>,
    universe_bits: OnceLock<Bits>,
    member_files: Vec<PathBuf>,
    files: Vec<TagFile>,
    index: HashMap<String, usize>,
    families: Vec<Family>,
    /// The warehouse it was read from.
    root: Option<PathBuf>,
    /// Saved audiences: name → expression (`audience:NAME`); replaced in
    /// place when one is saved ([`TagSet::set_saved`]), since they do not
    /// depend on the snapshot.
    saved: std::sync::RwLock<HashMap<String, String>>,
    /// Conditions on member attributes parsed against this set, with
    /// their members once evaluated (see [`TagSet::attribute`]).
    attributes: Mutex<Vec<Arc<Attribute>>>,
}

impl TagSet {
    /// Builds a tag set from tags with known members and a known universe.
    pub fn new(snapshot: Option<i64>, tags: Vec<Tag>, universe: RoaringBitmap) -> TagSet {
        let mut set = TagSet { snapshot, tags, universe: OnceLock::from(universe), ..TagSet::default() };
        set.index_names();
        set
    }

    /// Opens the newest snapshot (or `snapshot`): tag names and families,
    /// the running experiments' members; bitmaps and the universe are read
    /// when first needed. `None` when there is no `members` table.
    pub async fn load(wh: &Warehouse, snapshot: Option<i64>) -> Result<Option<TagSet>> {
        if wh.version(Table::Members).await?.is_none() {
            return Ok(None);
        }
        let member_files = table_files(wh, Table::Members).await?;
        let version = Self::resolve(wh, snapshot).await?;
        let running = crate::registry::running_members(wh, chrono::Utc::now()).await?;
        Ok(Some(Self::load_with(wh, version, member_files, running).await?))
    }

    /// A snapshot exactly as another process saw it: its `members` files
    /// (the universe) and its running experiments' members (`in_experiment`
    /// depends on the clock). Plans sent to a cluster carry both, so every
    /// process answers a query alike whatever changed since.
    pub async fn load_with(
        wh: &Warehouse,
        version: Option<i64>,
        member_files: Vec<PathBuf>,
        in_experiment: RoaringBitmap,
    ) -> Result<TagSet> {
        let mut files = Vec::new();
        let mut tags = Vec::new();
        if let Some(v) = version {
            let all = wh.files(Table::Tags).await?;
            let (f, t) = taglake_storage::scan::blocking(|| index_with_holders(v, &all))?;
            files = f;
            tags = t;
        }
        tags.retain(|t| t.name != IN_EXPERIMENT);
        tags.push(Tag::new(IN_EXPERIMENT, "experiment", in_experiment));
        let root = Some(wh.root().to_path_buf());
        let saved = crate::saved_table::current(wh).await?.into();
        let mut set = TagSet { snapshot: version, tags, member_files, files, root, saved, ..TagSet::default() };
        set.index_names();
        Ok(set)
    }

    /// The name index and the exclusive families: those whose every tag
    /// has a value (a snapshot marks no others), values distinct.
    fn index_names(&mut self) {
        self.index = self.tags.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
        let mut order: Vec<&str> = Vec::new();
        let mut by_family: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, t) in self.tags.iter().enumerate() {
            let entry = by_family.entry(t.family.as_str()).or_insert_with(|| {
                order.push(t.family.as_str());
                Vec::new()
            });
            entry.push(i);
        }
        let mut families = Vec::new();
        for name in order {
            let tags = &by_family[name];
            let mut values = std::collections::HashSet::new();
            if tags.iter().all(|&i| self.tags[i].value.as_deref().is_some_and(|v| values.insert(v))) {
                families.push(Family { name: name.to_string(), tags: tags.clone(), index: OnceLock::new() });
            }
        }
        self.families = families;
    }

    /// The exclusive families, in catalog order.
    pub fn families(&self) -> &[Family] {
        &self.families
    }

    /// The exclusive family `name`.
    pub fn exclusive(&self, name: &str) -> Option<usize> {
        self.families.iter().position(|f| f.name == name)
    }

    /// Family `f` with its member → value index built (walking each tag's
    /// containers once).
    pub fn family_index(&self, f: usize) -> Result<&Family> {
        let family = &self.families[f];
        if family.index.get().is_some() {
            return Ok(family);
        }
        let mut len = self.universe()?.max().map_or(0, |m| m as usize + 1);
        for &t in &family.tags {
            len = len.max(self.bitmap(t)?.max().map_or(0, |m| m as usize + 1));
        }
        let index = if family.tags.len() < u16::MAX as usize {
            let mut v = vec![0u16; len];
            for (j, &t) in family.tags.iter().enumerate() {
                self.bitmap(t)?.iter().for_each(|k| v[k as usize] = j as u16 + 1);
            }
            ValueIndex::Small(v)
        } else {
            let mut v = vec![0u32; len];
            for (j, &t) in family.tags.iter().enumerate() {
                self.bitmap(t)?.iter().for_each(|k| v[k as usize] = j as u32 + 1);
            }
            ValueIndex::Large(v)
        };
        let _ = family.index.set(index);
        Ok(family)
    }

    /// The snapshot `snapshot` names (checked), or the newest one.
    async fn resolve(wh: &Warehouse, snapshot: Option<i64>) -> Result<Option<i64>> {
        let versions = taglake_tagger::snapshot::versions(wh).await?;
        match snapshot {
            Some(v) if !versions.contains(&v) => {
                let have = versions.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", ");
                Err(Error::Invalid(format!("no tag snapshot {v}; the warehouse has: {have}")))
            }
            Some(v) => Ok(Some(v)),
            None => Ok(versions.last().copied()),
        }
    }

    /// The warehouse the tags were read from (`None` for a set built in memory).
    pub fn root(&self) -> Option<&std::path::Path> {
        self.root.as_deref()
    }

    /// The `members` files the universe is read from.
    pub fn member_files(&self) -> &[PathBuf] {
        &self.member_files
    }

    /// Position of a tag by name.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// A tag by position.
    pub fn tag(&self, i: usize) -> &Tag {
        &self.tags[i]
    }

    /// The members of the tag at `i`, read from the snapshot on first use.
    pub fn bitmap(&self, i: usize) -> Result<&Bits> {
        let tag = &self.tags[i];
        if let Some(b) = tag.bitmap.get() {
            return Ok(b);
        }
        let loc = tag.location.ok_or_else(|| {
            Error::Corrupt(format!(
                "tag `{}` of snapshot {} has no stored bitmap: its row refers to a snapshot that does not hold it",
                tag.name,
                self.snapshot.unwrap_or_default()
            ))
        })?;
        let bitmap = self.read_bitmap(&tag.name, loc)?;
        Ok(tag.bitmap.get_or_init(|| bitmap))
    }

    /// Every member key in `members`, read on first use.
    pub fn universe(&self) -> Result<&RoaringBitmap> {
        if let Some(u) = self.universe.get() {
            return Ok(u);
        }
        let u = member_keys(&self.member_files)?;
        Ok(self.universe.get_or_init(|| u))
    }

    /// [`TagSet::universe`] as containers, for the count engine.
    pub fn universe_bits(&self) -> Result<&Bits> {
        if let Some(u) = self.universe_bits.get() {
            return Ok(u);
        }
        let u = Bits::from_roaring(self.universe()?);
        Ok(self.universe_bits.get_or_init(|| u))
    }

    /// Reads every bitmap not read yet (for long-lived sessions): each row
    /// group's bitmap column in one sequential read, row groups in parallel,
    /// which is far cheaper than thousands of single-row reads.
    pub fn warm(&self) -> Result<()> {
        self.universe()?;
        let mut at: HashMap<(usize, usize), Vec<(usize, usize)>> = HashMap::new();
        for (i, t) in self.tags.iter().enumerate() {
            if let (None, Some(loc)) = (t.bitmap.get(), t.location) {
                at.entry((loc.file, loc.row_group)).or_default().push((loc.row, i));
            }
        }
        at.into_par_iter().try_for_each(|((file, row_group), rows)| {
            let f = &self.files[file];
            let err = |source: Cause| Error::File { path: f.path.clone(), source };
            let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(
                File::open(&f.path).map_err(|e| err(e.into()))?,
                f.meta.clone(),
            )
            .with_projection(ProjectionMask::roots(f.meta.parquet_schema(), [f.bitmap_column]))
            .with_row_groups(vec![row_group])
            .build()
            .map_err(|e| err(e.into()))?;
            let wanted: HashMap<usize, usize> = rows.into_iter().collect();
            let mut row = 0;
            for batch in reader {
                let batch = batch.map_err(|e| err(e.into()))?;
                let bytes = batch.column(0).as_binary::<i32>();
                for r in 0..batch.num_rows() {
                    if let Some(&i) = wanted.get(&(row + r)) {
                        let bitmap = self.deserialize(&self.tags[i].name, bytes.value(r))?;
                        let _ = self.tags[i].bitmap.set(bitmap);
                    }
                }
                row += batch.num_rows();
            }
            Ok(())
        })
    }

    /// Tag names in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tags.iter().map(|t| t.name.as_str())
    }

    /// The tags of one family, in order.
    pub fn family(&self, family: &str) -> Vec<usize> {
        (0..self.tags.len()).filter(|&i| self.tags[i].family == family).collect()
    }

    /// The same set with these saved audiences (name → expression) as the
    /// ones `audience:NAME` refers to.
    pub fn with_saved(self, saved: HashMap<String, String>) -> TagSet {
        self.set_saved(saved);
        self
    }

    /// Replaces the saved audiences `audience:NAME` refers to.
    pub fn set_saved(&self, saved: HashMap<String, String>) {
        *self.saved.write().unwrap_or_else(std::sync::PoisonError::into_inner) = saved;
    }

    /// The expression of the saved audience `name`.
    pub fn saved(&self, name: &str) -> Option<String> {
        self.saved.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(name).cloned()
    }

    /// The names of the saved audiences, sorted.
    pub fn saved_names(&self) -> Vec<String> {
        let mut names: Vec<String> =
            self.saved.read().unwrap_or_else(std::sync::PoisonError::into_inner).keys().cloned().collect();
        names.sort_unstable();
        names
    }

    /// The kept [`Attribute`] for `condition` (the same for the same
    /// condition, so it is scanned once), or a new one. At most
    /// [`crate::attribute::KEPT`] are kept: past that, those no parsed
    /// audience holds any more are let go, the oldest first.
    pub fn attribute(&self, condition: Condition) -> Arc<Attribute> {
        let mut kept = self.attributes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(i) = kept.iter().position(|a| a.condition() == &condition) {
            let a = kept.remove(i);
            kept.push(a.clone());
            return a;
        }
        while kept.len() >= crate::attribute::KEPT {
            match kept.iter().position(|a| Arc::strong_count(a) == 1) {
                Some(i) => {
                    kept.remove(i);
                }
                None => break,
            }
        }
        let a = Arc::new(Attribute::new(condition));
        if kept.len() < crate::attribute::KEPT {
            kept.push(a.clone());
        }
        a
    }

    /// "did you mean" for an unknown tag name.
    pub fn suggest(&self, name: &str) -> Option<&str> {
        taglake_base::suggest(name, self.names())
    }

    fn deserialize(&self, name: &str, bytes: &[u8]) -> Result<Bits> {
        Bits::from_portable(bytes).map_err(|e| {
            let v = self.snapshot.unwrap_or_default();
            Error::Corrupt(format!("tag `{name}` of snapshot {v}: the stored bitmap is damaged: {e}"))
        })
    }

    fn read_bitmap(&self, name: &str, loc: Location) -> Result<Bits> {
        let f = &self.files[loc.file];
        let err = |source: Cause| Error::File { path: f.path.clone(), source };
        let file = File::open(&f.path).map_err(|e| err(e.into()))?;
        let selection = RowSelection::from(vec![RowSelector::skip(loc.row), RowSelector::select(1)]);
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, f.meta.clone())
            .with_projection(ProjectionMask::roots(f.meta.parquet_schema(), [f.bitmap_column]))
            .with_row_groups(vec![loc.row_group])
            .with_row_selection(selection)
            .build()
            .map_err(|e| err(e.into()))?;
        for batch in reader {
            let batch = batch.map_err(|e| err(e.into()))?;
            if batch.num_rows() == 0 {
                continue;
            }
            let bytes = batch.column(0).as_binary::<i32>();
            return self.deserialize(name, bytes.value(0));
        }
        Err(err(format!("tag `{name}`: row {} of row group {} is missing", loc.row, loc.row_group).into()))
    }
}

/// The tag set of a warehouse that has members and at least one snapshot,
/// with its snapshot version; otherwise the error saying what to run first.
pub fn tagged(tags: Option<Arc<TagSet>>) -> Result<(Arc<TagSet>, i64)> {
    let tags = tags.ok_or_else(|| Error::Invalid("the warehouse has no members yet: run `taglake ingest`".into()))?;
    let snapshot =
        tags.snapshot.ok_or_else(|| Error::Invalid("the warehouse was never tagged: run `taglake tag`".into()))?;
    Ok((tags, snapshot))
}

/// A tag as its snapshot's files hold it, with the snapshot holding its
/// bytes when the row is a reference.
type Indexed = (Tag, Option<i64>);

/// Indexes snapshot `v` among `all` (the files of one `tags` version): a
/// tag stored as a reference gets the location of its bytes in the holder
/// snapshot the reference names (see `taglake_tagger::snapshot`).
fn index_with_holders(v: i64, all: &[taglake_storage::DataFile]) -> Result<(Vec<TagFile>, Vec<Tag>)> {
    let paths = taglake_tagger::snapshot::files_of(all, v);
    if paths.is_empty() {
        return Err(Error::Invalid(format!("no tag snapshot {v} in the tags table")));
    }
    let (mut files, mut tags) = index_snapshot(&paths, 0)?;
    let mut by_holder: HashMap<i64, Vec<usize>> = HashMap::new();
    for (i, (_, h)) in tags.iter().enumerate() {
        if let Some(h) = h {
            by_holder.entry(*h).or_default().push(i);
        }
    }
    for (h, referring) in by_holder {
        let paths = taglake_tagger::snapshot::files_of(all, h);
        let (held_files, held) = index_snapshot(&paths, files.len())?;
        let at: HashMap<&str, Option<Location>> =
            held.iter().filter(|(_, h)| h.is_none()).map(|(t, _)| (t.name.as_str(), t.location)).collect();
        // A reference whose holder lacks the tag (a damaged table) leaves
        // the tag without a location: using it is an error, the other
        // tags still answer.
        for i in referring {
            let tag = &mut tags[i].0;
            tag.location = at.get(tag.name.as_str()).copied().flatten();
        }
        files.extend(held_files);
    }
    Ok((files, tags.into_iter().map(|(t, _)| t).collect()))
}

/// Reads name, family and position of every tag of a snapshot's files and
/// where its bitmap is, keeping each file's metadata (with the page index,
/// so a bitmap read touches only its own pages); file numbers start at
/// `first_file`. A tag stored as a reference comes with the snapshot
/// holding its bytes, to be located there.
fn index_snapshot(paths: &[PathBuf], first_file: usize) -> Result<(Vec<TagFile>, Vec<Indexed>)> {
    let mut files = Vec::new();
    let mut found: Vec<(i32, Tag, Option<i64>)> = Vec::new();
    for path in paths {
        let err = |source: Cause| Error::File { path: path.clone(), source };
        let file = File::open(path).map_err(|e| err(e.into()))?;
        let meta = ArrowReaderMetadata::load(
            &file,
            ArrowReaderOptions::new().with_offset_index_policy(PageIndexPolicy::Optional),
        )
        .map_err(|e| err(e.into()))?;
        let column = |name: &str| {
            meta.schema()
                .index_of(name)
                .map_err(|_| err(format!("the tag snapshot file has no `{name}` column").into()))
        };
        let (position, name, family, bitmap) =
            (column("position")?, column("name")?, column("family")?, column("bitmap")?);
        // Written before references existed: every row holds its bytes.
        let holder = meta.schema().index_of("bitmap_snapshot").ok();
        // Written before exclusive families existed: none is.
        let value = meta.schema().index_of("value").ok();
        let file_index = first_file + files.len();
        for rg in 0..meta.metadata().num_row_groups() {
            let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(
                File::open(path).map_err(|e| err(e.into()))?,
                meta.clone(),
            )
            .with_projection(ProjectionMask::roots(
                meta.parquet_schema(),
                [position, name, family].into_iter().chain(holder).chain(value),
            ))
            .with_row_groups(vec![rg])
            .build()
            .map_err(|e| err(e.into()))?;
            let mut row = 0;
            for batch in reader {
                let b = batch.map_err(|e| err(e.into()))?;
                let col = |n: &str| b.column_by_name(n).ok_or_else(|| err(format!("`{n}` was not decoded").into()));
                let (p, n, f) = (col("position")?, col("name")?, col("family")?);
                let (p, n, f) = (p.as_primitive::<Int32Type>(), n.as_string::<i32>(), f.as_string::<i32>());
                let h = b.column_by_name("bitmap_snapshot").map(|h| h.as_primitive::<Int64Type>());
                let values = b.column_by_name("value").map(|v| v.as_string::<i32>());
                for r in 0..b.num_rows() {
                    let holder = h.filter(|h| h.is_valid(r)).map(|h| h.value(r));
                    if n.is_null(r) {
                        return Err(err(format!("row {} of row group {rg} has no tag name", row + r).into()));
                    }
                    let location = Some(Location { file: file_index, row_group: rg, row: row + r });
                    let value = values.filter(|v| v.is_valid(r)).map(|v| v.value(r).to_string());
                    let tag = Tag {
                        name: n.value(r).into(),
                        family: f.value(r).into(),
                        value,
                        bitmap: OnceLock::new(),
                        location,
                    };
                    found.push((p.value(r), tag, holder));
                }
                row += b.num_rows();
            }
        }
        files.push(TagFile { path: path.clone(), meta, bitmap_column: bitmap });
    }
    found.sort_by_key(|(p, _, _)| *p);
    Ok((files, found.into_iter().map(|(_, t, h)| (t, h)).collect()))
}

/// The `member_key` of every row of `members` (its data files `files`).
pub(crate) fn member_keys(files: &[PathBuf]) -> Result<RoaringBitmap> {
    let t = Table::Members;
    let parts = Mutex::new(Vec::new());
    scan::<_, Error>(t, files, &[Wanted::plain(t, "member_key")], |b| {
        let keys = b.column(0).as_primitive::<Int64Type>();
        let mut bm = RoaringBitmap::new();
        for k in keys.iter().flatten() {
            bm.insert(crate::attribute::member_key(k)?);
        }
        parts.lock().expect("keys").push(bm);
        Ok(())
    })?;
    Ok(parts.into_inner().expect("keys").into_iter().fold(RoaringBitmap::new(), |a, b| a | b))
}
