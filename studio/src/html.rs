//! The page shell every page shares: the head, the navigation bar, the
//! user's name and logout, and small formatting helpers.
//!
//! Pages are maud templates: every `(value)` spliced into one is escaped,
//! so tag names, descriptions, expressions and search text a user typed
//! can never become markup. The only unescaped content is the SVG
//! [`crate::charts`] draws (its text escaped by `taglake_base::svg`).

use maud::{DOCTYPE, Markup, html};

/// The pages in the navigation bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    /// `/`
    Overview,
    /// `/tags`
    Tags,
    /// `/builder`
    Builder,
    /// `/audiences`
    Audiences,
    /// `/communities`
    Communities,
    /// `/experiments` and `/export`
    Experiments,
    /// None of them (login, errors).
    None,
}

/// What every page needs to know about its request's session.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The logged-in user, when the studio has users.
    pub user: Option<String>,
    /// The session's CSRF token, for forms and htmx's header.
    pub csrf: String,
}

/// A whole page: head, navigation, `body` in `<main>`.
pub fn page(ctx: &Ctx, title: &str, nav: Nav, body: Markup) -> Markup {
    let link = |to: Nav, href: &str, text: &str| {
        html! { a href=(href) aria-current=[(nav == to).then_some("page")] { (text) } }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                // htmx must not inject its own <style>: the CSP allows no inline styles.
                meta name="htmx-config" content=r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false}"#;
                title { (title) " · taglake studio" }
                link rel="stylesheet" href=(crate::assets::CSS_PATH);
                script src=(crate::assets::HTMX_PATH) defer {}
            }
            // htmx sends the CSRF token with every request it makes.
            body hx-headers=(format!(r#"{{"X-CSRF-Token":"{}"}}"#, ctx.csrf)) {
                a.skip href="#main" { "Skip to the content" }
                header.bar {
                    a.brand href="/" { "taglake studio" }
                    @if nav != Nav::None {
                        nav aria-label="Pages" {
                            (link(Nav::Overview, "/", "Overview"))
                            (link(Nav::Tags, "/tags", "Tag catalog"))
                            (link(Nav::Builder, "/builder", "Audience builder"))
                            (link(Nav::Audiences, "/audiences", "Saved audiences"))
                            (link(Nav::Communities, "/communities", "Communities"))
                            (link(Nav::Experiments, "/experiments", "Experiments"))
                        }
                    }
                    @if let Some(user) = &ctx.user {
                        div.who {
                            span { "Signed in as " (user) }
                            form method="post" action="/logout" {
                                input type="hidden" name="csrf" value=(ctx.csrf);
                                button type="submit" { "Log out" }
                            }
                        }
                    }
                }
                main #main { h1 { (title) } (body) }
            }
        }
    }
}

/// The hidden CSRF field of a form.
pub fn csrf_field(ctx: &Ctx) -> Markup {
    html! { input type="hidden" name="csrf" value=(ctx.csrf); }
}

/// What a page shows before the warehouse is first tagged.
pub fn not_tagged() -> Markup {
    html! {
        p { "The warehouse has no tag snapshot yet. Run " code { "taglake tag" } " and this page shows it within seconds, without a restart." }
    }
}

/// `text` encoded for a URL's query value or path segment.
pub fn enc(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// `1234567` as `1,234,567`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A signed count: `+1,234`, `-56`, `0`.
pub fn signed(n: i64) -> String {
    match n {
        0 => "0".into(),
        n if n > 0 => format!("+{}", count(n as u64)),
        n => format!("-{}", count(n.unsigned_abs())),
    }
}

/// `part` as a percentage of `whole`, two decimals (`0.00%` of nothing).
pub fn percent(part: u64, whole: u64) -> String {
    if whole == 0 { "0.00%".into() } else { format!("{:.2}%", 100.0 * part as f64 / whole as f64) }
}

/// How long ago `then` was, in words: `3 minutes`, `2 days`.
pub fn age(then: chrono::DateTime<chrono::Utc>, now: chrono::DateTime<chrono::Utc>) -> String {
    let secs = (now - then).num_seconds().max(0);
    let (n, unit) = match secs {
        s if s < 120 => (s, "second"),
        s if s < 7_200 => (s / 60, "minute"),
        s if s < 172_800 => (s / 3_600, "hour"),
        s => (s / 86_400, "day"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_text_is_escaped_everywhere_in_a_page() {
        let ctx = Ctx { user: Some("<b>ana</b>".into()), csrf: "tok\"en".into() };
        let hostile = "<script>alert('x')</script>\"&";
        let page = page(&ctx, hostile, Nav::Tags, html! { p { (hostile) } input value=(hostile); }).into_string();
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(!page.contains("<b>ana"), "{page}");
        assert!(page.contains("&lt;script&gt;alert('x')&lt;/script&gt;&quot;&amp;"), "{page}");
        assert!(page.contains("Signed in as &lt;b&gt;ana&lt;/b&gt;"));
        assert!(!page.contains("tok\"en"), "the token is escaped in attributes too");
        // The only scripts are the served files.
        assert_eq!(page.matches("<script").count(), 1);
        assert!(page.contains(r#"<script src="/assets/htmx-2.0.4.min.js" defer></script>"#));
        assert!(page.contains(r#"aria-current="page">Tag catalog"#));
    }

    #[test]
    fn numbers_read_as_people_write_them() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1_000), "1,000");
        assert_eq!(count(42_000_000), "42,000,000");
        assert_eq!(signed(-1234), "-1,234");
        assert_eq!(signed(5), "+5");
        assert_eq!(percent(1, 3), "33.33%");
        assert_eq!(percent(1, 0), "0.00%");
        let t = chrono::DateTime::from_timestamp(1_000_000, 0).unwrap();
        assert_eq!(age(t, t + chrono::Duration::seconds(1)), "1 second");
        assert_eq!(age(t, t + chrono::Duration::minutes(5)), "5 minutes");
        assert_eq!(age(t, t + chrono::Duration::days(3)), "3 days");
    }
}
