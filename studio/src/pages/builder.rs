//! The audience builder page: blocks of conditions with their own counts
//! and the running total after each (a funnel), the equivalent expression
//! (editable: the blocks follow it), a breakdown by an exclusive family
//! and a sample of members, all updated through htmx while the user edits.
//!
//! The page is one form that also works without JavaScript (a POST to
//! `/builder` renders the whole page). With htmx, an edit of a block posts
//! the form to `/builder/live?from=blocks` (debounced) and the answer
//! replaces the results, with the expression field and every block's
//! count swapped "out of band"; an edit of the expression posts to
//! `/builder/live?from=expr` and the answer replaces the blocks. Tag
//! autocomplete asks `/builder/suggest` for `<option>`s of a `<datalist>`.
//! The sample is the one part that reads member rows (a query over
//! `members`, ~0.3 s at 10 M members against ~2 ms for every count, the
//! funnel and the breakdown), so the page asks `/builder/sample` for it
//! once the counts are shown, and a count update never waits for it; a
//! page posted without a script draws it inline.
//!
//! Every figure is the CLI's: counts by `taglake_query::audience::count`,
//! the breakdown by `taglake_query::breakdown::breakdown` (rows as `taglake
//! audience breakdown` prints them), the sample by
//! `taglake_query::survey::Sample` (the members `taglake audience sample`
//! shows for the same size and seed), and errors are the parser's text.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Query, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use maud::{Markup, html};
use taglake_query::TagSet;
use taglake_query::attribute::{self, Cmp};
use taglake_query::audience::{self, Node};
use taglake_query::breakdown::Share;
use taglake_query::survey;

use crate::app::{App, form_pairs};
use crate::builder::{self, Block, Join, Kind, MAX_BLOCKS};
use crate::charts::{self, ShareRow};
use crate::html::{Ctx, Nav, count, csrf_field, not_tagged, page, percent};

/// Most members a sample on the page shows.
pub const MAX_SAMPLE: usize = 1_000;
/// Most saved audiences the overlap matrix compares the audience with.
pub const MAX_SAVED_OVERLAP: usize = 12;
/// Most suggestions the autocomplete offers.
const SUGGESTIONS: usize = 20;

/// `/builder`, `/builder/live`, `/builder/suggest`.
pub fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/builder", get(show).post(submit))
        .route("/builder/live", axum::routing::post(live))
        .route("/builder/suggest", get(suggest))
        .route("/builder/sample", get(sample_page))
}

/// What the form holds.
#[derive(Debug, Clone)]
struct Form {
    blocks: Vec<Block>,
    expr: String,
    by: String,
    n: usize,
    seed: u64,
    action: String,
    /// The "Save as" fields.
    save_name: String,
    save_description: String,
    /// Why the save was refused (shown next to the name).
    save_error: Option<String>,
}

impl Form {
    /// Reads the form's fields (anything malformed falls back to a default).
    fn read(pairs: impl Iterator<Item = (String, String)>) -> Form {
        let mut blocks: BTreeMap<usize, Block> = BTreeMap::new();
        let mut f = Form { blocks: Vec::new(), ..Form::empty() };
        for (k, v) in pairs {
            match k.as_str() {
                "expr" => f.expr = v,
                "by" => f.by = v,
                "n" => f.n = v.trim().parse().unwrap_or(20).min(MAX_SAMPLE),
                "seed" => f.seed = v.trim().parse().unwrap_or(1),
                "action" => f.action = v,
                "save_name" => f.save_name = v,
                "save_description" => f.save_description = v,
                _ => {
                    let Some((i, field)) = k.strip_prefix('b').and_then(|r| r.split_once('.')) else { continue };
                    let Some(i) = i.parse::<usize>().ok().filter(|&i| i < MAX_BLOCKS) else { continue };
                    let b = blocks.entry(i).or_insert_with(empty_block);
                    match field {
                        "join" => b.join = Join::from_code(&v),
                        "kind" => b.kind = Kind::from_code(&v),
                        "tags" => b.text = v,
                        "column" => b.condition.column = v,
                        "op" => b.condition.op = v,
                        "value" => b.condition.value = v,
                        _ => {}
                    }
                }
            }
        }
        f.blocks = blocks.into_values().collect();
        if f.blocks.is_empty() {
            f.blocks.push(empty_block());
        }
        f
    }
}

