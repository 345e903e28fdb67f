//! The web application: routes, the session and CSRF gate every request
//! passes, the security headers, logging in and out.
//!
//! Every request but the static assets goes through [`gate`]:
//!
//! 1. Its session is looked up from the cookie; a browser without one
//!    gets a new anonymous session (and its cookie).
//! 2. A POST must carry the session's CSRF token, in the `X-CSRF-Token`
//!    header (htmx) or the `csrf` form field; otherwise 403, before any
//!    handler runs.
//! 3. With users, an anonymous session may only see the login page: a
//!    page request gets the login page, a fragment (htmx) or a POST gets 401.
//!
//! Then [`headers`] adds the Content-Security-Policy (`default-src 'self'`:
//! no inline script, style or frame; `frame-ancestors 'none'`), `nosniff`,
//! `no-referrer` and `no-store` to every answer. Bodies are capped at
//! [`MAX_BODY`].

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::html;
use taglake_serve::Users;

use crate::data::Data;
use crate::html::{Ctx, Nav, page};
use crate::session::{self, COOKIE, Session, Sessions};

/// Largest request body read (forms are small; the longest is the builder's).
pub const MAX_BODY: usize = 64 * 1024;

/// Logins checked at once (each stretches a password 4,096 times).
const LOGINS_AT_ONCE: usize = 2;

/// What every handler shares.
pub struct App {
    /// The warehouse as the pages read it.
    pub data: Data,
    /// Where exports are written (`--export-dir`); `None`: exports are off.
    pub export_dir: Option<std::path::PathBuf>,
    sessions: Sessions,
    users: Option<Users>,
    /// Cookies get `Secure` (the studio is served over TLS).
    secure: bool,
    logins: tokio::sync::Semaphore,
}

impl App {
    /// The application over `data`, with `users` to log in (or none).
    pub fn new(data: Data, users: Option<Users>, sessions: Sessions, secure: bool) -> App {
        App { data, export_dir: None, sessions, users, secure, logins: tokio::sync::Semaphore::new(LOGINS_AT_ONCE) }
    }

    /// The same, writing exports into `dir`.
    pub fn with_export_dir(mut self, dir: Option<std::path::PathBuf>) -> App {
        self.export_dir = dir;
        self
    }

    fn cookie(&self, token: &str) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        HeaderValue::from_str(&format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{secure}"))
            .expect("a token is a valid header value")
    }

    fn clear_cookie(&self) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        HeaderValue::from_str(&format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"))
            .expect("a valid header value")
    }
}

/// The login and logout routes (the pages' routers are merged beside them
/// by [`crate::server`], which wraps all of them in [`gate`] and [`headers`]).
pub fn routes() -> Router<Arc<App>> {
    Router::new().route("/login", get(login_page).post(login)).route("/logout", post(logout))
}

/// The security headers of every answer.
pub async fn headers(req: Request, next: Next) -> Response {
    let asset = req.uri().path().starts_with("/assets/");
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if !asset {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

/// The session token of a request's cookie.
fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

/// Whether htmx (rather than a page load) made the request.
fn is_fragment(headers: &HeaderMap) -> bool {
    headers.contains_key("hx-request")
}

/// The CSRF token a POST carries: the header, else the `csrf` form field.
fn posted_token(headers: &HeaderMap, body: &[u8]) -> Option<String> {
    if let Some(t) = headers.get("x-csrf-token").and_then(|v| v.to_str().ok()) {
        return Some(t.to_string());
    }
    form_pairs(body).find(|(k, _)| k == "csrf").map(|(_, v)| v)
}

/// The pairs of a urlencoded form body (bytes that are not UTF-8 are replaced).
pub fn form_pairs(body: &[u8]) -> impl Iterator<Item = (String, String)> + '_ {
    form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), v.into_owned()))
}

