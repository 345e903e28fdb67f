//! The experiment report as one picture: a forest plot of every compared
//! metric's effect per arm with its 95 % confidence interval, then each
//! arm's cumulative conversion day by day.
//!
//! The picture is drawn here, on the server, as plain SVG text, the way
//! the cluster profile draws its communities (`Profile::render_svg` in
//! `taglake-cluster`): no JavaScript and no charting library, nothing to
//! fetch over the network, and the file opens in any browser, can be
//! attached to a ticket or embedded in a page as it is. It reads the very
//! [`Report`] the text and JSON reports print, so the picture cannot
//! disagree with them.
//!
//! Audiences, experiment and arm names are user text: every piece of text
//! goes through `xml`, every coordinate through `P`, which never writes
//! `NaN` or `inf` into an attribute.

use std::fmt::Write;

use chrono::{DateTime, NaiveTime, Utc};
use taglake_base::svg::{P, Svg};

use super::{ArmResult, Comparison, Metric, Report};
use crate::stats::{Correction, Uplift};

/// Width of the picture.
const WIDTH: f64 = 960.0;
/// Left edge of a forest plot's axis; the arm names are to its left.
const FOREST_LEFT: f64 = 170.0;
/// Right edge of a forest plot's axis; the estimates' text is to its right.
const FOREST_RIGHT: f64 = 560.0;
/// Height of one comparison's row in a forest plot.
const ROW: f64 = 30.0;
/// Left edge of the conversion chart's plotting area.
const CHART_LEFT: f64 = 70.0;
/// Right edge of the conversion chart's plotting area; the legend follows.
const CHART_RIGHT: f64 = 720.0;
/// Daily curves with at most this many days also get a dot per day.
const DOTS_UP_TO: usize = 31;
/// Attributes of secondary text.
const GREY: &str = "fill=\"#666\"";
/// Arm colours (Tableau 10), by the arm's position in the report; they
/// repeat after ten arms.
const PALETTE: [&str; 10] =
    ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"];

/// The report as an SVG: a forest plot of each compared metric's effect per
/// arm with its 95 % CI, then the daily cumulative conversion per arm.
pub fn render_svg(r: &Report) -> String {
    let mut svg = Svg(String::new());
    let mut y = title(&mut svg, r);
    y = forest(&mut svg, r, y);
    y = conversion_chart(&mut svg, r, y + 10.0);
    let height = y + 10.0;
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" \
         font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n{}</svg>\n",
        svg.0,
        w = P(WIDTH),
        h = P(height),
    )
}

/// The experiment, its window and how to read the estimates; returns where
/// the next part starts.
fn title(svg: &mut Svg, r: &Report) -> f64 {
    let e = &r.experiment;
    let heading = format!("Experiment {}: {}", e.id, e.name);
    svg.label((10.0, 22.0), "font-size=\"16\" font-weight=\"bold\"", &heading, 90);
    svg.label((10.0, 40.0), "", &format!("audience: {}", e.audience), 150);
    let mut window = format!("window {} to {} (UTC)", when(r.window_start), when(r.window_end));
    if let Some(newest) = r.newest_order.filter(|&n| n < r.window_end) {
        write!(window, ", orders up to {}", when(newest)).expect("writing to a String");
    }
    if let Some(c) = r.comparisons.first() {
        write!(window, " · control: {}", c.control).expect("writing to a String");
    }
    svg.label((10.0, 56.0), "", &window, 150);
    let adjusted = match r.correction {
        Correction::None => "p-values not adjusted".to_string(),
        Correction::Holm => format!("p-values adjusted by Holm over {} tests", r.tests),
        Correction::BenjaminiHochberg => format!("p-values adjusted by Benjamini–Hochberg over {} tests", r.tests),
    };
    let mut how = format!("95 % confidence intervals · {adjusted}");
    if let Some(c) = &r.cuped {
        let days = if c.days.fract() == 0.0 { num(c.days, 0, false) } else { num(c.days, 1, false) };
        write!(how, " · filled: CUPED over the {days} days before launch; hollow: unadjusted")
            .expect("writing to a String");
    }
    svg.text((10.0, 72.0), GREY, &how);
    90.0
}

