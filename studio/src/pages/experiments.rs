//! Export and experiments: the dialog of `taglake export` for an audience,
//! the list of recorded experiments, and each experiment's report (the
//! tables of `taglake experiment report` and its chart).
//!
//! An export from the studio is `taglake export`: the same options, built
//! and checked by `taglake_query::export::ExportOptions::builder`, run by
//! `taglake_query::export::export`, so the file is byte for byte the one
//! the CLI writes with the same options, and the experiment is recorded
//! in the warehouse's `experiments` table. The file goes into the studio's
//! `--export-dir` and nowhere else: the form takes a plain file name, and
//! an existing file is never replaced. Exporting takes the warehouse
//! writer lock without waiting (a night's ingest holding it is named in
//! the answer), as a second writer would.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use maud::{Markup, PreEscaped, html};
use taglake_query::experiment::{self, Metric, Report, ReportOptions};
use taglake_query::export::{self, ExportOptions, Split};
use taglake_query::stats::Uplift;
use taglake_storage::Wait;

use crate::app::{App, form_pairs};
use crate::html::{Ctx, Nav, count, csrf_field, not_tagged, page};

/// Longest file name an export may be given.
const MAX_FILE_NAME: usize = 200;

/// `/export`, `/experiments`, `/experiments/{id}`.
pub fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/export", get(dialog).post(run))
        .route("/experiments", get(list))
        .route("/experiments/{id}", get(report))
}

/// The export dialog's fields, as typed.
#[derive(Debug, Clone)]
struct ExportForm {
    audience: String,
    split: String,
    salt: String,
    name: String,
    stratify_by: String,
    columns: String,
    holdout: String,
    holdout_salt: String,
    include_holdout: bool,
    launch_at: String,
    duration: String,
    open_ended: bool,
    file: String,
}

impl ExportForm {
    fn new(audience: String) -> ExportForm {
        ExportForm {
            audience,
            split: "treatment=90,control=10".into(),
            salt: String::new(),
            name: String::new(),
            stratify_by: String::new(),
            columns: String::new(),
            holdout: format!("{}", export::HOLDOUT_SHARE * 100.0),
            holdout_salt: export::HOLDOUT_SALT.into(),
            include_holdout: false,
            launch_at: String::new(),
            duration: "28d".into(),
            open_ended: false,
            file: String::new(),
        }
    }

    fn read(body: &[u8]) -> ExportForm {
        let mut f = ExportForm::new(String::new());
        for (k, v) in form_pairs(body) {
            match k.as_str() {
                "audience" => f.audience = v,
                "split" => f.split = v,
                "salt" => f.salt = v,
                "name" => f.name = v,
                "stratify_by" => f.stratify_by = v,
                "columns" => f.columns = v,
                "holdout" => f.holdout = v,
                "holdout_salt" => f.holdout_salt = v,
                "include_holdout" => f.include_holdout = !v.is_empty(),
                "launch_at" => f.launch_at = v,
                "duration" => f.duration = v,
                "open_ended" => f.open_ended = !v.is_empty(),
                "file" => f.file = v,
                _ => {}
            }
        }
        f
    }
}

