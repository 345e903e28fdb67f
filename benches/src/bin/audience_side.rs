//! taglake's half of `benches/audience_vs_duckdb.py`.
//!
//! - `audience_side export --warehouse W --tags a,b,c --out DIR` writes what
//!   the peers load, from the newest tag snapshot:
//!   - `DIR/tags_bool.parquet`: `member_key` (Int64) and one BOOLEAN column
//!     per listed tag, one row per member of the universe (the keys of
//!     `members`), in key order, row groups of 122,880 rows (DuckDB's own
//!     row group size, so its scan has row groups to split between threads);
//!   - `DIR/bitmaps.parquet`: `name`, `members` (cardinality) and `bitmap`,
//!     the portable roaring bytes exactly as stored in the `tags` table, one
//!     row per listed tag, plus a row `__universe__` (the universe bitmap,
//!     serialized by roaring-rs in the same portable format).
//!
//!   It checks that every stored bitmap reads back to the snapshot's tag and
//!   lies within the universe, and prints a JSON summary.
//! - `audience_side measure --warehouse W --expr "…" [--expr "…"] --runs N`
//!   first times a cold count per expression (a fresh tag set, whose first
//!   count reads the bitmaps it needs, as one CLI call does; median of 3).
//!   Then it opens the warehouse once as `taglake_query::open` does and
//!   reads every bitmap (`TagSet::warm`), both timed, and per expression,
//!   after one untimed warm-up of each, times N audience counts in process
//!   (`audience::parse` + `audience::count`, what `taglake audience count`
//!   does; checked equal to `audience::evaluate(…).len()`) and N runs of `SELECT count(*) FROM members WHERE
//!   <expr>` through DataFusion (`taglake_query::sql`: parsing, planning and
//!   execution). Both counts must agree. Then N more SQL runs split into
//!   stages (logical plan, physical plan, execution) show where that time
//!   goes. With `--breakdown EXPR --by FAMILY` it also times N runs of
//!   `SELECT <family>, count(*) FROM members WHERE <expr> GROUP BY 1` and
//!   of the breakdown API (`breakdown::breakdown`), which must agree.
//!   Prints JSON with every run's seconds, the physical plan, the
//!   open and warm-up times, the thread counts and the peak RSS (VmHWM)
//!   after the warm-up and at the end.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, ArrayRef, AsArray, BinaryArray, BooleanBuilder, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema};
use datafusion::physical_plan::{collect, displayable};
use datafusion::prelude::SessionContext;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use roaring::RoaringBitmap;
use serde_json::json;
use taglake_benches::peak_rss;
use taglake_query::{TagSet, audience};
use taglake_storage::Warehouse;

/// Rows per row group of `tags_bool.parquet` (DuckDB's default).
const ROW_GROUP: usize = 122_880;
/// Fresh tag sets timed per expression for the cold count.
const COLD_RUNS: usize = 3;
/// Name of the universe row in `bitmaps.parquet`.
const UNIVERSE: &str = "__universe__";

const USAGE: &str = "usage: audience_side export --warehouse W --tags a,b,c --out DIR\n       \
                     audience_side measure --warehouse W --expr EXPR [--expr EXPR …] --runs N \
                     [--breakdown EXPR --by FAMILY]";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, flags)) = args.split_first() else { fail(USAGE) };
    let flags = Flags::parse(flags);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let wh = Warehouse::open(flags.one("--warehouse")).unwrap_or_else(|e| fail(&e.to_string()));
    let out = match command.as_str() {
        "export" => {
            let names: Vec<String> = flags.one("--tags").split(',').map(|s| s.trim().to_string()).collect();
            rt.block_on(export(&wh, &names, &PathBuf::from(flags.one("--out"))))
        }
        "measure" => {
            let runs: usize = flags.one("--runs").parse().unwrap_or_else(|_| fail("--runs takes a number"));
            let breakdown = flags.all("--breakdown").pop().map(|e| (e, flags.one("--by")));
            rt.block_on(measure(&wh, &flags.all("--expr"), runs.max(1), breakdown))
        }
        _ => fail(USAGE),
    };
    println!("{out}");
}

/// `--name value` pairs, in order.
struct Flags(Vec<(String, String)>);

impl Flags {
    fn parse(args: &[String]) -> Flags {
        if !args.len().is_multiple_of(2) || args.iter().step_by(2).any(|a| !a.starts_with("--")) {
            fail(USAGE);
        }
        Flags(args.chunks(2).map(|p| (p[0].clone(), p[1].clone())).collect())
    }