/// One forest plot per compared metric, in report order; returns where the
/// next part starts.
fn forest(svg: &mut Svg, r: &Report, top: f64) -> f64 {
    if r.comparisons.is_empty() {
        svg.text((10.0, top + 14.0), GREY, "no comparisons: the experiment has no arm besides the control");
        return top + 30.0;
    }
    let mut y = top;
    for metric in Metric::ALL.into_iter().filter(|m| r.metrics.contains(m)) {
        y = forest_panel(svg, r, metric, y);
    }
    y
}

/// The forest plot of one metric: a row per comparison on an axis of its
/// own; returns where the next panel starts.
fn forest_panel(svg: &mut Svg, r: &Report, metric: Metric, top: f64) -> f64 {
    let shown: Vec<&Uplift> =
        r.comparisons.iter().flat_map(|c| [c.headline(metric), plain_beside_cuped(c, metric)]).flatten().collect();
    // One unit per panel, so that its rows share the axis: relative when
    // every estimate's control value is positive (a CUPED-adjusted control
    // mean can be 0 or below, and dividing by it would flip the direction).
    let relative = shown.iter().all(|u| u.control.is_finite() && u.control > 0.0);
    let (lo, hi) = extent(shown.iter().flat_map(|u| effect(u, relative)));
    let (lo, hi) = if lo == hi {
        (-1.0, 1.0)
    } else {
        let pad = 0.08 * (hi / 2.0 - lo / 2.0);
        (if lo < 0.0 { lo - pad } else { lo }, if hi > 0.0 { hi + pad } else { hi })
    };
    let axis = Axis::fit(lo, hi, (FOREST_LEFT, FOREST_RIGHT), 5.0);
    let control = r.comparisons.first().map_or("control", |c| c.control.as_str());
    let unit =
        if relative { format!("change vs {control}, in % of its value") } else { format!("difference vs {control}") };
    svg.text((10.0, top + 14.0), "font-weight=\"bold\"", Metric::label(metric));
    let rows_top = top + 22.0;
    let rows_bottom = rows_top + ROW * r.comparisons.len() as f64;
    // A panel of notes only ("not compared") has no axis to show.
    if !shown.is_empty() {
        svg.label((FOREST_LEFT, top + 14.0), GREY, &unit, 70);
        x_grid(svg, &axis, (rows_top, rows_bottom), if relative { " %" } else { "" });
        if let Some(x) = axis.at(0.0) {
            svg.line((x, rows_top), (x, rows_bottom), "class=\"zero\" stroke=\"#333\"");
        }
    }
    let decimals = (axis.decimals + 1).min(6);
    for (i, c) in r.comparisons.iter().enumerate() {
        let row = Row { axis: &axis, relative, decimals, top: rows_top + ROW * i as f64, colour: colour(r, &c.arm) };
        row.draw(svg, c, metric);
    }
    rows_bottom + 36.0
}

/// Where and how one comparison's row of a forest plot is drawn.
struct Row<'a> {
    axis: &'a Axis,
    relative: bool,
    /// Decimals of the estimates' text.
    decimals: usize,
    top: f64,
    colour: &'static str,
}

