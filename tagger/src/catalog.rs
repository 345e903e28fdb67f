//! The declarative tag catalog (TOML).
//!
//! A catalog declares tags; it never contains code. Five kinds of entries:
//!
//! - `[[tag]]` — one tag with a rule over features, scores and earlier tags;
//! - `[[family]]` — a rule template expanded once per value of the data
//!   (`category_lover_{value}` → one tag per category); `{value}` becomes the
//!   value's slug, `{raw}` the value itself;
//! - `[[partition]]` — one tag per value of a feature, each member in the tag
//!   of its own value (`home_store_{value}`, `birthday_month_{value}`),
//!   evaluated in one pass however many values there are;
//! - `[[score]]` — a quantile score (1..=buckets) of a feature over a base;
//!   it defines a variable for later rules (`rfm_r`) and one tag per score;
//! - `[[rank]]` — members of a base ranked by a feature and cut into bands
//!   by rank (`value_core` = top 20 %);
//! - `[[lookup]]` — one tag per cell label of a grid indexed by two scores
//!   (the classic RFM segments).
//!
//! The built-in default catalog (`catalog/default.toml`) documents every tag
//! it declares. A user's catalog file is added to it (or replaces it with
//! `replace_default = true`); a tag declared twice is an error.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::{Error, Result};

/// The built-in catalog text.
pub const DEFAULT_CATALOG: &str = include_str!("../catalog/default.toml");

/// Name under which errors report the built-in catalog.
pub const DEFAULT_SOURCE: &str = "built-in default";

/// A parsed (not yet expanded) catalog.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogFile {
    /// Catalog-wide settings.
    #[serde(default)]
    pub settings: Option<Settings>,
    /// A user catalog sets this to start from nothing instead of the default.
    #[serde(default)]
    pub replace_default: bool,
    /// Single tags.
    #[serde(default)]
    pub tag: Vec<TagEntry>,
    /// Rule templates expanded per value.
    #[serde(default)]
    pub family: Vec<FamilyEntry>,
    /// One tag per value of a feature.
    #[serde(default)]
    pub partition: Vec<PartitionEntry>,
    /// Quantile scores.
    #[serde(default)]
    pub score: Vec<ScoreEntry>,
    /// Rank bands.
    #[serde(default)]
    pub rank: Vec<RankEntry>,
    /// Two-score grids.
    #[serde(default)]
    pub lookup: Vec<LookupEntry>,
}

/// Catalog-wide settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Growth points per currency unit spent in the last 365 days (default 10).
    #[serde(default)]
    pub growth_per_unit: Option<f64>,
    /// Most values a `[[family]]` or `[[partition]]` expands over from the
    /// data (default [`DEFAULT_MAX_FAMILY_VALUES`]); an entry's own
    /// `max_values` overrides it. A family over more values is skipped with
    /// a warning, and the run goes on.
    #[serde(default)]
    pub max_family_values: Option<usize>,
}

/// How many values of the data a family expands over unless the catalog
/// says otherwise: a free-text column mapped to `category` or `city` would
/// otherwise make a tag (and, for categories, per-member accumulators) for
/// every distinct text.
pub const DEFAULT_MAX_FAMILY_VALUES: usize = 1_000;

/// `[[tag]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagEntry {
    /// Tag name (a SQL identifier).
    pub name: String,
    /// Family the tag belongs to.
    pub family: String,
    /// What the tag means, for people.
    pub description: String,
    /// The rule.
    pub rule: String,
    /// The tags of this family never share a member (checked at tag time):
    /// SQL shows the family as one text column of `members`. Set on all of
    /// the family's `[[tag]]` entries or on none.
    #[serde(default)]
    pub exclusive: bool,
}

/// Where a family's or partition's values come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Values {
    /// A dictionary of the data: `categories`, `channels`, `stores`,
    /// `genders`, `cities` or `register_channels`.
    Data(String),
    /// An explicit list of text values.
    Text(Vec<String>),
    /// An explicit list of whole numbers.
    Numbers(Vec<i64>),
}

/// `[[family]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FamilyEntry {
    /// Name template with `{value}`.
    pub name: String,
    /// Family of the expanded tags.
    pub family: String,
    /// Description template (`{raw}` / `{value}`).
    pub description: String,
    /// The values to expand over.
    pub values: Values,
    /// Rule template (`{value}` = slug, `{raw}` = the value).
    pub rule: String,
    /// Most values of the data this family expands over (default: the
    /// catalog's `max_family_values`).
    #[serde(default)]
    pub max_values: Option<usize>,
}

