//! Saved audiences: the list with each audience's count now and at the
//! stored snapshots before, a page per audience with its definition
//! history, and removal. Audiences are saved from the builder (its "Save
//! as" form posts to `/builder`); every save and removal is a row of the
//! warehouse's `audiences` table (`taglake_query::saved`), the only table
//! the studio writes besides the experiments it exports.
//!
//! A saved audience is its expression, not its members, so its count at
//! an earlier snapshot is its current definition evaluated on that
//! snapshot's tags: the trend shows how the audience it names moved.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use taglake_query::TagSet;
use taglake_query::audience;
use taglake_query::saved::{self, SavedAudience};

use crate::app::App;
use crate::charts;
use crate::html::{Ctx, Nav, count, csrf_field, enc, not_tagged, page, percent};

/// Snapshots the list's trend of each audience covers (the newest ones).
const LIST_SNAPSHOTS: usize = 12;
/// Snapshots an audience's own page covers.
const PAGE_SNAPSHOTS: usize = 60;

/// `/audiences`, `/audiences/{name}`, `/audiences/{name}/remove`.
pub fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/audiences", get(list))
        .route("/audiences/{name}", get(one))
        .route("/audiences/{name}/remove", post(remove))
}

/// One audience's expression in tag names only (its references to other
/// saved audiences expanded), as every snapshot's count is made from; the
/// error when it no longer parses.
fn expanded(a: &SavedAudience, tags: &TagSet) -> Result<String, String> {
    let node = audience::parse(&format!("audience:{}", a.name), tags).map_err(|e| e.to_string())?;
    Ok(audience::display(&node, tags))
}

/// Per audience, its counts at the newest `n` snapshots up to `v`
/// (snapshot, members; snapshots where it names a missing tag left out).
async fn trends(
    app: &App,
    v: i64,
    n: usize,
    texts: &[Option<String>],
) -> crate::Result<(Vec<i64>, Vec<Vec<(i64, u64)>>)> {
    let versions: Vec<i64> =
        taglake_tagger::snapshot::versions(app.data.warehouse()).await?.into_iter().filter(|&s| s <= v).collect();
    let versions = versions[versions.len().saturating_sub(n)..].to_vec();
    let wanted: Vec<String> = texts.iter().flatten().cloned().collect();
    let mut points = vec![Vec::new(); texts.len()];
    for &s in &versions {
        let counts = app.data.counts_at(s, &wanted).await?;
        let mut counts = counts.into_iter();
        for (i, t) in texts.iter().enumerate() {
            if t.is_some()
                && let Some(Some(c)) = counts.next()
            {
                points[i].push((s, c));
            }
        }
    }
    Ok((versions, points))
}

async fn list(State(app): State<Arc<App>>, Extension(ctx): Extension<Ctx>) -> Response {
    let title = "Saved audiences";
    let Some((tags, v)) = app.data.tags() else {
        return page(&ctx, title, Nav::Audiences, not_tagged()).into_response();
    };
    let all = match saved::list(app.data.warehouse()).await {
        Ok(a) => a,
        Err(e) => return super::internal(&ctx, Nav::Audiences, &e.into()),
    };
    let texts: Vec<Result<String, String>> = all.iter().map(|a| expanded(a, &tags)).collect();
    let ok: Vec<Option<String>> = texts.iter().map(|t| t.as_ref().ok().cloned()).collect();
    let (_, points) = match trends(&app, v, LIST_SNAPSHOTS, &ok).await {
        Ok(t) => t,
        Err(e) => return super::internal(&ctx, Nav::Audiences, &e),
    };
    let base = match tags.universe() {
        Ok(u) => u.len(),
        Err(e) => return super::internal(&ctx, Nav::Audiences, &e.into()),
    };
    let body = html! {
        p { "A saved audience is a name for an audience expression. Write " code { "audience:NAME" }
            " wherever an expression goes: in the builder, in " code { "taglake audience count" } ", in SQL "
            code { "audience('audience:NAME')" } " and in exports. It follows the tags: each snapshot counts its own members. "
            "Save one from the " a href="/builder" { "audience builder" } "." }
        @if all.is_empty() {
            p.muted #no-audiences { "No audience is saved yet." }
        } @else {
            table #audiences {
                thead { tr {
                    th scope="col" { "name" } th scope="col" { "expression" } th.num scope="col" { "members now" }
                    th.num scope="col" { "of all" } th scope="col" { "over the last snapshots" } th scope="col" { "saved" }
                } }
                tbody {
                    @for ((a, text), p) in all.iter().zip(&texts).zip(&points) {
                        tr {
                            td { a href=(format!("/audiences/{}", enc(&a.name))) { (a.name) }
                                @if let Some(d) = &a.description { br; span.muted { (d) } } }
                            td { code { (a.expression) } }
                            @match text {
                                Ok(_) => {
                                    @let now = p.last().filter(|(s, _)| *s == v).map_or(0, |x| x.1);
                                    td.num.count { (count(now)) }
                                    td.num { (percent(now, base)) }
                                    td { (charts::trend(&format!("members of audience:{} over the stored snapshots", a.name), p)) }
                                }
                                Err(e) => { td colspan="3" { pre.error { (e) } } }
                            }
                            td { (a.saved_at.format("%Y-%m-%d %H:%M UTC"))
                                @if let Some(by) = &a.saved_by { " by " (by) }
                                @if a.revisions > 1 { br; span.muted { "revision " (a.revisions) } } }
                        }
                    }
                }
            }
        }
        p.muted { "Snapshot " (v) " · " (count(base)) " members" }
    };
    page(&ctx, title, Nav::Audiences, body).into_response()
}

