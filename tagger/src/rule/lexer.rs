//! Splits rule text into tokens, one at a time.
//!
//! The parser pulls tokens on demand (rather than lexing everything first)
//! so that the first error reported is the first one in the text: a stray
//! `)` early in a rule is reported before an unterminated quote later on.

use super::{RuleError, Span};

/// Keywords (matched case-insensitively).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kw {
    And,
    Or,
    Not,
    Between,
    In,
    Is,
    Null,
    True,
    False,
}

/// Punctuation and operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sym {
    LParen,
    RParen,
    Comma,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    Num(f64),
    Text(String),
    /// A name as written (identifier or function name).
    Word(String),
    Kw(Kw),
    Sym(Sym),
    End,
}

#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub tok: Tok,
    pub span: Span,
}

pub(crate) struct Lexer<'a> {
    src: &'a str,
    /// Byte offset of the next unread character.
    at: usize,
    /// 1-based character position of `at`.
    pos: usize,
}

impl<'a> Lexer<'a> {
    pub fn new(src: &'a str) -> Self {
        Lexer { src, at: 0, pos: 1 }
    }

    /// The rule text of a token, for "found `…`" messages.
    pub fn text(&self, t: &Token) -> &'a str {
        &self.src[t.span.start..t.span.end]
    }

    fn peek(&self) -> Option<char> {
        self.src[self.at..].chars().next()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.src[self.at..].chars().nth(n)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.at += c.len_utf8();
        self.pos += 1;
        Some(c)
    }

    fn span_from(&self, start: usize, pos: usize) -> Span {
        Span { start, end: self.at, pos }
    }

    pub fn next_token(&mut self) -> Result<Token, RuleError> {
        while self.peek().is_some_and(char::is_whitespace) {
            self.bump();
        }
        let (start, pos) = (self.at, self.pos);
        let here = Span { start, end: start, pos };
        let Some(c) = self.bump() else {
            return Ok(Token { tok: Tok::End, span: here });
        };
        let sym = |lx: &mut Self, s: Sym| Ok(Token { tok: Tok::Sym(s), span: lx.span_from(start, pos) });
        match c {
            '(' => sym(self, Sym::LParen),
            ')' => sym(self, Sym::RParen),
            ',' => sym(self, Sym::Comma),
            '+' => sym(self, Sym::Plus),
            '-' => sym(self, Sym::Minus),
            '*' => sym(self, Sym::Star),
            '/' => sym(self, Sym::Slash),
            '%' => sym(self, Sym::Percent),
            '=' => {
                if self.peek() == Some('=') {
                    self.bump();
                }
                sym(self, Sym::Eq)
            }
            '!' if self.peek() == Some('=') => {
                self.bump();
                sym(self, Sym::Ne)
            }
            '<' => match self.peek() {
                Some('=') => {
                    self.bump();
                    sym(self, Sym::Le)
                }
                Some('>') => {
                    self.bump();
                    sym(self, Sym::Ne)
                }
                _ => sym(self, Sym::Lt),
            },
            '>' => {
                if self.peek() == Some('=') {
                    self.bump();
                    sym(self, Sym::Ge)
                } else {
                    sym(self, Sym::Gt)
                }
            }
            '\'' => self.text_literal(start, pos),
            '0'..='9' => self.number(start, pos),
            c if c.is_ascii_alphabetic() || c == '_' => {
                while self.peek().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                    self.bump();
                }
                let word = &self.src[start..self.at];
                let tok = match keyword(word) {
                    Some(kw) => Tok::Kw(kw),
                    None => Tok::Word(word.to_string()),
                };
                Ok(Token { tok, span: self.span_from(start, pos) })
            }
            _ => {
                let hint = match c {
                    '"' => "; text is written in single quotes, like 'S0042'",
                    '!' => "; write `not` or `!=`",
                    '&' => "; write `and`",
                    '|' => "; write `or`",
                    _ => "",
                };
                Err(RuleError::new(here, format!("unexpected character `{c}`{hint}")))
            }
        }
    }

    /// A text literal; the opening quote is consumed. `''` is a quote.
    fn text_literal(&mut self, start: usize, pos: usize) -> Result<Token, RuleError> {
        let mut value = String::new();
        loop {
            match self.bump() {
                None => {
                    return Err(RuleError::new(Span { start, end: start + 1, pos }, "unterminated text literal"));
                }
                Some('\'') if self.peek() == Some('\'') => {
                    self.bump();
                    value.push('\'');
                }
                Some('\'') => break,
                Some(c) => value.push(c),
            }
        }
        Ok(Token { tok: Tok::Text(value), span: self.span_from(start, pos) })
    }

    /// A number: `123`, `1_000`, `1.5`, `1e3`, `2.5E-3`. The first digit is consumed.
    fn number(&mut self, start: usize, pos: usize) -> Result<Token, RuleError> {
        let digits = |lx: &mut Self| {
            while lx.peek().is_some_and(|c| c.is_ascii_digit() || c == '_') {
                lx.bump();
            }
        };
        digits(self);
        if self.peek() == Some('.') && self.peek_at(1).is_some_and(|c| c.is_ascii_digit()) {
            self.bump();
            digits(self);
        }
        if matches!(self.peek(), Some('e' | 'E')) {
            let sign = matches!(self.peek_at(1), Some('+' | '-')) as usize;
            if self.peek_at(1 + sign).is_some_and(|c| c.is_ascii_digit()) {
                for _ in 0..=sign {
                    self.bump();
                }
                digits(self);
            }
        }
        let bad = |lx: &Self, what: &str| {
            let end = lx.src[start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.')))
                .map_or(lx.src.len(), |n| start + n);
            RuleError::new(Span { start, end, pos }, format!("{what} `{}`", &lx.src[start..end]))
        };
        if self.peek().is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.')) {
            return Err(bad(self, "invalid number"));
        }
        let raw = &self.src[start..self.at];
        let bytes = raw.as_bytes();
        let misplaced = bytes.iter().enumerate().any(|(i, &b)| {
            b == b'_' && !(i > 0 && bytes[i - 1].is_ascii_digit() && bytes.get(i + 1).is_some_and(u8::is_ascii_digit))
        });
        if misplaced {
            return Err(bad(self, "misplaced `_` in number"));
        }
        let value: f64 = raw.replace('_', "").parse().map_err(|_| bad(self, "invalid number"))?;
        if !value.is_finite() {
            return Err(bad(self, "number too large:"));
        }
        Ok(Token { tok: Tok::Num(value), span: self.span_from(start, pos) })
    }
}