impl Form {
    fn empty() -> Form {
        Form {
            blocks: vec![empty_block()],
            expr: String::new(),
            by: String::new(),
            n: 20,
            seed: 1,
            action: String::new(),
            save_name: String::new(),
            save_description: String::new(),
            save_error: None,
        }
    }
}

fn empty_block() -> Block {
    Block::tags(Join::And, Kind::All, &[])
}

/// What the blocks (or the expression) come to.
struct Outcome {
    /// Per block: its own count, or its error.
    per_block: BTreeMap<usize, Result<u64, String>>,
    /// Per step: block position, running count, the expression up to it.
    funnel: Vec<(usize, u64, String)>,
    /// The whole audience, when the blocks make one.
    node: Option<Node>,
    /// The error of the expression field (the CLI's text).
    expr_error: Option<String>,
}

/// Counts every block and every prefix.
fn evaluate(blocks: &[Block], tags: &TagSet) -> taglake_query::Result<Outcome> {
    let mut o = Outcome { per_block: BTreeMap::new(), funnel: Vec::new(), node: None, expr_error: None };
    match builder::steps(blocks, tags) {
        Ok(steps) => {
            for s in &steps {
                o.per_block.insert(s.block, Ok(audience::count(&s.own, tags)?));
                o.funnel.push((s.block, audience::count(&s.running, tags)?, audience::display(&s.running, tags)));
            }
            o.node = steps.last().map(|s| s.running.clone());
        }
        Err(errors) => {
            for (i, e) in errors {
                o.per_block.insert(i, Err(e));
            }
        }
    }
    Ok(o)
}

/// The form after its expression was edited: the blocks it reads back
/// as, or the form's own blocks and the parser's error.
fn follow_expression(form: &mut Form, tags: &TagSet) -> Option<String> {
    if form.expr.trim().is_empty() {
        form.blocks = vec![empty_block()];
        return None;
    }
    match builder::parse(&form.expr, tags) {
        Ok(node) => {
            form.blocks = builder::blocks_of(&node, tags);
            form.blocks.truncate(MAX_BLOCKS);
            None
        }
        Err(e) => Some(e),
    }
}

#[derive(serde::Deserialize, Default)]
struct Start {
    #[serde(default)]
    expr: String,
    #[serde(default)]
    by: String,
    n: Option<usize>,
    seed: Option<u64>,
}

/// `GET /builder[?expr=…]`: the page, its blocks read from `expr`.
async fn show(State(app): State<Arc<App>>, Extension(ctx): Extension<Ctx>, Query(s): Query<Start>) -> Response {
    let mut form = Form {
        expr: s.expr,
        by: s.by,
        n: s.n.unwrap_or(20).min(MAX_SAMPLE),
        seed: s.seed.unwrap_or(1),
        ..Form::empty()
    };
    whole_page(&app, &ctx, &mut form, true, false).await
}

/// `POST /builder`: the page without JavaScript (add, remove, count, use
/// the expression), and saving the audience.
async fn submit(State(app): State<Arc<App>>, Extension(ctx): Extension<Ctx>, body: Bytes) -> Response {
    let mut form = Form::read(form_pairs(&body));
    if form.action == "save" {
        return save(&app, &ctx, form).await;
    }
    let from_expr = form.action == "expr";
    match form.action.as_str() {
        "add" if form.blocks.len() < MAX_BLOCKS => form.blocks.push(empty_block()),
        a => {
            if let Some(i) = a.strip_prefix("remove-").and_then(|i| i.parse::<usize>().ok())
                && i < form.blocks.len()
            {
                form.blocks.remove(i);
                if form.blocks.is_empty() {
                    form.blocks.push(empty_block());
                }
            }
        }
    }
    whole_page(&app, &ctx, &mut form, from_expr, true).await
}

