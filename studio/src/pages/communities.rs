//! Communities: the profile `taglake cluster profile` prints, as a page.
//! Each community's size, share and generated name, the heat map of every
//! feature's z-score per community (the chart `cluster profile` writes),
//! the same figures as a table, and one click to build an audience from a
//! community (its `community_N` tag).
//!
//! The profile is the saved model's (`models/communities.json`), written
//! by the last `taglake cluster`; it is read on every request, so a new
//! fit shows without a restart.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use maud::{PreEscaped, html};
use taglake_cluster::model::SavedModel;

use crate::app::App;
use crate::html::{Ctx, Nav, count, enc, page};

/// `/communities`.
pub fn router() -> Router<Arc<App>> {
    Router::new().route("/communities", get(show))
}

async fn show(State(app): State<Arc<App>>, Extension(ctx): Extension<Ctx>) -> Response {
    let title = "Communities";
    let wh = app.data.warehouse().clone();
    let model = match tokio::task::spawn_blocking(move || SavedModel::load(&wh)).await {
        Ok(Ok(m)) => m,
        Ok(Err(taglake_cluster::Error::NotFound(m))) => {
            return page(&ctx, title, Nav::Communities, html! { p #no-model { (m) } }).into_response();
        }
        Ok(Err(e)) => return super::internal(&ctx, Nav::Communities, &crate::Error::Cluster(e)),
        Err(e) => {
            let e = crate::Error::Cluster(taglake_cluster::Error::Data(format!("reading the model failed: {e}")));
            return super::internal(&ctx, Nav::Communities, &e);
        }
    };
    let p = &model.profile;
    let tags = app.data.tags();
    let known = |c: u32| tags.as_ref().is_some_and(|(t, _)| t.position(&format!("community_{c}")).is_some());
    let body = html! {
        p { (p.communities.len()) " communities of " (count(p.members_clustered)) " members with orders ("
            (count(p.members_without_orders)) " without orders are in none), fitted by " code { "taglake cluster" }
            " on " (p.features.len()) " features. Each is the tag " code { "community_N" } "." }
        table #communities {
            thead { tr {
                th scope="col" { "community" } th scope="col" { "name" } th.num scope="col" { "members" }
                th.num scope="col" { "share" } th.num scope="col" { "mean distance" } th scope="col" { "audience" }
            } }
            tbody {
                @for c in &p.communities {
                    tr {
                        td { "community_" (c.community) }
                        td { (c.name) }
                        td.num { (count(c.members)) }
                        td.num { (format!("{:.1}%", 100.0 * c.share)) }
                        td.num { (format!("{:.2}", c.mean_distance)) }
                        td { @if known(c.community) {
                            a href=(format!("/builder?expr={}", enc(&format!("community_{}", c.community))))
                                aria-label=(format!("Build an audience from community_{}", c.community)) { "Build an audience" }
                        } @else { span.muted { "not in the served snapshot" } } }
                    }
                }
            }
        }
        h2 { "Size and feature lift" }
        figure.chart role="img" aria-label="Each community's share, and a heat map of each feature's z-score (red above the base, blue below)" {
            (PreEscaped(p.render_svg()))
        }
        h2 { "z-scores" }
        p.muted { "How many standard deviations each community's centroid sits from the base on each feature." }
        div.scroll {
            table #zscores {
                thead { tr { th scope="col" { "feature" } @for c in &p.communities { th.num scope="col" { "community_" (c.community) } } } }
                tbody {
                    @for (f, name) in p.features.iter().enumerate() {
                        tr { th scope="row" { (name) } @for c in &p.communities { td.num { (format!("{:+.2}", c.z.get(f).copied().unwrap_or(0.0))) } } }
                    }
                }
            }
        }
    };
    page(&ctx, title, Nav::Communities, body).into_response()
}
