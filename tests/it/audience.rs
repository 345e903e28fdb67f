//! Audiences: tag columns of `members` with bitmap pushdown, the audience
//! language, `audience('…')` and `taglake audience`, each checked against
//! a reference that does not use the bitmaps the same way: DuckDB over
//! boolean columns built from the stored bitmaps by pyroaring, and
//! DataFusion over a materialised copy of `members` (no pushdown).

use std::path::Path;
use std::sync::{Arc, OnceLock};

use arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::SessionContext;
use taglake_query::TagSet;
use taglake_storage::{Table, Warehouse};

use crate::peers::{Peer, program, require_for};
use crate::tag_reference::{ingested_warehouse, runtime};
use crate::{Tagged, tagged, taglake, taglake_ok};

const MEMBERS: u64 = 3_000;

/// Generated, ingested and tagged once for the read-only tests here.
fn fixture() -> &'static Tagged {
    static F: OnceLock<Tagged> = OnceLock::new();
    F.get_or_init(|| tagged(MEMBERS, 11))
}

fn open(dir: &Path) -> (SessionContext, Arc<TagSet>) {
    let wh = Warehouse::open(dir.join("warehouse")).unwrap();
    let (ctx, tags) = runtime().block_on(taglake_query::open(&wh)).unwrap();
    (ctx, tags.unwrap())
}

fn query(ctx: &SessionContext, sql: &str) -> String {
    let batches = runtime().block_on(taglake_query::sql(ctx, sql)).unwrap_or_else(|e| panic!("{sql}: {e}"));
    pretty_format_batches(&batches).unwrap().to_string()
}

fn count(ctx: &SessionContext, sql: &str) -> u64 {
    let batches = runtime().block_on(taglake_query::sql(ctx, sql)).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let c = batches[0].column(0);
    arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(c.as_ref()).value(0) as u64
}

/// Tags with a spread of sizes that every generated base has.
const TAGS: &[&str] = &[
    "tier_gold",
    "tier_silver",
    "tier_regular",
    "dormant_30_60",
    "dormant_90_plus",
    "one_time_buyer",
    "lifecycle_mature",
    "lifecycle_introduction",
    "value_core",
    "rfm_r_5",
    "rfm_f_1",
    "category_lover_beauty",
];

/// A small deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A random expression as audience text and as an equivalent SQL filter
/// written with the other spellings tag filters can take.
fn random_expression(rng: &mut Rng, depth: u32) -> (String, String) {
    if depth == 0 || rng.below(3) == 0 {
        let t = TAGS[rng.below(TAGS.len())];
        let sql = match rng.below(5) {
            0 => format!("{t} = true"),
            1 => format!("{t} IS TRUE"),
            2 => format!("NOT {t} = false"),
            3 => format!("({t} <> false)"),
            _ => t.to_string(),
        };
        return (t.to_string(), sql);
    }
    let (a, sa) = random_expression(rng, depth - 1);
    match rng.below(4) {
        0 => (format!("NOT ({a})"), format!("({sa}) IS NOT TRUE")),
        1 => (format!("NOT ({a})"), format!("NOT ({sa})")),
        k => {
            let (b, sb) = random_expression(rng, depth - 1);
            let op = if k == 2 { "AND" } else { "OR" };
            (format!("({a}) {op} ({b})"), format!("({sa}) {op} ({sb})"))
        }
    }
}

#[test]
fn tag_only_counts_come_from_the_bitmaps_and_show_it_in_explain() {
    let (ctx, _) = open(&fixture().dir);
    let sql = "SELECT count(*) FROM members WHERE tier_gold AND NOT dormant_90_plus";
    let plan = query(&ctx, &format!("EXPLAIN {sql}"));
    let n = count(&ctx, sql);
    assert!(plan.contains("full_filters=[members.tier_gold, NOT members.dormant_90_plus]"), "{plan}");
    // The physical plan is the count itself: no scan, no row produced.
    assert!(plan.contains(&format!("ProjectionExec: expr=[{n} as count(*)]")), "{plan}");
    assert!(plan.contains("PlaceholderRowExec"), "{plan}");
    assert!(!plan.contains("DataSourceExec") && !plan.contains("TagBitmapExec"), "{plan}");
    // A query that needs rows but no attribute reads no file either.
    let keys = query(&ctx, "EXPLAIN SELECT member_key FROM members WHERE tier_gold AND NOT dormant_90_plus");
    assert!(keys.contains("TagBitmapExec: audience=[tier_gold AND NOT dormant_90_plus]"), "{keys}");
    assert!(!keys.contains("DataSourceExec"), "{keys}");
    // The CLI and audience() give the same count.
    let cli =
        taglake_ok(&["audience", "count", "tier_gold AND NOT dormant_90_plus", "--format", "json"], &fixture().dir);
    let v: serde_json::Value = serde_json::from_str(&cli).unwrap();
    assert_eq!(v["members"], n);
    assert_eq!(v["base"], MEMBERS);
    assert_eq!(count(&ctx, "SELECT count(*) FROM audience('tier_gold AND NOT dormant_90_plus')"), n);
}

