//! A tag as the catalog expands it: its name, family, rule text and value,
//! where it came from and how it is computed.
//!
//! Its own module because both the evaluation ([`crate::evaluate`]) and
//! the exclusive-family rules (`exclusive`) read it, and the
//! evaluation uses those rules.

/// A tag after expansion, with how it is computed.
#[derive(Debug, Clone)]
pub struct TagDef {
    /// Tag name.
    pub name: String,
    /// Family.
    pub family: String,
    /// Description.
    pub description: String,
    /// The rule text or a description of how the tag is derived.
    pub rule: String,
    /// The tag's value in its family's column when the family is
    /// exclusive (`gold` for `tier_gold`; see [`crate::exclusive`]).
    pub value: Option<String>,
    pub(crate) origin: Origin,
    pub(crate) kind: Kind,
}

/// How a tag is computed.
#[derive(Debug, Clone)]
pub(crate) enum Kind {
    Rule,
    Partition,
    Score { score: usize, bucket: u32 },
    Band { rank: usize, band: usize },
    Lookup { lookup: usize, label: String },
}

/// Where a tag came from, as far as exclusivity is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A `[[tag]]` entry and whether it says `exclusive = true`.
    Tag { exclusive: bool },
    /// A `[[family]]` expansion (rule templates may overlap).
    Family,
    /// An entry whose tags are disjoint: its kind and index.
    Entry { kind: &'static str, index: usize },
}

#[cfg(test)]
impl TagDef {
    /// A rule tag with the given exclusivity facts (for unit tests).
    pub(crate) fn for_test(name: &str, family: &str, value: Option<&str>, origin: Origin) -> TagDef {
        TagDef {
            name: name.into(),
            family: family.into(),
            description: String::new(),
            rule: String::new(),
            value: value.map(Into::into),
            origin,
            kind: Kind::Rule,
        }
    }
}
