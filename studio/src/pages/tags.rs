//! The tag catalog: search by name and description, browse by family, and
//! a page per tag with its rule, count and share, its history over the
//! stored snapshots, who entered and left it since the snapshot before
//! (downloadable as the CSV `taglake tags diff --tag T --who entered|exited`
//! writes, through the same `snapshot::movers` and `write_movers_csv`),
//! and its overlap with the other tags of its family.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use maud::{Markup, html};
use taglake_query::TagSet;
use taglake_query::audience::{self, Node};
use taglake_tagger::snapshot::{self, Movement, TagInfo};

use crate::app::App;
use crate::charts;
use crate::data::Snapshots;
use crate::html::{Ctx, Nav, count, enc, not_tagged, page, percent, signed};

/// Most characters of a search.
pub const MAX_SEARCH: usize = 200;
/// Most tags a search lists.
const MAX_LISTED: usize = 500;
/// Most tags of the family a tag page compares it with.
const MAX_OVERLAP: usize = 50;

/// `/tags`, `/tags/{name}`, `/tags/{name}/{entered|exited}.csv`.
pub fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/tags", get(catalog))
        .route("/tags/{name}", get(tag_page))
        .route("/tags/{name}/{file}", get(movers_csv))
}

#[derive(serde::Deserialize, Default)]
struct Search {
    #[serde(default)]
    q: String,
    #[serde(default)]
    family: String,
}

/// Whether a tag matches a search: every word in its name or description.
fn matches(t: &TagInfo, q: &str) -> bool {
    let (name, desc) = (t.name.to_lowercase(), t.description.to_lowercase());
    q.split_whitespace().all(|w| {
        let w = w.to_lowercase();
        name.contains(&w) || desc.contains(&w)
    })
}

async fn catalog(State(app): State<Arc<App>>, Extension(ctx): Extension<Ctx>, Query(s): Query<Search>) -> Response {
    let Some((_, v)) = app.data.tags() else {
        return page(&ctx, "Tag catalog", Nav::Tags, not_tagged()).into_response();
    };
    let snaps = match app.data.snapshots(v).await {
        Ok(s) => s,
        Err(e) => return super::internal(&ctx, Nav::Tags, &e),
    };
    let q: String = s.q.chars().take(MAX_SEARCH).collect();
    let too_long = s.q.chars().count() > MAX_SEARCH;
    let mut families: BTreeMap<&str, usize> = BTreeMap::new();
    for t in &snaps.current.tags {
        *families.entry(t.family.as_str()).or_default() += 1;
    }
    let searching = !q.trim().is_empty() || !s.family.is_empty();
    let found: Vec<&TagInfo> = snaps
        .current
        .tags
        .iter()
        .filter(|t| s.family.is_empty() || t.family == s.family)
        .filter(|t| matches(t, &q))
        .collect();
    let body = html! {
        form.row method="get" action="/tags" role="search" {
            div { label for="q" { "Search names and descriptions" } input #q type="search" name="q" value=(q) maxlength=(MAX_SEARCH); }
            div {
                label for="family" { "Family" }
                select #family name="family" {
                    option value="" selected[s.family.is_empty()] { "all families" }
                    @for f in families.keys() { option value=(f) selected[s.family == *f] { (f) } }
                }
            }
            button type="submit" { "Search" }
        }
        @if too_long { p.error role="alert" { "The search was cut to " (MAX_SEARCH) " characters." } }
        @if searching {
            p #result-count {
                (found.len()) " tag" @if found.len() != 1 { "s" }
                @if !q.trim().is_empty() { " matching “" (q) "”" }
                @if !s.family.is_empty() { " in family " (s.family) }
                " · snapshot " (v)
                @if found.len() > MAX_LISTED { " (the first " (MAX_LISTED) " listed; narrow the search)" }
            }
            (tag_table(&found[..found.len().min(MAX_LISTED)]))
        } @else {
            h2 { "Families" }
            ul.families { @for (f, n) in &families { li { a href=(format!("/tags?family={}", enc(f))) { (f) } " (" (n) ")" } } }
        }
    };
    page(&ctx, "Tag catalog", Nav::Tags, body).into_response()
}