impl Row<'_> {
    /// The arm's name, its headline estimate filled and, when that is
    /// CUPED's, the unadjusted one hollow just below, each with its text.
    fn draw(&self, svg: &mut Svg, c: &Comparison, metric: Metric) {
        let (head_y, plain_y) = (self.top + 11.0, self.top + 21.0);
        svg.label((10.0, self.top + 15.0), &format!("fill=\"{}\" font-weight=\"bold\"", self.colour), &c.arm, 24);
        let Some(head) = c.headline(metric) else {
            let note = match metric {
                Metric::AverageOrderValue => c.average_order_value_note.as_deref(),
                _ => None,
            };
            let text = note.map_or("not compared".to_string(), |n| format!("not compared: {n}"));
            svg.label((FOREST_LEFT, self.top + 15.0), "fill=\"#666\" font-style=\"italic\"", &text, 130);
            return;
        };
        let plain = plain_beside_cuped(c, metric);
        self.estimate(svg, head, head_y, true);
        let kind = if plain.is_some() { "CUPED " } else { "" };
        svg.text((FOREST_RIGHT + 15.0, self.top + 15.0), "", &format!("{kind}{}", self.describe(head)));
        if let Some(p) = plain {
            self.estimate(svg, p, plain_y, false);
            svg.text(
                (FOREST_RIGHT + 15.0, self.top + 26.0),
                "fill=\"#666\" font-size=\"10\"",
                &format!("unadjusted {}", self.describe(p)),
            );
        }
    }

    /// An estimate's CI as a line with end caps and the estimate as a dot:
    /// filled for the headline, hollow and lighter for the unadjusted one.
    fn estimate(&self, svg: &mut Svg, u: &Uplift, y: f64, headline: bool) {
        let [value, low, high] = effect(u, self.relative);
        let colour = self.colour;
        let (class, style) = if headline {
            ("ci", "stroke-width=\"2\"")
        } else {
            ("ci-plain", "stroke-width=\"1.5\" stroke-opacity=\"0.55\" stroke-dasharray=\"4 2\"")
        };
        if let (Some(a), Some(b)) = (self.axis.at(low), self.axis.at(high)) {
            svg.line((a, y), (b, y), &format!("class=\"{class}\" stroke=\"{colour}\" {style}"));
            for x in [a, b] {
                svg.line((x, y - 3.0), (x, y + 3.0), &format!("stroke=\"{colour}\" {style}"));
            }
        }
        if let Some(x) = self.axis.at(value) {
            let fill = if headline { colour } else { "white" };
            let radius = if headline { 4.0 } else { 3.5 };
            svg.circle((x, y), radius, &format!("fill=\"{fill}\" stroke=\"{colour}\" stroke-width=\"1.5\""));
        }
    }

    /// "+3.2 % [−1.0, +7.4] · p 0.210", in the panel's unit, with the
    /// adjusted p-value when there is one.
    fn describe(&self, u: &Uplift) -> String {
        let [value, low, high] = effect(u, self.relative);
        let d = self.decimals;
        let unit = if self.relative { " %" } else { "" };
        let p = p_text(u.p_adjusted.unwrap_or(u.p_value));
        format!("{}{unit} [{}, {}] · p {p}", num(value, d, true), num(low, d, true), num(high, d, true))
    }
}

/// The unadjusted estimate of `metric`, when the headline is CUPED's.
fn plain_beside_cuped(c: &Comparison, metric: Metric) -> Option<&Uplift> {
    let (plain, cuped) = match metric {
        Metric::Conversion => (Some(&c.conversion), c.conversion_cuped.is_some()),
        Metric::Revenue => (Some(&c.revenue_per_member), c.revenue_per_member_cuped.is_some()),
        Metric::Orders => (Some(&c.orders_per_member), c.orders_per_member_cuped.is_some()),
        Metric::AverageOrderValue => (c.average_order_value.as_ref(), c.average_order_value_cuped.is_some()),
    };
    plain.filter(|_| cuped)
}

/// Estimate, CI low and CI high: in % of the control value when
/// `relative`, else the difference itself.
fn effect(u: &Uplift, relative: bool) -> [f64; 3] {
    let k = if relative { 100.0 / u.control } else { 1.0 };
    [u.diff * k, u.ci_low * k, u.ci_high * k]
}