/// "Save as": the expression field as typed when it means what the blocks
/// mean (it keeps references to other saved audiences), else the blocks'
/// expression; then the saved audience's page, or the builder with the
/// reason next to the name.
async fn save(app: &App, ctx: &Ctx, mut form: Form) -> Response {
    let Some((tags, _)) = app.data.tags() else {
        return page(ctx, "Audience builder", Nav::Builder, not_tagged()).into_response();
    };
    let blocks = match builder::steps(&form.blocks, &tags) {
        Ok(steps) => steps.last().map(|s| audience::display(&s.running, &tags)),
        Err(_) => None,
    };
    let typed = builder::parse(&form.expr, &tags).ok().map(|n| audience::display(&n, &tags));
    let text = match (&blocks, &typed) {
        (Some(b), Some(t)) if b == t => form.expr.trim().to_string(),
        (Some(b), _) => b.clone(),
        (None, _) => form.expr.trim().to_string(),
    };
    let user = ctx.user.as_deref();
    let description = Some(form.save_description.as_str());
    let name = form.save_name.trim().to_string();
    match taglake_query::saved::save(app.data.warehouse(), &tags, &name, description, &text, user).await {
        Ok(a) => {
            if let Err(e) = super::audiences::refresh_saved(app).await {
                return super::internal(ctx, Nav::Builder, &e);
            }
            axum::response::Redirect::to(&format!("/audiences/{}", crate::html::enc(&a.name))).into_response()
        }
        Err(taglake_query::Error::Invalid(m)) => {
            form.save_error = Some(m);
            whole_page(app, ctx, &mut form, false, true).await
        }
        Err(taglake_query::Error::Audience(e)) => {
            form.save_error = Some(e.to_string());
            whole_page(app, ctx, &mut form, false, true).await
        }
        Err(e) => super::internal(ctx, Nav::Builder, &e.into()),
    }
}

async fn whole_page(app: &App, ctx: &Ctx, form: &mut Form, from_expr: bool, inline_sample: bool) -> Response {
    let Some((tags, v)) = app.data.tags() else {
        return page(ctx, "Audience builder", Nav::Builder, not_tagged()).into_response();
    };
    let expr_error = if from_expr { follow_expression(form, &tags) } else { None };
    let mut outcome = match evaluate(&form.blocks, &tags) {
        Ok(o) => o,
        Err(e) => return super::internal(ctx, Nav::Builder, &e.into()),
    };
    outcome.expr_error = expr_error;
    if !from_expr || outcome.expr_error.is_none() {
        if let Some(n) = &outcome.node {
            form.expr = audience::display(n, &tags);
        } else if outcome.per_block.values().all(Result::is_ok) {
            form.expr.clear();
        }
    }
    let results = match results(app, &tags, v, form, &outcome, inline_sample).await {
        Ok(r) => r,
        Err(e) => return super::internal(ctx, Nav::Builder, &e),
    };
    let body = html! {
        (editor(ctx, &tags, form, &outcome))
        section #results aria-live="polite" aria-label="Results" { (results) }
    };
    page(ctx, "Audience builder", Nav::Builder, body).into_response()
}

#[derive(serde::Deserialize)]
struct LiveFrom {
    from: String,
}

