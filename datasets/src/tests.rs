//! End-to-end checks of generated data sets: layout, counts, determinism,
//! readability of every format, and the planted structure (skew, personas,
//! rhythms) that later pipeline stages rely on.
//!
//! Most checks share one generated base ([`base`]), read back from Parquet
//! into plain vectors once.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Date32Type, Float64Type, Int32Type, Int64Type, TimeUnit, TimestampMicrosecondType};
use chrono::{Datelike, NaiveDate};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::rng::Rng;
use crate::{Error, Format, GenerateConfig, GenerateSummary, Persona, generate};

const MEMBERS: u64 = 12_000;
const DAY_US: i64 = 86_400 * 1_000_000;

struct Member {
    registered_at: i64,
    birthday: Option<i32>,
    points: i64,
    persona: Persona,
}

struct LineRow {
    order_id: String,
    line_no: i32,
    member: usize,
    ordered_at: i64,
    channel: String,
    store_id: Option<String>,
    category: String,
    quantity: i32,
    amount: f64,
    discount: f64,
    coupon: bool,
}

struct Base {
    summary: GenerateSummary,
    end_us: i64,
    members: Vec<Member>,
    lines: Vec<LineRow>,
    products: usize,
    ip_series_on_ip_products: bool,
}

fn read_parquet(path: &Path) -> Vec<RecordBatch> {
    let file = File::open(path).unwrap();
    ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap().map(|b| b.unwrap()).collect()
}

fn member_index(id: &str) -> usize {
    id[1..].parse::<usize>().unwrap() - 1
}

fn config(members: u64, out: &Path) -> crate::GenerateConfigBuilder {
    GenerateConfig::builder().members(members).out(out)
}

/// The shared base: 12,000 members, 2 years, default settings, 3 parts.
fn base() -> &'static Base {
    static BASE: OnceLock<Base> = OnceLock::new();
    BASE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(MEMBERS, dir.path()).members_per_part(5_000).build().unwrap();
        let summary = generate(&cfg, &|_| {}).unwrap();
        let end_us = (cfg.end_date() - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()).num_days() * DAY_US;

        let mut personas = HashMap::new();
        for b in read_parquet(&dir.path().join("personas.parquet")) {
            let (ids, names) = (b.column(0).as_string::<i32>(), b.column(1).as_string::<i32>());
            for i in 0..b.num_rows() {
                personas.insert(member_index(ids.value(i)), names.value(i).parse::<Persona>().unwrap());
            }
        }
        let mut members = Vec::new();
        for b in read_parquet(&dir.path().join("members.parquet")) {
            let ids = b.column(0).as_string::<i32>();
            let reg = b.column(1).as_primitive::<TimestampMicrosecondType>();
            let birthday = b.column(2).as_primitive::<Date32Type>();
            let points = b.column(7).as_primitive::<Int64Type>();
            for i in 0..b.num_rows() {
                assert_eq!(member_index(ids.value(i)), members.len(), "members are in id order");
                members.push(Member {
                    registered_at: reg.value(i),
                    birthday: birthday.is_valid(i).then(|| birthday.value(i)),
                    points: points.value(i),
                    persona: personas[&members.len()],
                });
            }
        }
        let mut lines = Vec::new();
        for part in 0..3 {
            for b in read_parquet(&dir.path().join(format!("orders/part-{part:05}.parquet"))) {
                let s = |c: usize| b.column(c).as_string::<i32>();
                let (order_id, member, channel, store, category) = (s(0), s(2), s(4), s(5), s(7));
                let line_no = b.column(1).as_primitive::<Int32Type>();
                let ordered_at = b.column(3).as_primitive::<TimestampMicrosecondType>();
                let quantity = b.column(8).as_primitive::<Int32Type>();
                let amount = b.column(9).as_primitive::<Float64Type>();
                let discount = b.column(10).as_primitive::<Float64Type>();
                let coupon = b.column(11).as_boolean();
                for i in 0..b.num_rows() {
                    lines.push(LineRow {
                        order_id: order_id.value(i).to_string(),
                        line_no: line_no.value(i),
                        member: member_index(member.value(i)),
                        ordered_at: ordered_at.value(i),
                        channel: channel.value(i).to_string(),
                        store_id: store.is_valid(i).then(|| store.value(i).to_string()),
                        category: category.value(i).to_string(),
                        quantity: quantity.value(i),
                        amount: amount.value(i),
                        discount: discount.value(i),
                        coupon: coupon.value(i),
                    });
                }
            }
        }
        let products_batches = read_parquet(&dir.path().join("products.parquet"));
        let mut ip_ok = true;
        for b in &products_batches {
            let (cat, series) = (b.column(1).as_string::<i32>(), b.column(4).as_string::<i32>());
            for i in 0..b.num_rows() {
                ip_ok &= series.is_valid(i) == (cat.value(i) == "ip_licensed");
            }
        }
        Base {
            summary,
            end_us,
            members,
            lines,
            products: products_batches.iter().map(|b| b.num_rows()).sum(),
            ip_series_on_ip_products: ip_ok,
        }
    })
}

