//! What each community looks like: size, share, every feature's mean
//! against the base (as a lift), and a short name a marketer can read,
//! built from the features that set the community apart most.
//!
//! Names come from the centroid in the standardized space (how many
//! standard deviations a community sits from the base on each feature),
//! not from the lifts: a lift of 1.3 on weekend share and one of 1.3 on
//! spend mean very different things, while z-scores compare.

use serde::{Deserialize, Serialize};
use taglake_base::csv;
use taglake_base::svg::xml;

/// A community's profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommunityProfile {
    /// Community number (1 = the largest at fit time).
    pub community: u32,
    /// Generated name, e.g. "beauty-heavy · weekend · high spend".
    pub name: String,
    /// Members assigned.
    pub members: u64,
    /// Members assigned / members clustered.
    pub share: f64,
    /// Mean distance to the centroid (standardized space).
    pub mean_distance: f64,
    /// Per feature, the mean raw value (`None` when no member has one).
    pub mean: Vec<Option<f64>>,
    /// Per feature, mean / base mean (`None` when the base mean is 0).
    pub lift: Vec<Option<f64>>,
    /// Per feature, the centroid coordinate (standard deviations from the base).
    pub z: Vec<f64>,
}

/// Profiles of all communities.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// Feature names, in the order of every per-feature vector.
    pub features: Vec<String>,
    /// Members clustered (members with orders).
    pub members_clustered: u64,
    /// Members left out because they have no orders.
    pub members_without_orders: u64,
    /// Per feature, the base mean of the raw values.
    pub base_mean: Vec<Option<f64>>,
    /// One entry per community, in community order.
    pub communities: Vec<CommunityProfile>,
}

/// Sums of one set of rows, per community: merged in a fixed order so the
/// profile does not depend on thread scheduling.
#[derive(Debug, Clone)]
pub struct Partial {
    /// Per community, members.
    pub members: Vec<u64>,
    /// Per community, summed Euclidean distance.
    pub distance: Vec<f64>,
    /// Per community and feature, sum of raw values.
    pub sum: Vec<Vec<f64>>,
    /// Per community and feature, rows with a value.
    pub count: Vec<Vec<u64>>,
}

impl Partial {
    /// Empty sums for `k` communities and `d` features.
    pub fn new(k: usize, d: usize) -> Partial {
        Partial { members: vec![0; k], distance: vec![0.0; k], sum: vec![vec![0.0; d]; k], count: vec![vec![0; d]; k] }
    }

    /// Adds another partial.
    pub fn merge(&mut self, o: &Partial) {
        for c in 0..self.members.len() {
            self.members[c] += o.members[c];
            self.distance[c] += o.distance[c];
            for f in 0..self.sum[c].len() {
                self.sum[c][f] += o.sum[c][f];
                self.count[c][f] += o.count[c][f];
            }
        }
    }
}

impl Profile {
    /// Builds the profile from merged sums and the standardized centroids.
    pub fn build(features: Vec<String>, sums: &Partial, centroids: &[Vec<f64>], without_orders: u64) -> Profile {
        let k = sums.members.len();
        let d = features.len();
        let total: u64 = sums.members.iter().sum();
        let base_mean: Vec<Option<f64>> = (0..d)
            .map(|f| {
                let n: u64 = (0..k).map(|c| sums.count[c][f]).sum();
                let s: f64 = (0..k).map(|c| sums.sum[c][f]).sum();
                (n > 0).then(|| s / n as f64)
            })
            .collect();
        let mut communities: Vec<CommunityProfile> = (0..k)
            .map(|c| {
                let mean: Vec<Option<f64>> =
                    (0..d).map(|f| (sums.count[c][f] > 0).then(|| sums.sum[c][f] / sums.count[c][f] as f64)).collect();
                let lift = mean
                    .iter()
                    .zip(&base_mean)
                    .map(|(m, b)| match (m, b) {
                        (Some(m), Some(b)) if b.abs() > 1e-12 => Some(m / b),
                        _ => None,
                    })
                    .collect();
                CommunityProfile {
                    community: c as u32 + 1,
                    name: String::new(),
                    members: sums.members[c],
                    share: if total > 0 { sums.members[c] as f64 / total as f64 } else { 0.0 },
                    mean_distance: if sums.members[c] > 0 { sums.distance[c] / sums.members[c] as f64 } else { 0.0 },
                    mean,
                    lift,
                    z: centroids[c].clone(),
                }
            })
            .collect();
        let names = unique_names(communities.iter().map(|c| name(&features, &c.z)).collect());
        for (c, n) in communities.iter_mut().zip(names) {
            c.name = n;
        }
        Profile { features, members_clustered: total, members_without_orders: without_orders, base_mean, communities }
    }