/// `POST /builder/live?from=blocks|expr`: the fragments htmx swaps in.
async fn live(
    State(app): State<Arc<App>>,
    Extension(ctx): Extension<Ctx>,
    Query(which): Query<LiveFrom>,
    body: Bytes,
) -> Response {
    let Some((tags, v)) = app.data.tags() else { return not_tagged().into_response() };
    let mut form = Form::read(form_pairs(&body));
    let from_expr = which.from == "expr";
    let expr_error = if from_expr { follow_expression(&mut form, &tags) } else { None };
    let mut outcome = match evaluate(&form.blocks, &tags) {
        Ok(o) => o,
        Err(e) => return super::internal(&ctx, Nav::Builder, &e.into()),
    };
    outcome.expr_error = expr_error;
    let results = match results(&app, &tags, v, &form, &outcome, false).await {
        Ok(r) => r,
        Err(e) => return super::internal(&ctx, Nav::Builder, &e),
    };
    let error = expr_error_box(outcome.expr_error.as_deref(), true);
    if from_expr {
        // Target: the blocks. The results and the error next to the field come out of band.
        return html! {
            (blocks_html(&form.blocks, &outcome))
            section #results hx-swap-oob="true" aria-live="polite" aria-label="Results" { (results) }
            (error)
        }
        .into_response();
    }
    // Target: the results. The expression and each block's count come out of band.
    let expr = outcome.node.as_ref().map(|n| audience::display(n, &tags)).unwrap_or_else(|| {
        if outcome.per_block.values().all(Result::is_ok) { String::new() } else { form.expr.clone() }
    });
    html! {
        (results)
        (expr_field(&expr, true))
        (error)
        @for i in 0..form.blocks.len() { (block_status(i, outcome.per_block.get(&i), true)) }
    }
    .into_response()
}

/// The form: the blocks, the buttons, the expression, the view's settings.
fn editor(ctx: &Ctx, tags: &TagSet, form: &Form, outcome: &Outcome) -> Markup {
    let families: Vec<&str> = tags.families().iter().map(|f| f.name.as_str()).collect();
    let by = chosen_family(tags, &form.by).map(|f| tags.families()[f].name.as_str()).unwrap_or("");
    html! {
        form #builder method="post" action="/builder" {
            (csrf_field(ctx))
            // Enter in a field counts (the first submit button is the default), never removes a block.
            button.visually-hidden type="submit" name="action" value="update" tabindex="-1" aria-hidden="true" { "Count" }
            section #blocks aria-label="Blocks" { (blocks_html(&form.blocks, outcome)) }
            div.row {
                button.secondary type="submit" name="action" value="add" { "Add a block" }
                button type="submit" name="action" value="update" { "Count" }
            }
            h2 { "Expression" }
            div {
                label for="expr" { "Audience expression (tag names and conditions such as city = 'Shanghai', with AND, OR, NOT and parentheses)" }
                (expr_field(&form.expr, false))
                (expr_error_box(outcome.expr_error.as_deref(), false))
                button.secondary type="submit" name="action" value="expr" { "Use the expression" }
            }
            section #save aria-label="Save the audience" {
                h2 { "Save as" }
                div.row {
                    div {
                        label for="save-name" { "Name (lower-case letters, digits and _)" }
                        input #save-name type="text" name="save_name" value=(form.save_name) maxlength=(taglake_query::saved::MAX_NAME)
                            autocomplete="off" spellcheck="false" aria-describedby="save-error";
                    }
                    div {
                        label for="save-description" { "Description" }
                        input #save-description type="text" name="save_description" value=(form.save_description)
                            maxlength=(taglake_query::saved::MAX_DESCRIPTION);
                    }
                    div { button.secondary type="submit" name="action" value="save" { "Save the audience" } }
                }
                div #save-error role="alert" { @if let Some(e) = &form.save_error { pre.error { (e) } } }
            }
            section #view.row aria-label="Breakdown and sample settings" {
                div {
                    label for="by" { "Break down by" }
                    select #by name="by" {
                        @for f in &families { option value=(f) selected[*f == by] { (f) } }
                    }
                }
                div { label for="n" { "Sample size" } input #n type="number" name="n" min="0" max=(MAX_SAMPLE) value=(form.n); }
                div { label for="seed" { "Sample seed" } input #seed type="number" name="seed" min="0" value=(form.seed); }
            }
            div #live-blocks hx-post="/builder/live?from=blocks" hx-trigger="input delay:300ms from:#blocks, change from:#blocks, change from:#view, input delay:300ms from:#view" hx-target="#results" hx-swap="innerHTML" {}
            // The expression field is replaced whenever the blocks' update
            // brings their expression, so the trigger listens on the body
            // and filters on the field (a listener on the field itself
            // would stay on the replaced one).
            div #live-expr hx-post="/builder/live?from=expr" hx-trigger="input delay:500ms from:body target:#expr" hx-target="#blocks" hx-swap="innerHTML" {}
        }
    }
}