fn tag_table(tags: &[&TagInfo]) -> Markup {
    html! {
        table #tags {
            thead { tr { th scope="col" { "tag" } th scope="col" { "family" } th.num scope="col" { "members" } th.num scope="col" { "share" } th scope="col" { "description" } } }
            tbody {
                @for t in tags {
                    tr {
                        td { a href=(format!("/tags/{}", enc(&t.name))) { (t.name) } }
                        td { (t.family) }
                        td.num { (count(t.members.max(0) as u64)) }
                        td.num { (format!("{:.2}%", 100.0 * t.share)) }
                        td { (t.description) }
                    }
                }
            }
        }
    }
}

async fn tag_page(State(app): State<Arc<App>>, Extension(ctx): Extension<Ctx>, Path(name): Path<String>) -> Response {
    let Some((tags, v)) = app.data.tags() else {
        return page(&ctx, "Tag", Nav::Tags, not_tagged()).into_response();
    };
    let snaps = match app.data.snapshots(v).await {
        Ok(s) => s,
        Err(e) => return super::internal(&ctx, Nav::Tags, &e),
    };
    let Some(t) = snaps.current.tags.iter().find(|t| t.name == name) else {
        let hint = taglake_base::suggest(&name, snaps.current.tags.iter().map(|t| t.name.as_str()))
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_default();
        return super::failure(
            &ctx,
            StatusCode::NOT_FOUND,
            Nav::Tags,
            &format!("no tag `{name}` in snapshot {v}{hint}"),
        );
    };
    let movement = match snaps.previous() {
        Some(p) => match app.data.diff(p.snapshot, v).await {
            Ok(d) => d.iter().find(|r| r.name == t.name).cloned().map(|r| (p.snapshot, r)),
            Err(e) => return super::internal(&ctx, Nav::Tags, &e),
        },
        None => None,
    };
    let overlap = match family_overlap(&tags, &t.name) {
        Ok(o) => o,
        Err(e) => return super::internal(&ctx, Nav::Tags, &e.into()),
    };
    let body = html! {
        dl #about {
            dt { "Family" } dd { a href=(format!("/tags?family={}", enc(&t.family))) { (t.family) } }
            dt { "Description" } dd #description { (t.description) }
            dt { "Rule" } dd { code #rule { (t.rule) } }
            dt { "Members" } dd #count { (count(t.members.max(0) as u64)) " (" (format!("{:.2}%", 100.0 * t.share)) " of " (count(snaps.current.base_members.max(0) as u64)) ")" }
            dt { "Snapshot" } dd { (v) " as of " (snaps.current.as_of) }
        }
        p { a href=(format!("/builder?expr={}", enc(&t.name))) { "Build an audience from this tag" } }
        (history(&snaps, &t.name))
        (movement_section(&t.name, v, movement.as_ref()))
        (overlap_section(&t.name, &t.family, &overlap))
    };
    page(&ctx, &t.name, Nav::Tags, body).into_response()
}

fn history(snaps: &Snapshots, name: &str) -> Markup {
    let rows: Vec<(i64, chrono::NaiveDate, u64)> = snaps
        .history
        .iter()
        .filter_map(|s| s.tags.iter().find(|t| t.name == name).map(|t| (s.snapshot, s.as_of, t.members.max(0) as u64)))
        .collect();
    let points: Vec<(i64, u64)> = rows.iter().map(|r| (r.0, r.2)).collect();
    html! {
        h2 { "History" }
        (charts::trend(&format!("members of {name} over the stored snapshots"), &points))
        table #history {
            thead { tr { th scope="col" { "snapshot" } th scope="col" { "as of" } th.num scope="col" { "members" } } }
            tbody { @for (s, as_of, n) in &rows { tr { td { (s) } td { (as_of) } td.num { (count(*n)) } } } }
        }
    }
}

