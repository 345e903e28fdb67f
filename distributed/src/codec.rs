//! Plan codecs: how taglake's own plan pieces travel between processes.
//!
//! Ballista sends the client's logical plan to the scheduler and each
//! stage's physical plan to the executors in DataFusion's protobuf format;
//! nodes DataFusion does not know go through an extension codec. Ours
//! encodes:
//! - **table providers** (logical): a warehouse table as its pinned file
//!   list ([`FilesTable`]), and `members`/`audience('…')` as the snapshot
//!   version, the audience text, the `members` files and the members of
//!   running experiments (`in_experiment` depends on the clock, so it
//!   travels rather than being recomputed elsewhere);
//! - **scan nodes** (physical): [`TagBitmapExec`] and [`TagFilterExec`]
//!   with their selected keys as portable roaring bytes and tag columns by
//!   name, read from the same snapshot on the executor (cached per process);
//! - **tag refresh steps** ([`TagRangeTable`], [`TagRangeExec`]): the
//!   whole task description (globals, catalog text, ranges, cut starts).
//!
//! Everything else is delegated to Ballista's own codecs. Our payloads
//! start with a magic prefix so decoding knows whose they are: a JSON
//! header, then length-prefixed binary blobs (schemas, bitmaps).

use std::sync::{Arc, Mutex};

use arrow::datatypes::{Schema, SchemaRef};
use ballista_core::serde::{BallistaLogicalExtensionCodec, BallistaPhysicalExtensionCodec};
use datafusion::catalog::TableProvider;
use datafusion::common::{DataFusionError, TableReference};
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Extension, LogicalPlan};
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use roaring::RoaringBitmap;
use serde::{Deserialize, Serialize};
use taglake_query::TagSet;
use taglake_query::members::{MembersTable, PartColumn, ScanParts, TagBitmapExec, TagFilterExec};

use crate::files::{FileEntry, FilesTable};
use crate::refresh::{RangeTask, TagRangeExec, TagRangeTable};
use crate::wire::{schema_bytes, schema_from};

type DfResult<T> = datafusion::common::Result<T>;

const MAGIC: &[u8] = b"taglake\x01";

fn internal(message: impl Into<String>) -> DataFusionError {
    DataFusionError::Internal(message.into())
}

fn external(e: impl std::error::Error + Send + Sync + 'static) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// A JSON header and binary blobs behind the magic prefix.
fn frame<H: Serialize>(header: &H, blobs: &[&[u8]], buf: &mut Vec<u8>) -> DfResult<()> {
    let json = serde_json::to_vec(header).map_err(|e| internal(format!("encoding a taglake plan node: {e}")))?;
    buf.extend_from_slice(MAGIC);
    for part in std::iter::once(json.as_slice()).chain(blobs.iter().copied()) {
        buf.extend_from_slice(&(part.len() as u64).to_le_bytes());
        buf.extend_from_slice(part);
    }
    Ok(())
}

/// A decoded payload: its header and its blobs.
type Framed<'a, H> = (H, Vec<&'a [u8]>);

/// The header and blobs of one of our payloads; `None` when `buf` is not ours.
fn unframe<H: for<'de> Deserialize<'de>>(buf: &[u8]) -> DfResult<Option<Framed<'_, H>>> {
    let Some(mut rest) = buf.strip_prefix(MAGIC) else { return Ok(None) };
    let mut parts = Vec::new();
    while !rest.is_empty() {
        let (len, tail) = rest.split_at_checked(8).ok_or_else(|| internal("a taglake plan node is truncated"))?;
        let len = u64::from_le_bytes(len.try_into().expect("8 bytes")) as usize;
        let (part, tail) = tail.split_at_checked(len).ok_or_else(|| internal("a taglake plan node is truncated"))?;
        parts.push(part);
        rest = tail;
    }
    let (json, blobs) = parts.split_first().ok_or_else(|| internal("a taglake plan node has no header"))?;
    let header = serde_json::from_slice(json).map_err(|e| internal(format!("decoding a taglake plan node: {e}")))?;
    Ok(Some((header, blobs.to_vec())))
}

