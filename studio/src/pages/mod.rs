//! The pages, one module each with its own `Router`, merged by
//! [`crate::server::router`]: a new page (saved audiences, exports,
//! communities) is a new module and one `merge` line.
//!
//! Handlers read the tag set once per request ([`crate::data::Data::tags`])
//! and render with maud; a warehouse error becomes a 500 page with the
//! error's text (the warehouse is the server's, not the user's, so its
//! messages say nothing a user may not see), never a panic.

pub mod audiences;
pub mod builder;
pub mod communities;
pub mod experiments;
pub mod overview;
pub mod tags;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::html;

use crate::html::{Ctx, Nav, page};

/// A page saying what failed, with its status.
pub(crate) fn failure(ctx: &Ctx, status: StatusCode, nav: Nav, message: &str) -> Response {
    let title = if status.is_server_error() { "Something failed" } else { "Not found" };
    (status, page(ctx, title, nav, html! { p.error role="alert" { (message) } })).into_response()
}

/// A 500 page for a warehouse error.
pub(crate) fn internal(ctx: &Ctx, nav: Nav, e: &crate::Error) -> Response {
    crate::log(format_args!("{e}"));
    failure(ctx, StatusCode::INTERNAL_SERVER_ERROR, nav, &format!("Reading the warehouse failed: {e}"))
}