/// Lines of each member.
fn lines_by_member(b: &Base) -> Vec<Vec<&LineRow>> {
    let mut by = vec![Vec::new(); b.members.len()];
    for l in &b.lines {
        by[l.member].push(l);
    }
    by
}

#[test]
fn layout_and_counts_match_the_summary() {
    let b = base();
    assert_eq!(b.members.len() as u64, MEMBERS);
    assert_eq!(b.summary.members, MEMBERS);
    assert_eq!(b.lines.len() as u64, b.summary.order_lines);
    assert_eq!(b.products as u64, b.summary.products);
    assert_eq!(b.summary.products, 8_000);
    assert_eq!(b.summary.stores, 4_500);
    let orders: HashSet<&str> = b.lines.iter().map(|l| l.order_id.as_str()).collect();
    assert_eq!(orders.len() as u64, b.summary.orders);
    let names: Vec<String> =
        b.summary.files.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(
        names,
        [
            "members.parquet",
            "products.parquet",
            "personas.parquet",
            "part-00000.parquet",
            "part-00001.parquet",
            "part-00002.parquet"
        ]
    );
    assert!(b.ip_series_on_ip_products);
}

#[test]
fn average_lines_per_member_hits_the_target() {
    let b = base();
    let mean = b.lines.len() as f64 / b.members.len() as f64;
    let target = GenerateConfig::DEFAULT_LINES_PER_MEMBER_YEAR * 2.0;
    assert!((mean / target - 1.0).abs() <= 0.15, "{mean} lines per member, target {target}");
}

#[test]
fn top_fifth_of_buyers_earn_60_to_80_percent_of_revenue() {
    let b = base();
    let mut spend = vec![0.0; b.members.len()];
    for l in &b.lines {
        spend[l.member] += l.amount;
    }
    let mut buyers: Vec<f64> = spend.into_iter().filter(|&s| s > 0.0).collect();
    buyers.sort_by(|x, y| y.total_cmp(x));
    let total: f64 = buyers.iter().sum();
    let top: f64 = buyers[..buyers.len() / 5].iter().sum();
    let share = top / total;
    assert!((0.60..=0.80).contains(&share), "top 20% share {share}");
}

#[test]
fn every_persona_is_present_with_its_share() {
    let b = base();
    for p in Persona::ALL {
        let n = b.members.iter().filter(|m| m.persona == p).count() as f64;
        let share = n / b.members.len() as f64;
        assert!((share - p.share()).abs() < 0.02, "{p}: {share} vs {}", p.share());
    }
}

#[test]
fn lifecycle_personas_follow_their_rules() {
    let b = base();
    let by = lines_by_member(b);
    for (i, m) in b.members.iter().enumerate() {
        let orders: HashSet<&str> = by[i].iter().map(|l| l.order_id.as_str()).collect();
        match m.persona {
            Persona::NeverBought => assert!(orders.is_empty()),
            Persona::OneTimeBuyer => assert_eq!(orders.len(), 1, "member {i}"),
            Persona::SleepingMember => {
                let last = by[i].iter().map(|l| l.ordered_at).max().unwrap();
                let last_day = last.div_euclid(DAY_US);
                assert!(b.end_us / DAY_US - last_day >= 180, "member {i}");
            }
            _ => assert!(!orders.is_empty()),
        }
    }
}