fn expr_field(expr: &str, oob: bool) -> Markup {
    html! {
        textarea #expr name="expr" rows="3" maxlength=(builder::MAX_EXPRESSION) spellcheck="false"
            aria-describedby="expr-error" hx-swap-oob=[oob.then_some("true")] { (expr) }
    }
}

fn expr_error_box(error: Option<&str>, oob: bool) -> Markup {
    html! {
        div #expr-error role="alert" hx-swap-oob=[oob.then_some("true")] {
            @if let Some(e) = error { pre.error { (e) } }
        }
    }
}

fn blocks_html(blocks: &[Block], outcome: &Outcome) -> Markup {
    html! {
        @for (i, b) in blocks.iter().enumerate() {
            fieldset.block #(format!("b{i}")) {
                legend { "Block " (i + 1) }
                div.row {
                    @if i > 0 {
                        div {
                            label for=(format!("b{i}-join")) { "Joined by" }
                            select #(format!("b{i}-join")) name=(format!("b{i}.join")) {
                                @for j in [Join::And, Join::Or] { option value=(j.code()) selected[b.join == j] { (j.code()) } }
                            }
                        }
                    }
                    div {
                        label for=(format!("b{i}-kind")) { "Members who" }
                        select.kind #(format!("b{i}-kind")) name=(format!("b{i}.kind")) {
                            @for k in Kind::ALL { option value=(k.code()) selected[b.kind == k] { (k.label()) } }
                        }
                    }
                    // Both sets of fields are sent; the stylesheet shows the
                    // ones the chosen kind uses (no script needed).
                    div.tag-fields {
                        label for=(format!("b{i}-tags")) { "Tags (names separated by spaces), or an expression" }
                        input.tags-input #(format!("b{i}-tags")) type="text" name=(format!("b{i}.tags")) value=(b.text)
                            list=(format!("b{i}-list")) autocomplete="off" maxlength=(builder::MAX_EXPRESSION)
                            hx-get="/builder/suggest" hx-trigger="input delay:200ms" hx-target=(format!("#b{i}-list")) hx-swap="innerHTML";
                        datalist #(format!("b{i}-list")) {}
                    }
                    (attribute_fields(i, b))
                    div { button.secondary type="submit" name="action" value=(format!("remove-{i}")) aria-label=(format!("Remove block {}", i + 1)) { "Remove" } }
                }
                (block_status(i, outcome.per_block.get(&i), false))
            }
        }
    }
}

/// The fields of a condition on a member attribute: column, operator, values.
fn attribute_fields(i: usize, b: &Block) -> Markup {
    let c = &b.condition;
    let column = c.column.trim().to_ascii_lowercase();
    let cmp = c.cmp();
    html! {
        div.attr-fields {
            div {
                label for=(format!("b{i}-column")) { "Attribute" }
                select #(format!("b{i}-column")) name=(format!("b{i}.column")) {
                    @for col in attribute::columns() { option value=(col.name) selected[col.name == column] { (col.name) } }
                }
            }
            div {
                label for=(format!("b{i}-op")) { "Is" }
                select #(format!("b{i}-op")) name=(format!("b{i}.op")) {
                    @for op in Cmp::ALL { option value=(op.symbol()) selected[op == cmp] { (op.symbol()) } }
                }
            }
            div {
                label for=(format!("b{i}-value")) { "Value (a list: a, b)" }
                input #(format!("b{i}-value")) type="text" name=(format!("b{i}.value")) value=(c.value)
                    autocomplete="off" maxlength=(builder::MAX_EXPRESSION) placeholder="Shanghai, Beijing · 2024-03-01 · 1000";
            }
        }
    }
}

