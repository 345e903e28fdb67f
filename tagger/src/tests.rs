//! Hand-computed cases: a tiny warehouse written row by row, the exact
//! boundaries of the core rules, and catalog errors.

use std::sync::Arc;

use arrow::array::TimestampMicrosecondArray;
use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
};
use chrono::NaiveDate;
use roaring::RoaringBitmap;
use taglake_storage::{Table, Wait, Warehouse, WriterLock};

use crate::{RefreshOptions, refresh, snapshot};

fn lock(wh: &Warehouse) -> WriterLock {
    wh.lock_writer("tagger test", Wait::No).unwrap()
}

const DAY_US: i64 = 86_400_000_000;

fn day(d: &str) -> i64 {
    let d = NaiveDate::parse_from_str(d, "%Y-%m-%d").unwrap();
    (d - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()).num_days()
}

/// A member: id, registered date, birthday.
struct M(&'static str, &'static str, Option<&'static str>);
/// An order line: order id, member index, date, channel, store, category, quantity, amount, discount, coupon.
struct L(&'static str, usize, &'static str, &'static str, &'static str, &'static str, i32, f64, f64, bool);

async fn warehouse(dir: &std::path::Path, members: &[M], lines: &[L]) -> Warehouse {
    warehouse_with_stride(dir, members, lines, 1).await
}

/// Member `i` gets key `i * stride`: with a large stride the members fall
/// into different chunks of the key space.
async fn warehouse_with_stride(dir: &std::path::Path, members: &[M], lines: &[L], stride: i64) -> Warehouse {
    let wh = Warehouse::open(dir).unwrap();
    let n = members.len();
    let ids: Vec<&str> = members.iter().map(|m| m.0).collect();
    let keys: Vec<i64> = (0..n as i64).map(|k| k * stride).collect();
    let mut w = wh.append(Table::MemberIds).await.unwrap();
    w.write(
        RecordBatch::try_new(
            Table::MemberIds.arrow_schema(),
            vec![Arc::new(StringArray::from(ids.clone())), Arc::new(Int64Array::from(keys.clone()))],
        )
        .unwrap(),
    )
    .await
    .unwrap();
    w.commit().await.unwrap();
    let ts = |v: Vec<i64>| Arc::new(TimestampMicrosecondArray::from(v).with_timezone("UTC")) as ArrayRef;
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(keys)),
        Arc::new(StringArray::from(ids)),
        ts(members.iter().map(|m| day(m.1) * DAY_US).collect()),
        Arc::new(Date32Array::from(members.iter().map(|m| m.2.map(|b| day(b) as i32)).collect::<Vec<_>>())),
        Arc::new(StringArray::from(vec![Some("f"); n])),
        Arc::new(StringArray::from(vec![Some("Lyon"); n])),
        Arc::new(StringArray::from(vec![Some("app"); n])),
        Arc::new(StringArray::from(vec![Some("S9"); n])),
        Arc::new(Int64Array::from(vec![Some(700); n])),
    ];
    let mut w = wh.append(Table::Members).await.unwrap();
    w.write(RecordBatch::try_new(Table::Members.arrow_schema(), cols).unwrap()).await.unwrap();
    w.commit().await.unwrap();
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(lines.iter().map(|l| l.0).collect::<Vec<_>>())),
        Arc::new(Int32Array::from((0..lines.len() as i32).collect::<Vec<_>>())),
        Arc::new(Int64Array::from(lines.iter().map(|l| l.1 as i64 * stride).collect::<Vec<_>>())),
        Arc::new(StringArray::from(lines.iter().map(|l| members[l.1].0).collect::<Vec<_>>())),
        ts(lines.iter().map(|l| day(l.2) * DAY_US + 10 * 3_600_000_000).collect()),
        Arc::new(StringArray::from(lines.iter().map(|l| l.3).collect::<Vec<_>>())),
        Arc::new(StringArray::from(lines.iter().map(|l| Some(l.4).filter(|s| !s.is_empty())).collect::<Vec<_>>())),
        Arc::new(StringArray::from(vec!["sku"; lines.len()])),
        Arc::new(StringArray::from(lines.iter().map(|l| Some(l.5)).collect::<Vec<_>>())),
        Arc::new(Int32Array::from(lines.iter().map(|l| l.6).collect::<Vec<_>>())),
        Arc::new(Float64Array::from(lines.iter().map(|l| l.7).collect::<Vec<_>>())),
        Arc::new(Float64Array::from(lines.iter().map(|l| l.8).collect::<Vec<_>>())),
        Arc::new(BooleanArray::from(lines.iter().map(|l| l.9).collect::<Vec<_>>())),
    ];
    let mut w = wh.append(Table::Orders).await.unwrap();
    w.write(RecordBatch::try_new(Table::Orders.arrow_schema(), cols).unwrap()).await.unwrap();
    w.commit().await.unwrap();
    wh
}

