//! The studio's charts, drawn on the server as SVG with
//! `taglake_base::svg` (the helpers the communities' profile and the
//! experiment report draw with): a trend line of a count over snapshots,
//! paired bars of an audience's share beside the base's, and a funnel.
//!
//! Every chart carries a `<title>` and `role="img"` with a label for
//! screen readers, and the figures it shows are also in a table next to
//! it. Colours come from the stylesheet's classes (`bar`, `base`,
//! `trend`), so the CSP needs no inline style. The returned markup is
//! pre-escaped: all text in it went through `svg::xml`.

use maud::{Markup, PreEscaped};
use taglake_base::svg::{P, Svg, xml};

fn wrap(width: f64, height: f64, title: &str, body: Svg) -> Markup {
    PreEscaped(format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\" \
         aria-label=\"{t}\"><title>{t}</title>\n{}</svg>",
        body.0,
        w = P(width),
        h = P(height),
        t = xml(title),
    ))
}

/// A small line of `points` (snapshot, count) over snapshots, oldest first.
pub fn trend(title: &str, points: &[(i64, u64)]) -> Markup {
    let (w, h, pad) = (220.0, 56.0, 6.0);
    let mut svg = Svg::default();
    let max = points.iter().map(|p| p.1).max().unwrap_or(0).max(1) as f64;
    let min = points.iter().map(|p| p.1).min().unwrap_or(0) as f64;
    let span = (max - min).max(1.0);
    let n = points.len();
    let xy: Vec<(f64, f64)> = points
        .iter()
        .enumerate()
        .map(|(i, &(_, v))| {
            let x = if n <= 1 { w / 2.0 } else { pad + (w - 2.0 * pad) * i as f64 / (n - 1) as f64 };
            (x, h - pad - 14.0 - (h - 2.0 * pad - 14.0) * (v as f64 - min) / span)
        })
        .collect();
    svg.line((pad, h - pad - 12.0), (w - pad, h - pad - 12.0), "class=\"axis\"");
    if n > 1 {
        svg.polyline(&xy, "class=\"trend\"");
    }
    for (&(x, y), &(snapshot, v)) in xy.iter().zip(points) {
        svg.push(format_args!(
            "<circle cx=\"{}\" cy=\"{}\" r=\"2.5\" class=\"bar\"><title>snapshot {snapshot}: {}</title></circle>",
            P(x),
            P(y),
            crate::html::count(v)
        ));
    }
    if let (Some(first), Some(last)) = (points.first(), points.last()) {
        svg.text((pad, h - 2.0), "", &format!("#{}", first.0));
        svg.text((w - pad, h - 2.0), "text-anchor=\"end\"", &format!("#{}", last.0));
    }
    wrap(w, h, title, svg)
}

/// One row of a share chart: a label, the audience's share and the base's.
pub struct ShareRow {
    /// What the row is (a family value).
    pub label: String,
    /// Share of the audience, 0–1.
    pub share: f64,
    /// Share of all members, 0–1.
    pub base_share: f64,
}

/// Paired bars: per row, the audience's share and, beneath it, the base's.
pub fn shares(title: &str, rows: &[ShareRow]) -> Markup {
    let (label_w, bar_w, row_h) = (170.0, 360.0, 30.0);
    let (w, h) = (label_w + bar_w + 70.0, 26.0 + row_h * rows.len() as f64);
    let mut svg = Svg::default();
    svg.rect((label_w, 6.0), (10.0, 10.0), "class=\"bar\"");
    svg.text((label_w + 14.0, 15.0), "", "audience");
    svg.rect((label_w + 90.0, 6.0), (10.0, 10.0), "class=\"base\"");
    svg.text((label_w + 104.0, 15.0), "", "all members");
    let max = rows.iter().flat_map(|r| [r.share, r.base_share]).fold(0.0, f64::max).max(1e-9);
    for (i, r) in rows.iter().enumerate() {
        let y = 24.0 + row_h * i as f64;
        svg.label((label_w - 6.0, y + 15.0), "text-anchor=\"end\"", &r.label, 24);
        svg.rect((label_w, y + 2.0), (bar_w * r.share / max, 11.0), "class=\"bar\"");
        svg.rect((label_w, y + 14.0), (bar_w * r.base_share / max, 9.0), "class=\"base\"");
        svg.text((label_w + bar_w * r.share / max + 4.0, y + 12.0), "", &format!("{:.1}%", 100.0 * r.share));
        svg.text((label_w + bar_w * r.base_share / max + 4.0, y + 23.0), "", &format!("{:.1}%", 100.0 * r.base_share));
    }
    wrap(w, h, title, svg)
}

/// A funnel: one bar per step, its length the running count against the base.
pub fn funnel(title: &str, steps: &[(String, u64)], base: u64) -> Markup {
    let (label_w, bar_w, row_h) = (90.0, 420.0, 24.0);
    let (w, h) = (label_w + bar_w + 110.0, 8.0 + row_h * steps.len() as f64);
    let mut svg = Svg::default();
    for (i, (label, v)) in steps.iter().enumerate() {
        let y = 4.0 + row_h * i as f64;
        let len = if base == 0 { 0.0 } else { bar_w * *v as f64 / base as f64 };
        svg.label((label_w - 6.0, y + 14.0), "text-anchor=\"end\"", label, 14);
        svg.rect((label_w, y + 2.0), (len, row_h - 6.0), "class=\"bar\"");
        svg.text((label_w + len + 4.0, y + 14.0), "", &crate::html::count(*v));
    }
    wrap(w, h, title, svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_escape_their_text_and_stay_finite() {
        let hostile = "</svg><script>x</script>";
        let t = trend(hostile, &[(1, 5), (2, 5), (3, 9)]).into_string();
        assert!(!t.contains("<script>") && t.contains("&lt;/svg&gt;&lt;script&gt;"), "{t}");
        assert!(!t.contains("NaN") && !t.contains("inf"));
        assert_eq!(t.matches("<circle").count(), 3);
        let one = trend("one", &[(7, 0)]).into_string();
        assert!(!one.contains("NaN") && !one.contains("polyline"));
        let s = shares("by tier", &[ShareRow { label: hostile.into(), share: 0.5, base_share: 0.0 }]).into_string();
        assert!(!s.contains("<script>") && s.contains("50.0%"), "{s}");
        let f = funnel("funnel", &[("1".into(), 10), ("2".into(), 0)], 0).into_string();
        assert!(!f.contains("NaN"), "{f}");
        assert!(f.starts_with("<svg") && f.contains("role=\"img\""));
    }
}