    /// A human-readable table: one block per community.
    pub fn render_table(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} members clustered into {} communities ({} without orders left out)",
            self.members_clustered,
            self.communities.len(),
            self.members_without_orders
        );
        for c in &self.communities {
            let _ = writeln!(
                out,
                "\ncommunity_{} · {} · {} members ({:.1} %)",
                c.community,
                c.name,
                c.members,
                100.0 * c.share
            );
            // The features that set it apart most, strongest first.
            let mut order: Vec<usize> = (0..self.features.len()).collect();
            order.sort_by(|&a, &b| c.z[b].abs().total_cmp(&c.z[a].abs()).then(a.cmp(&b)));
            let _ = writeln!(out, "  {:<34} {:>12} {:>12} {:>7} {:>6}", "feature", "mean", "base", "lift", "z");
            for &f in order.iter().take(6) {
                let _ = writeln!(
                    out,
                    "  {:<34} {:>12} {:>12} {:>7} {:>+6.2}",
                    self.features[f],
                    number(c.mean[f]),
                    number(self.base_mean[f]),
                    c.lift[f].map(|l| format!("{l:.2}×")).unwrap_or_else(|| "–".into()),
                    c.z[f]
                );
            }
        }
        out
    }

    /// One CSV row per community and feature.
    pub fn render_csv(&self) -> String {
        let mut out = String::from("community,name,members,share,feature,mean,base_mean,lift,z\n");
        for c in &self.communities {
            for (f, feature) in self.features.iter().enumerate() {
                let opt = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
                out.push_str(&format!(
                    "{},{},{},{},{},{},{},{},{}\n",
                    c.community,
                    csv::field(&c.name),
                    c.members,
                    c.share,
                    feature,
                    opt(c.mean[f]),
                    opt(self.base_mean[f]),
                    opt(c.lift[f]),
                    c.z[f]
                ));
            }
        }
        out
    }

    /// A self-contained SVG: a bar per community (its share), and a heat
    /// map of every feature's z-score per community (red above the base,
    /// blue below).
    pub fn render_svg(&self) -> String {
        let k = self.communities.len();
        let d = self.features.len();
        let (label_w, bar_w, cell, top) = (330.0, 220.0, 18.0, 150.0);
        let width = label_w + bar_w + 20.0 + cell * d as f64 + 20.0;
        let height = top + cell * 1.6 * k as f64 + 40.0;
        let mut s = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" \
             font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
             <text x=\"10\" y=\"20\" font-size=\"14\">taglake communities: size and feature lift (z-score of the centroid)</text>\n"
        );
        let max_share = self.communities.iter().map(|c| c.share).fold(0.0, f64::max).max(1e-9);
        let heat_x = label_w + bar_w + 20.0;
        for (f, name) in self.features.iter().enumerate() {
            let x = heat_x + cell * f as f64 + cell / 2.0;
            s += &format!(
                "<text x=\"{x:.1}\" y=\"{:.1}\" transform=\"rotate(-60 {x:.1} {:.1})\">{}</text>\n",
                top - 6.0,
                top - 6.0,
                xml(name)
            );
        }
        for (i, c) in self.communities.iter().enumerate() {
            let y = top + cell * 1.6 * i as f64;
            s += &format!(
                "<text x=\"10\" y=\"{:.1}\">community_{} · {}</text>\n",
                y + cell * 0.75,
                c.community,
                xml(&c.name)
            );
            let w = bar_w * c.share / max_share;
            s += &format!(
                "<rect x=\"{label_w}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{cell}\" fill=\"#4a7ab5\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\">{:.1} %</text>\n",
                label_w + w + 4.0,
                y + cell * 0.75,
                100.0 * c.share
            );
            for f in 0..d {
                let z = c.z[f].clamp(-2.5, 2.5) / 2.5;
                let (r, g, b) = if z >= 0.0 {
                    (255.0, 255.0 * (1.0 - z), 255.0 * (1.0 - z))
                } else {
                    (255.0 * (1.0 + z), 255.0 * (1.0 + z), 255.0)
                };
                s += &format!(
                    "<rect x=\"{:.1}\" y=\"{y:.1}\" width=\"{cell}\" height=\"{cell}\" fill=\"rgb({:.0},{:.0},{:.0})\">\
                     <title>{}: z {:+.2}</title></rect>\n",
                    heat_x + cell * f as f64,
                    r,
                    g,
                    b,
                    xml(&self.features[f]),
                    c.z[f]
                );
            }
        }
        s += "</svg>\n";
        s
    }
}

fn number(v: Option<f64>) -> String {
    match v {
        None => "–".into(),
        Some(v) if v.abs() >= 1000.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.3}"),
    }
}

/// How far (in standard deviations) a centroid must sit from the base on a
/// feature for the feature to appear in the name.
const NAME_THRESHOLD: f64 = 0.5;