#[test]
fn order_lines_are_well_formed() {
    let b = base();
    let mut keys = HashSet::new();
    let mut orders: HashMap<&str, Vec<&LineRow>> = HashMap::new();
    let start_us = b.end_us - 730 * DAY_US;
    for l in &b.lines {
        assert!(keys.insert((l.order_id.as_str(), l.line_no)), "duplicate key {} {}", l.order_id, l.line_no);
        orders.entry(l.order_id.as_str()).or_default().push(l);
        assert!(l.ordered_at >= start_us && l.ordered_at < b.end_us);
        assert!(l.ordered_at > b.members[l.member].registered_at);
        assert!(l.quantity >= 1 && l.amount > 0.0 && l.discount >= 0.0);
        assert_eq!((l.amount * 100.0).round() / 100.0, l.amount, "cents");
        assert_eq!((l.discount * 100.0).round() / 100.0, l.discount, "cents");
        assert_eq!(l.store_id.is_none(), l.channel == "marketplaces");
        assert!(["store", "mini_program", "app", "marketplaces", "delivery"].contains(&l.channel.as_str()));
    }
    for (id, lines) in orders {
        let mut nos: Vec<i32> = lines.iter().map(|l| l.line_no).collect();
        nos.sort_unstable();
        assert_eq!(nos, (1..=lines.len() as i32).collect::<Vec<_>>(), "order {id}");
        let first = lines[0];
        for l in &lines {
            assert_eq!((l.member, l.ordered_at, &l.channel), (first.member, first.ordered_at, &first.channel));
            assert_eq!(l.store_id, first.store_id);
        }
    }
}

#[test]
fn members_have_plausible_attributes() {
    let b = base();
    let nulls = b.members.iter().filter(|m| m.birthday.is_none()).count() as f64 / b.members.len() as f64;
    assert!((0.09..0.15).contains(&nulls), "{nulls}");
    let by = lines_by_member(b);
    for (i, m) in b.members.iter().enumerate() {
        assert!(m.points >= 0);
        if by[i].is_empty() {
            assert_eq!(m.points, 0);
        }
        let spend: f64 = by[i].iter().map(|l| l.amount).sum();
        assert!(m.points as f64 <= 2.0 * spend + 1e-6, "member {i}");
    }
    // Some members registered before the window, some during it.
    let start_us = b.end_us - 730 * DAY_US;
    let before = b.members.iter().filter(|m| m.registered_at < start_us).count();
    assert!(before > b.members.len() / 2 && before < b.members.len() * 8 / 10);
}

/// Number of per-member features in [`features`].
const FEATURES: usize = crate::catalog::N_CATEGORIES + 7;
/// Index of the first non-category feature in [`features`].
const F_WEEKEND: usize = crate::catalog::N_CATEGORIES;
const F_LINES_PER_ORDER: usize = F_WEEKEND + 1;
const F_PROMO: usize = F_WEEKEND + 3;
const F_RECENCY: usize = F_WEEKEND + 5;

/// Per-member features a clustering step would compute: spend share of every
/// category, weekend share of orders, log lines per order, units per line,
/// promotion share of lines, log order count, recency in years (3 without
/// orders), log spend.
fn features(b: &Base) -> (Vec<[f64; FEATURES]>, Vec<usize>) {
    let by = lines_by_member(b);
    let mut rows = Vec::new();
    let mut truth = Vec::new();
    for (i, m) in b.members.iter().enumerate() {
        let lines = &by[i];
        let spend: f64 = lines.iter().map(|l| l.amount).sum::<f64>();
        let mut row = [0.0; FEATURES];
        for l in lines.iter() {
            let c = crate::catalog::CATEGORIES.iter().position(|c| c.name == l.category).unwrap();
            row[c] += l.amount / spend;
        }
        let mut orders: HashMap<&str, i64> = HashMap::new();
        for l in lines {
            orders.insert(l.order_id.as_str(), l.ordered_at);
        }
        let n_orders = orders.len() as f64;
        let weekend = orders
            .values()
            .filter(|&&t| {
                let d = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap() + chrono::Duration::days(t.div_euclid(DAY_US));
                d.weekday().num_days_from_monday() >= 5
            })
            .count() as f64;
        let n_lines = lines.len() as f64;
        let promo = lines.iter().filter(|l| l.discount > 0.0 || l.coupon).count() as f64;
        let units = lines.iter().map(|l| f64::from(l.quantity)).sum::<f64>();
        let last = orders.values().max().copied();
        row[F_WEEKEND] = weekend / n_orders.max(1.0);
        row[F_LINES_PER_ORDER] = (n_lines / n_orders.max(1.0)).ln_1p();
        row[F_WEEKEND + 2] = units / n_lines.max(1.0);
        row[F_PROMO] = promo / n_lines.max(1.0);
        row[F_WEEKEND + 4] = n_orders.ln_1p();
        row[F_RECENCY] = last.map_or(3.0, |t| (b.end_us - t) as f64 / DAY_US as f64 / 365.0);
        row[F_WEEKEND + 6] = spend.ln_1p();
        rows.push(row);
        truth.push(m.persona as usize);
    }
    (rows, truth)
}

