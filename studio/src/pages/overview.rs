//! The overview: the member base, the newest snapshot and its age, the
//! tag volume, the families, and the lifecycle and tier tags over the
//! stored snapshots with who entered and left them since the snapshot
//! before (the figures of `taglake tags diff`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use maud::{Markup, html};
use taglake_tagger::snapshot::TagDiff;

use crate::app::App;
use crate::charts;
use crate::data::Snapshots;
use crate::html::{Ctx, Nav, age, count, enc, not_tagged, page, percent, signed};

/// The families whose tags the overview follows over time.
pub const KEY_FAMILIES: [&str; 2] = ["lifecycle", "tier"];

/// `/`.
pub fn router() -> Router<Arc<App>> {
    Router::new().route("/", get(overview))
}

async fn overview(State(app): State<Arc<App>>, Extension(ctx): Extension<Ctx>) -> Response {
    let Some((tags, v)) = app.data.tags() else {
        return page(&ctx, "Overview", Nav::Overview, not_tagged()).into_response();
    };
    let snaps = match app.data.snapshots(v).await {
        Ok(s) => s,
        Err(e) => return super::internal(&ctx, Nav::Overview, &e),
    };
    let diff = match snaps.previous() {
        Some(p) => match app.data.diff(p.snapshot, v).await {
            Ok(d) => Some(d),
            Err(e) => return super::internal(&ctx, Nav::Overview, &e),
        },
        None => None,
    };
    let members = match tags.universe() {
        Ok(u) => u.len(),
        Err(e) => return super::internal(&ctx, Nav::Overview, &e.into()),
    };
    let body = html! {
        (figures(&snaps, members))
        (key_tags(&snaps, diff.as_deref().map(Vec::as_slice)))
        (families(&snaps))
    };
    page(&ctx, "Overview", Nav::Overview, body).into_response()
}

fn figures(snaps: &Snapshots, members: u64) -> Markup {
    let c = &snaps.current;
    let member_tags: u64 = c.tags.iter().map(|t| t.members.max(0) as u64).sum();
    let per_member = if c.base_members > 0 { member_tags as f64 / c.base_members as f64 } else { 0.0 };
    let now = chrono::Utc::now();
    html! {
        section.cards aria-label="The member base" {
            div.card { div { "Members" } div.figure #members { (count(members)) } }
            div.card {
                div { "Last snapshot" }
                div.figure #snapshot { "#" (c.snapshot) }
                div.muted { "as of " (c.as_of) " · made " (age(c.created_at, now)) " ago" }
            }
            div.card { div { "Member-tags" } div.figure #member-tags { (count(member_tags)) } }
            div.card { div { "Tags per member" } div.figure #tags-per-member { (format!("{per_member:.1}")) } }
            div.card { div { "Tags" } div.figure { (count(c.tags.len() as u64)) } }
            div.card { div { "Snapshots stored" } div.figure { (snaps.history.len()) } }
        }
    }
}

/// The lifecycle and tier tags: count, share, trend, movement.
fn key_tags(snaps: &Snapshots, diff: Option<&[TagDiff]>) -> Markup {
    let c = &snaps.current;
    let keys: Vec<_> = c.tags.iter().filter(|t| KEY_FAMILIES.contains(&t.family.as_str())).collect();
    let moved = |name: &str| diff.and_then(|d| d.iter().find(|r| r.name == name));
    let since = match snaps.previous() {
        Some(p) => format!("since snapshot {}", p.snapshot),
        None => "no earlier snapshot".into(),
    };
    html! {
        h2 { "Lifecycle and tier" }
        @if keys.is_empty() {
            p.muted { "This snapshot has no lifecycle or tier tags." }
        } @else {
            table #key-tags {
                caption.visually-hidden { "Lifecycle and tier tags: members now, trend over the stored snapshots, and movement " (since) }
                thead { tr {
                    th scope="col" { "tag" } th.num scope="col" { "members" } th.num scope="col" { "share" }
                    th scope="col" { "over the snapshots" }
                    th.num scope="col" { "entered" } th.num scope="col" { "left" } th.num scope="col" { "net" }
                } }
                tbody {
                    @for t in &keys {
                        @let points: Vec<(i64, u64)> = snaps.history.iter().filter_map(|s| {
                            s.tags.iter().find(|x| x.name == t.name).map(|x| (s.snapshot, x.members.max(0) as u64))
                        }).collect();
                        tr data-tag=(t.name) {
                            th scope="row" { a href=(format!("/tags/{}", enc(&t.name))) { (t.name) } }
                            td.num.members { (count(t.members.max(0) as u64)) }
                            td.num { (format!("{:.2}%", 100.0 * t.share)) }
                            td { (charts::trend(&format!("{} over snapshots", t.name), &points)) }
                            @match moved(&t.name) {
                                Some(d) => {
                                    td.num.entered { (count(d.entered)) }
                                    td.num.exited { (count(d.exited)) }
                                    td.num.net { (signed(d.net)) }
                                }
                                None => { td.num { "–" } td.num { "–" } td.num { "–" } }
                            }
                        }
                    }
                }
            }
            p.muted { "Entered and left: " (since) ", as " code { "taglake tags diff" } " counts them." }
        }
        @if let Some(d) = diff {
            @let (entered, exited) = d.iter().fold((0u64, 0u64), |(e, x), r| (e + r.entered, x + r.exited));
            p #all-movement { "Across all tags " (since) ": " (count(entered)) " member-tags entered, " (count(exited)) " left." }
        }
    }
}

/// The families with their tag counts and member-tags.
fn families(snaps: &Snapshots) -> Markup {
    let mut by: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for t in &snaps.current.tags {
        let e = by.entry(t.family.as_str()).or_default();
        e.0 += 1;
        e.1 += t.members.max(0) as u64;
    }
    let total: u64 = by.values().map(|v| v.1).sum();
    html! {
        h2 { "Families" }
        table #families {
            thead { tr { th scope="col" { "family" } th.num scope="col" { "tags" } th.num scope="col" { "member-tags" } th.num scope="col" { "of all member-tags" } } }
            tbody {
                @for (family, (tags, member_tags)) in &by {
                    tr {
                        th scope="row" { a href=(format!("/tags?family={}", enc(family))) { (family) } }
                        td.num { (count(*tags)) }
                        td.num { (count(*member_tags)) }
                        td.num { (percent(*member_tags, total)) }
                    }
                }
            }
        }
    }
}