/// `[[partition]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionEntry {
    /// Name template with `{value}`.
    pub name: String,
    /// Family of the expanded tags.
    pub family: String,
    /// Description template (`{raw}` / `{value}`).
    pub description: String,
    /// The text or whole-number feature whose value picks the tag.
    pub feature: String,
    /// The values that get a tag (text features: default all values of the data).
    #[serde(default)]
    pub values: Option<Values>,
    /// Most values of the data this partition expands over (default: the
    /// catalog's `max_family_values`).
    #[serde(default)]
    pub max_values: Option<usize>,
}

/// Which end of a score or rank is the best.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    /// Higher values score higher / rank first.
    Higher,
    /// Lower values score higher / rank first.
    Lower,
}

/// `[[score]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreEntry {
    /// Variable name; tags are `{name}_1` … `{name}_{buckets}`.
    pub name: String,
    /// Family of the score tags.
    pub family: String,
    /// Description template (`{value}` = the score).
    pub description: String,
    /// The numeric feature scored.
    pub feature: String,
    /// Number of quantile buckets (default 5).
    #[serde(default = "five")]
    pub buckets: u32,
    /// Which end scores `buckets`.
    pub better: Better,
    /// Who is scored (a rule); others have no score.
    pub among: String,
}

fn five() -> u32 {
    5
}

/// One band of a `[[rank]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Band {
    /// Tag name.
    pub name: String,
    /// The band ends at this percentage of the ranked base (cumulative).
    pub up_to_percent: f64,
    /// What the band means.
    pub description: String,
}

/// `[[rank]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RankEntry {
    /// Family of the band tags.
    pub family: String,
    /// The numeric feature ranked.
    pub by: String,
    /// Which end ranks first.
    pub better: Better,
    /// Who is ranked (a rule).
    pub among: String,
    /// Bands from the best; the last must end at 100.
    pub bands: Vec<Band>,
}

/// `[[lookup]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupEntry {
    /// Family of the tags.
    pub family: String,
    /// Score selecting the grid row (row 1 first).
    pub rows: String,
    /// Score selecting the grid column (column 1 first).
    pub columns: String,
    /// Labels; tag name = prefix + label.
    pub grid: Vec<Vec<String>>,
    /// Tag name prefix.
    #[serde(default)]
    pub prefix: String,
    /// Description per label.
    pub descriptions: BTreeMap<String, String>,
}

