//! The experiment statistics on a real warehouse, many times over.
//!
//! `experiment_sim plant --warehouse W --experiment ID [--arm treatment]
//! [--share 0.02] [--amount 100] --out planted.csv` plants a known effect
//! over an existing warehouse the honest way, through the data: it writes
//! an orders file in which each member of the arm, with probability
//! `--share` (by a salted hash of the member id), buys one more order of
//! `--amount` within a week after launch, and prints the revenue per member
//! it added. Ingest the file (`taglake ingest orders planted.csv`) and
//! `taglake experiment report ID` should find that uplift inside its CI.
//!
//! `experiment_sim --warehouse W [--audience EXPR] [--window 14d]
//! [--cuped 30d] [--salts 1000] [--runs 200]` reads what the audience's
//! members (outside the global holdout, as an export takes them) bought in
//! the last whole window before the newest order and in the CUPED lookback
//! before it, once, and then splits them again and again exactly as
//! `taglake export` does (`export::unit` of a salt and the member id,
//! `Split::arm_of`) and compares the arms exactly as `taglake experiment
//! report` does (`experiment::analyse`). Three checks, printed as JSON:
//!
//! 1. **A/A**: `--salts` splits 50/50 with no effect. At α = 0.05 the
//!    share of significant results (the false positive rate) should be
//!    5 % for conversion and revenue, with and without CUPED; the sample
//!    ratio check should fire on about 0.1 % (its α).
//! 2. **Planted revenue effect**: `--runs` splits where 2 % of treatment
//!    members get one extra order worth enough to raise revenue per member
//!    by 5 % of the baseline in expectation. Each run's 95 % CI should
//!    cover the planted effect about 95 % of the time, and CUPED should
//!    narrow it.
//! 3. **A plan's power**: `experiment plan` gives the members an effect of
//!    1.4 × the full audience's minimum detectable effect needs; `--runs`
//!    samples of that many members, split 50/50 with that effect planted,
//!    should detect it (CUPED estimate, p < 0.05, right sign) in about 80 %
//!    of runs, for conversion and for revenue. Twice: `measured`, the plan
//!    made over the history up to the newest order (the window simulated is
//!    among those it measured: this checks the sizing arithmetic), and
//!    `forecast`, the plan made before launch (it never sees the window:
//!    this checks how well the history predicts it).

use std::path::PathBuf;

use roaring::RoaringBitmap;
use serde_json::json;
use taglake_benches::peak_rss;
use taglake_query::activity::{Activity, Cell, DAY_US, day_start, newest_order, scan_activity};
use taglake_query::experiment::plan::{Effect, PlanMetric, PlanOptions, plan};
use taglake_query::experiment::{self, Analysis, Metric, ReportOptions, analyse};
use taglake_query::export::{HOLDOUT_SALT, HOLDOUT_SHARE, Split, held_out, unit};
use taglake_query::{audience, stats, tagset};
use taglake_storage::Warehouse;

const USAGE: &str = "usage: experiment_sim --warehouse W [--audience EXPR] [--window 14d] [--cuped 30d] \
                     [--salts 1000] [--runs 200]";

type Fail = Box<dyn std::error::Error>;

struct Args {
    warehouse: PathBuf,
    audience: String,
    window: String,
    cuped: String,
    salts: usize,
    runs: usize,
}

fn args() -> Result<Args, Fail> {
    let mut a = Args {
        warehouse: PathBuf::new(),
        audience: "true".into(),
        window: "14d".into(),
        cuped: "30d".into(),
        salts: 1000,
        runs: 200,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"));
        match flag.as_str() {
            "--warehouse" => a.warehouse = value()?.into(),
            "--audience" => a.audience = value()?,
            "--window" => a.window = value()?,
            "--cuped" => a.cuped = value()?,
            "--salts" => a.salts = value()?.parse()?,
            "--runs" => a.runs = value()?.parse()?,
            _ => return Err(format!("unknown flag {flag}\n{USAGE}").into()),
        }
    }
    if a.warehouse.as_os_str().is_empty() {
        return Err(USAGE.into());
    }
    Ok(a)
}