fn block_status(i: usize, status: Option<&Result<u64, String>>, oob: bool) -> Markup {
    html! {
        div #(format!("b{i}-status")) hx-swap-oob=[oob.then_some("true")] {
            @match status {
                Some(Ok(n)) => p { "This block alone: " span.count #(format!("b{i}-count")) { (count(*n)) } " members" },
                Some(Err(e)) => pre.error role="alert" #(format!("b{i}-error")) { (e) },
                None => p.muted { "Empty: add tags or a condition to count." },
            }
        }
    }
}

/// The family `by` names, else `tier`, else the first exclusive family.
fn chosen_family(tags: &TagSet, by: &str) -> Option<usize> {
    tags.exclusive(by).or_else(|| tags.exclusive("tier")).or_else(|| (!tags.families().is_empty()).then_some(0))
}

/// The results: the total, the funnel, the breakdown and the sample.
/// The sample is drawn in this answer when `inline` (a page posted
/// without a script); otherwise the page asks `/builder/sample` for it once
/// shown, so a count update never waits for the members' rows.
async fn results(app: &App, tags: &TagSet, v: i64, form: &Form, o: &Outcome, inline: bool) -> crate::Result<Markup> {
    let base = tags.universe()?.len();
    let Some(node) = &o.node else {
        return Ok(
            html! { p.muted #total { "No audience yet: add tags to a block, or type an expression. " (count(base)) " members in snapshot " (v) "." } },
        );
    };
    let total = o.funnel.last().map_or(0, |f| f.1);
    let breakdown = match chosen_family(tags, &form.by) {
        Some(f) => Some((f, taglake_query::breakdown::breakdown(Some(node), tags, f)?)),
        None => None,
    };
    let overlap = saved_overlap(node, tags)?;
    let sample = if inline || form.n == 0 {
        sample(app, node, tags, form.n, form.seed).await?
    } else {
        deferred_sample(&audience::display(node, tags), form.n, form.seed)
    };
    Ok(html! {
        p #total { strong #audience-count { (count(total)) } " members (" (percent(total, base)) " of " (count(base)) ") · snapshot " (v)
            " · " a #export-link href=(format!("/export?expr={}", crate::html::enc(&audience::display(node, tags)))) { "Export this audience" } }
        h2 { "Funnel" }
        (charts::funnel("running total after each block", &o.funnel.iter().map(|(b, n, _)| (format!("block {}", b + 1), *n)).collect::<Vec<_>>(), base))
        table.funnel #funnel {
            thead { tr { th scope="col" { "after" } th.num scope="col" { "block alone" } th.num scope="col" { "running total" } th.num scope="col" { "of all" } th scope="col" { "audience so far" } } }
            tbody {
                @for (b, n, text) in &o.funnel {
                    tr {
                        td { "block " (b + 1) }
                        td.num { @if let Some(Ok(own)) = o.per_block.get(b) { (count(*own)) } }
                        td.num.running { (count(*n)) }
                        td.num { (percent(*n, base)) }
                        td { code.prefix { (text) } }
                    }
                }
            }
        }
        @if let Some((f, rows)) = &breakdown { (breakdown_html(&tags.families()[*f].name, rows)) }
        @if let Some((labels, matrix)) = &overlap { (overlap_html(labels, matrix)) }
        (sample)
    })
}

/// The labels of an overlap matrix and the members in both of each pair.
type Overlap = (Vec<String>, Vec<Vec<u64>>);