/// The session, CSRF and login gate (see the module docs).
pub async fn gate(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let now = Instant::now();
    let (found, new_cookie) = match cookie_token(req.headers()).and_then(|t| app.sessions.get(t, now)) {
        Some(s) => (s, None),
        None => {
            let (token, s) = app.sessions.start(None, now);
            (s, Some(token))
        }
    };
    let with_cookie = |mut r: Response| {
        if let Some(t) = &new_cookie {
            r.headers_mut().append(header::SET_COOKIE, app.cookie(t));
        }
        r
    };
    let req = if req.method() == Method::POST {
        let (parts, body) = req.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
            return with_cookie((StatusCode::PAYLOAD_TOO_LARGE, "the request is too large").into_response());
        };
        let ok = posted_token(&parts.headers, &bytes).is_some_and(|t| session::csrf_matches(&found.csrf, &t));
        if !ok {
            return with_cookie(
                (StatusCode::FORBIDDEN, "refused: the form's security token is missing or stale; reload the page")
                    .into_response(),
            );
        }
        Request::from_parts(parts, Body::from(bytes))
    } else {
        req
    };
    let login_path = req.uri().path() == "/login";
    if app.users.is_some() && found.user.is_none() && !login_path {
        if is_fragment(req.headers()) || req.method() != Method::GET {
            return with_cookie((StatusCode::UNAUTHORIZED, "log in first").into_response());
        }
        return with_cookie(login_form(&found, None, StatusCode::OK));
    }
    let mut req = req;
    req.extensions_mut().insert(Ctx { user: found.user.clone(), csrf: found.csrf.clone() });
    with_cookie(next.run(req).await)
}

fn login_form(session: &Session, problem: Option<&str>, status: StatusCode) -> Response {
    let ctx = Ctx { user: None, csrf: session.csrf.clone() };
    let body = html! {
        form.login method="post" action="/login" {
            input type="hidden" name="csrf" value=(session.csrf);
            @if let Some(p) = problem { p.error role="alert" { (p) } }
            div { label for="user" { "User name" } input #user type="text" name="user" autocomplete="username" required maxlength="63"; }
            div { label for="password" { "Password" } input #password type="password" name="password" autocomplete="current-password" required maxlength="1024"; }
            button type="submit" { "Log in" }
        }
    };
    (status, page(&ctx, "Log in", Nav::None, body)).into_response()
}

async fn login_page(State(app): State<Arc<App>>, axum::Extension(ctx): axum::Extension<Ctx>) -> Response {
    if app.users.is_none() || ctx.user.is_some() {
        return Redirect::to("/").into_response();
    }
    login_form(&Session { user: None, csrf: ctx.csrf }, None, StatusCode::OK)
}

#[derive(serde::Deserialize)]
struct Login {
    user: String,
    password: String,
}

/// Checks a login; on success the anonymous session is replaced by a new
/// one bound to the user (a token from before the login is worth nothing).
async fn login(
    State(app): State<Arc<App>>,
    axum::Extension(ctx): axum::Extension<Ctx>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<Login>,
) -> Response {
    let Some(users) = app.users.clone() else { return Redirect::to("/").into_response() };
    let Ok(_turn) = app.logins.acquire().await else {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    };
    let (name, password) = (form.user.clone(), form.password);
    let ok = tokio::task::spawn_blocking(move || {
        name.len() <= 63 && password.len() <= 1024 && users.verify(&name, &password)
    })
    .await
    .unwrap_or(false);
    if !ok {
        crate::log(format_args!("login refused for {:?}", form.user.chars().take(63).collect::<String>()));
        return login_form(
            &Session { user: None, csrf: ctx.csrf },
            Some("Wrong user name or password."),
            StatusCode::UNAUTHORIZED,
        );
    }
    if let Some(old) = cookie_token(&headers) {
        app.sessions.end(old);
    }
    let (token, _) = app.sessions.start(Some(form.user.clone()), Instant::now());
    crate::log(format_args!("{} logged in", form.user));
    let mut r = Redirect::to("/").into_response();
    r.headers_mut().append(header::SET_COOKIE, app.cookie(&token));
    r
}

async fn logout(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Some(t) = cookie_token(&headers) {
        app.sessions.end(t);
    }
    let mut r = Redirect::to(if app.users.is_some() { "/login" } else { "/" }).into_response();
    r.headers_mut().append(header::SET_COOKIE, app.clear_cookie());
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; taglake_studio=tok; b=2"));
        assert_eq!(cookie_token(&h), Some("tok"));
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("taglake_studiox=no"));
        assert_eq!(cookie_token(&h), None);
    }

    #[test]
    fn a_post_carries_its_token_in_the_header_or_the_form() {
        let mut h = HeaderMap::new();
        assert_eq!(posted_token(&h, b"a=1&csrf=abc%2B"), Some("abc+".into()));
        assert_eq!(posted_token(&h, b"a=1"), None);
        assert_eq!(posted_token(&h, b"\xff\xfe"), None);
        h.insert("x-csrf-token", HeaderValue::from_static("hdr"));
        assert_eq!(posted_token(&h, b"csrf=form"), Some("hdr".into()));
    }
}