async fn tags_of(wh: &Warehouse) -> Vec<(String, RoaringBitmap)> {
    snapshot::bitmaps(wh, None, None).await.unwrap().1
}

/// Member indices (keys divided by the stride) of a tag.
fn members_of(tags: &[(String, RoaringBitmap)], name: &str, stride: u32) -> Vec<u32> {
    tags.iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no tag {name}"))
        .1
        .iter()
        .map(|k| k / stride)
        .collect()
}

/// As of 2026-11-01. Member 0: gold by exactly 600.00 spent in the window
/// (two lines of one order), last order 30 days ago. Member 1: growth
/// 5,999.9 (silver), last order 60 days ago. Member 2: never bought.
/// Member 3: pre-churn (4 orders 121–300 days ago). Member 4: one order
/// 366 days ago (outside the 365-day window). Member 5 registers on D
/// (not in the base).
#[tokio::test(flavor = "multi_thread")]
async fn core_rules_at_their_boundaries() {
    core_rules(1).await;
}

/// The same members spread over four chunks of the key space: scores,
/// ranks and bitmaps merge across chunks exactly as within one.
#[tokio::test(flavor = "multi_thread")]
async fn core_rules_across_chunks() {
    core_rules(70_001).await;
}

async fn core_rules(stride: u32) {
    let dir = tempfile::tempdir().unwrap();
    let members = [
        M("a", "2024-01-01", Some("1960-11-15")),
        M("b", "2024-01-01", None),
        M("c", "2026-10-05", None),
        M("d", "2023-01-01", Some("2000-03-01")),
        M("e", "2024-01-01", None),
        M("f", "2026-11-01", None),
    ];
    let lines = [
        L("o1", 0, "2026-10-02", "app", "", "beauty", 1, 250.25, 0.0, false),
        L("o1", 0, "2026-10-02", "app", "", "beauty", 2, 349.75, 5.0, false),
        L("o2", 1, "2026-09-02", "store", "S1", "snacks", 1, 599.99, 0.0, true),
        L("o3", 3, "2026-07-03", "store", "S2", "toys", 1, 10.0, 0.0, false),
        L("o4", 3, "2026-05-01", "store", "S2", "toys", 1, 10.0, 0.0, false),
        L("o5", 3, "2026-03-01", "store", "S1", "toys", 1, 10.0, 0.0, false),
        L("o6", 3, "2026-01-05", "app", "S1", "toys", 1, 10.0, 0.0, false),
        L("o7", 4, "2025-10-31", "store", "S3", "beauty", 1, 10.0, 0.0, false),
        // After D: ignored.
        L("o8", 2, "2026-11-01", "store", "S3", "beauty", 1, 10.0, 0.0, false),
    ];
    let wh = warehouse_with_stride(dir.path(), &members, &lines, stride as i64).await;
    let s = refresh(&wh, &lock(&wh), &RefreshOptions::default()).await.unwrap();
    assert_eq!(s.as_of, NaiveDate::from_ymd_opt(2026, 11, 2).unwrap(), "the day after the newest order");
    let s = refresh(
        &wh,
        &lock(&wh),
        &RefreshOptions::builder().as_of(NaiveDate::from_ymd_opt(2026, 11, 1)).build().unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(s.base_members, 5);
    assert_eq!(s.order_lines, 8);
    let t = tags_of(&wh).await;
    let members_of = |t: &[(String, RoaringBitmap)], name: &str| members_of(t, name, stride);
    assert_eq!(members_of(&t, "tier_gold"), [0]);
    assert_eq!(members_of(&t, "tier_silver"), [1]);
    assert_eq!(members_of(&t, "tier_regular"), [2, 3, 4]);
    assert_eq!(members_of(&t, "dormant_30_60"), [0]);
    assert_eq!(members_of(&t, "dormant_60_90"), [1]);
    assert_eq!(members_of(&t, "dormant_90_plus"), [3, 4]);
    assert_eq!(members_of(&t, "sleeping_180_plus"), [4]);
    assert_eq!(members_of(&t, "lifecycle_introduction"), [2]);
    assert_eq!(members_of(&t, "lifecycle_growth"), [0, 1, 4]);
    assert_eq!(members_of(&t, "lifecycle_decline"), [3]);
    assert_eq!(members_of(&t, "lifecycle_churned"), Vec::<u32>::new());
    assert_eq!(members_of(&t, "one_time_buyer"), [0, 1, 4]);
    assert_eq!(members_of(&t, "frequency_none_365d"), [4]);
    assert_eq!(members_of(&t, "home_store_s1"), [1, 3], "S1 and S2 tie for member 3: first by name");
    assert_eq!(members_of(&t, "home_store_s9"), [0, 2], "no store orders: the registered home store");
    assert_eq!(members_of(&t, "channel_main_store"), [1, 3, 4]);
    assert_eq!(members_of(&t, "birthday_month_11"), [0]);
    assert_eq!(members_of(&t, "birthday_this_month"), [0]);
    assert_eq!(members_of(&t, "new_last_month"), [2]);
    assert_eq!(members_of(&t, "category_lover_toys"), [3]);
    assert_eq!(members_of(&t, "promotion_user"), [0, 1]);
    // Value pyramid over the 4 members with orders by spend_365d (600,
    // 599.99, 40, 0): core = ranks [0, floor(0.8)) = none, middle = [0, 3), tail = [3, 4).
    assert_eq!(members_of(&t, "value_core"), Vec::<u32>::new());
    assert_eq!(members_of(&t, "value_middle"), [0, 1, 3]);
    assert_eq!(members_of(&t, "value_tail"), [4]);
    // Recency ntile(5) over 4 members: each gets its own score, best = most recent.
    assert_eq!(members_of(&t, "rfm_r_4"), [0]);
    assert_eq!(members_of(&t, "rfm_r_1"), [4]);
    let features = wh.read(Table::Features, Some(&["member_key", "orders_total", "spend_365d"])).await.unwrap();
    let rows: usize = features.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 5, "one features row per base member");
}