    fn all(&self, name: &str) -> Vec<String> {
        self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.clone()).collect()
    }

    fn one(&self, name: &str) -> String {
        match self.all(name).as_slice() {
            [v] => v.clone(),
            _ => fail(&format!("give {name} once\n{USAGE}")),
        }
    }
}

fn fail(message: &str) -> ! {
    eprintln!("{message}");
    std::process::exit(2)
}

async fn load(wh: &Warehouse) -> TagSet {
    match TagSet::load(wh, None).await {
        Ok(Some(tags)) if tags.snapshot.is_some() => tags,
        Ok(_) => fail("the warehouse has no tag snapshot: run `taglake tag` first"),
        Err(e) => fail(&e.to_string()),
    }
}

/// A result of the query layer, or the program stops with its message.
fn ok<T>(r: taglake_query::Result<T>) -> T {
    r.unwrap_or_else(|e| fail(&e.to_string()))
}

async fn export(wh: &Warehouse, names: &[String], dir: &Path) -> serde_json::Value {
    let start = Instant::now();
    let tags = load(wh).await;
    let snapshot = tags.snapshot.expect("tagged");
    let positions: Vec<usize> = names
        .iter()
        .map(|n| tags.position(n).unwrap_or_else(|| fail(&format!("no tag `{n}` in snapshot {snapshot}"))))
        .collect();
    let universe = ok(tags.universe());
    let bitmaps: Vec<RoaringBitmap> = positions.iter().map(|&p| ok(tags.bitmap(p)).to_roaring()).collect();
    for (name, bitmap) in names.iter().zip(&bitmaps) {
        if !bitmap.is_subset(universe) {
            fail(&format!("tag `{name}` has members outside the members table"));
        }
    }
    std::fs::create_dir_all(dir).unwrap_or_else(|e| fail(&format!("{}: {e}", dir.display())));

    // The stored bytes, read back from the tags table itself: a row stored
    // as a reference takes the bytes of its holder's row.
    let ctx = ok(taglake_query::session(wh).await);
    let query = format!(
        "SELECT t.name, coalesce(t.bitmap, h.bitmap) FROM tags t \
         LEFT JOIN tags h ON h.snapshot = t.bitmap_snapshot AND h.name = t.name WHERE t.snapshot = {snapshot}"
    );
    let batches = ok(taglake_query::sql(&ctx, &query).await);
    let mut stored: Vec<Option<Vec<u8>>> = vec![None; names.len()];
    for b in &batches {
        // DataFusion may hand out view types: cast to the plain ones.
        let cast = |i: usize, to: &DataType| arrow::compute::cast(b.column(i), to).expect("cast");
        let (name, bytes) = (cast(0, &DataType::Utf8), cast(1, &DataType::Binary));
        let (name, bytes) = (name.as_string::<i32>(), bytes.as_binary::<i32>());
        for r in 0..b.num_rows() {
            if let Some(i) = names.iter().position(|n| n == name.value(r)) {
                stored[i] = Some(bytes.value(r).to_vec());
            }
        }
    }
    let mut rows: Vec<(String, u64, Vec<u8>)> = Vec::new();
    for ((name, bitmap), bytes) in names.iter().zip(&bitmaps).zip(stored) {
        let bytes = bytes.unwrap_or_else(|| fail(&format!("tag `{name}` is not in the tags table")));
        let read = RoaringBitmap::deserialize_from(bytes.as_slice()).unwrap_or_else(|e| fail(&e.to_string()));
        if read != *bitmap {
            fail(&format!("the stored bitmap of `{name}` differs from the loaded one"));
        }
        rows.push((name.clone(), read.len(), bytes));
    }
    let mut bytes = Vec::new();
    universe.serialize_into(&mut bytes).expect("serialize");
    rows.push((UNIVERSE.into(), universe.len(), bytes));

    let schema = Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("members", DataType::Int64, false),
        Field::new("bitmap", DataType::Binary, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0.as_str()))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1 as i64))),
        Arc::new(BinaryArray::from_iter_values(rows.iter().map(|r| r.2.as_slice()))),
    ];
    write(&dir.join("bitmaps.parquet"), schema.clone(), std::iter::once(columns));

    let mut fields = vec![Field::new("member_key", DataType::Int64, false)];
    fields.extend(names.iter().map(|n| Field::new(n, DataType::Boolean, false)));
    let keys: Vec<u32> = universe.iter().collect();
    let mut cursors: Vec<_> = bitmaps.iter().map(|b| b.iter().peekable()).collect();
    let groups = keys.chunks(ROW_GROUP).map(|chunk| {
        let mut columns: Vec<ArrayRef> = vec![Arc::new(Int64Array::from_iter_values(chunk.iter().map(|&k| k as i64)))];
        for cursor in &mut cursors {
            // Both are sorted and the tag lies within the universe: a merge.
            let mut column = BooleanBuilder::with_capacity(chunk.len());
            for k in chunk {
                column.append_value(cursor.next_if_eq(k).is_some());
            }
            columns.push(Arc::new(column.finish()));
        }
        columns
    });
    write(&dir.join("tags_bool.parquet"), Arc::new(Schema::new(fields)), groups);
    json!({"snapshot": snapshot, "rows": keys.len(), "tags": rows.iter().map(|r| json!({"name": r.0,
        "members": r.1, "bytes": r.2.len()})).collect::<Vec<_>>(), "seconds": start.elapsed().as_secs_f64()})
}