/// The audience and the saved audiences (the first [`MAX_SAVED_OVERLAP`]
/// by name that still parse): their labels and the members in both of
/// every pair, as `taglake audience overlap` counts them.
fn saved_overlap(node: &Node, tags: &TagSet) -> taglake_query::Result<Option<Overlap>> {
    let names = tags.saved_names();
    if names.is_empty() {
        return Ok(None);
    }
    let mut labels = vec!["this audience".to_string()];
    let mut sets = vec![audience::evaluate(node, tags)?];
    for name in names.into_iter().take(MAX_SAVED_OVERLAP) {
        if let Ok(saved) = audience::parse(&format!("audience:{name}"), tags) {
            sets.push(audience::evaluate(&saved, tags)?);
            labels.push(format!("audience:{name}"));
        }
    }
    Ok(Some((labels, survey::overlap(&sets))))
}

fn overlap_html(labels: &[String], matrix: &[Vec<u64>]) -> Markup {
    html! {
        h2 { "Overlap with the saved audiences" }
        div.scroll {
            table #overlap {
                thead { tr { th scope="col" { "members in both (and % of the row)" } @for l in labels { th.num scope="col" { (l) } } } }
                tbody {
                    @for (i, row) in matrix.iter().enumerate() {
                        tr {
                            th scope="row" { (labels[i]) }
                            @for v in row { td.num { (count(*v)) br; span.muted { (percent(*v, row[i])) } } }
                        }
                    }
                }
            }
        }
    }
}

fn breakdown_html(family: &str, rows: &[Share]) -> Markup {
    // As `taglake audience breakdown`: a value no member holds, in the audience or outside it, is left out.
    let rows: Vec<&Share> = rows.iter().filter(|r| r.members > 0 || r.base_members > 0).collect();
    let value = |r: &Share| r.value.clone().unwrap_or_else(|| "(none)".into());
    let chart: Vec<ShareRow> =
        rows.iter().map(|r| ShareRow { label: value(r), share: r.share, base_share: r.base_share }).collect();
    html! {
        h2 { "Breakdown by " (family) }
        (charts::shares(&format!("the audience by {family}, beside all members"), &chart))
        table #breakdown {
            thead { tr { th scope="col" { (family) } th.num scope="col" { "members" } th.num scope="col" { "share" } th.num scope="col" { "all members" } th.num scope="col" { "share" } th.num scope="col" { "index" } } }
            tbody {
                @for r in &rows {
                    tr {
                        td { (value(r)) }
                        td.num { (count(r.members)) }
                        td.num { (format!("{:.2}%", r.share * 100.0)) }
                        td.num { (count(r.base_members)) }
                        td.num { (format!("{:.2}%", r.base_share * 100.0)) }
                        td.num { (r.index.map_or("-".to_string(), |i| format!("{i:.0}"))) }
                    }
                }
            }
        }
        p.muted { "index = share ÷ share among all members × 100 (over 100: over-represented)" }
    }
}

/// The place of the sample, filled by `/builder/sample` once shown (a
/// link without a script).
fn deferred_sample(expr: &str, n: usize, seed: u64) -> Markup {
    let url = format!("/builder/sample?n={n}&seed={seed}&expr={}", crate::html::enc(expr));
    html! {
        div #sample-box hx-get=(url) hx-trigger="load" hx-swap="outerHTML" {
            h2 { "Sample" }
            p.muted { "Drawing " (n) " members (seed " (seed) ") … " noscript { a href=(url) { "show the sample" } } }
        }
    }
}

#[derive(serde::Deserialize)]
struct SampleOf {
    #[serde(default)]
    expr: String,
    n: Option<usize>,
    seed: Option<u64>,
}