#[tokio::test(flavor = "multi_thread")]
async fn catalog_errors_name_the_tag_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(
        dir.path(),
        &[M("a", "2024-01-01", None)],
        &[L("o1", 0, "2026-10-02", "app", "", "beauty", 1, 1.0, 0.0, false)],
    )
    .await;
    let run = |text: &str| {
        let path = dir.path().join("user.toml");
        std::fs::write(&path, text).unwrap();
        let wh = wh.clone();
        async move {
            refresh(&wh, &lock(&wh), &RefreshOptions::builder().catalog(path).build().unwrap())
                .await
                .unwrap_err()
                .to_string()
        }
    };
    let err = run("[[tag]]\nname = \"x\"\nfamily = \"f\"\ndescription = \"d\"\nrule = \"orders_total > 1 and recency_dayz < 3\"\n").await;
    assert!(err.contains("tag `x`"), "{err}");
    assert!(err.contains("position 22:"), "{err}");
    assert!(err.contains("did you mean `recency_days`"), "{err}");
    let err =
        run("[[tag]]\nname = \"tier_gold\"\nfamily = \"f\"\ndescription = \"d\"\nrule = \"orders_total > 1\"\n").await;
    assert!(err.contains("tag `tier_gold` is declared twice"), "{err}");
    let err = run("[[tag]]\nname = \"a1\"\nfamily = \"f\"\ndescription = \"d\"\nrule = \"a2\"\n[[tag]]\nname = \"a2\"\nfamily = \"f\"\ndescription = \"d\"\nrule = \"a1\"\n").await;
    assert!(err.contains("cycle: a1 → a2 → a1") || err.contains("cycle: a2 → a1 → a2"), "{err}");
    let err =
        run("[[partition]]\nname = \"p_{value}\"\nfamily = \"f\"\ndescription = \"d\"\nfeature = \"orders_total\"\n")
            .await;
    assert!(err.contains("is a number; list the values"), "{err}");
    // A valid user catalog adds its tags to the default; `replace_default` keeps only its own.
    let path = dir.path().join("ok.toml");
    std::fs::write(&path, "[[tag]]\nname = \"big_spender\"\nfamily = \"mine\"\ndescription = \"d\"\nrule = \"tier_gold or spend_total > 0.5\"\n").unwrap();
    refresh(&wh, &lock(&wh), &RefreshOptions::builder().catalog(path.clone()).build().unwrap()).await.unwrap();
    let info = snapshot::info(&wh, None).await.unwrap();
    assert!(info.tags.len() > 100 && info.tags.iter().any(|t| t.name == "big_spender" && t.members == 1));
    std::fs::write(&path, "replace_default = true\n[[tag]]\nname = \"big_spender\"\nfamily = \"mine\"\ndescription = \"d\"\nrule = \"spend_total > 0.5\"\n").unwrap();
    refresh(&wh, &lock(&wh), &RefreshOptions::builder().catalog(path).build().unwrap()).await.unwrap();
    assert_eq!(snapshot::info(&wh, None).await.unwrap().tags.len(), 1);
}