fn write(path: &Path, schema: Arc<Schema>, groups: impl Iterator<Item = Vec<ArrayRef>>) {
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROW_GROUP))
        .build();
    let file = std::fs::File::create(path).unwrap_or_else(|e| fail(&format!("{}: {e}", path.display())));
    let mut writer = ArrowWriter::try_new(file, schema.clone(), Some(props)).expect("parquet writer");
    for columns in groups {
        writer.write(&RecordBatch::try_new(schema.clone(), columns).expect("batch")).expect("write");
    }
    writer.close().expect("close");
}

async fn measure(
    wh: &Warehouse,
    exprs: &[String],
    runs: usize,
    breakdown: Option<(String, String)>,
) -> serde_json::Value {
    if exprs.is_empty() {
        fail(USAGE);
    }
    // Cold: per expression, a fresh tag set (names only), whose first count
    // reads the bitmaps it needs and the universe from the snapshot's
    // Parquet rows (the OS cache is warm), as one `taglake audience count`
    // call does. The median of a few.
    let mut cold = Vec::new();
    for text in exprs {
        let mut seconds = Vec::with_capacity(COLD_RUNS);
        for _ in 0..COLD_RUNS {
            let t = Instant::now();
            let fresh = load(wh).await;
            let node = audience::parse(text, &fresh).unwrap_or_else(|e| fail(&e.to_string()));
            std::hint::black_box(ok(audience::count(&node, &fresh)));
            seconds.push(t.elapsed().as_secs_f64());
        }
        cold.push(taglake_benches::median(&mut seconds));
    }
    // Warm: one session, every bitmap read once.
    let start = Instant::now();
    let (ctx, tags) = ok(taglake_query::open(wh).await);
    let open_seconds = start.elapsed().as_secs_f64();
    let tags = tags.filter(|t| t.snapshot.is_some()).unwrap_or_else(|| fail("the warehouse has no tag snapshot"));
    let start = Instant::now();
    ok(tags.warm());
    let warm_seconds = start.elapsed().as_secs_f64();
    let rss_after_load = peak_rss();
    let api = |text: &str| -> u64 {
        let node = audience::parse(text, &tags).unwrap_or_else(|e| fail(&e.to_string()));
        ok(audience::count(&node, &tags))
    };
    let mut results = Vec::new();
    for text in exprs {
        let count = api(text);
        let node = audience::parse(text, &tags).unwrap_or_else(|e| fail(&e.to_string()));
        let built = ok(audience::evaluate(&node, &tags)).len();
        if built != count {
            fail(&format!("`{text}`: the count engine counts {count}, the built selection holds {built}"));
        }
        let mut api_seconds = Vec::with_capacity(runs);
        for _ in 0..runs {
            let t = Instant::now();
            std::hint::black_box(api(std::hint::black_box(text)));
            api_seconds.push(t.elapsed().as_secs_f64());
        }
        let query = format!("SELECT count(*) FROM members WHERE {text}");
        let counted = sql_count(&ctx, &query).await;
        let mut sql_seconds = Vec::with_capacity(runs);
        for _ in 0..runs {
            let t = Instant::now();
            std::hint::black_box(sql_count(&ctx, &query).await);
            sql_seconds.push(t.elapsed().as_secs_f64());
        }
        if counted != count {
            fail(&format!("`{text}`: the audience API counts {count}, SQL counts {counted}"));
        }
        let (stages, plan) = sql_stages(&ctx, &query, runs).await;
        results.push(json!({"expr": text, "count": count, "cold_seconds": cold[results.len()], "api_seconds": api_seconds, "sql_seconds": sql_seconds,
            "sql_stage_seconds": stages, "sql_plan": plan}));
    }
    let breakdown = match breakdown {
        Some((text, by)) => measure_breakdown(&ctx, &tags, &text, &by, runs).await,
        None => serde_json::Value::Null,
    };
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    json!({"breakdown": breakdown, "snapshot": tags.snapshot, "members": ok(tags.universe()).len(), "tags": tags.tags.len(),
        "open_seconds": open_seconds, "warm_seconds": warm_seconds, "threads": threads,
        "target_partitions": ctx.state().config().target_partitions(), "runs": runs,
        "rss_after_load": rss_after_load, "peak_rss": peak_rss(), "expressions": results})
}