/// Each arm's share of members who had bought by the end of each day since
/// launch, one line per arm; returns where the picture ends.
fn conversion_chart(svg: &mut Svg, r: &Report, top: f64) -> f64 {
    svg.text((10.0, top + 14.0), "font-weight=\"bold\"", "Cumulative conversion");
    svg.text(
        (FOREST_LEFT, top + 14.0),
        GREY,
        "members who had bought by the end of each day since launch, % of the arm",
    );
    let days = r.arms.iter().map(|a| a.cumulative_buyers.len()).max().unwrap_or(0);
    if days == 0 {
        svg.text((10.0, top + 36.0), "font-style=\"italic\"", "no orders in the window yet");
        return top + 46.0;
    }
    let curves: Vec<Option<Vec<f64>>> = r.arms.iter().map(curve).collect();
    let highest = extent(curves.iter().flatten().flatten().copied()).1;
    let (plot_top, plot_bottom) = (top + 30.0, top + 270.0);
    let x = Axis::fit(0.0, days as f64, (CHART_LEFT, CHART_RIGHT), (days as f64).min(8.0));
    let y = Axis::fit(0.0, if highest > 0.0 { highest } else { 1.0 }, (plot_bottom, plot_top), 5.0);
    x_grid(svg, &x, (plot_top, plot_bottom), "");
    y_grid(svg, &y, (CHART_LEFT, CHART_RIGHT), " %");
    svg.text(((CHART_LEFT + CHART_RIGHT) / 2.0, plot_bottom + 30.0), "text-anchor=\"middle\"", "days since launch");
    for (i, curve) in curves.iter().enumerate() {
        let Some(curve) = curve else { continue };
        let colour = PALETTE[i % PALETTE.len()];
        // Day 0 is the launch, when nobody has bought yet.
        let points: Vec<(f64, f64)> = std::iter::once(0.0)
            .chain(curve.iter().copied())
            .enumerate()
            .filter_map(|(d, v)| Some((x.at(d as f64)?, y.at(v)?)))
            .collect();
        svg.polyline(&points, &format!("class=\"arm-line\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\""));
        if days <= DOTS_UP_TO {
            for &p in &points[1..] {
                svg.circle(p, 2.5, &format!("fill=\"{colour}\""));
            }
        }
    }
    let legend_bottom = legend(svg, r, &curves, plot_top);
    (plot_bottom + 40.0).max(legend_bottom)
}

/// Percent of `a`'s members who had bought by the end of each day (`None`
/// for an arm without members).
fn curve(a: &ArmResult) -> Option<Vec<f64>> {
    (a.members > 0).then(|| a.cumulative_buyers.iter().map(|&b| 100.0 * b as f64 / a.members as f64).collect())
}

/// The arms' colours, names and latest conversion beside the chart; returns
/// where it ends.
fn legend(svg: &mut Svg, r: &Report, curves: &[Option<Vec<f64>>], top: f64) -> f64 {
    let control = r.comparisons.first().map(|c| c.control.as_str());
    let left = CHART_RIGHT + 20.0;
    let mut y = top;
    for (i, (a, curve)) in r.arms.iter().zip(curves).enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        svg.line((left, y + 6.0), (left + 18.0, y + 6.0), &format!("stroke=\"{colour}\" stroke-width=\"3\""));
        svg.label((left + 24.0, y + 10.0), "", &a.arm, 22);
        let mut note = match curve.as_ref().and_then(|c| c.last()) {
            Some(&last) => format!("{} %", num(last, 1, false)),
            None if a.members == 0 => "no members".to_string(),
            None => String::new(),
        };
        if Some(a.arm.as_str()) == control {
            note += " · control";
        }
        svg.text((left + 24.0, y + 22.0), GREY, &note);
        y += 32.0;
    }
    y
}

/// The colour of arm `name`: its position in the report.
fn colour(r: &Report, name: &str) -> &'static str {
    PALETTE[r.arms.iter().position(|a| a.arm == name).unwrap_or(0) % PALETTE.len()]
}