/// A run killed between its `features` commit and its snapshot: the next
/// run over the same inputs keeps that commit (it is what it would write)
/// and publishes the snapshot that references it, as one clean run does.
#[tokio::test(flavor = "multi_thread")]
async fn a_rerun_keeps_the_features_an_interrupted_run_committed() {
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(
        dir.path(),
        &[M("a", "2024-01-01", None), M("b", "2024-01-01", None)],
        &[L("o1", 0, "2026-10-02", "app", "", "beauty", 1, 10.0, 0.0, false)],
    )
    .await;
    let lock = lock(&wh);
    let options = RefreshOptions::default();
    drop(crate::refresh::compute(&wh, &lock, &options).await.unwrap());
    let interrupted = wh.version(Table::Features).await.unwrap().unwrap();
    assert!(snapshot::versions(&wh).await.unwrap().is_empty(), "the interrupted run published nothing");
    let features = wh.read(Table::Features, None).await.unwrap();

    let s = refresh(&wh, &lock, &options).await.unwrap();
    assert_eq!(s.features_version, interrupted, "the interrupted run's features are kept");
    assert_eq!(wh.version(Table::Features).await.unwrap(), Some(interrupted), "and not written again");
    assert_eq!(wh.read(Table::Features, None).await.unwrap(), features);
    let info = snapshot::info(&wh, None).await.unwrap();
    assert_eq!((info.snapshot, info.features_version), (1, Some(interrupted as i64)));

    // Once a snapshot references them, the next run writes its own.
    let s = refresh(&wh, &lock, &options).await.unwrap();
    assert!(s.features_version > interrupted);
    // An interrupted run over other inputs (another as-of) is not kept.
    let other = RefreshOptions::builder().as_of(NaiveDate::from_ymd_opt(2026, 10, 1)).build().unwrap();
    drop(crate::refresh::compute(&wh, &lock, &other).await.unwrap());
    let stale = wh.version(Table::Features).await.unwrap().unwrap();
    let s = refresh(&wh, &lock, &options).await.unwrap();
    assert!(s.features_version > stale, "features of other inputs are replaced");
    assert_eq!(snapshot::info(&wh, None).await.unwrap().features_version, Some(s.features_version as i64));
}