/// The breakdown of `text` by family `by`: N SQL runs and N API runs,
/// checked equal; the groups as value → members (`null` for none).
async fn measure_breakdown(
    ctx: &SessionContext,
    tags: &TagSet,
    text: &str,
    by: &str,
    runs: usize,
) -> serde_json::Value {
    let f = tags.exclusive(by).unwrap_or_else(|| fail(&format!("`{by}` is not an exclusive family")));
    let node = audience::parse(text, tags).unwrap_or_else(|e| fail(&e.to_string()));
    let api = || -> std::collections::BTreeMap<String, u64> {
        ok(taglake_query::breakdown::breakdown(Some(&node), tags, f))
            .into_iter()
            .filter(|s| s.members > 0)
            .map(|s| (s.value.unwrap_or_else(|| "null".into()), s.members))
            .collect()
    };
    let query = format!("SELECT \"{by}\", count(*) FROM members WHERE {text} GROUP BY 1");
    let sql = async || -> std::collections::BTreeMap<String, u64> {
        let mut groups = std::collections::BTreeMap::new();
        for b in ok(taglake_query::sql(ctx, &query).await) {
            let (values, counts) = (b.column(0).as_string::<i32>(), b.column(1).as_primitive::<Int64Type>());
            for r in 0..b.num_rows() {
                let value = if values.is_null(r) { "null".to_string() } else { values.value(r).to_string() };
                groups.insert(value, counts.value(r) as u64);
            }
        }
        groups
    };
    let groups = api();
    if sql().await != groups {
        fail(&format!("breakdown of `{text}` by {by}: SQL gives {:?}, the API {groups:?}", sql().await));
    }
    let mut api_seconds = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        std::hint::black_box(api());
        api_seconds.push(t.elapsed().as_secs_f64());
    }
    let mut sql_seconds = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        std::hint::black_box(sql().await);
        sql_seconds.push(t.elapsed().as_secs_f64());
    }
    let (stages, plan) = sql_stages(ctx, &query, runs).await;
    json!({"expr": text, "by": by, "query": query, "groups": groups, "api_seconds": api_seconds,
        "sql_seconds": sql_seconds, "sql_stage_seconds": stages, "sql_plan": plan})
}

async fn sql_count(ctx: &SessionContext, query: &str) -> u64 {
    let batches = ok(taglake_query::sql(ctx, query).await);
    let b = batches.iter().find(|b| b.num_rows() > 0).unwrap_or_else(|| fail("count(*) returned no row"));
    b.column(0).as_primitive::<Int64Type>().value(0) as u64
}

/// Where the SQL time goes: per run, the seconds of
/// `taglake_query::dataframe` (parse and the narrowed logical plan), of `create_physical_plan` (optimizer rules and physical
/// planning) and of running the plan; and the physical plan itself.
async fn sql_stages(ctx: &SessionContext, query: &str, runs: usize) -> (serde_json::Value, String) {
    let (mut logical, mut physical, mut execute) = (Vec::new(), Vec::new(), Vec::new());
    let mut shown = String::new();
    for _ in 0..runs {
        let t = Instant::now();
        let frame = ok(taglake_query::dataframe(ctx, query).await);
        logical.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let plan = frame.create_physical_plan().await.unwrap_or_else(|e| fail(&e.to_string()));
        physical.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        std::hint::black_box(collect(plan.clone(), ctx.task_ctx()).await.unwrap_or_else(|e| fail(&e.to_string())));
        execute.push(t.elapsed().as_secs_f64());
        shown = displayable(plan.as_ref()).indent(true).to_string();
    }
    (json!({"logical_plan": logical, "physical_plan": physical, "execute": execute}), shown)
}