impl CatalogFile {
    /// Parses catalog text; `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<CatalogFile> {
        let file: CatalogFile =
            toml::from_str(text).map_err(|e| Error::Catalog { source_name: source.into(), message: e.to_string() })?;
        file.check(source)?;
        Ok(file)
    }

    /// The built-in catalog.
    pub fn default_catalog() -> CatalogFile {
        CatalogFile::parse(DEFAULT_CATALOG, DEFAULT_SOURCE).expect("the built-in catalog is valid")
    }

    /// The default catalog with a user's catalog added (or only the
    /// user's, when it says `replace_default = true`).
    pub fn with_user(user: Option<(&str, &str)>) -> Result<(CatalogFile, String)> {
        let Some((text, source)) = user else { return Ok((CatalogFile::default_catalog(), DEFAULT_SOURCE.into())) };
        let user = CatalogFile::parse(text, source)?;
        if user.replace_default {
            return Ok((user, source.into()));
        }
        let mut all = CatalogFile::default_catalog();
        if user.settings.is_some() {
            all.settings = user.settings;
        }
        all.tag.extend(user.tag);
        all.family.extend(user.family);
        all.partition.extend(user.partition);
        all.score.extend(user.score);
        all.rank.extend(user.rank);
        all.lookup.extend(user.lookup);
        Ok((all, format!("{source} (with the built-in default)")))
    }

    /// Growth points per currency unit.
    pub fn growth_per_unit(&self) -> f64 {
        self.settings.as_ref().and_then(|s| s.growth_per_unit).unwrap_or(10.0)
    }

    /// Most values of the data a family expands over, unless it says otherwise.
    pub fn max_family_values(&self) -> usize {
        self.settings.as_ref().and_then(|s| s.max_family_values).unwrap_or(DEFAULT_MAX_FAMILY_VALUES)
    }

    /// Sets [`CatalogFile::max_family_values`] (a command-line override); at least 1.
    pub fn set_max_family_values(&mut self, n: usize) -> Result<()> {
        if n == 0 {
            return Err(Error::Parameter(
                taglake_storage::ParamMessage::text("tag catalog ")
                    .then_param("max_family_values")
                    .then_text(": a family needs at least 1 value"),
            ));
        }
        self.settings.get_or_insert_with(Settings::default).max_family_values = Some(n);
        Ok(())
    }

    /// Checks what can be checked without data: names, templates, bands, grids.
    fn check(&self, source: &str) -> Result<()> {
        let err = |message: String| Error::Catalog { source_name: source.into(), message };
        for t in &self.tag {
            check_name(&t.name).map_err(|m| err(format!("[[tag]] `{}`: {m}", t.name)))?;
        }
        let caps = self.settings.iter().map(|s| ("[settings] max_family_values".to_string(), s.max_family_values));
        let caps = caps
            .chain(self.family.iter().map(|f| (format!("[[family]] `{}`: max_values", f.name), f.max_values)))
            .chain(self.partition.iter().map(|p| (format!("[[partition]] `{}`: max_values", p.name), p.max_values)));
        for (owner, cap) in caps {
            if cap == Some(0) {
                return Err(err(format!("{owner} must be at least 1")));
            }
        }
        for f in &self.family {
            if !f.name.contains("{value}") {
                return Err(err(format!("[[family]] `{}`: the name must contain `{{value}}`", f.name)));
            }
            check_name(&f.name.replace("{value}", "x")).map_err(|m| err(format!("[[family]] `{}`: {m}", f.name)))?;
        }
        for p in &self.partition {
            if !p.name.contains("{value}") {
                return Err(err(format!("[[partition]] `{}`: the name must contain `{{value}}`", p.name)));
            }
        }
        for s in &self.score {
            check_name(&s.name).map_err(|m| err(format!("[[score]] `{}`: {m}", s.name)))?;
            if !(2..=100).contains(&s.buckets) {
                return Err(err(format!("[[score]] `{}`: buckets must be 2 to 100, not {}", s.name, s.buckets)));
            }
        }
        for r in &self.rank {
            let mut last = 0.0;
            for b in &r.bands {
                check_name(&b.name).map_err(|m| err(format!("[[rank]] band `{}`: {m}", b.name)))?;
                if !(b.up_to_percent > last && b.up_to_percent <= 100.0) {
                    return Err(err(format!(
                        "[[rank]] by `{}`: band `{}` ends at {} %, which must be above the previous band's {last} % and at most 100",
                        r.by, b.name, b.up_to_percent
                    )));
                }
                last = b.up_to_percent;
            }
            if last != 100.0 {
                return Err(err(format!("[[rank]] by `{}`: the last band must end at 100 %, not {last} %", r.by)));
            }
        }
        for l in &self.lookup {
            if l.grid.is_empty() || l.grid.iter().any(|row| row.len() != l.grid[0].len()) {
                return Err(err(format!(
                    "[[lookup]] `{}`: the grid must be a rectangle (rows of equal length)",
                    l.family
                )));
            }
            for label in l.grid.iter().flatten() {
                check_name(&format!("{}{label}", l.prefix))
                    .map_err(|m| err(format!("[[lookup]] `{}`: label `{label}`: {m}", l.family)))?;
                if !l.descriptions.contains_key(label) {
                    return Err(err(format!(
                        "[[lookup]] `{}`: label `{label}` has no entry in `descriptions`",
                        l.family
                    )));
                }
            }
        }
        Ok(())
    }
}

/// A tag name must be a lowercase SQL identifier.
pub fn check_name(name: &str) -> std::result::Result<(), String> {
    let mut chars = name.chars();
    let ok_first = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    if !ok_first || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
        return Err(format!(
            "`{name}` is not a valid tag name: use lowercase letters, digits and `_`, starting with a letter"
        ));
    }
    Ok(())
}