/// `GET /builder/sample?expr=…&n=…&seed=…`: the sample section.
async fn sample_page(
    State(app): State<Arc<App>>,
    Extension(ctx): Extension<Ctx>,
    Query(q): Query<SampleOf>,
) -> Response {
    let Some((tags, _)) = app.data.tags() else { return not_tagged().into_response() };
    let node = match builder::parse(&q.expr, &tags) {
        Ok(n) => n,
        Err(e) => return html! { div #sample-box { pre.error role="alert" { (e) } } }.into_response(),
    };
    let (n, seed) = (q.n.unwrap_or(20).min(MAX_SAMPLE), q.seed.unwrap_or(1));
    match sample(&app, &node, &tags, n, seed).await {
        Ok(m) => html! { div #sample-box { (m) } }.into_response(),
        Err(e) => super::internal(&ctx, Nav::Builder, &e),
    }
}

/// A sample of the audience with the member attributes, as `taglake
/// audience sample --n N --seed S` draws it.
async fn sample(app: &App, node: &Node, tags: &TagSet, n: usize, seed: u64) -> crate::Result<Markup> {
    if n == 0 {
        return Ok(html! {});
    }
    let drawn = survey::Sample::draw(node, tags, n, seed)?;
    let ctx = app.data.live().query_context(256 << 20).map_err(sql_err)?;
    let schema = ctx.table_provider("members").await.map_err(sql_err)?.schema();
    let columns = survey::attribute_columns(&schema);
    let batches = taglake_query::sql(&ctx, &drawn.sql(&columns)).await?;
    let options = arrow::util::display::FormatOptions::default().with_null("");
    let mut rows: Vec<Vec<String>> = Vec::new();
    for b in &batches {
        let formatters: Vec<_> = b
            .columns()
            .iter()
            .map(|c| arrow::util::display::ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<_, _>>()
            .map_err(sql_err)?;
        for r in 0..b.num_rows() {
            rows.push(formatters.iter().map(|f| f.value(r).to_string()).collect());
        }
    }
    Ok(html! {
        h2 { "Sample" }
        p.muted { (drawn.keys.len()) " of " (count(drawn.audience)) " members (seed " (seed) "), as " code { "taglake audience sample --n " (n) " --seed " (seed) } " shows them." }
        table #sample {
            thead { tr { @for c in &columns { th scope="col" { (c) } } } }
            tbody { @for r in &rows { tr { @for v in r { td { (v) } } } } }
        }
    })
}

/// A DataFusion error as the query layer's.
fn sql_err(e: impl std::fmt::Display) -> crate::Error {
    crate::Error::Query(taglake_query::Error::Sql(e.to_string()))
}

/// `GET /builder/suggest?b0.tags=…`: `<option>`s completing the last word
/// of a block's text with tag names, matched on names, then descriptions.
async fn suggest(State(app): State<Arc<App>>, RawQuery(q): RawQuery) -> Response {
    let text = q
        .as_deref()
        .map(|q| form_pairs(q.as_bytes()).find(|(k, _)| k.ends_with(".tags") || k == "q").map(|(_, v)| v))
        .unwrap_or_default()
        .unwrap_or_default();
    let Some((_, v)) = app.data.tags() else { return html! {}.into_response() };
    let Ok(snaps) = app.data.snapshots(v).await else { return html! {}.into_response() };
    let text: String = text.chars().take(builder::MAX_EXPRESSION).collect();
    let (head, word) = match text.rfind(|c: char| c.is_whitespace() || c == ',') {
        Some(i) => (&text[..=i], &text[i + 1..]),
        None => ("", text.as_str()),
    };
    let word = word.to_lowercase();
    if word.is_empty() {
        return html! {}.into_response();
    }
    let by_name = snaps.current.tags.iter().filter(|t| t.name.contains(&word));
    let by_desc =
        snaps.current.tags.iter().filter(|t| !t.name.contains(&word) && t.description.to_lowercase().contains(&word));
    let mut options: Vec<_> = by_name.collect();
    options.sort_by_key(|t| (!t.name.starts_with(&word), t.name.len()));
    options.extend(by_desc);
    html! {
        @for t in options.into_iter().take(SUGGESTIONS) {
            option value=(format!("{head}{}", t.name)) { (t.name) " — " (t.description) }
        }
    }
    .into_response()
}