/// Members split 50/50 by `salt`, among those of `ids` kept by `keep`.
fn split(ids: &[(u32, String)], salt: &str, keep: impl Fn(&str) -> bool) -> [RoaringBitmap; 2] {
    let halves = Split::parse("treatment=50,control=50").expect("a valid split");
    let mut arms = [RoaringBitmap::new(), RoaringBitmap::new()];
    for (key, id) in ids.iter().filter(|(_, id)| keep(id)) {
        arms[halves.arm_of(unit(salt, id))].insert(*key);
    }
    arms
}

fn compare(arms: &[RoaringBitmap; 2], activity: &Activity, options: &ReportOptions) -> Result<Analysis, Fail> {
    Ok(analyse(&[("treatment", &arms[0]), ("control", &arms[1])], 1, activity, options)?)
}

/// Share of `hits` in `n`, as JSON with its binomial standard error.
fn rate(hits: usize, n: usize) -> serde_json::Value {
    let p = hits as f64 / n.max(1) as f64;
    json!({ "hits": hits, "runs": n, "rate": p, "se": (p * (1.0 - p) / n.max(1) as f64).sqrt() })
}

/// `plant`: writes an orders CSV that gives members of an experiment arm a
/// known extra order each (see the module doc); prints what it planted.
async fn plant(mut it: impl Iterator<Item = String>) -> Result<(), Fail> {
    let (mut warehouse, mut id, mut arm, mut share, mut amount, mut out) =
        (None, None, "treatment".to_string(), 0.02, 100.0, None);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value\n{PLANT_USAGE}"));
        match flag.as_str() {
            "--warehouse" => warehouse = Some(PathBuf::from(value()?)),
            "--experiment" => id = Some(value()?.parse::<i64>()?),
            "--arm" => arm = value()?,
            "--share" => share = value()?.parse()?,
            "--amount" => amount = value()?.parse()?,
            "--out" => out = Some(PathBuf::from(value()?)),
            _ => return Err(format!("unknown flag {flag}\n{PLANT_USAGE}").into()),
        }
    }
    let (Some(warehouse), Some(id), Some(out)) = (warehouse, id, out) else { return Err(PLANT_USAGE.into()) };
    let wh = Warehouse::open(&warehouse)?;
    let e = experiment::get(&wh, id).await?;
    let members = &e.arms.iter().find(|a| a.name == arm).ok_or(format!("experiment {id} has no arm {arm}"))?.bitmap;
    let salt = format!("plant-{id}");
    let mut csv = String::from("order_id,line_no,member_id,ordered_at,channel,sku,category,quantity,amount\n");
    let mut planted = 0u64;
    for (_, member) in taglake_tagger::snapshot::member_ids(&wh, members).await? {
        let u = unit(&salt, &member);
        if u < share {
            // Spread over the first 7 days after launch, at noon.
            let day = (u / share * 7.0) as i64;
            let at = e.launched_at + chrono::Duration::days(day) + chrono::Duration::hours(12);
            csv.push_str(&format!(
                "PLANT-{id}-{planted},1,{member},{},app,PLANTED,planted,1,{amount}\n",
                at.to_rfc3339()
            ));
            planted += 1;
        }
    }
    std::fs::write(&out, csv)?;
    let n = members.len().max(1) as f64;
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "experiment": id, "arm": arm, "arm_members": members.len(), "planted_orders": planted,
            "amount": amount, "share": share, "out": out,
            "expected_revenue_per_member_uplift": share * amount,
            "planted_revenue_per_member": planted as f64 * amount / n,
            "planted_orders_per_member": planted as f64 / n,
        }))?
    );
    Ok(())
}