fn keyword(word: &str) -> Option<Kw> {
    const KEYWORDS: [(&str, Kw); 9] = [
        ("and", Kw::And),
        ("or", Kw::Or),
        ("not", Kw::Not),
        ("between", Kw::Between),
        ("in", Kw::In),
        ("is", Kw::Is),
        ("null", Kw::Null),
        ("true", Kw::True),
        ("false", Kw::False),
    ];
    KEYWORDS.iter().find(|(k, _)| k.eq_ignore_ascii_case(word)).map(|&(_, kw)| kw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(src: &str) -> Vec<Tok> {
        let mut lx = Lexer::new(src);
        let mut out = Vec::new();
        loop {
            let t = lx.next_token().unwrap();
            if t.tok == Tok::End {
                return out;
            }
            out.push(t.tok);
        }
    }

    fn err(src: &str) -> RuleError {
        let mut lx = Lexer::new(src);
        loop {
            match lx.next_token() {
                Err(e) => return e,
                Ok(t) if t.tok == Tok::End => panic!("`{src}` lexed without error"),
                Ok(_) => {}
            }
        }
    }

    #[test]
    fn numbers_in_every_written_form() {
        assert_eq!(
            toks("123 1.5 1e3 1_000 2.5E-3 1e+2 0.000_1"),
            [123.0, 1.5, 1000.0, 1000.0, 0.0025, 100.0, 0.0001].map(Tok::Num)
        );
    }

    #[test]
    fn operators_and_their_spellings() {
        use Sym::*;
        assert_eq!(
            toks("= == != <> < <= > >= + - * / % ( ) ,"),
            [Eq, Eq, Ne, Ne, Lt, Le, Gt, Ge, Plus, Minus, Star, Slash, Percent, LParen, RParen, Comma].map(Tok::Sym)
        );
        assert_eq!(toks("a>=1"), [Tok::Word("a".into()), Tok::Sym(Ge), Tok::Num(1.0)]);
    }

    #[test]
    fn keywords_ignore_case_names_do_not() {
        assert_eq!(
            toks("AND Or nOt BETWEEN in IS Null TRUE false Orders"),
            [
                Tok::Kw(Kw::And),
                Tok::Kw(Kw::Or),
                Tok::Kw(Kw::Not),
                Tok::Kw(Kw::Between),
                Tok::Kw(Kw::In),
                Tok::Kw(Kw::Is),
                Tok::Kw(Kw::Null),
                Tok::Kw(Kw::True),
                Tok::Kw(Kw::False),
                Tok::Word("Orders".into()),
            ]
        );
    }

    #[test]
    fn text_uses_sql_quoting() {
        assert_eq!(toks("'it''s' '' 'Zürich'"), ["it's", "", "Zürich"].map(|s| Tok::Text(s.into())));
    }

    #[test]
    fn positions_count_characters_not_bytes() {
        let mut lx = Lexer::new("'Zürich' = x");
        lx.next_token().unwrap();
        lx.next_token().unwrap();
        let x = lx.next_token().unwrap();
        assert_eq!((x.span.start, x.span.pos), (12, 12));
        assert_eq!(err("'ü' = \"x\"").pos, 7);
    }

    #[test]
    fn bad_input_is_named() {
        let cases = [
            ("x = 'S0042", 5, "unterminated text literal"),
            ("x = \"a\"", 5, "unexpected character `\"`; text is written in single quotes, like 'S0042'"),
            ("a && b", 3, "unexpected character `&`; write `and`"),
            ("!a", 1, "unexpected character `!`; write `not` or `!=`"),
            ("x > 3abc", 5, "invalid number `3abc`"),
            ("x > 1.2.3", 5, "invalid number `1.2.3`"),
            ("x > 1__000", 5, "misplaced `_` in number `1__000`"),
            ("x > 1_", 5, "misplaced `_` in number `1_`"),
            ("x > 1e999", 5, "number too large: `1e999`"),
            ("x # 1", 3, "unexpected character `#`"),
        ];
        for (src, pos, message) in cases {
            assert_eq!(err(src), RuleError { pos, message: message.into() }, "{src}");
        }
    }
}