fn blob<'a>(blobs: &[&'a [u8]], i: usize) -> DfResult<&'a [u8]> {
    blobs.get(i).copied().ok_or_else(|| internal("a taglake plan node misses a part"))
}

fn bitmap_bytes(bitmap: &RoaringBitmap) -> Vec<u8> {
    let mut out = Vec::with_capacity(bitmap.serialized_size());
    bitmap.serialize_into(&mut out).expect("writing to memory");
    out
}

fn bitmap_from(bytes: &[u8]) -> DfResult<RoaringBitmap> {
    RoaringBitmap::deserialize_from(bytes).map_err(|e| internal(format!("a bitmap in a taglake plan is damaged: {e}")))
}

/// Runs async loading inside a codec call (which is synchronous); an
/// error, not a panic, on a current-thread runtime.
fn block_on<T>(f: impl std::future::Future<Output = taglake_query::Result<T>>) -> taglake_query::Result<T> {
    taglake_storage::scan::blocking(|| tokio::runtime::Handle::current().block_on(f))
}

/// Which snapshot a node's tags come from, as every process can find it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct TagsRef {
    root: String,
    snapshot: Option<i64>,
    member_files: Vec<String>,
}

impl TagsRef {
    fn of(tags: &TagSet) -> DfResult<TagsRef> {
        let root = tags.root().ok_or_else(|| internal("tags built in memory cannot go to a cluster"))?;
        Ok(TagsRef {
            root: root.to_string_lossy().into_owned(),
            snapshot: tags.snapshot,
            member_files: tags.member_files().iter().map(|p| p.to_string_lossy().into_owned()).collect(),
        })
    }
}

fn in_experiment(tags: &TagSet) -> DfResult<Vec<u8>> {
    let i = tags.position(taglake_query::tagset::IN_EXPERIMENT).ok_or_else(|| internal("no in_experiment tag"))?;
    Ok(tags.bitmap(i).map_err(external)?.to_portable())
}

/// Tag sets this process opened, by snapshot and `in_experiment` members:
/// an executor reads each snapshot's bitmaps once, not once per task.
#[derive(Debug, Default)]
struct TagSets {
    /// Newest first, keyed by snapshot and a digest of `in_experiment`.
    open: Mutex<Vec<(TagSetKey, Arc<TagSet>)>>,
}

type TagSetKey = (TagsRef, u64);

impl TagSets {
    const KEEP: usize = 4;

    fn get(&self, r: &TagsRef, running: &[u8]) -> DfResult<Arc<TagSet>> {
        let key = (r.clone(), xxhash_rust::xxh3::xxh3_64(running));
        if let Some((_, set)) = self.open.lock().expect("tag sets").iter().find(|(k, _)| *k == key) {
            return Ok(set.clone());
        }
        let wh = crate::shared_warehouse(&r.root).map_err(external)?;
        let files = r.member_files.iter().map(std::path::PathBuf::from).collect();
        let set =
            Arc::new(block_on(TagSet::load_with(&wh, r.snapshot, files, bitmap_from(running)?)).map_err(external)?);
        let mut open = self.open.lock().expect("tag sets");
        open.retain(|(k, _)| *k != key);
        open.insert(0, (key, set.clone()));
        open.truncate(Self::KEEP);
        Ok(set)
    }
}

/// Encoded table providers.
#[derive(Debug, Serialize, Deserialize)]
enum ProviderSpec {
    /// A [`FilesTable`]; its schema is the plan's.
    Files { table: String, partition_columns: usize, files: Vec<FileEntry> },
    /// `members` or `audience('…')` over a [`FilesTable`]; blobs: the
    /// inner schema, the `in_experiment` members.
    Members { tags: TagsRef, audience: Option<String>, table: String, partition_columns: usize, files: Vec<FileEntry> },
    /// The tasks of one step of a cluster tag refresh.
    TagRanges(RangeTask),
}