async fn one(State(app): State<Arc<App>>, Extension(ctx): Extension<Ctx>, Path(name): Path<String>) -> Response {
    let Some((tags, v)) = app.data.tags() else {
        return page(&ctx, "Saved audience", Nav::Audiences, not_tagged()).into_response();
    };
    let history = match saved::history(app.data.warehouse()).await {
        Ok(h) => h,
        Err(e) => return super::internal(&ctx, Nav::Audiences, &e.into()),
    };
    let revisions: Vec<_> = history.iter().filter(|r| r.name == name).cloned().collect();
    if revisions.is_empty() {
        let message = format!("No audience `{name}` was ever saved.");
        return super::failure(&ctx, StatusCode::NOT_FOUND, Nav::Audiences, &message);
    }
    let current = saved::standing(revisions.clone()).pop();
    let text = current.as_ref().map(|a| expanded(a, &tags));
    let ok = vec![text.as_ref().and_then(|t| t.as_ref().ok()).cloned()];
    let points = match trends(&app, v, PAGE_SNAPSHOTS, &ok).await {
        Ok((_, mut p)) => p.pop().unwrap_or_default(),
        Err(e) => return super::internal(&ctx, Nav::Audiences, &e),
    };
    let body = html! {
        @match &current {
            None => p #removed { "This audience was removed; its definitions are kept below." },
            Some(a) => {
                dl #about {
                    dt { "Written as" } dd { code { "audience:" (a.name) } }
                    dt { "Expression" } dd { code #expression { (a.expression) } }
                    @if let Some(d) = &a.description { dt { "Description" } dd #description { (d) } }
                    dt { "Members" } dd #count {
                        @match &text {
                            Some(Ok(_)) => { (count(points.last().filter(|(s, _)| *s == v).map_or(0, |x| x.1))) " in snapshot " (v) },
                            Some(Err(e)) => pre.error role="alert" { (e) },
                            None => {},
                        }
                    }
                }
                p { a href=(format!("/builder?expr={}", enc(&format!("audience:{}", a.name)))) { "Open in the builder" }
                    " · " a href=(format!("/builder?expr={}", enc(&a.expression))) { "Edit its expression in the builder" } }
                form method="post" action=(format!("/audiences/{}/remove", enc(&a.name))) {
                    (csrf_field(&ctx))
                    button.secondary type="submit" { "Remove this saved audience" }
                }
            }
        }
        h2 { "Members over the stored snapshots" }
        (trend_section(&name, &points))
        h2 { "Definitions" }
        table #revisions {
            thead { tr { th scope="col" { "saved" } th scope="col" { "by" } th scope="col" { "expression" } th scope="col" { "description" } } }
            tbody {
                @for r in revisions.iter().rev() {
                    tr {
                        td { (r.saved_at.format("%Y-%m-%d %H:%M:%S UTC")) }
                        td { (r.saved_by.as_deref().unwrap_or("")) }
                        td { @match &r.expression { Some(e) => code { (e) }, None => em { "removed" } } }
                        td { (r.description.as_deref().unwrap_or("")) }
                    }
                }
            }
        }
    };
    page(&ctx, &format!("audience:{name}"), Nav::Audiences, body).into_response()
}

fn trend_section(name: &str, points: &[(i64, u64)]) -> Markup {
    html! {
        @if points.is_empty() {
            p.muted { "No stored snapshot has every tag it names." }
        } @else {
            (charts::trend(&format!("members of audience:{name} over the stored snapshots"), points))
            table #history {
                thead { tr { th scope="col" { "snapshot" } th.num scope="col" { "members" } } }
                tbody { @for (s, n) in points.iter().rev() { tr { td { (s) } td.num { (count(*n)) } } } }
            }
        }
    }
}

async fn remove(State(app): State<Arc<App>>, Extension(ctx): Extension<Ctx>, Path(name): Path<String>) -> Response {
    let wh = app.data.warehouse();
    if let Err(e) = saved::remove(wh, &name, ctx.user.as_deref()).await {
        return match e {
            taglake_query::Error::Invalid(m) => super::failure(&ctx, StatusCode::NOT_FOUND, Nav::Audiences, &m),
            e => super::internal(&ctx, Nav::Audiences, &e.into()),
        };
    }
    if let Err(e) = refresh_saved(&app).await {
        return super::internal(&ctx, Nav::Audiences, &e);
    }
    Redirect::to("/audiences").into_response()
}

/// Puts the saved audiences as they now stand into the served tag set, so
/// the next request sees a save at once (the live refresh would within
/// its interval).
pub(crate) async fn refresh_saved(app: &App) -> crate::Result<()> {
    if let Some((tags, _)) = app.data.tags() {
        tags.set_saved(saved::current(app.data.warehouse()).await?);
    }
    Ok(())
}