/// The name of a centroid: up to three phrases for its strongest features.
pub fn name(features: &[String], z: &[f64]) -> String {
    let mut order: Vec<usize> = (0..features.len()).collect();
    order.sort_by(|&a, &b| z[b].abs().total_cmp(&z[a].abs()).then(a.cmp(&b)));
    let phrases: Vec<String> = order
        .into_iter()
        .filter(|&f| z[f].abs() >= NAME_THRESHOLD)
        .filter_map(|f| phrase(&features[f], z[f] > 0.0))
        .take(3)
        .collect();
    if phrases.is_empty() { "average members".into() } else { phrases.join(" · ") }
}

/// The phrase for a feature far above (`high`) or below the base; `None`
/// when being low on it says little (a low share of one category).
fn phrase(feature: &str, high: bool) -> Option<String> {
    let pick = |hi: &str, lo: &str| Some(if high { hi } else { lo }.to_string());
    let words = |s: &str| s.replace('_', " ");
    if let Some(cat) = feature.strip_prefix("spend_share_") {
        return high.then(|| format!("{}-heavy", words(cat)));
    }
    if let Some(ch) = feature.strip_prefix("order_share_") {
        return high.then(|| format!("{}-first", words(ch)));
    }
    match feature {
        "recency_days" => pick("lapsed", "recent"),
        "orders_total" | "orders_365d" | "orders_90d" | "orders_30d" => pick("frequent", "rare buyers"),
        "spend_total" | "spend_365d" | "spend_90d" | "spend_30d" | "growth_value" => pick("high spend", "low spend"),
        "avg_order_value" => pick("big baskets", "small baskets"),
        "items_per_order" => pick("bulk buyers", "single items"),
        "weekend_share" => pick("weekend", "weekday"),
        "promotion_share" => pick("promo-driven", "full price"),
        "tenure_days" => pick("long-standing", "new"),
        "distinct_categories" => pick("explorers", "focused"),
        "distinct_channels" => pick("omnichannel", "single channel"),
        "age" => pick("older", "younger"),
        other => Some(format!("{} {}", words(other), if high { "high" } else { "low" })),
    }
}

/// Appends " (2)", " (3)" … to names already used.
fn unique_names(names: Vec<String>) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    names
        .into_iter()
        .map(|n| {
            let count = seen.iter().filter(|s| **s == n).count();
            seen.push(n.clone());
            if count == 0 { n } else { format!("{n} ({})", count + 1) }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features() -> Vec<String> {
        ["spend_share_beauty", "weekend_share", "spend_total", "recency_days", "spend_share_toys"]
            .map(String::from)
            .to_vec()
    }

    #[test]
    fn names_follow_the_strongest_features() {
        let f = features();
        assert_eq!(name(&f, &[2.1, 0.9, 0.6, -0.1, 0.0]), "beauty-heavy · weekend · high spend");
        assert_eq!(name(&f, &[0.0, -0.2, -0.7, 1.8, -2.0]), "lapsed · low spend", "a low category share is not named");
        assert_eq!(name(&f, &[0.1, 0.2, -0.3, 0.0, 0.4]), "average members");
        assert_eq!(unique_names(vec!["a".into(), "b".into(), "a".into(), "a".into()]), ["a", "b", "a (2)", "a (3)"]);
    }

    #[test]
    fn profile_means_lifts_and_shares_come_from_the_sums() {
        let mut a = Partial::new(2, 2);
        a.members = vec![3, 1];
        a.distance = vec![3.0, 2.0];
        a.sum = vec![vec![30.0, 0.0], vec![10.0, 0.0]];
        a.count = vec![vec![3, 0], vec![1, 0]];
        let mut b = Partial::new(2, 2);
        b.members = vec![1, 0];
        b.sum = vec![vec![10.0, 0.0], vec![0.0, 0.0]];
        b.count = vec![vec![1, 0], vec![0, 0]];
        a.merge(&b);
        let p = Profile::build(vec!["spend_total".into(), "age".into()], &a, &[vec![0.2, 0.0], vec![-0.9, 0.0]], 7);
        assert_eq!(p.members_clustered, 5);
        assert_eq!(p.members_without_orders, 7);
        assert_eq!(p.base_mean, [Some(10.0), None]);
        let c1 = &p.communities[0];
        assert_eq!((c1.members, c1.share, c1.mean_distance), (4, 0.8, 0.75));
        assert_eq!(c1.mean, [Some(10.0), None]);
        assert_eq!(c1.lift, [Some(1.0), None]);
        assert_eq!(p.communities[1].name, "low spend");
        let csv = p.render_csv();
        assert_eq!(csv.lines().count(), 1 + 2 * 2);
        assert!(csv.contains("\n2,low spend,1,0.2,spend_total,10,10,1,-0.9\n"), "{csv}");
        let svg = p.render_svg();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<title>").count(), 4);
        assert!(p.render_table().contains("community_2 · low spend · 1 members (20.0 %)"));
    }
}