/// Substitutes `{value}` (slug) and `{raw}` (the value, quotes doubled
/// for use inside a rule's text literal).
pub fn substitute(template: &str, slug: &str, raw: &str) -> String {
    template.replace("{value}", slug).replace("{raw}", &raw.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn default_catalog_parses() {
        let c = CatalogFile::default_catalog();
        assert!(c.tag.len() > 20);
    }

    #[test]
    fn unknown_key_names_the_key_and_line() {
        let err =
            CatalogFile::parse("[[tag]]\nname = \"a\"\nfamily = \"f\"\ndescription = \"d\"\nrul = \"x\"\n", "t.toml")
                .unwrap_err()
                .to_string();
        assert!(err.contains("t.toml"), "{err}");
        assert!(err.contains("unknown field `rul`"), "{err}");
        assert!(err.contains("line 5"), "{err}");
    }

    #[test]
    fn bad_names_and_bands_are_named() {
        let err = CatalogFile::parse(
            "[[tag]]\nname = \"Tier Gold\"\nfamily = \"f\"\ndescription = \"d\"\nrule = \"x\"\n",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("`Tier Gold` is not a valid tag name"), "{err}");
        let bands = r#"[[rank]]
family = "value"
by = "spend_365d"
better = "higher"
among = "orders_total > 0"
bands = [{ name = "a", up_to_percent = 50, description = "" }, { name = "b", up_to_percent = 40, description = "" }]
"#;
        let err = CatalogFile::parse(bands, "t").unwrap_err().to_string();
        assert!(err.contains("band `b` ends at 40 %"), "{err}");
        let fam = "[[family]]\nname = \"lover\"\nfamily = \"f\"\ndescription = \"d\"\nvalues = \"categories\"\nrule = \"x\"\n";
        let err = CatalogFile::parse(fam, "t").unwrap_err().to_string();
        assert!(err.contains("must contain `{value}`"), "{err}");
    }

    #[test]
    fn family_value_caps_default_and_are_checked() {
        assert_eq!(CatalogFile::default_catalog().max_family_values(), DEFAULT_MAX_FAMILY_VALUES);
        let c = CatalogFile::parse("[settings]\nmax_family_values = 50\n", "t").unwrap();
        assert_eq!(c.max_family_values(), 50);
        for zero in [
            "[settings]\nmax_family_values = 0\n",
            "[[family]]\nname = \"f_{value}\"\nfamily = \"f\"\ndescription = \"d\"\nvalues = \"cities\"\nrule = \"x\"\nmax_values = 0\n",
        ] {
            let err = CatalogFile::parse(zero, "t").unwrap_err().to_string();
            assert!(err.contains("must be at least 1"), "{err}");
        }
        let mut c = CatalogFile::default_catalog();
        c.set_max_family_values(7).unwrap();
        assert_eq!(c.max_family_values(), 7);
        assert!(c.set_max_family_values(0).is_err());
    }

    #[test]
    fn substitute_quotes_raw_values() {
        assert_eq!(
            substitute("home_store = '{raw}' -- {value}", "o_brien", "O'Brien"),
            "home_store = 'O''Brien' -- o_brien"
        );
    }

    /// The built-in catalog cut into its entries (`[settings]`, each
    /// `[[tag]]`, `[[family]]`, … with the tables that belong to it).
    fn default_entries() -> Vec<String> {
        let mut entries: Vec<String> = Vec::new();
        for line in DEFAULT_CATALOG.lines() {
            if line.starts_with("[[") || line.starts_with("[settings]") || entries.is_empty() {
                entries.push(String::new());
            }
            let last = entries.last_mut().expect("pushed above");
            last.push_str(line);
            last.push('\n');
        }
        entries
    }

    /// Catalog texts a fuzzer would write: entries of the built-in catalog,
    /// chosen, reordered and repeated, with values swapped for absurd ones
    /// (huge or negative numbers, empty names, templates, rule soup, arrays
    /// where a number belongs) and lines dropped or doubled.
    fn catalog_text() -> impl Strategy<Value = String> {
        use proptest::sample::{Index, select};
        let value = select(vec![
            "0",
            "-1",
            "1",
            "7",
            "100",
            "101",
            "1e308",
            "-1e308",
            "nan",
            "inf",
            "4294967296",
            "18446744073709551615",
            "1000000000",
            "0.5",
            "true",
            "\"\"",
            "\"x\"",
            "\"{value}\"",
            "\"{raw}\"",
            "\"a_{value}_{value}\"",
            "\"'\"",
            "\"tier_gold\"",
            "\"not not not (\"",
            "\"orders_total > 0 or\"",
            "\"growth_value / 0 > 1\"",
            "\"categories\"",
            "\"cities\"",
            "\"nowhere\"",
            "\"higher\"",
            "\"lower\"",
            "[]",
            "[1, 2]",
            "[\"a\"]",
            "[{ name = \"a\", up_to_percent = 200, description = \"\" }]",
            "[{ name = \"a\", up_to_percent = 50, description = \"\" }, { name = \"a\", up_to_percent = 100, description = \"\" }]",
            "{ a = 1 }",
        ]);
        let edit = prop_oneof![
            4 => (any::<Index>(), value).prop_map(|(at, v)| (0u8, at, v)),
            1 => any::<Index>().prop_map(|at| (1u8, at, "")),
            1 => any::<Index>().prop_map(|at| (2u8, at, "")),
        ];
        let entry = (any::<Index>(), prop::collection::vec(edit, 0..3)).prop_map(|(pick, edits)| {
            let entries = default_entries();
            let mut lines: Vec<String> = entries[pick.index(entries.len())].lines().map(str::to_string).collect();
            for (kind, at, v) in edits {
                let i = at.index(lines.len());
                match kind {
                    0 => {
                        if let Some((key, _)) = lines[i].split_once('=') {
                            lines[i] = format!("{key}= {v}");
                        }
                    }
                    1 => {
                        lines.remove(i);
                    }
                    _ => {
                        let line = lines[i].clone();
                        lines.insert(i, line);
                    }
                }
                if lines.is_empty() {
                    break;
                }
            }
            lines.join("\n") + "\n"
        });
        (any::<bool>(), prop::collection::vec(entry, 0..12)).prop_map(|(replace, entries)| {
            let head = if replace { "replace_default = true\n" } else { "" };
            format!("{head}{}", entries.concat())
        })
    }

    /// The stable driver of the `catalog` fuzz target (`fuzz/`): any
    /// catalog text loads (with the built-in one, or alone) or fails with
    /// an error that names where; a catalog that loads expands and compiles
    /// against data or fails with an error, never a panic, an overflow or
    /// an allocation the size of a number in the file. Runs
    /// `TAGLAKE_FUZZ_SECONDS` (default 20): `cargo test --workspace --lib
    /// catalog::tests::any_catalog_loads_or_fails_cleanly -- --ignored --nocapture`.
    #[test]
    #[ignore = "long: run with --ignored (see the README's fuzzing section)"]
    fn any_catalog_loads_or_fails_cleanly() {
        use crate::evaluate::Compiled;
        use crate::features::{FeatureSet, Globals};
        let list = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let globals = Globals {
            members: 100,
            as_of: "2026-11-01".parse().expect("a date"),
            categories: list(&["beauty", "snacks", "toys", "IP series", "O'Brien"]),
            channels: list(&["app", "store"]),
            stores: list(&["S0001", "S0002", "S'3"]),
            genders: list(&["f", "m"]),
            cities: list(&["Lyon", "Shanghai"]),
            register_channels: list(&["app"]),
        };
        let counts = std::cell::Cell::new((0u64, 0u64, 0u64));
        taglake_storage::fuzzing::run_for("catalog", &catalog_text(), 64, |text| {
            let (mut refused, mut rejected, mut compiled) = counts.get();
            match CatalogFile::with_user(Some((&text, "fuzz.toml"))) {
                Err(e) => {
                    refused += 1;
                    let shown = e.to_string();
                    prop_assert!(shown.contains("fuzz.toml") || shown.contains(DEFAULT_SOURCE), "{}", shown);
                }
                Ok((catalog, source)) => {
                    let fs = FeatureSet::for_globals(&globals, catalog.growth_per_unit());
                    match Compiled::new(&catalog, &source, &fs) {
                        Ok(_) => compiled += 1,
                        Err(e) => {
                            rejected += 1;
                            prop_assert!(!e.to_string().trim().is_empty());
                        }
                    }
                }
            }
            counts.set((refused, rejected, compiled));
            Ok(())
        });
        let (refused, rejected, compiled) = counts.get();
        eprintln!("catalog: {refused} refused when loading, {rejected} when compiling, {compiled} compiled");
    }
}