/// Which field an error belongs next to, and its text.
type FieldError = (&'static str, String);

/// A file name inside the export directory: no folders, no hidden file,
/// `.csv` or `.parquet`, not there yet.
fn export_path(dir: &std::path::Path, file: &str) -> Result<PathBuf, String> {
    let file = file.trim();
    let plain = !file.is_empty()
        && file.chars().count() <= MAX_FILE_NAME
        && !file.starts_with('.')
        && file.chars().all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !plain {
        return Err(format!(
            "`{file}` is not a file name: use letters, digits, `_`, `-` and `.` (at most {MAX_FILE_NAME}), e.g. \
             spring_push.csv; the file goes into the export directory"
        ));
    }
    if !(file.ends_with(".csv") || file.ends_with(".parquet")) {
        return Err(format!("`{file}`: the file name must end in .csv or .parquet"));
    }
    let path = dir.join(file);
    if path.exists() {
        return Err(format!("`{file}` already exists in the export directory: choose another name"));
    }
    Ok(path)
}

/// The export's options from the form, or the first error with its field.
fn options(f: &ExportForm, dir: &std::path::Path) -> Result<ExportOptions, FieldError> {
    let audience = f.audience.trim();
    if audience.is_empty() {
        return Err(("audience", "give the audience to export".into()));
    }
    let split = Split::parse(f.split.trim()).map_err(|e| ("split", e.to_string()))?;
    let name = (!f.name.trim().is_empty()).then(|| f.name.trim().to_string());
    let salt = match (f.salt.trim(), &name) {
        (s, _) if !s.is_empty() => s.to_string(),
        (_, Some(n)) => n.clone(),
        _ => {
            return Err((
                "salt",
                "give a salt (or a name, which then doubles as the salt): the split depends on it".into(),
            ));
        }
    };
    let holdout: f64 =
        f.holdout.trim().parse().map_err(|_| ("holdout", format!("`{}` is not a percentage", f.holdout.trim())))?;
    let launched_at = match f.launch_at.trim() {
        "" => chrono::Utc::now(),
        t => experiment::parse_instant(t).map_err(|e| ("launch_at", e.to_string()))?,
    };
    let ends_at = if f.open_ended {
        None
    } else {
        let d = experiment::parse_window(f.duration.trim()).map_err(|e| ("duration", e.to_string()))?;
        Some(experiment::window_end(launched_at, d).map_err(|e| ("duration", e.to_string()))?)
    };
    let out = export_path(dir, &f.file).map_err(|e| ("file", e))?;
    let columns: Vec<String> =
        f.columns.split(',').map(str::trim).filter(|c| !c.is_empty()).map(str::to_string).collect();
    let stratify = (!f.stratify_by.trim().is_empty()).then(|| f.stratify_by.trim().to_string());
    ExportOptions::builder(audience, split, salt, out)
        .name(name)
        .stratify_by(stratify)
        .columns(columns)
        .holdout_share(holdout / 100.0)
        .holdout_salt(f.holdout_salt.trim().to_string())
        .include_holdout(f.include_holdout)
        .launched_at(launched_at)
        .ends_at(ends_at)
        .build()
        .map_err(|e| (field_of(&e), e.to_string()))
}

/// The field a library error names (`holdout_share` is the holdout field).
fn field_of(e: &taglake_query::Error) -> &'static str {
    match e {
        taglake_query::Error::Parameter(m) => match m.parameter() {
            Some("holdout_share") => "holdout",
            Some("holdout_salt") => "holdout_salt",
            Some("stratify_by") => "stratify_by",
            Some("columns") => "columns",
            Some("split") => "split",
            Some("salt") => "salt",
            Some("name") => "name",
            _ => "audience",
        },
        _ => "audience",
    }
}

#[derive(serde::Deserialize, Default)]
struct Start {
    #[serde(default)]
    expr: String,
}

async fn dialog(State(app): State<Arc<App>>, Extension(ctx): Extension<Ctx>, Query(s): Query<Start>) -> Response {
    show_dialog(&app, &ctx, &ExportForm::new(s.expr), None, StatusCode::OK)
}