#[test]
fn every_tag_column_holds_exactly_its_bitmap() {
    let (ctx, tags) = open(&fixture().dir);
    let wh = Warehouse::open(fixture().dir.join("warehouse")).unwrap();
    let info = runtime().block_on(taglake_tagger::snapshot::info(&wh, None)).unwrap();
    // Reference: the tag columns materialised once through the row path,
    // then filtered by DataFusion itself.
    query(&ctx, "CREATE TABLE reference AS SELECT * FROM members");
    let sums = info.tags.iter().map(|t| format!("sum(CASE WHEN \"{}\" THEN 1 ELSE 0 END)", t.name)).collect::<Vec<_>>();
    let batches =
        runtime().block_on(taglake_query::sql(&ctx, &format!("SELECT {} FROM reference", sums.join(", ")))).unwrap();
    for (i, t) in info.tags.iter().enumerate() {
        let col = batches[0].column(i);
        let from_rows = arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(col.as_ref()).value(0);
        assert_eq!(from_rows, t.members, "{}: row path", t.name);
        // The pushdown path for every fourth tag (one planning round over
        // a few thousand columns each; the row path above covers all).
        if i % 4 == 0 {
            let pushed = count(&ctx, &format!("SELECT count(*) FROM members WHERE \"{}\"", t.name));
            assert_eq!(pushed as i64, t.members, "{}: pushdown", t.name);
        }
    }
    assert_eq!(tags.universe().unwrap().len(), MEMBERS);
    // Bitmaps read one row at a time equal the tagger's own reader's.
    let (_, stored) = runtime().block_on(taglake_tagger::snapshot::bitmaps(&wh, None, None)).unwrap();
    tags.warm().unwrap();
    for (name, bitmap) in &stored {
        assert_eq!(&tags.bitmap(tags.position(name).unwrap()).unwrap().to_roaring(), bitmap, "{name}");
    }
    assert!(tags.position("in_experiment").is_some());
}

#[test]
fn mixed_queries_equal_a_reference_without_pushdown() {
    let (ctx, _) = open(&fixture().dir);
    query(&ctx, "CREATE TABLE plain AS SELECT * FROM members");
    let queries = [
        "SELECT count(*) FROM {t} WHERE tier_gold AND city = 'Shanghai'",
        "SELECT city, count(*) AS n FROM {t} WHERE (tier_gold OR category_lover_beauty) AND NOT dormant_90_plus GROUP BY city ORDER BY city",
        "SELECT count(*) FROM {t} WHERE tier_gold = false OR points_balance > 1000",
        "SELECT member_id, tier_gold, rfm_r_5 FROM {t} WHERE tier_silver IS NOT TRUE AND gender = 'F' ORDER BY member_id LIMIT 7",
        "SELECT count(*) FROM {t} WHERE tier_gold <> category_lover_beauty",
        "SELECT count(*) AS n, sum(CAST(tier_gold AS INT)) AS gold FROM {t} WHERE NOT in_experiment",
        "SELECT m.tier_gold, count(DISTINCT o.order_id) AS orders, round(sum(o.amount), 2) AS spend FROM {t} m \
         JOIN orders o ON o.member_key = m.member_key WHERE (m.value_core OR m.rfm_f_1) AND o.channel = 'app' \
         GROUP BY m.tier_gold ORDER BY m.tier_gold",
        "SELECT count(*) FROM {t} WHERE tier_gold AND tier_regular",
        "SELECT count(*) FROM {t} WHERE (one_time_buyer OR lifecycle_mature) AND member_id LIKE 'M%1'",
        "SELECT member_key FROM {t} WHERE lifecycle_introduction AND NOT tier_regular ORDER BY member_key",
        "SELECT count(*) FROM {t} WHERE tier_gold IS NULL OR dormant_30_60 IS NOT NULL AND false",
    ];
    for q in queries {
        let pushed = query(&ctx, &q.replace("{t}", "members"));
        let reference = query(&ctx, &q.replace("{t}", "plain"));
        assert_eq!(pushed, reference, "{q}");
    }
}

