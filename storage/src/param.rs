//! Messages about the parameters of a library call, worded without the
//! command-line flags a program maps them to.
//!
//! A library knows its parameters (`holdout_share`, `query_memory`), not
//! the flags of the program that calls it (`--holdout`,
//! `--query-memory`). A [`ParamMessage`] keeps the parameters it names
//! apart from its text: shown as an error it names them `like_this`, and a
//! program re-renders it with its own names ([`ParamMessage::render`]).
//! Error types carry one as the `#[source]` of a variant whose text is the
//! message's, so a program finds it in any error chain.

use std::fmt;

/// A message naming one or more parameters (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamMessage {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Param(&'static str),
}

impl ParamMessage {
    /// A message that starts with the parameter `name`.
    pub fn param(name: &'static str) -> ParamMessage {
        ParamMessage { parts: vec![Part::Param(name)] }
    }

    /// A message that starts with `text`.
    pub fn text(text: impl Into<String>) -> ParamMessage {
        ParamMessage { parts: vec![Part::Text(text.into())] }
    }

    /// The message followed by the parameter `name`.
    pub fn then_param(mut self, name: &'static str) -> ParamMessage {
        self.parts.push(Part::Param(name));
        self
    }

    /// The message followed by `text`.
    pub fn then_text(mut self, text: impl Into<String>) -> ParamMessage {
        self.parts.push(Part::Text(text.into()));
        self
    }

    /// The message followed by another one.
    pub fn then(mut self, more: ParamMessage) -> ParamMessage {
        self.parts.extend(more.parts);
        self
    }

    /// The first parameter the message names: the one at fault.
    pub fn parameter(&self) -> Option<&'static str> {
        self.parts.iter().find_map(|p| match p {
            Part::Param(name) => Some(*name),
            Part::Text(_) => None,
        })
    }

    /// The message with every parameter written as `name(parameter)`.
    pub fn render(&self, name: impl Fn(&'static str) -> String) -> String {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.clone(),
                Part::Param(p) => name(p),
            })
            .collect()
    }
}

impl From<String> for ParamMessage {
    /// A message that names no parameter (yet).
    fn from(text: String) -> ParamMessage {
        ParamMessage::text(text)
    }
}

impl From<&str> for ParamMessage {
    /// A message that names no parameter (yet).
    fn from(text: &str) -> ParamMessage {
        ParamMessage::text(text)
    }
}

impl fmt::Display for ParamMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(|p| format!("`{p}`")))
    }
}

impl std::error::Error for ParamMessage {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_named_by_whoever_renders_them() {
        let m = ParamMessage::param("query_memory")
            .then_text(" '1' is below ")
            .then_param("connection_memory")
            .then(ParamMessage::text(", see ").then_param("help"));
        assert_eq!(m.to_string(), "`query_memory` '1' is below `connection_memory`, see `help`");
        let flags = m.render(|p| format!("--{}", p.replace('_', "-")));
        assert_eq!(flags, "--query-memory '1' is below --connection-memory, see --help");
        assert_eq!(m.parameter(), Some("query_memory"));
        assert_eq!(ParamMessage::text("no parameter").parameter(), None);
    }
}