/// The logical codec of every taglake process (client, scheduler,
/// executor). Paths travel as they are: the warehouse must be at the same
/// path on every machine (a shared volume mounted alike).
#[derive(Debug, Default)]
pub struct LogicalCodec {
    ballista: BallistaLogicalExtensionCodec,
    tag_sets: TagSets,
}

impl LogicalExtensionCodec for LogicalCodec {
    fn try_decode(&self, buf: &[u8], inputs: &[LogicalPlan], ctx: &TaskContext) -> DfResult<Extension> {
        self.ballista.try_decode(buf, inputs, ctx)
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> DfResult<()> {
        self.ballista.try_encode(node, buf)
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> DfResult<Arc<dyn TableProvider>> {
        let Some((spec, blobs)) = unframe::<ProviderSpec>(buf)? else {
            return self.ballista.try_decode_table_provider(buf, table_ref, schema, ctx);
        };
        Ok(match spec {
            ProviderSpec::Files { table, partition_columns, files } => {
                Arc::new(FilesTable { table, schema, partition_columns, files })
            }
            ProviderSpec::Members { tags, audience, table, partition_columns, files } => {
                let inner =
                    Arc::new(FilesTable { table, schema: schema_from(blob(&blobs, 0)?)?, partition_columns, files });
                let set = self.tag_sets.get(&tags, blob(&blobs, 1)?)?;
                let members = MembersTable::rebuild(set, inner, audience.as_deref()).map_err(external)?;
                // A statement's plan holds `members` narrowed to the tag
                // columns it names (`taglake_query::narrow`): the same here.
                Arc::new(members.narrowed(schema.fields().iter().map(|f| f.name().as_str())))
            }
            ProviderSpec::TagRanges(task) => Arc::new(TagRangeTable::new(task)),
        })
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> DfResult<()> {
        if let Some(files) = node.downcast_ref::<FilesTable>() {
            let spec = ProviderSpec::Files {
                table: files.table.clone(),
                partition_columns: files.partition_columns,
                files: files.files.clone(),
            };
            return frame(&spec, &[], buf);
        }
        if let Some(members) = node.downcast_ref::<MembersTable>() {
            let inner = members.inner().downcast_ref::<FilesTable>().ok_or_else(|| {
                internal("members over a Delta provider cannot go to a cluster; open the session with taglake_distributed::connect")
            })?;
            let spec = ProviderSpec::Members {
                tags: TagsRef::of(members.tags())?,
                audience: members.audience_text().map(str::to_string),
                table: inner.table.clone(),
                partition_columns: inner.partition_columns,
                files: inner.files.clone(),
            };
            let running = in_experiment(members.tags())?;
            return frame(&spec, &[&schema_bytes(&inner.schema)?, &running], buf);
        }
        if let Some(t) = node.downcast_ref::<TagRangeTable>() {
            return frame(&ProviderSpec::TagRanges(t.task().clone()), &[], buf);
        }
        self.ballista.try_encode_table_provider(table_ref, node, buf)
    }

    fn try_decode_file_format(&self, buf: &[u8], ctx: &TaskContext) -> DfResult<Arc<dyn FileFormatFactory>> {
        self.ballista.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(&self, buf: &mut Vec<u8>, node: Arc<dyn FileFormatFactory>) -> DfResult<()> {
        self.ballista.try_encode_file_format(buf, node)
    }
}

/// Encoded physical nodes.
#[derive(Debug, Serialize, Deserialize)]
enum NodeSpec {
    /// [`TagBitmapExec`]; blobs: schema, selected keys, `in_experiment` members.
    Bitmap {
        tags: TagsRef,
        everyone: bool,
        audience: String,
        columns: Vec<PartColumn>,
        limit: Option<usize>,
        starts: Vec<u32>,
    },
    /// [`TagFilterExec`]; blobs: schema, selected keys, `in_experiment` members; one child.
    Filter { tags: TagsRef, everyone: bool, audience: String, columns: Vec<PartColumn>, key_column: usize },
    /// [`TagRangeExec`]: the tasks of one step of a cluster tag refresh.
    Ranges(RangeTask),
}

/// The physical codec of every taglake process.
#[derive(Debug, Default)]
pub struct PhysicalCodec {
    ballista: BallistaPhysicalExtensionCodec,
    tag_sets: TagSets,
}

impl PhysicalExtensionCodec for PhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let Some((spec, blobs)) = unframe::<NodeSpec>(buf)? else {
            return self.ballista.try_decode(buf, inputs, ctx, converter);
        };
        let parts = |everyone, audience, columns, limit, starts, key_column| -> DfResult<ScanParts> {
            Ok(ScanParts {
                keys: Arc::new(bitmap_from(blob(&blobs, 1)?)?),
                everyone,
                audience,
                columns,
                limit,
                starts,
                key_column,
            })
        };
        Ok(match spec {
            NodeSpec::Bitmap { tags, everyone, audience, columns, limit, starts } => {
                let set = self.tag_sets.get(&tags, blob(&blobs, 2)?)?;
                let parts = parts(everyone, audience, columns, limit, starts, 0)?;
                Arc::new(TagBitmapExec::from_parts(schema_from(blob(&blobs, 0)?)?, set, parts)?)
            }
            NodeSpec::Filter { tags, everyone, audience, columns, key_column } => {
                let set = self.tag_sets.get(&tags, blob(&blobs, 2)?)?;
                let parts = parts(everyone, audience, columns, None, Vec::new(), key_column)?;
                let [child] = inputs else { return Err(internal("TagFilterExec has one child")) };
                Arc::new(TagFilterExec::from_parts(schema_from(blob(&blobs, 0)?)?, set, parts, child.clone())?)
            }
            NodeSpec::Ranges(task) => {
                let [child] = inputs else { return Err(internal("TagRangeExec has one child")) };
                Arc::new(TagRangeExec::with_child(task, child.clone()))
            }
        })
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<()> {
        let scan_blobs = |schema: &Schema, parts: &ScanParts, tags: &TagSet| -> DfResult<[Vec<u8>; 3]> {
            Ok([schema_bytes(schema)?, bitmap_bytes(&parts.keys), in_experiment(tags)?])
        };
        if let Some(n) = node.downcast_ref::<TagBitmapExec>() {
            let p = n.parts()?;
            let blobs = scan_blobs(&n.schema(), &p, n.tags())?;
            let spec = NodeSpec::Bitmap {
                tags: TagsRef::of(n.tags())?,
                everyone: p.everyone,
                audience: p.audience,
                columns: p.columns,
                limit: p.limit,
                starts: p.starts,
            };
            return frame(&spec, &[&blobs[0], &blobs[1], &blobs[2]], buf);
        }
        if let Some(n) = node.downcast_ref::<TagFilterExec>() {
            let p = n.parts()?;
            let blobs = scan_blobs(&n.schema(), &p, n.tags())?;
            let spec = NodeSpec::Filter {
                tags: TagsRef::of(n.tags())?,
                everyone: p.everyone,
                audience: p.audience,
                columns: p.columns,
                key_column: p.key_column,
            };
            return frame(&spec, &[&blobs[0], &blobs[1], &blobs[2]], buf);
        }
        if let Some(n) = node.downcast_ref::<TagRangeExec>() {
            return frame(&NodeSpec::Ranges(n.task().clone()), &[], buf);
        }
        self.ballista.try_encode(node, buf, converter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_foreign_bytes_are_not_ours() {
        let mut buf = Vec::new();
        frame(&vec![1, 2, 3], &[b"abc", b""], &mut buf).unwrap();
        let (header, blobs): (Vec<i32>, _) = unframe(&buf).unwrap().unwrap();
        assert_eq!(header, vec![1, 2, 3]);
        assert_eq!(blobs, vec![b"abc".as_slice(), b"".as_slice()]);
        assert!(unframe::<Vec<i32>>(b"\x0a\x02ab").unwrap().is_none());
        let err = unframe::<Vec<i32>>(&buf[..buf.len() - 2]).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
    }
}