/// Vertical grid lines at `axis`'s ticks between `top` and `bottom`, with
/// the ticks' labels below.
fn x_grid(svg: &mut Svg, axis: &Axis, (top, bottom): (f64, f64), suffix: &str) {
    svg.line((axis.from, bottom), (axis.to, bottom), "stroke=\"#999\"");
    for &t in &axis.ticks {
        let Some(x) = axis.at(t) else { continue };
        svg.line((x, top), (x, bottom), "stroke=\"#e4e4e4\"");
        let text = format!("{}{suffix}", num(t, axis.decimals, false));
        svg.text((x, bottom + 13.0), "text-anchor=\"middle\" fill=\"#444\"", &text);
    }
}

/// Horizontal grid lines at `axis`'s ticks between `left` and `right`, with
/// the ticks' labels to the left.
fn y_grid(svg: &mut Svg, axis: &Axis, (left, right): (f64, f64), suffix: &str) {
    svg.line((left, axis.from), (left, axis.to), "stroke=\"#999\"");
    for &t in &axis.ticks {
        let Some(y) = axis.at(t) else { continue };
        svg.line((left, y), (right, y), "stroke=\"#e4e4e4\"");
        let text = format!("{}{suffix}", num(t, axis.decimals, false));
        svg.text((left - 6.0, y + 4.0), "text-anchor=\"end\" fill=\"#444\"", &text);
    }
}

/// A linear axis: the values `lo..=hi` drawn from pixel `from` to `to`,
/// with ticks at round numbers.
#[derive(Debug)]
struct Axis {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
    /// Decimals the ticks need.
    decimals: usize,
    from: f64,
    to: f64,
}

impl Axis {
    /// An axis over at least `lo..=hi` widened to round ticks, about
    /// `target` intervals of 1, 2 or 5 times a power of ten.
    fn fit(lo: f64, hi: f64, (from, to): (f64, f64), target: f64) -> Axis {
        let (lo, hi) = if lo.is_finite() && hi.is_finite() && hi > lo { (lo, hi) } else { (0.0, 1.0) };
        let step = nice_step((hi - lo) / target.max(1.0));
        let (k_lo, k_hi) = ((lo / step).floor(), (hi / step).ceil());
        // Beyond the normal range (spans overflowing, steps underflowing)
        // the plain ends are the ticks.
        if !(step.is_normal() && step > 0.0 && k_lo.is_finite() && k_hi.is_finite() && k_hi - k_lo <= 100.0) {
            return Axis { lo, hi, ticks: vec![lo, hi], decimals: 3, from, to };
        }
        let ticks = (k_lo as i64..=k_hi as i64).map(|k| k as f64 * step).collect();
        let decimals = (-step.log10().floor()).clamp(0.0, 12.0) as usize;
        Axis { lo: k_lo * step, hi: k_hi * step, ticks, decimals, from, to }
    }

    /// The pixel of `v`: `None` for NaN, infinities at the ends.
    fn at(&self, v: f64) -> Option<f64> {
        if v.is_nan() || self.hi <= self.lo {
            return None;
        }
        // Halved first, so that spans near the largest f64 do not overflow.
        let (v, lo, hi) = (v.clamp(self.lo, self.hi) / 2.0, self.lo / 2.0, self.hi / 2.0);
        let share = (v - lo) / (hi - lo);
        Some(self.from + share * (self.to - self.from)).filter(|x| x.is_finite())
    }
}