fn show_dialog(app: &App, ctx: &Ctx, f: &ExportForm, error: Option<&FieldError>, status: StatusCode) -> Response {
    let title = "Export an audience";
    let Some((tags, _)) = app.data.tags() else {
        return page(ctx, title, Nav::Experiments, not_tagged()).into_response();
    };
    let Some(dir) = app.export_dir.as_deref() else {
        let body = html! { p #no-export-dir { "Exports are off: start the studio with " code { "--export-dir DIR" } " to write them into DIR." } };
        return page(ctx, title, Nav::Experiments, body).into_response();
    };
    let families: Vec<&str> = tags.families().iter().map(|f| f.name.as_str()).collect();
    let err = |field: &str| -> Markup {
        let id = format!("{field}-error");
        html! { div #(id) role="alert" { @if let Some((f, e)) = error && *f == field { pre.error { (e) } } } }
    };
    let text = |field: &'static str, label: &str, value: &str| -> Markup {
        html! {
            div {
                label for=(field) { (label) }
                input #(field) type="text" name=(field) value=(value) aria-describedby=(format!("{field}-error")) autocomplete="off";
                (err(field))
            }
        }
    };
    let check = |field: &'static str, label: &str, checked: bool| -> Markup {
        html! {
            div {
                input #(field) type="checkbox" name=(field) value="1" checked[checked];
                label for=(field) { (label) }
            }
        }
    };
    let body = html! {
        p { "Writes the audience's members into " code { (dir.display()) } ", split into arms, and records the experiment, exactly as "
            code { "taglake export" } " does with the same options." }
        form #export method="post" action="/export" {
            (csrf_field(ctx))
            div {
                label for="audience" { "Audience expression" }
                textarea #audience name="audience" rows="2" spellcheck="false" aria-describedby="audience-error" { (f.audience) }
                (err("audience"))
            }
            div.row {
                (text("split", "Arms and weights", &f.split))
                (text("salt", "Salt (the same salt gives a member the same arm)", &f.salt))
                (text("name", "Experiment name (defaults to the salt)", &f.name))
            }
            div.row {
                div {
                    label for="stratify_by" { "Balance the arms inside each value of" }
                    select #stratify_by name="stratify_by" aria-describedby="stratify_by-error" {
                        option value="" selected[f.stratify_by.is_empty()] { "(no stratification)" }
                        @for fam in &families { option value=(fam) selected[f.stratify_by == *fam] { (fam) } }
                    }
                    (err("stratify_by"))
                }
                (text("columns", "Extra columns (comma-separated)", &f.columns))
            }
            div.row {
                (text("holdout", "Global holdout (% of all members)", &f.holdout))
                (text("holdout_salt", "Holdout salt", &f.holdout_salt))
                (check("include_holdout", "Export holdout members as arm holdout", f.include_holdout))
            }
            div.row {
                (text("launch_at", "Launch (YYYY-MM-DD or RFC 3339; empty: now)", &f.launch_at))
                (text("duration", "Duration", &f.duration))
                (check("open_ended", "Open-ended", f.open_ended))
            }
            div.row {
                (text("file", "File name (.csv or .parquet)", &f.file))
                div { button type="submit" { "Export and record the experiment" } }
            }
        }
    };
    (status, page(ctx, title, Nav::Experiments, body)).into_response()
}

async fn run(State(app): State<Arc<App>>, Extension(ctx): Extension<Ctx>, body: Bytes) -> Response {
    let f = ExportForm::read(&body);
    let Some(dir) = app.export_dir.clone() else { return show_dialog(&app, &ctx, &f, None, StatusCode::OK) };
    let options = match options(&f, &dir) {
        Ok(o) => o,
        Err(e) => return show_dialog(&app, &ctx, &f, Some(&e), StatusCode::UNPROCESSABLE_ENTITY),
    };
    let wh = app.data.warehouse().clone();
    let who = ctx.user.as_deref().map_or(String::new(), |u| format!(" for {u}"));
    let lock = match wh.lock_writer(&format!("taglake studio export{who}"), Wait::No) {
        Ok(l) => l,
        Err(e) => {
            let e = ("audience", format!("{e}; try again when it has finished"));
            return show_dialog(&app, &ctx, &f, Some(&e), StatusCode::CONFLICT);
        }
    };
    // The export's future is not `Send` (it holds the writer's state across
    // its steps), so it runs to the end on a blocking thread of its own.
    let runtime = tokio::runtime::Handle::current();
    let (done, options) = match tokio::task::spawn_blocking(move || {
        let done = runtime.block_on(export::export(&wh, &lock, &options));
        drop(lock);
        (done, options)
    })
    .await
    {
        Ok(r) => r,
        Err(e) => {
            let e = crate::Error::Query(taglake_query::Error::Invalid(format!("the export failed: {e}")));
            return super::internal(&ctx, Nav::Experiments, &e);
        }
    };
    match done {
        Ok(s) => {
            crate::log(format_args!(
                "export{who}: experiment {} into {} ({} rows)",
                s.experiment.id,
                options.out().display(),
                s.rows
            ));
            Redirect::to(&format!("/experiments/{}", s.experiment.id)).into_response()
        }
        Err(
            e @ (taglake_query::Error::Audience(_)
            | taglake_query::Error::Invalid(_)
            | taglake_query::Error::Parameter(_)),
        ) => {
            let e = (field_of(&e), e.to_string());
            show_dialog(&app, &ctx, &f, Some(&e), StatusCode::UNPROCESSABLE_ENTITY)
        }
        Err(e) => super::internal(&ctx, Nav::Experiments, &e.into()),
    }
}