fn movement_section(name: &str, v: i64, movement: Option<&(i64, snapshot::TagDiff)>) -> Markup {
    html! {
        h2 { "Entered and left" }
        @match movement {
            None => p.muted { "No earlier snapshot to compare with (or the tag is new in this one)." },
            Some((from, d)) => {
                p #movement { "Since snapshot " (from) ": " span #entered { (count(d.entered)) } " entered, "
                    span #exited { (count(d.exited)) } " left (net " (signed(d.net)) ")." }
                p {
                    a #entered-csv href=(format!("/tags/{}/entered.csv?from={from}&to={v}", enc(name))) download { "Download who entered (CSV)" }
                    " · "
                    a #exited-csv href=(format!("/tags/{}/exited.csv?from={from}&to={v}", enc(name))) download { "Download who left (CSV)" }
                }
                p.muted { "The same lists as " code { "taglake tags diff --from " (from) " --to " (v) " --tag " (name) " --who entered|exited" } "." }
            }
        }
    }
}

/// Per other tag of `name`'s family: members in both, most first.
fn family_overlap(tags: &TagSet, name: &str) -> taglake_query::Result<Vec<(String, u64, u64)>> {
    let Some(i) = tags.position(name) else { return Ok(Vec::new()) };
    let family = &tags.tag(i).family;
    let mut out = Vec::new();
    for j in tags.family(family).into_iter().filter(|&j| j != i) {
        let both = audience::count(&Node::And(vec![Node::Tag(i), Node::Tag(j)]), tags)?;
        let theirs = audience::count(&Node::Tag(j), tags)?;
        out.push((tags.tag(j).name.clone(), both, theirs));
    }
    out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok(out)
}

fn overlap_section(name: &str, family: &str, overlap: &[(String, u64, u64)]) -> Markup {
    let own = |both: u64, theirs: u64| percent(both, theirs);
    html! {
        h2 { "Overlap with the family " (family) }
        @if overlap.is_empty() {
            p.muted { "The family has no other tag." }
        } @else if overlap.iter().all(|o| o.1 == 0) {
            p.muted { "No member of " (name) " holds another tag of this family (an exclusive family)." }
        } @else {
            table #overlap {
                thead { tr { th scope="col" { "tag" } th.num scope="col" { "members in both" } th.num scope="col" { "their members" } th.num scope="col" { "of theirs" } } }
                tbody {
                    @for (other, both, theirs) in overlap.iter().take(MAX_OVERLAP) {
                        tr { td { a href=(format!("/tags/{}", enc(other))) { (other) } } td.num { (count(*both)) } td.num { (count(*theirs)) } td.num { (own(*both, *theirs)) } }
                    }
                }
            }
            @if overlap.len() > MAX_OVERLAP { p.muted { "The " (MAX_OVERLAP) " tags with most members in common of " (overlap.len()) "." } }
        }
    }
}

#[derive(serde::Deserialize)]
struct Pair {
    from: i64,
    to: i64,
}

async fn movers_csv(
    State(app): State<Arc<App>>,
    Extension(ctx): Extension<Ctx>,
    Path((name, file)): Path<(String, String)>,
    Query(pair): Query<Pair>,
) -> Response {
    let movement = match file.as_str() {
        "entered.csv" => Movement::Entered,
        "exited.csv" => Movement::Exited,
        _ => return super::failure(&ctx, StatusCode::NOT_FOUND, Nav::Tags, "no such file (entered.csv or exited.csv)"),
    };
    let ids = match snapshot::movers(app.data.warehouse(), pair.from, pair.to, &name, movement).await {
        Ok(ids) => ids,
        Err(taglake_tagger::Error::NotFound(m)) => return super::failure(&ctx, StatusCode::NOT_FOUND, Nav::Tags, &m),
        Err(e) => return super::internal(&ctx, Nav::Tags, &e.into()),
    };
    let mut csv = Vec::new();
    snapshot::write_movers_csv(&mut csv, &ids).expect("writing to memory");
    let mut r = csv.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
    let stem: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    let which = if movement == Movement::Entered { "entered" } else { "exited" };
    let disposition = format!("attachment; filename=\"{stem}-{which}-{}-{}.csv\"", pair.from, pair.to);
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    r
}