const PLANT_USAGE: &str = "usage: experiment_sim plant --warehouse W --experiment ID [--arm treatment] \
                           [--share 0.02] [--amount 100] --out planted.csv";

// Long on purpose: the simulation's script (A/A, planted effect, plan power) in the order its results are
// written.
#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), Fail> {
    if std::env::args().nth(1).as_deref() == Some("plant") {
        return plant(std::env::args().skip(2)).await;
    }
    let a = args()?;
    let wh = Warehouse::open(&a.warehouse)?;
    let window = experiment::parse_window(&a.window)?;
    let lookback = experiment::parse_window(&a.cuped)?;
    let newest = newest_order(&wh).await?.ok_or("the warehouse has no orders")?;
    let end = day_start(newest);
    let w = window.num_microseconds().ok_or("window")?;
    let launch = end - w;
    let windows = [(launch, end), (launch - lookback.num_microseconds().ok_or("lookback")?, launch)];
    let (_, tags) = taglake_query::open(&wh).await?;
    let (tags, _) = tagset::tagged(tags)?;
    let selected = audience::evaluate(&audience::parse(&a.audience, &tags)?, &tags)?;
    let eligible = &selected - &held_out(&wh, &selected, HOLDOUT_SALT, HOLDOUT_SHARE).await?;
    let ids = taglake_tagger::snapshot::member_ids(&wh, &eligible).await?;
    let activity = scan_activity(&wh, &eligible, &windows).await?;
    let options = ReportOptions::new(window, "control").cuped(Some(lookback))?;
    let started = std::time::Instant::now();

    // 1. A/A.
    let (mut fp, mut srm) = ([0usize; 4], 0usize);
    for s in 0..a.salts {
        let arms = split(&ids, &format!("aa-{s}"), |_| true);
        let r = compare(&arms, &activity, &options)?;
        let c = &r.comparisons[0];
        let cuped = |x: &Option<stats::Cuped>| x.as_ref().map_or(1.0, |x| x.uplift.p_value);
        let p = [
            c.conversion.p_value,
            c.revenue_per_member.p_value,
            cuped(&c.conversion_cuped),
            cuped(&c.revenue_per_member_cuped),
        ];
        for (f, p) in fp.iter_mut().zip(p) {
            *f += usize::from(p < 0.05);
        }
        srm += usize::from(stats::srm(&[arms[0].len(), arms[1].len()], &[0.5, 0.5]).is_some_and(|x| x.mismatch));
    }
    let aa_seconds = started.elapsed().as_secs_f64();

    // 2. A planted revenue effect: 5 % of the baseline revenue per member.
    let members = eligible.len().max(1) as f64;
    let baseline = activity.members().map(|(_, c)| c[0].revenue).sum::<f64>() / members;
    let (share, effect) = (0.02, 0.05 * baseline);
    let (mut covered, mut covered_cuped, mut ratios, mut reductions) = (0usize, 0usize, Vec::new(), Vec::new());
    for run in 0..a.runs {
        let arms = split(&ids, &format!("planted-{run}"), |_| true);
        let plant = format!("plant-{run}");
        let extra: Vec<(u32, Cell)> = ids
            .iter()
            .filter(|(k, id)| arms[0].contains(*k) && unit(&plant, id) < share)
            .map(|(k, _)| (*k, Cell { revenue: effect / share, orders: 1, first_at: launch + DAY_US }))
            .collect();
        let r = compare(&arms, &activity.with_added(0, extra), &options)?;
        let c = &r.comparisons[0];
        let (plain, cup) = (&c.revenue_per_member, c.revenue_per_member_cuped.as_ref().ok_or("no CUPED")?);
        covered += usize::from(plain.ci_low <= effect && effect <= plain.ci_high);
        covered_cuped += usize::from(cup.uplift.ci_low <= effect && effect <= cup.uplift.ci_high);
        ratios.push((cup.uplift.ci_high - cup.uplift.ci_low) / (plain.ci_high - plain.ci_low));
        reductions.push(cup.variance_reduction);
    }
    let shrink = 1.0 - taglake_benches::median(&mut ratios);

    // 3. A plan's power, per metric.
    let bought: RoaringBitmap = activity.members().filter(|(_, c)| c[0].orders > 0).map(|(k, _)| k).collect();
    let mut power = serde_json::Map::new();
    let forecast = [("measured", None), ("forecast", Some(experiment::from_micros_utc(launch)))];
    for ((metric, name), (mode, until)) in [(PlanMetric::Conversion, "conversion"), (PlanMetric::Revenue, "revenue")]
        .into_iter()
        .flat_map(|m| forecast.into_iter().map(move |f| (m, f)))
    {
        let base = PlanOptions::new(&a.audience)
            .metric(metric)
            .window(window)?
            .split(Split::parse("treatment=50,control=50")?, "control")?
            .cuped(Some(lookback))?
            .until(until);
        let full = plan(&wh, &base).await?;
        let target = 1.4 * full.arms[0].mde;
        let sized = plan(&wh, &base.clone().effect(Some(Effect::Absolute(target)))).await?;
        let needed = sized.needed.ok_or("no size")?;
        let keep = needed as f64 / members;
        let which = if metric == PlanMetric::Conversion { Metric::Conversion } else { Metric::Revenue };
        let mut detected = 0;
        for run in 0..a.runs {
            let sample = format!("sample-{run}");
            let arms = split(&ids, &format!("power-{run}"), |id| unit(&sample, id) < keep);
            let plant = format!("power-plant-{run}");
            let extra: Vec<(u32, Cell)> = ids
                .iter()
                .filter(|(k, _)| arms[0].contains(*k))
                .filter_map(|(k, id)| match metric {
                    // Every treatment member spends `target` more.
                    PlanMetric::Revenue => Some((*k, Cell { revenue: target, orders: 0, first_at: 0 })),
                    // Non-buyers convert with the chance that raises conversion by `target`.
                    PlanMetric::Conversion => (!bought.contains(*k)
                        && unit(&plant, id) < target / (1.0 - sized.history[0].mean))
                        .then_some((*k, Cell { revenue: 0.0, orders: 1, first_at: launch + DAY_US })),
                })
                .collect();
            let r = compare(&arms, &activity.with_added(0, extra), &options)?;
            let u = r.comparisons[0].headline(which).ok_or("no estimate")?;
            detected += usize::from(u.p_value < 0.05 && u.diff > 0.0);
        }
        power.insert(
            format!("{name}_{mode}"),
            json!({
                "baseline": sized.baseline, "sd": sized.sd, "correlation": sized.correlation,
                "effect": target, "members_needed": needed, "share_of_audience": keep,
                "planned_power": 0.8, "detected": rate(detected, a.runs),
            }),
        );
    }

    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let out = json!({
        "commit": commit,
        "warehouse": a.warehouse, "audience": a.audience, "members": eligible.len(),
        "active_members": activity.members().len(),
        "window": { "from": experiment::from_micros_utc(launch), "to": experiment::from_micros_utc(end) },
        "cuped_lookback": a.cuped,
        "aa": {
            "salts": a.salts,
            "false_positive_rate": {
                "conversion": rate(fp[0], a.salts), "revenue": rate(fp[1], a.salts),
                "conversion_cuped": rate(fp[2], a.salts), "revenue_cuped": rate(fp[3], a.salts),
            },
            "srm_rate": rate(srm, a.salts),
            "seconds": aa_seconds,
        },
        "planted_revenue": {
            "baseline_revenue_per_member": baseline, "effect": effect, "runs": a.runs,
            "coverage": rate(covered, a.runs), "coverage_cuped": rate(covered_cuped, a.runs),
            "median_ci_half_width_shrink": shrink,
            "median_variance_reduction": taglake_benches::median(&mut reductions),
        },
        "plan_power": power,
        "peak_rss_bytes": peak_rss(),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
