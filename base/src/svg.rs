//! Drawing charts as SVG text on the server.
//!
//! taglake draws its pictures (the communities' profile, the experiment
//! report, the studio's charts) as plain SVG strings: no JavaScript, no
//! charting library, nothing fetched over the network, and the same text
//! works as a file, in a ticket or inline in a web page. Every picture
//! writes user text (audience expressions, tag and arm names) through
//! [`xml`] and every coordinate through [`P`], so no string can break out
//! of an element and no `NaN` reaches an attribute; [`Svg`] does both for
//! the elements it writes.

use std::fmt::{self, Write};

/// A coordinate as written into an attribute: one decimal, and 0 rather
/// than `NaN` or `inf` (which no SVG reader accepts).
#[derive(Debug, Clone, Copy)]
pub struct P(pub f64);

impl fmt::Display for P {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_finite() { write!(f, "{:.1}", self.0) } else { f.write_str("0") }
    }
}

/// SVG elements, one per line. `attrs` are the caller's own attributes
/// (never user text); text is escaped by [`xml`], coordinates written by [`P`].
#[derive(Debug, Default, Clone)]
pub struct Svg(pub String);

impl Svg {
    /// One element, as formatted.
    pub fn push(&mut self, element: fmt::Arguments<'_>) {
        self.0.write_fmt(element).expect("writing to a String");
        self.0.push('\n');
    }

    /// A line from one point to another.
    pub fn line(&mut self, (x1, y1): (f64, f64), (x2, y2): (f64, f64), attrs: &str) {
        self.push(format_args!("<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" {attrs}/>", P(x1), P(y1), P(x2), P(y2)));
    }

    /// A rectangle from its top-left corner and its size.
    pub fn rect(&mut self, (x, y): (f64, f64), (w, h): (f64, f64), attrs: &str) {
        self.push(format_args!(
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" {attrs}/>",
            P(x),
            P(y),
            P(w.max(0.0)),
            P(h.max(0.0))
        ));
    }

    /// A circle.
    pub fn circle(&mut self, (x, y): (f64, f64), r: f64, attrs: &str) {
        self.push(format_args!("<circle cx=\"{}\" cy=\"{}\" r=\"{}\" {attrs}/>", P(x), P(y), P(r)));
    }

    /// A polyline through `points`.
    pub fn polyline(&mut self, points: &[(f64, f64)], attrs: &str) {
        let points: Vec<String> = points.iter().map(|&(x, y)| format!("{},{}", P(x), P(y))).collect();
        self.push(format_args!("<polyline points=\"{}\" {attrs}/>", points.join(" ")));
    }

    /// Text at a point.
    pub fn text(&mut self, (x, y): (f64, f64), attrs: &str, text: &str) {
        self.push(format_args!("<text x=\"{}\" y=\"{}\" {attrs}>{}</text>", P(x), P(y), xml(text)));
    }

    /// Text cut to `max_chars`, the whole of it as a tooltip when cut.
    pub fn label(&mut self, at: (f64, f64), attrs: &str, text: &str, max_chars: usize) {
        if text.chars().count() <= max_chars {
            return self.text(at, attrs, text);
        }
        let cut: String = text.chars().take(max_chars.saturating_sub(1)).chain(['…']).collect();
        let (x, y) = at;
        self.push(format_args!(
            "<text x=\"{}\" y=\"{}\" {attrs}>{}<title>{}</title></text>",
            P(x),
            P(y),
            xml(&cut),
            xml(text)
        ));
    }
}

/// `s` as XML text or attribute value: markup characters escaped, and the
/// control characters XML forbids replaced by U+FFFD.
pub fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c < ' ' || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_numbers_cannot_break_the_markup() {
        assert_eq!(
            xml("<a href=\"x\">'&'\u{1}</a>"),
            "&lt;a href=&quot;x&quot;&gt;&apos;&amp;&apos;\u{FFFD}&lt;/a&gt;"
        );
        assert_eq!(format!("{} {} {}", P(1.26), P(f64::NAN), P(f64::INFINITY)), "1.3 0 0");
        let mut s = Svg::default();
        s.rect((0.0, 0.0), (-5.0, 2.0), "class=\"bar\"");
        s.label((1.0, 2.0), "", "</text><script>", 5);
        assert_eq!(
            s.0,
            "<rect x=\"0.0\" y=\"0.0\" width=\"0.0\" height=\"2.0\" class=\"bar\"/>\n<text x=\"1.0\" y=\"2.0\" >&lt;/te…<title>&lt;/text&gt;&lt;script&gt;</title></text>\n"
        );
    }
}