/// A snapshot derived from another (the communities' snapshot carries the
/// newest tags) is refused when a newer one was committed meanwhile: stale
/// tags never go over fresh ones.
#[tokio::test(flavor = "multi_thread")]
async fn a_derived_snapshot_is_refused_once_its_base_is_not_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(
        dir.path(),
        &[M("a", "2024-01-01", None)],
        &[L("o1", 0, "2026-10-02", "app", "", "beauty", 1, 10.0, 0.0, false)],
    )
    .await;
    let lock = lock(&wh);
    refresh(&wh, &lock, &RefreshOptions::default()).await.unwrap();
    let base = snapshot::info(&wh, None).await.unwrap();
    refresh(&wh, &lock, &RefreshOptions::default()).await.unwrap();
    let derived = || snapshot::NewSnapshot {
        as_of: base.as_of,
        base_members: base.base_members,
        features_version: base.features_version,
        catalog_digest: base.catalog_digest.clone(),
        tags: vec![(base.tags[0].clone(), RoaringBitmap::from_iter([0u32]))],
    };
    let err = snapshot::write_after(&wh, &lock, 1, derived()).await.unwrap_err().to_string();
    assert_eq!(
        err,
        "warehouse table `tags`: this run read tag snapshot 1, but snapshot 2 was committed meanwhile; \
         nothing was committed, run the command again"
    );
    assert_eq!(snapshot::versions(&wh).await.unwrap(), [1, 2]);
    assert_eq!(snapshot::write_after(&wh, &lock, 2, derived()).await.unwrap(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn families_over_too_many_values_are_left_out_and_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    // Thirty members, each buying in a category of its own (a free-text
    // column mapped to `category`), at three stores besides the registered one.
    let members: Vec<M> = (0..30).map(|i| M(leak(format!("m{i}")), "2024-01-01", None)).collect();
    let lines: Vec<L> = (0..30)
        .map(|i| {
            let store = ["S1", "S2", "S3"][i % 3];
            L(leak(format!("o{i}")), i, "2026-10-02", "app", store, leak(format!("note {i}")), 1, 10.0, 0.0, false)
        })
        .collect();
    let wh = warehouse(dir.path(), &members, &lines).await;
    let lock = lock(&wh);
    let names = |t: &[(String, RoaringBitmap)], prefix: &str| t.iter().filter(|(n, _)| n.starts_with(prefix)).count();
    // Under the cap: a family per category.
    let s = refresh(&wh, &lock, &RefreshOptions::builder().max_family_values(30).build().unwrap()).await.unwrap();
    assert!(s.skipped.is_empty(), "{:?}", s.skipped);
    let t = tags_of(&wh).await;
    assert_eq!(names(&t, "category_lover_note_"), 30);
    assert_eq!(members_of(&t, "category_buyer_note_7", 1), [7]);
    // Over it: the per-category accumulators and every family over them
    // are left out, with a note; the other tags are as before.
    let s = refresh(&wh, &lock, &RefreshOptions::builder().max_family_values(10).build().unwrap()).await.unwrap();
    assert_eq!(s.skipped.len(), 1, "{:?}", s.skipped);
    assert!(s.skipped[0].starts_with("orders.category has more than 10 distinct values"), "{}", s.skipped[0]);
    let t = tags_of(&wh).await;
    assert_eq!(names(&t, "category_lover_") + names(&t, "category_buyer_") + names(&t, "main_category_"), 0);
    assert_eq!(members_of(&t, "tier_regular", 1).len(), 30);
    assert_eq!(members_of(&t, "home_store_s1", 1), (0..30).step_by(3).collect::<Vec<u32>>());
    // A partition over more values than its own cap is left out by name.
    let path = dir.path().join("stores.toml");
    std::fs::write(
        &path,
        "[[partition]]\nname = \"shop_{value}\"\nfamily = \"f\"\ndescription = \"d\"\nfeature = \"home_store\"\nmax_values = 3\n",
    )
    .unwrap();
    let s = refresh(&wh, &lock, &RefreshOptions::builder().catalog(path).build().unwrap()).await.unwrap();
    assert_eq!(
        s.skipped,
        [
            "[[partition]] shop_{value}: orders.store_id and members.home_store_id has 4 distinct values, more than the 3 \
          a family may expand over; its tags are left out (an entry's `max_values` or [settings] max_family_values \
          raise the cap)"
        ]
    );
    let t = tags_of(&wh).await;
    assert_eq!(names(&t, "shop_"), 0);
    assert_eq!(names(&t, "home_store_"), 4);
}

/// A column computed alone (as a score's cut computes it, without the
/// order statistics it does not read) equals the same column of the whole
/// chunk, for every column and in every chunk.
#[tokio::test(flavor = "multi_thread")]
async fn columns_computed_alone_equal_the_whole_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let members = [
        M("a", "2024-01-01", Some("1960-11-15")),
        M("b", "2024-01-01", None),
        M("c", "2026-10-05", Some("1999-02-28")),
        M("d", "2023-01-01", Some("2000-03-01")),
    ];
    let lines = [
        L("o1", 0, "2026-10-02", "app", "", "beauty", 1, 250.25, 0.0, false),
        L("o2", 1, "2026-09-05", "store", "S1", "snacks", 1, 599.99, 0.0, true),
        L("o3", 1, "2026-07-03", "app", "S2", "toys", 3, 10.0, 1.0, false),
        L("o4", 3, "2025-12-31", "store", "S2", "toys", 1, 10.0, 0.0, false),
    ];
    let wh = warehouse_with_stride(dir.path(), &members, &lines, 70_001).await;
    let as_of = NaiveDate::from_ymd_opt(2026, 11, 1);
    let fs = crate::features::compute(
        &wh,
        &crate::features::FeatureOptions {
            as_of,
            growth_per_unit: 10.0,
            max_family_values: crate::catalog::DEFAULT_MAX_FAMILY_VALUES,
        },
    )
    .await
    .unwrap();
    assert!(fs.chunks() > 1);
    use crate::features::FeatureData;
    // Values as bits, so NaN (null) equals NaN.
    let bits = |d: &FeatureData| -> Vec<u64> {
        match d {
            FeatureData::Num(v) => v.iter().map(|x| x.to_bits()).collect(),
            FeatureData::Text(v) => v.iter().map(|x| u64::from(*x)).collect(),
        }
    };
    for c in 0..fs.chunks() {
        let whole = fs.chunk(c);
        assert!(whole.columns.iter().all(|col| bits(&col.data).len() == whole.len()));
        for col in &whole.columns {
            let alone = fs.chunk_columns(c, &|name| name == col.name);
            assert!(
                bits(&alone.column(&col.name).unwrap().data) == bits(&col.data),
                "column {} of chunk {c}",
                col.name
            );
            assert!(alone.columns.iter().filter(|o| o.name != col.name).all(|o| bits(&o.data).is_empty()));
        }
    }
}