#[test]
fn persona_signals_are_strong() {
    let b = base();
    let (rows, truth) = features(b);
    let mean = |p: Persona, f: usize| {
        let v: Vec<f64> = rows.iter().zip(&truth).filter(|(_, t)| **t == p as usize).map(|(r, _)| r[f]).collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    use crate::catalog::{BEAUTY, IP_LICENSED, SNACKS, TOYS};
    assert!(mean(Persona::BeautyLover, BEAUTY) > 0.6, "{}", mean(Persona::BeautyLover, BEAUTY));
    assert!(mean(Persona::SnackLover, SNACKS) > 0.6, "{}", mean(Persona::SnackLover, SNACKS));
    assert!(mean(Persona::IpFan, IP_LICENSED) > 0.6, "{}", mean(Persona::IpFan, IP_LICENSED));
    assert!(mean(Persona::WeekendFamily, TOYS) > 0.4, "{}", mean(Persona::WeekendFamily, TOYS));
    assert!(mean(Persona::WeekendFamily, F_WEEKEND) > 0.7, "{}", mean(Persona::WeekendFamily, F_WEEKEND));
    assert!(mean(Persona::BeautyLover, F_WEEKEND) < 0.5);
    assert!(mean(Persona::MultiItemHoarder, F_LINES_PER_ORDER) > 1.8 * mean(Persona::BeautyLover, F_LINES_PER_ORDER));
    assert!(mean(Persona::PromotionDriven, F_PROMO) > 0.7, "{}", mean(Persona::PromotionDriven, F_PROMO));
    assert!(mean(Persona::BeautyLover, F_PROMO) < 0.3);
    assert!(mean(Persona::SleepingMember, F_RECENCY) > 0.5);
    assert!(mean(Persona::BeautyLover, F_RECENCY) < 0.2);
}

/// Adjusted Rand index of two labelings.
fn adjusted_rand_index(a: &[usize], b: &[usize]) -> f64 {
    let comb2 = |n: f64| n * (n - 1.0) / 2.0;
    let mut table: HashMap<(usize, usize), f64> = HashMap::new();
    let mut rows: HashMap<usize, f64> = HashMap::new();
    let mut cols: HashMap<usize, f64> = HashMap::new();
    for (&x, &y) in a.iter().zip(b) {
        *table.entry((x, y)).or_default() += 1.0;
        *rows.entry(x).or_default() += 1.0;
        *cols.entry(y).or_default() += 1.0;
    }
    let index: f64 = table.values().map(|&n| comb2(n)).sum();
    let sum_a: f64 = rows.values().map(|&n| comb2(n)).sum();
    let sum_b: f64 = cols.values().map(|&n| comb2(n)).sum();
    let expected = sum_a * sum_b / comb2(a.len() as f64);
    (index - expected) / (0.5 * (sum_a + sum_b) - expected)
}

/// Plain k-means (k-means++ seeding, best of several restarts).
fn kmeans(data: &[Vec<f64>], k: usize, seed: u64) -> Vec<usize> {
    let dist = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>();
    let mut best = (f64::INFINITY, Vec::new());
    for restart in 0..8 {
        let mut rng = Rng::for_stream(seed, 99, restart);
        let mut centers = vec![data[rng.below(data.len() as u64) as usize].clone()];
        while centers.len() < k {
            let d: Vec<f64> =
                data.iter().map(|x| centers.iter().map(|c| dist(x, c)).fold(f64::INFINITY, f64::min)).collect();
            let cum = crate::rng::cumulative(&d);
            centers.push(data[rng.pick_cumulative(&cum)].clone());
        }
        let mut labels = vec![0; data.len()];
        for _ in 0..60 {
            for (x, l) in data.iter().zip(labels.iter_mut()) {
                *l = (0..k).min_by(|&i, &j| dist(x, &centers[i]).total_cmp(&dist(x, &centers[j]))).unwrap();
            }
            let dims = data[0].len();
            let mut sums = vec![vec![0.0; dims]; k];
            let mut counts = vec![0.0; k];
            for (x, &l) in data.iter().zip(&labels) {
                counts[l] += 1.0;
                for (s, v) in sums[l].iter_mut().zip(x) {
                    *s += v;
                }
            }
            for c in 0..k {
                if counts[c] > 0.0 {
                    centers[c] = sums[c].iter().map(|s| s / counts[c]).collect();
                }
            }
        }
        let inertia: f64 = data.iter().zip(&labels).map(|(x, &l)| dist(x, &centers[l])).sum();
        if inertia < best.0 {
            best = (inertia, labels);
        }
    }
    best.1
}

#[test]
fn kmeans_on_member_features_recovers_the_personas() {
    let b = base();
    let (rows, truth) = features(b);
    let dims = rows[0].len();
    let n = rows.len() as f64;
    let mut data: Vec<Vec<f64>> = rows.iter().map(|r| r.to_vec()).collect();
    for d in 0..dims {
        let mean = data.iter().map(|r| r[d]).sum::<f64>() / n;
        let sd = (data.iter().map(|r| (r[d] - mean).powi(2)).sum::<f64>() / n).sqrt().max(1e-9);
        for r in &mut data {
            r[d] = (r[d] - mean) / sd;
        }
    }
    let labels = kmeans(&data, Persona::ALL.len(), 3);
    let ari = adjusted_rand_index(&labels, &truth);
    assert!(ari >= 0.8, "adjusted Rand index {ari}");
}

#[test]
fn orders_follow_the_weekly_rhythm_and_the_calendar() {
    let b = base();
    let mut weekend = HashMap::<bool, (usize, usize)>::new();
    let mut per_month = [0usize; 12];
    let mut seen = HashSet::new();
    for l in &b.lines {
        if seen.insert(l.order_id.as_str()) {
            let d =
                NaiveDate::from_ymd_opt(1970, 1, 1).unwrap() + chrono::Duration::days(l.ordered_at.div_euclid(DAY_US));
            let family = b.members[l.member].persona == Persona::WeekendFamily;
            let e = weekend.entry(family).or_default();
            e.0 += usize::from(d.weekday().num_days_from_monday() >= 5);
            e.1 += 1;
            per_month[d.month0() as usize] += 1;
        }
    }
    let share = |family: bool| weekend[&family].0 as f64 / weekend[&family].1 as f64;
    assert!(share(true) > 0.75, "{}", share(true));
    assert!((0.28..0.45).contains(&share(false)), "{}", share(false));
    // Every month of the year has orders; the November peak beats the summer
    // dip (both seen twice in the default two-year window).
    assert!(per_month.iter().all(|&n| n > 0));
    assert!(per_month[10] > per_month[6], "{per_month:?}");
}

fn byte_identical_across_thread_counts(format: Format) {
    let run = |threads: usize| {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(2_000, dir.path()).format(format).members_per_part(500).seed(11).build().unwrap();
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let summary = pool.install(|| generate(&cfg, &|_| {})).unwrap();
        let files: Vec<(String, Vec<u8>)> = summary
            .files
            .iter()
            .map(|p| (p.strip_prefix(dir.path()).unwrap().display().to_string(), std::fs::read(p).unwrap()))
            .collect();
        (dir, files)
    };
    let (_a, one) = run(1);
    let (_b, two) = run(2);
    assert_eq!(one.len(), 7);
    for (x, y) in one.iter().zip(&two) {
        assert_eq!(x.0, y.0);
        assert!(x.1 == y.1, "{} differs between runs", x.0);
    }
}

#[test]
fn parquet_output_is_byte_identical_across_runs_and_threads() {
    byte_identical_across_thread_counts(Format::Parquet);
}

#[test]
fn csv_output_is_byte_identical_across_runs_and_threads() {
    byte_identical_across_thread_counts(Format::Csv);
}

#[test]
fn seed_changes_the_data() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    generate(&config(300, a.path()).seed(1).format(Format::Csv).build().unwrap(), &|_| {}).unwrap();
    generate(&config(300, b.path()).seed(2).format(Format::Csv).build().unwrap(), &|_| {}).unwrap();
    let read = |d: &Path| std::fs::read(d.join("orders/part-00000.csv")).unwrap();
    assert_ne!(read(a.path()), read(b.path()));
}