async fn list(State(app): State<Arc<App>>, Extension(ctx): Extension<Ctx>) -> Response {
    let all = match experiment::list(app.data.warehouse()).await {
        Ok(a) => a,
        Err(e) => return super::internal(&ctx, Nav::Experiments, &e.into()),
    };
    let now = chrono::Utc::now();
    let body = html! {
        p { "Every export is an experiment: its arms' members are kept, and its report compares what they bought after launch. "
            a href="/export" { "Export an audience" } "." }
        @if all.is_empty() {
            p.muted #no-experiments { "No experiment is recorded yet." }
        } @else {
            table #experiments {
                thead { tr { th.num scope="col" { "id" } th scope="col" { "name" } th scope="col" { "audience" } th scope="col" { "arms" }
                    th scope="col" { "launched" } th scope="col" { "ends" } th scope="col" { "running" } } }
                tbody {
                    @for e in all.iter().rev() {
                        tr {
                            td.num { (e.id) }
                            td { a href=(format!("/experiments/{}", e.id)) { (e.name) } }
                            td { code { (e.audience) } }
                            td { @for (i, a) in e.arms.iter().enumerate() { @if i > 0 { ", " } (a.name) " " (count(a.members)) } }
                            td { (e.launched_at.format("%Y-%m-%d %H:%M UTC")) }
                            td { (e.ends_at.map_or("open-ended".to_string(), |t| t.format("%Y-%m-%d %H:%M UTC").to_string())) }
                            td { (if e.running(now) { "yes" } else { "no" }) }
                        }
                    }
                }
            }
        }
    };
    page(&ctx, "Experiments", Nav::Experiments, body).into_response()
}

#[derive(serde::Deserialize)]
struct ReportQuery {
    window: Option<String>,
    control: Option<String>,
}

async fn report(
    State(app): State<Arc<App>>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
    Query(q): Query<ReportQuery>,
) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return super::failure(
            &ctx,
            StatusCode::NOT_FOUND,
            Nav::Experiments,
            &format!("`{id}` is not an experiment id"),
        );
    };
    let window_text = q.window.unwrap_or_else(|| "14d".into());
    let control = q.control.unwrap_or_else(|| "control".into());
    let options = match experiment::parse_window(&window_text)
        .and_then(|w| ReportOptions::new(w, &control).cuped(Some(chrono::Duration::days(30))))
    {
        Ok(o) => o,
        Err(e) => return super::failure(&ctx, StatusCode::BAD_REQUEST, Nav::Experiments, &e.to_string()),
    };
    let r = match experiment::report(app.data.warehouse(), id, &options).await {
        Ok(r) => r,
        Err(taglake_query::Error::Invalid(m)) => {
            return super::failure(&ctx, StatusCode::NOT_FOUND, Nav::Experiments, &m);
        }
        Err(e) => return super::internal(&ctx, Nav::Experiments, &e.into()),
    };
    let title = format!("Experiment {} · {}", r.experiment.id, r.experiment.name);
    page(&ctx, &title, Nav::Experiments, report_html(&r, &window_text)).into_response()
}

