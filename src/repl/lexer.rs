//! Where words, quoted text and comments are in SQL text, and where
//! statements end: what both completion and the statement loop must agree
//! on, so a `;` inside a string never ends a statement nor a quote starts
//! completion.

/// What a token is.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// A keyword, an unquoted identifier or a number.
    Word,
    /// A "quoted identifier".
    Quoted,
    /// A 'string literal'.
    Str,
    /// `-- to the end of the line` or `/* block */`.
    Comment,
    /// Any other character: `;`, `,`, `.`, `(`, …
    Symbol(char),
}

/// A token: its kind and its bytes `start..end` of the text.
#[derive(Copy, Clone, Debug)]
pub(super) struct Token {
    pub(super) kind: Kind,
    pub(super) start: usize,
    pub(super) end: usize,
    /// False for a quote or comment still open at the end of the text.
    pub(super) closed: bool,
}

impl Token {
    /// Whether a cursor at `pos` is inside this quote or comment.
    pub(super) fn holds(&self, pos: usize) -> bool {
        self.start < pos && (pos < self.end || (pos == self.end && !self.closed))
    }
}

/// Splits SQL text into tokens. Quotes end at the next unpaired quote
/// (`''` and `""` escape one); block comments do not nest.
pub(super) fn lex(text: &str) -> Vec<Token> {
    let b = text.as_bytes();
    let find = |from: usize, needle: &[u8]| b[from.min(b.len())..].windows(needle.len()).position(|w| w == needle);
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let (kind, end, closed) = match c {
            b'\'' | b'"' => {
                let mut j = i + 1;
                let (end, closed) = loop {
                    match b[j..].iter().position(|&x| x == c) {
                        None => break (b.len(), false),
                        Some(k) if b.get(j + k + 1) == Some(&c) => j += k + 2,
                        Some(k) => break (j + k + 1, true),
                    }
                };
                (if c == b'\'' { Kind::Str } else { Kind::Quoted }, end, closed)
            }
            b'-' if b.get(i + 1) == Some(&b'-') => match find(i, b"\n") {
                Some(k) => (Kind::Comment, i + k, true),
                None => (Kind::Comment, b.len(), false),
            },
            b'/' if b.get(i + 1) == Some(&b'*') => match find(i + 2, b"*/") {
                Some(k) => (Kind::Comment, i + 2 + k + 2, true),
                None => (Kind::Comment, b.len(), false),
            },
            _ if c.is_ascii_whitespace() => {
                i += 1;
                continue;
            }
            _ if is_word_byte(c) => {
                let end = b[i..].iter().position(|&x| !is_word_byte(x)).map_or(b.len(), |k| i + k);
                (Kind::Word, end, true)
            }
            _ => (Kind::Symbol(c as char), i + 1, true),
        };
        tokens.push(Token { kind, start: i, end, closed });
        i = end;
    }
    tokens
}

/// Letters, digits, `_` and every byte of a non-ASCII character (so a word
/// never ends inside a character).
fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
}

/// Splits `text` at every `;` outside quotes and comments into the complete
/// statements (trimmed, without the `;`; those with nothing but comments
/// are dropped) and the unfinished rest after the last `;`.
pub(crate) fn split(text: &str) -> (Vec<&str>, &str) {
    let mut statements = Vec::new();
    let (mut from, mut code) = (0, false);
    for t in lex(text) {
        match t.kind {
            Kind::Symbol(';') => {
                if code {
                    statements.push(text[from..t.start].trim());
                }
                (from, code) = (t.end, false);
            }
            Kind::Comment => {}
            _ => code = true,
        }
    }
    (statements, &text[from..])
}

/// Whether `text` holds nothing but whitespace and finished comments.
pub(super) fn is_blank(text: &str) -> bool {
    lex(text).iter().all(|t| t.kind == Kind::Comment && t.closed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_end_at_semicolons_outside_quotes_and_comments() {
        assert_eq!(split("SELECT 1; SELECT 2;"), (vec!["SELECT 1", "SELECT 2"], ""));
        assert_eq!(split("SELECT 'a;b' AS s; SELECT"), (vec!["SELECT 'a;b' AS s"], " SELECT"));
        assert_eq!(split("SELECT 'it''s;' ;"), (vec!["SELECT 'it''s;'"], ""));
        assert_eq!(split("SELECT \"a;b\" FROM t;"), (vec!["SELECT \"a;b\" FROM t"], ""));
        assert_eq!(split("SELECT 1 -- no; end\n, 2;"), (vec!["SELECT 1 -- no; end\n, 2"], ""));
        assert_eq!(split("SELECT /* ; */ 1;\n"), (vec!["SELECT /* ; */ 1"], "\n"));
        assert_eq!(split("SELECT\n  1\n"), (vec![], "SELECT\n  1\n"));
        // A quote or comment still open swallows the `;`.
        assert_eq!(split("SELECT 'a;\n"), (vec![], "SELECT 'a;\n"));
        assert_eq!(split("SELECT /* a;\n"), (vec![], "SELECT /* a;\n"));
        // Empty statements and comment-only ones are dropped.
        assert_eq!(split(";; -- c\n;SELECT 1;"), (vec!["SELECT 1"], ""));
        assert_eq!(split("SELECT 'é;' , \"ü\";x"), (vec!["SELECT 'é;' , \"ü\""], "x"));
    }

    #[test]
    fn blank_input_is_whitespace_and_finished_comments() {
        assert!(is_blank(""));
        assert!(is_blank("  -- note\n /* c */\n"));
        assert!(!is_blank("/* open\n"));
        assert!(!is_blank("SELECT"));
    }
}