fn line_count(path: &Path) -> usize {
    std::fs::read_to_string(path).unwrap().lines().count()
}

#[test]
fn text_formats_are_readable() {
    for (format, header) in [(Format::Csv, 1), (Format::Jsonl, 0)] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(1_500, dir.path()).years(1).format(format).members_per_part(1_000).build().unwrap();
        let summary = generate(&cfg, &|_| {}).unwrap();
        let ext = format.extension();
        assert_eq!(line_count(&dir.path().join(format!("members.{ext}"))), 1_500 + header);
        assert_eq!(line_count(&dir.path().join(format!("personas.{ext}"))), 1_500 + header);
        assert_eq!(line_count(&dir.path().join(format!("products.{ext}"))), 8_000 + header);
        let lines: usize =
            (0..2).map(|p| line_count(&dir.path().join(format!("orders/part-{p:05}.{ext}"))) - header).sum();
        assert_eq!(lines as u64, summary.order_lines);
        let text = std::fs::read_to_string(dir.path().join(format!("orders/part-00000.{ext}"))).unwrap();
        let second = text.lines().nth(1).unwrap();
        match format {
            Format::Csv => {
                assert_eq!(
                    text.lines().next().unwrap(),
                    "order_id,line_no,member_id,ordered_at,channel,store_id,sku,category,quantity,amount,discount,coupon_used"
                );
                let ts = second.split(',').nth(3).unwrap();
                assert!(NaiveDate::parse_from_str(&ts[..10], "%Y-%m-%d").is_ok() && ts.ends_with('Z'), "{ts}");
                assert_eq!(ts.len(), "2025-03-01T10:15:00Z".len(), "{ts}");
            }
            _ => {
                assert!(second.starts_with("{\"order_id\":\"O"), "{second}");
                assert!(second.contains("\"ordered_at\":\"") && second.contains("Z\""), "{second}");
            }
        }
        let members = std::fs::read_to_string(dir.path().join(format!("members.{ext}"))).unwrap();
        assert!(members.lines().any(|l| l.contains("-") && l.contains("M00000")));
    }
}