/// Counts each expression with DuckDB over boolean columns that pyroaring
/// decodes from the stored snapshot bytes.
const DUCKDB_COUNTS: &str = r#"
import json, sys
import duckdb, pyroaring
spec = json.load(open(sys.argv[1]))
con = duckdb.connect()
con.execute("CREATE TABLE keys AS SELECT member_key FROM read_parquet(?)", [spec["members"]])
rows = con.execute("SELECT name, bitmap FROM read_parquet(?)", [spec["tags"]]).fetchall()
bitmaps = {name: pyroaring.BitMap.deserialize(bytes(b)) for name, b in rows}
select = ["k.member_key"]
joins = ""
for i, name in enumerate(spec["used"]):
    con.execute(f"CREATE TABLE t{i} AS SELECT unnest(?::BIGINT[]) AS member_key", [list(bitmaps[name])])
    select.append(f"t{i}.member_key IS NOT NULL AS {name}")
    joins += f" LEFT JOIN t{i} ON t{i}.member_key = k.member_key"
con.execute(f"CREATE TABLE m AS SELECT {', '.join(select)} FROM keys k{joins}")
print(json.dumps([con.execute(f"SELECT count(*) FROM m WHERE {e}").fetchone()[0] for e in spec["exprs"]]))
"#;

#[test]
fn random_audiences_count_the_same_as_duckdb_and_as_sql() {
    let dir = &fixture().dir;
    let (ctx, tags) = open(dir);
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let exprs: Vec<(String, String)> = (0..60).map(|_| random_expression(&mut rng, 4)).collect();
    let mut ours = Vec::new();
    for (text, sql) in &exprs {
        let node = taglake_query::audience::parse(text, &tags).unwrap();
        let n = taglake_query::audience::evaluate(&node, &tags).unwrap().len();
        assert_eq!(count(&ctx, &format!("SELECT count(*) FROM members WHERE {sql}")), n, "SQL form: {sql}");
        assert_eq!(count(&ctx, &format!("SELECT count(*) FROM audience('{text}')")), n, "audience(): {text}");
        ours.push(n);
    }
    // The expressions are not all trivial: counts spread over the base.
    assert!(ours.iter().filter(|&&n| n > 0 && n < MEMBERS).count() > 30, "{ours:?}");
    if !require_for("the DuckDB comparison", &[Peer::DuckDb]) {
        return;
    }
    let wh = Warehouse::open(dir.join("warehouse")).unwrap();
    let members: Vec<String> = runtime()
        .block_on(wh.files(Table::Members))
        .unwrap()
        .into_iter()
        .map(|f| f.path.display().to_string())
        .collect();
    let snapshot = tags.snapshot.unwrap().to_string();
    let tag_files: Vec<String> = runtime()
        .block_on(wh.files(Table::Tags))
        .unwrap()
        .into_iter()
        .filter(|f| f.partition_value("snapshot") == Some(snapshot.as_str()))
        .map(|f| f.path.display().to_string())
        .collect();
    let spec = serde_json::json!({
        "members": members,
        "tags": tag_files,
        "used": TAGS,
        "exprs": exprs.iter().map(|(t, _)| t).collect::<Vec<_>>(),
    });
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("spec.json"), spec.to_string()).unwrap();
    std::fs::write(tmp.path().join("counts.py"), DUCKDB_COUNTS).unwrap();
    let out = std::process::Command::new(program(Peer::DuckDb))
        .arg(tmp.path().join("counts.py"))
        .arg(tmp.path().join("spec.json"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let duck: Vec<u64> = serde_json::from_slice(&out.stdout).unwrap();
    for ((text, _), (a, b)) in exprs.iter().zip(ours.iter().zip(&duck)) {
        assert_eq!(a, b, "taglake vs DuckDB: {text}");
    }
}

#[test]
fn overlap_and_sample_agree_with_counts() {
    let dir = &fixture().dir;
    let out = taglake_ok(
        &["audience", "overlap", "tier_gold", "category_lover_beauty", "NOT tier_gold", "--format", "json"],
        dir,
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let count_of = |e: &str| -> u64 {
        let j = taglake_ok(&["audience", "count", e, "--format", "json"], dir);
        serde_json::from_str::<serde_json::Value>(&j).unwrap()["members"].as_u64().unwrap()
    };
    let m = &v["overlap"];
    assert_eq!(m[0][1].as_u64().unwrap(), count_of("tier_gold AND category_lover_beauty"));
    assert_eq!(m[1][0], m[0][1]);
    assert_eq!(m[0][2], 0);
    assert_eq!(m[0][0].as_u64().unwrap() + m[2][2].as_u64().unwrap(), MEMBERS);
    let table = taglake_ok(&["audience", "overlap", "tier_gold", "category_lover_beauty"], dir);
    assert!(table.contains("A1") && table.contains("% of the row"), "{table}");

    let csv = taglake_ok(
        &["audience", "sample", "tier_gold", "--n", "5", "--columns", "member_id,tier_gold,city", "--format", "csv"],
        dir,
    );
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "member_id,tier_gold,city");
    assert_eq!(lines.len(), 6);
    assert!(lines[1..].iter().all(|l| l.split(',').nth(1) == Some("true")), "{csv}");
    let again = taglake_ok(
        &["audience", "sample", "tier_gold", "--n", "5", "--columns", "member_id,tier_gold,city", "--format", "csv"],
        dir,
    );
    assert_eq!(csv, again, "same seed, same sample");
    let other = taglake_ok(
        &[
            "audience",
            "sample",
            "tier_gold",
            "--n",
            "5",
            "--seed",
            "2",
            "--columns",
            "member_id,tier_gold,city",
            "--format",
            "csv",
        ],
        dir,
    );
    assert_ne!(csv, other, "another seed, another sample");
}

#[test]
fn audience_errors_point_at_the_problem() {
    let dir = &fixture().dir;
    let out = taglake(&["audience", "count", "tier_gold AND NOT (dormant_60_90 OR tier_gld)"], dir);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown tag `tier_gld`") && err.contains("did you mean `tier_gold`?"), "{err}");
    assert!(err.contains("(at position 37)") && err.contains(&format!("{}^^^^^^^^", " ".repeat(38))), "{err}");
    let out = taglake(&["audience", "count", "tier_gold AND (dormant_60_90"], dir);
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected `)` to close the `(` at position 15"));
    let (ctx, _) = open(dir);
    let e = runtime()
        .block_on(taglake_query::sql(&ctx, "SELECT count(*) FROM audience('tier_gld')"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("did you mean `tier_gold`?"), "{e}");
    let e = runtime().block_on(taglake_query::sql(&ctx, "SELECT count(*) FROM audience(1)")).unwrap_err().to_string();
    assert!(e.contains("audience() takes one text literal"), "{e}");
    // A warehouse with members but no tags says what to run.
    let tmp = tempfile::tempdir().unwrap();
    ingested_warehouse(tmp.path(), 50, 3, "warehouse");
    let out = taglake(&["audience", "count", "tier_gold"], tmp.path());
    assert!(String::from_utf8_lossy(&out.stderr).contains("never tagged: run `taglake tag`"));
}

/// Each query plans over a `members` holding every attribute but only the
/// tag columns it names; statements that may use columns they do not name
/// get the full table; answers and errors are the full table's.
#[test]
fn queries_plan_over_the_tag_columns_they_name() {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::LogicalPlan;

    let (ctx, _) = open(&fixture().dir);
    let wh = Warehouse::open(fixture().dir.join("warehouse")).unwrap();
    let tags = runtime().block_on(taglake_tagger::snapshot::info(&wh, None)).unwrap().tags.len();
    let attributes = runtime().block_on(async { wh.provider(Table::Members, &ctx).await }).unwrap().unwrap().schema();
    let attributes = attributes.fields().len();
    // The width of every `members` (or `audience()`) scan source in the plan.
    let widths = |sql: &str| {
        let state = ctx.state();
        let statement = taglake_query::parse::statements(&state, sql).unwrap().pop_front().unwrap();
        let plan = runtime().block_on(taglake_query::narrow::plan(&state, statement)).unwrap();
        let mut widths = Vec::new();
        plan.apply(|node| {
            if let LogicalPlan::TableScan(scan) = node
                && (scan.table_name.table() == "members" || scan.table_name.table().starts_with("audience"))
            {
                widths.push(scan.source.schema().fields().len());
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .unwrap();
        widths
    };
    assert_eq!(widths("SELECT count(*) FROM members WHERE tier_gold AND NOT dormant_90_plus"), [attributes + 2]);
    assert_eq!(widths("SELECT city, count(*) FROM members WHERE \"tier_gold\" GROUP BY 1"), [attributes + 1]);
    assert_eq!(
        widths("SELECT count(*) FROM audience('tier_gold OR rfm_r_5') WHERE value_core AND city <> 'x'"),
        [attributes + 1]
    );
    for full in
        ["SELECT * FROM members LIMIT 1", "SELECT m.* FROM members m LIMIT 1", "SELECT * FROM audience('tier_gold')"]
    {
        assert!(widths(full).iter().all(|w| *w > attributes + tags / 2), "{full}: {:?}", widths(full));
    }
    // Same answers as over a plain copy, with tags named in every place a
    // column can be named.
    query(&ctx, "CREATE TABLE plain_narrow AS SELECT * FROM members");
    for q in [
        "SELECT count(*), sum(CAST(tier_gold AS INT)) AS gold FROM {t} WHERE rfm_r_5 OR value_core",
        "SELECT x.tier_silver, count(*) FROM (SELECT tier_silver, member_key FROM {t} WHERE NOT tier_gold) x GROUP BY 1 ORDER BY 1",
        "WITH a AS (SELECT member_key FROM {t} WHERE one_time_buyer) SELECT count(*) FROM a JOIN {t} m USING (member_key) WHERE m.lifecycle_mature",
        "SELECT lifecycle_mature AS l, count(*) FROM {t} GROUP BY l ORDER BY l",
        "SELECT count(*) FROM {t} WHERE member_key IN (SELECT member_key FROM {t} WHERE \"dormant_30_60\")",
    ] {
        assert_eq!(query(&ctx, &q.replace("{t}", "members")), query(&ctx, &q.replace("{t}", "plain_narrow")), "{q}");
    }
    // A misspelt column is reported with the full table's fields.
    let e = runtime()
        .block_on(taglake_query::sql(&ctx, "SELECT count(*) FROM members WHERE tier_gol"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("tier_gold"), "{e}");
}

/// A repeated statement starts from its kept plan; plans with volatile
/// functions are not kept, and a kept plan over a table registered again
/// under its name is planned again (the new table's answer, not the old).
#[test]
fn repeated_statements_reuse_their_plan_while_their_tables_stay() {
    use arrow::array::{Int64Array, RecordBatch};

    let (ctx, tags) = open(&fixture().dir);
    let cache = taglake_query::cache::PlanCache::of(&ctx.state()).expect("a session keeps plans");
    let q = "SELECT count(*) FROM members WHERE tier_gold AND NOT dormant_90_plus";
    let want = {
        let node = taglake_query::audience::parse("tier_gold AND NOT dormant_90_plus", &tags).unwrap();
        taglake_query::audience::evaluate(&node, &tags).unwrap().len()
    };
    assert_eq!(count(&ctx, q), want);
    let (_, hits, _) = cache.stats();
    assert_eq!(count(&ctx, q), want);
    assert_eq!(cache.stats().1, hits + 1, "the second run reuses the plan");

    let kept = cache.stats().0;
    query(&ctx, "SELECT count(*) FROM members WHERE tier_gold AND random() < 2.0");
    assert_eq!(cache.stats().0, kept, "a plan with random() is not kept");

    let rows = |n: i64| {
        let keys = Int64Array::from_iter_values(0..n);
        RecordBatch::try_from_iter([("k", Arc::new(keys) as arrow::array::ArrayRef)]).unwrap()
    };
    ctx.register_batch("cache_probe", rows(3)).unwrap();
    assert_eq!(count(&ctx, "SELECT count(*) FROM cache_probe"), 3);
    ctx.deregister_table("cache_probe").unwrap();
    ctx.register_batch("cache_probe", rows(5)).unwrap();
    assert_eq!(count(&ctx, "SELECT count(*) FROM cache_probe"), 5, "a replaced table is planned again");

    // DESCRIBE changes nothing: the kept plans stay.
    let kept = cache.stats().0;
    assert!(kept > 0);
    query(&ctx, "DESCRIBE cache_probe");
    assert_eq!(cache.stats().0, kept);
    // A statement that is not a query may change how text plans: the cache
    // starts over.
    query(&ctx, "SET datafusion.execution.batch_size = 4096");
    assert_eq!(cache.stats().0, 0);
}

/// A random predicate over exclusive family columns, tags and their
/// combinations, in SQL, with the NULLs of members without a value.
fn random_family_predicate(rng: &mut Rng, depth: u32) -> String {
    const TIERS: &[&str] = &["'gold'", "'silver'", "'regular'", "'platinum'", "NULL"];
    const VALUES: &[&str] = &["'core'", "'middle'", "'tail'", "'nothing'"];
    if depth == 0 || rng.below(3) == 0 {
        let tier = TIERS[rng.below(TIERS.len())];
        let value = VALUES[rng.below(VALUES.len())];
        return match rng.below(11) {
            0 => format!("tier = {tier}"),
            1 => format!("tier <> {tier}"),
            2 => format!("{value} = value"),
            3 => format!("value IN ({value}, {})", VALUES[rng.below(VALUES.len())]),
            4 => format!("value NOT IN ({value}, {tier})"),
            5 => format!("tier IS NOT DISTINCT FROM {tier}"),
            6 => format!("value IS DISTINCT FROM {value}"),
            7 => "value IS NULL".to_string(),
            8 => "rfm_segment IS NOT NULL".to_string(),
            9 => format!("rfm_segment = '{}'", ["champions", "lost", "loyal"][rng.below(3)]),
            _ => TAGS[rng.below(TAGS.len())].to_string(),
        };
    }
    let a = random_family_predicate(rng, depth - 1);
    match rng.below(6) {
        0 => format!("NOT ({a})"),
        1 => format!("({a}) IS NOT TRUE"),
        2 => format!("({a}) IS FALSE"),
        3 => format!("({a}) = false"),
        k => {
            let b = random_family_predicate(rng, depth - 1);
            format!("({a}) {} ({b})", if k == 4 { "AND" } else { "OR" })
        }
    }
}

#[test]
fn family_columns_and_breakdowns_equal_a_reference_without_pushdown() {
    let (ctx, tags) = open(&fixture().dir);
    query(&ctx, "CREATE TABLE plain_families AS SELECT * FROM members");
    // Each exclusive family's column holds exactly the value of the tag a
    // member has, and every member has at most one.
    let names: Vec<&str> = tags.families().iter().map(|f| f.name.as_str()).collect();
    for want in ["tier", "value", "rfm_segment", "store", "tenure", "age_band"] {
        assert!(names.contains(&want), "{want} is not exclusive: {names:?}");
    }
    assert!(!names.contains(&"rfm") && !names.contains(&"dormancy") && !names.contains(&"interest"), "{names:?}");
    for (column, tag) in [("tier", "tier_gold"), ("value", "value_core"), ("rfm_segment", "rfm_champions")] {
        let value = tags.tag(tags.position(tag).unwrap()).value.clone().unwrap();
        let q = format!("SELECT count(*) FROM plain_families WHERE ({column} = '{value}') <> {tag}");
        assert_eq!(count(&ctx, &q), 0, "{q}");
    }
    // City and birthday are attributes: their families' columns are `…_value`.
    let schema = query(&ctx, "DESCRIBE members");
    assert!(schema.contains("city_value") && schema.contains("birthday_value"), "{schema}");
    let mut rng = Rng(0x5eed_fa31);
    for _ in 0..120 {
        let p = random_family_predicate(&mut rng, 3);
        for q in [
            format!("SELECT count(*) FROM {{t}} WHERE {p}"),
            format!("SELECT count(*) FROM {{t}} WHERE tier_silver OR ({p})"),
        ] {
            let pushed = count(&ctx, &q.replace("{t}", "members"));
            let reference = count(&ctx, &q.replace("{t}", "plain_families"));
            assert_eq!(pushed, reference, "{q}");
        }
    }
    // GROUP BY family and tag columns: counted from the bitmaps (no scan
    // in the plan), the same rows as grouping the plain copy.
    let grouped = [
        "SELECT tier, count(*) AS n FROM {t} WHERE category_lover_beauty AND NOT dormant_90_plus GROUP BY tier ORDER BY tier",
        "SELECT value, tier, count(*) AS n, count(member_key) AS k FROM {t} GROUP BY value, tier ORDER BY 1, 2",
        "SELECT rfm_segment, one_time_buyer, count(1) FROM {t} WHERE tier = 'gold' OR tier IS NULL GROUP BY 1, 2 ORDER BY 1, 2",
        "SELECT tier, count(*) FROM {t} WHERE value = 'nothing' GROUP BY tier",
        "SELECT store, count(*) AS n FROM {t} GROUP BY store HAVING count(*) > 20 ORDER BY n DESC, store LIMIT 5",
        "SELECT m.tier, count(*) AS n FROM {t} m WHERE m.tier_gold OR m.rfm_f_1 GROUP BY m.tier ORDER BY 1",
        // Not counted (an attribute in the key), still the same rows.
        "SELECT gender, tier, count(*) FROM {t} WHERE NOT (tier = 'regular') GROUP BY 1, 2 ORDER BY 1, 2",
        "SELECT member_id, tier, value, rfm_segment FROM {t} WHERE tier_gold ORDER BY member_id LIMIT 9",
    ];
    for q in grouped {
        let pushed = query(&ctx, &q.replace("{t}", "members"));
        let reference = query(&ctx, &q.replace("{t}", "plain_families"));
        assert_eq!(pushed, reference, "{q}");
    }
    let plan = query(&ctx, &format!("EXPLAIN {}", grouped[0].replace("{t}", "members")));
    assert!(plan.contains("Values: (Utf8(\""), "{plan}");
    assert!(!plan.contains("TagBitmapExec") && !plan.contains("TagFilterExec"), "{plan}");

    // `audience breakdown`: the same counts, with the shares of all members.
    let out = taglake_ok(
        &["audience", "breakdown", "category_lover_beauty AND NOT dormant_90_plus", "--by", "tier", "--format", "json"],
        &fixture().dir,
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    for row in v["values"].as_array().unwrap() {
        let value = row["value"].as_str();
        let filter = value.map_or("tier IS NULL".to_string(), |s| format!("tier = '{s}'"));
        let n = count(
            &ctx,
            &format!(
                "SELECT count(*) FROM plain_families WHERE category_lover_beauty AND NOT dormant_90_plus AND {filter}"
            ),
        );
        assert_eq!(row["members"], n, "{row}");
        let all = count(&ctx, &format!("SELECT count(*) FROM plain_families WHERE {filter}"));
        assert_eq!(row["base_members"], all, "{row}");
    }
    let table = taglake_ok(&["audience", "breakdown", "everyone", "--by", "value"], &fixture().dir);
    assert!(table.contains("core") && table.contains("index") && table.contains("(none)"), "{table}");
    let out = taglake(&["audience", "breakdown", "tier_gold", "--by", "dormancy"], &fixture().dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("can share members") && err.contains("tier"), "{err}");
    let out = taglake(&["audience", "breakdown", "tier_gold", "--by", "teir"], &fixture().dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("did you mean `tier`?"), "{err}");
}

/// A random condition on a member attribute as audience text and as a SQL
/// filter that is true exactly for the members it selects (null is false;
/// a day on a timestamp column is that whole day).
fn random_condition(rng: &mut Rng, cities: &[String]) -> (String, String) {
    let city = |rng: &mut Rng| cities[rng.below(cities.len())].replace('\'', "''");
    let (text, sql) = match rng.below(9) {
        0 => {
            let c = city(rng);
            (format!("city = '{c}'"), format!("city = '{c}'"))
        }
        1 => {
            let (a, b) = (city(rng), city(rng));
            (format!("city IN ('{a}', '{b}')"), format!("city IN ('{a}', '{b}')"))
        }
        2 => {
            let c = city(rng);
            (format!("city NOT IN ('{c}')"), format!("city NOT IN ('{c}')"))
        }
        3 => {
            let g = ["F", "M", "U", "x"][rng.below(4)];
            let op = ["=", "!=", "<>"][rng.below(3)];
            (format!("gender {op} '{g}'"), format!("gender {op} '{g}'"))
        }
        4 => {
            let p = rng.below(4_000) as i64 - 100;
            let op = ["<", "<=", ">", ">=", "=", "!="][rng.below(6)];
            (format!("points_balance {op} {p}"), format!("points_balance {op} {p}"))
        }
        5 | 6 => {
            let day =
                chrono::NaiveDate::from_ymd_opt(2019, 1, 1).unwrap() + chrono::Duration::days(rng.below(2_500) as i64);
            let next = day + chrono::Duration::days(1);
            let ts = |d: chrono::NaiveDate| format!("CAST('{d}T00:00:00Z' AS TIMESTAMP)");
            let op = ["<", "<=", ">", ">=", "=", "!="][rng.below(6)];
            let sql = match op {
                "<" => format!("registered_at < {}", ts(day)),
                "<=" => format!("registered_at < {}", ts(next)),
                ">" => format!("registered_at >= {}", ts(next)),
                ">=" => format!("registered_at >= {}", ts(day)),
                "=" => format!("registered_at >= {} AND registered_at < {}", ts(day), ts(next)),
                _ => format!("NOT (registered_at >= {} AND registered_at < {})", ts(day), ts(next)),
            };
            (format!("registered_at {op} '{day}'"), sql)
        }
        7 => {
            let day =
                chrono::NaiveDate::from_ymd_opt(1960, 1, 1).unwrap() + chrono::Duration::days(rng.below(16_000) as i64);
            (format!("birthday >= '{day}'"), format!("birthday >= DATE '{day}'"))
        }
        _ => {
            let (col, not) = (["birthday", "gender", "city", "points_balance"][rng.below(4)], rng.below(2) == 0);
            let op = if not { "IS NOT NULL" } else { "IS NULL" };
            (format!("{col} {op}"), format!("{col} {op}"))
        }
    };
    (text, format!("coalesce(({sql}), false)"))
}

#[test]
fn attribute_conditions_count_the_same_as_sql_without_pushdown() {
    let (ctx, tags) = open(&fixture().dir);
    query(&ctx, "CREATE TABLE plain_attributes AS SELECT * FROM members");
    let batches = runtime()
        .block_on(taglake_query::sql(&ctx, "SELECT DISTINCT city FROM members WHERE city IS NOT NULL"))
        .unwrap();
    let cities: Vec<String> = batches
        .iter()
        .flat_map(|b| {
            let text = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8).unwrap();
            arrow::array::AsArray::as_string::<i32>(text.as_ref())
                .iter()
                .flatten()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .chain(["Nowhere".to_string(), "O'Hare".to_string()])
        .collect();
    assert!(cities.len() > 3, "{cities:?}");
    let mut rng = Rng(0x5eed_a770_0000_0007);
    let mut counts = Vec::new();
    for i in 0..80 {
        let (cond, cond_sql) = random_condition(&mut rng, &cities);
        let (tag, tag_sql) = random_expression(&mut rng, 2);
        let (text, sql) = match i % 4 {
            0 => (cond.clone(), cond_sql.clone()),
            1 => (format!("({tag}) AND {cond}"), format!("({tag_sql}) AND {cond_sql}")),
            2 => (format!("({tag}) OR NOT {cond}"), format!("({tag_sql}) OR NOT {cond_sql}")),
            _ => {
                let (other, other_sql) = random_condition(&mut rng, &cities);
                (
                    format!("{cond} AND NOT ({other} OR {tag})"),
                    format!("{cond_sql} AND NOT ({other_sql} OR ({tag_sql}))"),
                )
            }
        };
        let node = taglake_query::audience::parse(&text, &tags).unwrap_or_else(|e| panic!("{text}: {e}"));
        let n = taglake_query::audience::count(&node, &tags).unwrap();
        let reference = count(&ctx, &format!("SELECT count(*) FROM plain_attributes WHERE {sql}"));
        assert_eq!(n, reference, "{text}\n  vs SQL: {sql}");
        let quoted = text.replace('\'', "''");
        assert_eq!(count(&ctx, &format!("SELECT count(*) FROM audience('{quoted}')")), n, "audience(): {text}");
        // Printed back, it is the same audience.
        let shown = taglake_query::audience::display(&node, &tags);
        assert_eq!(
            taglake_query::audience::count(&taglake_query::audience::parse(&shown, &tags).unwrap(), &tags).unwrap(),
            n
        );
        counts.push(n);
    }
    assert!(counts.iter().filter(|&&n| n > 0 && n < MEMBERS).count() > 40, "{counts:?}");
}