/// 1, 2 or 5 times the power of ten at or just above `raw`.
fn nice_step(raw: f64) -> f64 {
    let magnitude = 10f64.powf(raw.log10().floor());
    let m = raw / magnitude;
    let nice = if m <= 1.0 {
        1.0
    } else if m <= 2.0 {
        2.0
    } else if m <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// The smallest and largest finite value, 0 included.
fn extent(values: impl IntoIterator<Item = f64>) -> (f64, f64) {
    values.into_iter().filter(|v| v.is_finite()).fold((0.0, 0.0), |(lo, hi), v| (f64::min(lo, v), f64::max(hi, v)))
}

/// `v` with `decimals` (and a sign when `signed`), in scientific notation
/// from ten million on; "–" when not finite.
fn num(v: f64, decimals: usize, signed: bool) -> String {
    // What rounds to zero is written as zero, never "-0.0".
    let v = if (v * 10f64.powi(decimals as i32)).round() == 0.0 { 0.0 } else { v };
    match v {
        v if !v.is_finite() => "–".to_string(),
        v if v.abs() >= 1e7 && signed => format!("{v:+.2e}"),
        v if v.abs() >= 1e7 => format!("{v:.2e}"),
        v if signed => format!("{v:+.decimals$}"),
        v => format!("{v:.decimals$}"),
    }
}

fn p_text(p: f64) -> String {
    match p {
        p if !p.is_finite() => "–".to_string(),
        p if p < 0.001 => "< 0.001".to_string(),
        p => format!("{p:.3}"),
    }
}

/// A date, with the time of day when it is not midnight.
fn when(t: DateTime<Utc>) -> String {
    let format = if t.time() == NaiveTime::MIN { "%Y-%m-%d" } else { "%Y-%m-%d %H:%M" };
    t.format(format).to_string()
}

#[cfg(test)]
mod tests {
    use std::ops::Range;

    use roaring::RoaringBitmap;

    use super::*;
    use crate::activity::{Activity, Line};
    use crate::experiment::{Arm, CupedPeriod, Experiment, ReportOptions, analyse};

    const DAY: i64 = 86_400_000_000;
    /// 2024-03-01 00:00 UTC, in µs.
    const LAUNCH: i64 = 1_709_251_200_000_000;
    const HOSTILE: &str = "<script>&\"'";

    /// A report of `arms` (name, member keys; the second is the control)
    /// over 14 days from [`LAUNCH`], from `lines` (window 0: the
    /// experiment's, window 1: the 30 days before launch, read only with `cuped`).
    fn report(arms: &[(&str, Range<u32>)], lines: Vec<Line>, cuped: bool) -> Report {
        let at = |us: i64| DateTime::from_timestamp_micros(us).expect("a date");
        let mut windows = vec![(LAUNCH, LAUNCH + 14 * DAY)];
        if cuped {
            windows.push((LAUNCH - 30 * DAY, LAUNCH));
        }
        let lines: Vec<Line> = lines.into_iter().filter(|l| usize::from(l.window) < windows.len()).collect();
        let newest = lines.iter().map(|l| l.at).max();
        let activity = Activity::from_lines(&windows, lines, newest);
        let bitmaps: Vec<RoaringBitmap> = arms.iter().map(|(_, keys)| keys.clone().collect()).collect();
        let named: Vec<(&str, &RoaringBitmap)> = arms.iter().map(|a| a.0).zip(&bitmaps).collect();
        let options = ReportOptions::new(chrono::Duration::days(14), "control");
        let a = analyse(&named, 1, &activity, &options).expect("an analysis");
        let experiment = Experiment {
            id: 7,
            name: "spring <sale> & 'more'".into(),
            audience: "vip & \"new\" < 30d".into(),
            snapshot: 1,
            salt: "salt".into(),
            stratify_by: None,
            holdout_share: 0.0,
            holdout_salt: String::new(),
            arms: arms
                .iter()
                .zip(&bitmaps)
                .map(|((name, _), b)| Arm { name: name.to_string(), share: 0.5, members: b.len(), bitmap: b.clone() })
                .collect(),
            launched_at: at(LAUNCH),
            ends_at: None,
            created_at: at(LAUNCH),
            output: None,
        };
        Report {
            experiment,
            window_start: at(LAUNCH),
            window_end: at(LAUNCH + 14 * DAY),
            newest_order: newest.map(at),
            arms: a.arms,
            comparisons: a.comparisons,
            srm: None,
            srm_arms: Vec::new(),
            srm_strata: Vec::new(),
            srm_strata_note: None,
            correction: Correction::Holm,
            tests: a.tests,
            metrics: Metric::ALL.to_vec(),
            revenue_cap: a.revenue_cap,
            cuped: cuped.then(|| CupedPeriod { days: 30.0, from: at(LAUNCH - 30 * DAY), to: at(LAUNCH) }),
        }
    }

    /// Orders of every third member over the first ten days (more in
    /// `treatment`), and of every fourth member before launch.
    fn orders(members: Range<u32>, boosted: Range<u32>) -> Vec<Line> {
        let mut lines = Vec::new();
        for key in members {
            let amount = 10.0 + f64::from(key % 7);
            if key % 3 == 0 || (boosted.contains(&key) && key % 5 == 0) {
                let at = LAUNCH + i64::from(key % 10) * DAY + DAY / 2;
                lines.push(Line::new(key, 0, &format!("o{key}"), amount, at));
            }
            if key % 4 == 0 {
                lines.push(Line::new(key, 1, &format!("p{key}"), amount, LAUNCH - i64::from(5 + key % 20) * DAY));
            }
        }
        lines
    }

    /// Starts with `<svg`, ends with `</svg>`, every tag closed in order,
    /// quotes paired, no `>` in text and every `&` an entity.
    fn assert_well_formed(svg: &str) {
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{svg}");
        let mut open: Vec<&str> = Vec::new();
        let mut rest = svg;
        while let Some(start) = rest.find('<') {
            assert!(!rest[..start].contains('>'), "a bare > in text before {}", &rest[start..]);
            let end = start + rest[start..].find('>').expect("a tag closed by >");
            let tag = &rest[start + 1..end];
            assert_eq!(tag.matches('"').count() % 2, 0, "unpaired quotes in <{tag}>");
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(open.pop(), Some(name), "</{name}> closes another tag");
            } else if !tag.ends_with('/') {
                open.push(tag.split_whitespace().next().expect("a tag name"));
            }
            rest = &rest[end + 1..];
        }
        assert!(open.is_empty(), "never closed: {open:?}");
        for (i, _) in svg.match_indices('&') {
            let entity = ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"].iter().any(|e| svg[i..].starts_with(e));
            assert!(entity, "a bare & at {}", &svg[i..(i + 20).min(svg.len())]);
        }
    }

    fn assert_finite(svg: &str) {
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
    }

    fn three_arms() -> Report {
        let arms = [("treatment", 0..100), ("control", 100..200), (HOSTILE, 200..300)];
        report(&arms, orders(0..300, 0..100), true)
    }

    #[test]
    fn every_compared_metric_has_a_ci_per_arm_beside_the_unadjusted_one() {
        let r = three_arms();
        assert!(r.comparisons.iter().all(|c| c.average_order_value_cuped.is_some()), "AOV compared with CUPED");
        let svg = render_svg(&r);
        assert_well_formed(&svg);
        assert_finite(&svg);
        // 2 comparisons × 4 metrics, CUPED headlines with the plain estimate below.
        assert_eq!(svg.matches("class=\"ci\"").count(), 8);
        assert_eq!(svg.matches("class=\"ci-plain\"").count(), 8);
        assert_eq!(svg.matches("class=\"zero\"").count(), 4);
        assert_eq!(svg.matches("class=\"arm-line\"").count(), 3);
        for text in ["treatment", "control", "Experiment 7: spring &lt;sale&gt; &amp; &apos;more&apos;"] {
            assert!(svg.contains(text), "{text}");
        }
        assert!(svg.contains("audience: vip &amp; &quot;new&quot; &lt; 30d"));
        assert!(svg.contains("window 2024-03-01 to 2024-03-15 (UTC), orders up to 2024-03-10 12:00"));
        assert!(svg.contains("change vs control, in % of its value"), "conversion is relative");
        assert!(svg.contains("CUPED +") || svg.contains("CUPED -"));
        // The hostile arm name is text, never markup.
        assert!(svg.contains("&lt;script&gt;&amp;&quot;&apos;") && !svg.contains("<script"));

        let mut only = r.clone();
        only.metrics = vec![Metric::Conversion, Metric::Orders];
        let svg = render_svg(&only);
        assert_eq!(svg.matches("class=\"ci\"").count(), 4, "no panel for metrics not compared");
        assert!(!svg.contains("Revenue per member"));
    }

    #[test]
    fn an_empty_window_says_so_and_notes_what_was_not_compared() {
        let r = report(&[("treatment", 0..50), ("control", 50..100)], Vec::new(), false);
        assert!(r.arms.iter().all(|a| a.cumulative_buyers.is_empty()));
        let svg = render_svg(&r);
        assert_well_formed(&svg);
        assert_finite(&svg);
        assert!(svg.contains("no orders in the window yet"));
        assert!(svg.contains("not compared: "), "the average order value's note");
        // Conversion, revenue and orders; no CUPED, no daily lines.
        assert_eq!(svg.matches("class=\"ci\"").count(), 3);
        assert_eq!(svg.matches("class=\"ci-plain\"").count(), 0);
        assert_eq!(svg.matches("class=\"arm-line\"").count(), 0);
        assert_eq!(svg.matches("class=\"zero\"").count(), 3, "no axis for the average order value");
        assert!(svg.contains("difference vs control"), "a control value of 0 gives the absolute difference");
    }

    #[test]
    fn non_finite_numbers_never_reach_the_picture() {
        let mut r = three_arms();
        let c = &mut r.comparisons[0];
        c.conversion_cuped.as_mut().expect("CUPED").uplift.ci_high = f64::INFINITY;
        c.conversion.diff = f64::NAN;
        c.revenue_per_member_cuped.as_mut().expect("CUPED").uplift.p_adjusted = Some(f64::NAN);
        c.revenue_per_member.statistic = f64::INFINITY;
        c.orders_per_member_cuped.as_mut().expect("CUPED").uplift.control = f64::NAN;
        c.average_order_value_cuped.as_mut().expect("CUPED").uplift.ci_low = f64::NEG_INFINITY;
        r.comparisons[1].orders_per_member_cuped.as_mut().expect("CUPED").uplift.diff = 1e308;
        r.comparisons[1].orders_per_member_cuped.as_mut().expect("CUPED").uplift.ci_low = -1e308;
        r.arms[2].members = 0;
        r.experiment.name = "tab\tnull\u{0}bell\u{7}".into();
        let svg = render_svg(&r);
        assert_well_formed(&svg);
        assert_finite(&svg);
        assert!(!svg.contains('\u{0}') && !svg.contains('\u{7}'));
        assert!(svg.contains("no members"));
        assert!(svg.contains("CUPED +1.00e308 [-1.00e308, +"), "huge numbers in scientific notation");
    }

    #[test]
    fn axes_cover_their_values_with_round_ticks() {
        let a = Axis::fit(-0.013, 0.042, (0.0, 100.0), 5.0);
        assert_eq!((a.lo, a.hi, a.decimals), (-0.02, 0.06, 2), "steps of 0.02");
        assert!(a.ticks.contains(&0.0));
        assert_eq!(a.at(f64::INFINITY), Some(100.0));
        assert_eq!(a.at(f64::NAN), None);
        let days = Axis::fit(0.0, 14.0, (0.0, 100.0), 8.0);
        assert_eq!(days.ticks, [0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0]);
        for (lo, hi) in [(0.0, 0.0), (f64::NAN, 1.0), (-1e308, 1e308), (0.0, 1e-320)] {
            let a = Axis::fit(lo, hi, (0.0, 100.0), 5.0);
            assert!(a.ticks.len() >= 2 && a.ticks.len() <= 101, "{lo} {hi}: {a:?}");
            assert!(a.ticks.iter().all(|&t| a.at(t).is_some_and(f64::is_finite)), "{lo} {hi}: {a:?}");
        }
    }
}