#[test]
fn parquet_schema_is_the_canonical_one() {
    let dir = tempfile::tempdir().unwrap();
    generate(&config(200, dir.path()).build().unwrap(), &|_| {}).unwrap();
    let batch = &read_parquet(&dir.path().join("orders/part-00000.parquet"))[0];
    let schema = batch.schema();
    assert_eq!(schema.as_ref(), crate::orders_schema().as_ref());
    assert_eq!(
        schema.field_with_name("ordered_at").unwrap().data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    );
    let members = &read_parquet(&dir.path().join("members.parquet"))[0];
    assert_eq!(members.schema().as_ref(), crate::members_schema().as_ref());
    assert_eq!(members.num_rows(), 200);
}

#[test]
fn progress_deltas_add_up_to_the_lines_written() {
    let dir = tempfile::tempdir().unwrap();
    let seen = AtomicU64::new(0);
    let cfg = config(3_000, dir.path()).members_per_part(700).build().unwrap();
    let summary = generate(&cfg, &|n| {
        seen.fetch_add(n, Ordering::Relaxed);
    })
    .unwrap();
    assert_eq!(seen.load(Ordering::Relaxed), summary.order_lines);
    assert_eq!(summary.files.len(), 3 + 5);
    assert!(summary.lines_per_second() > 0.0);
}

#[test]
fn rerun_overwrites_and_removes_stale_parts() {
    let dir = tempfile::tempdir().unwrap();
    generate(&config(1_000, dir.path()).members_per_part(250).build().unwrap(), &|_| {}).unwrap();
    assert!(dir.path().join("orders/part-00003.parquet").exists());
    std::fs::write(dir.path().join("orders/notes.txt"), "keep me").unwrap();
    let summary = generate(&config(1_000, dir.path()).build().unwrap(), &|_| {}).unwrap();
    let mut left: Vec<String> = std::fs::read_dir(dir.path().join("orders"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["notes.txt", "part-00000.parquet"]);
    let rows: usize = read_parquet(&dir.path().join("orders/part-00000.parquet")).iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows as u64, summary.order_lines);
}

#[test]
fn tiny_parts_with_no_orders_are_still_valid_files() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(40, dir.path()).members_per_part(1).format(Format::Csv).build().unwrap();
    let summary = generate(&cfg, &|_| {}).unwrap();
    assert_eq!(summary.files.len(), 43);
    for p in &summary.files[3..] {
        let text = std::fs::read_to_string(p).unwrap();
        assert!(text.starts_with("order_id,line_no,"), "{}", p.display());
    }
}

#[test]
fn unwritable_output_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let err = generate(&config(10, &file).build().unwrap(), &|_| {}).unwrap_err();
    match &err {
        Error::Io { path, .. } => assert!(path.starts_with(&file), "{}", path.display()),
        other => panic!("expected an I/O error, got {other:?}"),
    }
    assert!(err.to_string().contains("not-a-dir"), "{err}");
}