fn report_html(r: &Report, window: &str) -> Markup {
    let e = &r.experiment;
    let pct = |v: f64| format!("{:.2}%", v * 100.0);
    let money = |v: f64| format!("{v:.2}");
    html! {
        dl #about {
            dt { "Audience" } dd { code { (e.audience) } }
            dt { "Snapshot" } dd { (e.snapshot) }
            dt { "Salt" } dd { code { (e.salt) } }
            @if let Some(s) = &e.stratify_by { dt { "Stratified by" } dd { (s) } }
            dt { "Window" } dd { (window) " from " (r.window_start.format("%Y-%m-%d %H:%M UTC")) " to " (r.window_end.format("%Y-%m-%d %H:%M UTC"))
                @if r.newest_order.is_some_and(|n| n < r.window_end) { " " strong { "(not complete: the newest order is earlier)" } } }
            @if let Some(out) = &e.output { dt { "File" } dd { code { (out) } } }
        }
        form.row method="get" action=(format!("/experiments/{}", e.id)) {
            div { label for="window" { "Report window" } input #window type="text" name="window" value=(window); }
            div { button.secondary type="submit" { "Report" } }
        }
        @if let Some(srm) = &r.srm {
            @if srm.mismatch {
                p.error #srm role="alert" { "Sample ratio mismatch (p = " (format!("{:.2e}", srm.p_value)) "): the arms' sizes do not match the configured split, so no comparison below can be trusted." }
            } @else {
                p #srm { "Sample ratio check: p = " (format!("{:.4}", srm.p_value)) " (the arms' sizes match the split)." }
            }
        }
        h2 { "Arms" }
        table #arms {
            thead { tr { th scope="col" { "arm" } th.num scope="col" { "members" } th.num scope="col" { "buyers" } th.num scope="col" { "conversion" }
                th.num scope="col" { "orders / member" } th.num scope="col" { "revenue / member" } th.num scope="col" { "average order" } } }
            tbody {
                @for a in &r.arms {
                    tr {
                        td { (a.arm) } td.num { (count(a.members)) } td.num { (count(a.buyers)) } td.num { (pct(a.conversion)) }
                        td.num { (format!("{:.4}", a.orders_per_member)) } td.num { (money(a.revenue_per_member)) }
                        td.num { (a.average_order_value.map_or("-".to_string(), money)) }
                    }
                }
            }
        }
        h2 { "Effects against " @if let Some(c) = r.comparisons.first() { (c.control) } }
        table #effects {
            thead { tr { th scope="col" { "arm" } th scope="col" { "metric" } th.num scope="col" { "difference" } th.num scope="col" { "relative" }
                th.num scope="col" { "95% CI" } th.num scope="col" { "p" } th.num scope="col" { "p adjusted" } th scope="col" { "estimate" } } }
            tbody {
                @for c in &r.comparisons {
                    @for m in [Metric::Conversion, Metric::Orders, Metric::Revenue, Metric::AverageOrderValue] {
                        @let (plain, cuped) = metric_pair(c, m);
                        @if let Some(u) = plain { (effect_row(&c.arm, m, u, "unadjusted")) }
                        @if let Some(u) = cuped { (effect_row(&c.arm, m, u, "CUPED")) }
                    }
                }
            }
        }
        p.muted { "p-values adjusted by " (correction_name(r.correction)) " over " (r.tests) " comparisons."
            @if let Some(p) = &r.cuped { " CUPED adjusts by each metric over the " (p.days) " days before launch." } }
        h2 { "Chart" }
        figure.chart role="img" aria-label="Each metric's effect per arm with its 95% confidence interval, and each arm's cumulative conversion by day" {
            (PreEscaped(experiment::chart::render_svg(r)))
        }
    }
}

fn correction_name(c: taglake_query::stats::Correction) -> &'static str {
    use taglake_query::stats::Correction;
    match c {
        Correction::Holm => "Holm's method",
        Correction::BenjaminiHochberg => "Benjamini–Hochberg",
        Correction::None => "nothing",
    }
}

fn metric_pair(c: &experiment::Comparison, m: Metric) -> (Option<&Uplift>, Option<&Uplift>) {
    match m {
        Metric::Conversion => (Some(&c.conversion), c.conversion_cuped.as_ref().map(|x| &x.uplift)),
        Metric::Orders => (Some(&c.orders_per_member), c.orders_per_member_cuped.as_ref().map(|x| &x.uplift)),
        Metric::Revenue => (Some(&c.revenue_per_member), c.revenue_per_member_cuped.as_ref().map(|x| &x.uplift)),
        Metric::AverageOrderValue => {
            (c.average_order_value.as_ref(), c.average_order_value_cuped.as_ref().map(|x| &x.uplift))
        }
    }
}

fn effect_row(arm: &str, m: Metric, u: &Uplift, estimate: &str) -> Markup {
    let p = taglake_query::experiment::p_text;
    html! {
        tr {
            td { (arm) } td { (Metric::label(m)) }
            td.num { (format!("{:+.4}", u.diff)) }
            td.num { (u.relative.map_or("-".to_string(), |r| format!("{:+.2}%", r * 100.0))) }
            td.num { (format!("[{:+.4}, {:+.4}]", u.ci_low, u.ci_high)) }
            td.num { (p(u.p_value)) }
            td.num { (u.p_adjusted.map_or("-".to_string(), p)) }
            td { (estimate) }
        }
    }
}
