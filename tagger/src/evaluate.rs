//! Expands the catalog against the data, compiles every rule once, and
//! evaluates all tags over chunks of members in parallel into roaring
//! bitmaps.
//!
//! Scores and rank bands need the whole base: they are computed first, as
//! cut points in a sorted order (`ntile` over `(value, member_key)`, so ties
//! are broken by key and the result is exact and deterministic). Every other
//! tag is local to a member, so each chunk of [`CHUNK`] members is evaluated
//! on its own rayon task and yields one bitmap container per tag; the
//! chunks' bitmaps cover disjoint key ranges and are merged by OR.

use std::collections::{BTreeMap, HashMap};

use chrono::Datelike;
use rayon::prelude::*;
use roaring::RoaringBitmap;

use crate::catalog::{Better, CatalogFile, Values, substitute};
use crate::features::{CHUNK, Chunk, FeatureData, FeatureKind, FeatureSet, TextKind, unique_slugs};
use crate::rule::{self, ColumnRef, Env, Program, VarType};
use crate::{Error, Result};

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
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Rule,
    Partition,
    Score { score: usize, bucket: u32 },
    Band { rank: usize, band: usize },
    Lookup { lookup: usize, label: String },
}

/// An ordered cut of the base (a score or a rank).
/// A place in a cut's order: the ordered value bits and the member key.
pub type CutStart = (u64, u32);

/// A [`CutStart`] past every member (a group that starts after the last one).
pub const CUT_END: CutStart = (u64::MAX, u32::MAX);

#[derive(Debug, Clone)]
struct Cut {
    feature: usize,
    /// Sort ascending by `sign * value`, then key.
    sign: f64,
    among: Program,
    /// Group sizes as cumulative fractions of n (scores: ntile; ranks: percents).
    groups: Groups,
    /// Filled by [`Compiled::prepare`]: the first (value, key) of groups 2.. .
    starts: Vec<(u64, u32)>,
}

#[derive(Debug, Clone)]
enum Groups {
    Ntile(u32),
    Percents(Vec<f64>),
}

#[derive(Debug, Clone)]
struct Partition {
    feature: usize,
    /// Text features: code → tag; numeric: value → tag.
    by_code: Vec<Option<usize>>,
    by_number: HashMap<i64, usize>,
}

/// The catalog compiled against one feature set.
pub struct Compiled {
    /// Every tag, in snapshot order.
    pub tags: Vec<TagDef>,
    feature_names: Vec<String>,
    constants: Vec<(String, f64)>,
    scores: Vec<(String, Cut)>,
    ranks: Vec<Cut>,
    lookups: Vec<(usize, usize, Vec<Vec<String>>)>,
    rules: Vec<(usize, Program)>,
    /// Rule indices in evaluation order.
    order: Vec<usize>,
    partitions: Vec<Partition>,
    /// Slot of each tag's mask (`None` for partition tags).
    tag_slot: Vec<Option<usize>>,
    /// Families and partitions left out because the data has more values
    /// than they may expand over, one note each (the entry, the column, the
    /// count and the cap).
    pub skipped: Vec<String>,
}

/// The names a rule can use, with their slots.
struct SlotEnv {
    names: HashMap<String, (usize, VarType)>,
    dictionaries: HashMap<usize, Vec<String>>,
    order: Vec<String>,
}

impl SlotEnv {
    fn add(&mut self, name: &str, ty: VarType) -> usize {
        let slot = self.order.len();
        self.names.insert(name.to_string(), (slot, ty));
        self.order.push(name.to_string());
        slot
    }
}

impl Env for SlotEnv {
    fn resolve(&self, name: &str) -> Option<(usize, VarType)> {
        self.names.get(name).copied()
    }
    fn dictionary(&self, slot: usize) -> &[String] {
        self.dictionaries.get(&slot).map(|v| v.as_slice()).unwrap_or(&[])
    }
    fn names(&self) -> Vec<String> {
        self.order.clone()
    }
}

fn ordered_bits(x: f64) -> u64 {
    let b = (x + 0.0).to_bits();
    if b >> 63 == 1 { !b } else { b | (1 << 63) }
}

/// The warehouse column(s) the values of a data dictionary come from.
fn data_source(name: &str) -> &'static str {
    match name {
        "categories" => "orders.category",
        "channels" => "orders.channel",
        "stores" => "orders.store_id and members.home_store_id",
        "genders" => "members.gender",
        "cities" => "members.city",
        _ => "members.register_channel",
    }
}

/// The name of a text feature's dictionary (as `values = "…"` spells it).
fn data_name(kind: TextKind) -> &'static str {
    match kind {
        TextKind::Category => "categories",
        TextKind::Channel => "channels",
        TextKind::Store => "stores",
        TextKind::Gender => "genders",
        TextKind::City => "cities",
        TextKind::RegisterChannel => "register_channels",
    }
}

/// The note for a family or partition over `values` values of `data`, more than `cap`.
fn too_many(owner: &str, data: &str, values: usize, cap: usize) -> String {
    format!(
        "{owner}: {} has {values} distinct values, more than the {cap} a family may expand over; its tags are \
         left out (an entry's `max_values` or [settings] max_family_values raise the cap)",
        data_source(data)
    )
}

fn data_values<'a>(fs: &'a FeatureSet, name: &str) -> Option<&'a [String]> {
    Some(match name {
        "categories" => &fs.categories.values,
        "channels" => &fs.channels.values,
        "stores" => &fs.stores.values,
        "genders" => &fs.genders.values,
        "cities" => &fs.cities.values,
        "register_channels" => &fs.register_channels.values,
        _ => return None,
    })
}

/// (slug, raw) pairs of a family's values.
fn expand_values(fs: &FeatureSet, values: &Values, source: &str, owner: &str) -> Result<Vec<(String, String)>> {
    match values {
        Values::Data(name) => {
            let v = data_values(fs, name).ok_or_else(|| Error::Catalog {
                source_name: source.into(),
                message: format!(
                    "{owner}: unknown values `{name}`; use categories, channels, stores, genders, cities, register_channels or a list"
                ),
            })?;
            Ok(unique_slugs(v).into_iter().zip(v.iter().cloned()).collect())
        }
        Values::Text(list) => Ok(unique_slugs(list).into_iter().zip(list.iter().cloned()).collect()),
        Values::Numbers(list) => Ok(list.iter().map(|n| (n.to_string(), n.to_string())).collect()),
    }
}

impl Compiled {
    /// Expands `catalog` over the values of `fs` and compiles every rule.
    pub fn new(catalog: &CatalogFile, source: &str, fs: &FeatureSet) -> Result<Compiled> {
        if fs.chunks() == 0 {
            return Err(Error::Data("the warehouse has no members to tag".into()));
        }
        let cat_err = |message: String| Error::Catalog { source_name: source.into(), message };
        let rule_err = |tag: &str, rule: &str, error: rule::RuleError| Error::Rule {
            source_name: source.into(),
            tag: tag.into(),
            rule: rule.into(),
            error,
        };
        // Names and kinds only: no values are computed.
        let sample = fs.chunk_columns(0, &|_| false);
        let mut env = SlotEnv { names: HashMap::new(), dictionaries: HashMap::new(), order: Vec::new() };
        let mut feature_kinds = Vec::new();
        for c in &sample.columns {
            let slot = match c.kind {
                FeatureKind::Text(t) => {
                    let s = env.add(&c.name, VarType::Text);
                    env.dictionaries.insert(s, fs.dictionary(t).values.clone());
                    s
                }
                _ => env.add(&c.name, VarType::Num),
            };
            feature_kinds.push((slot, c.kind));
        }
        let feature_names: Vec<String> = sample.columns.iter().map(|c| c.name.clone()).collect();
        let as_of = fs.as_of;
        let this_month = as_of.with_day(1).expect("day 1");
        let last_month = (this_month - chrono::Duration::days(1)).with_day(1).expect("day 1");
        let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch");
        let constants = vec![
            ("as_of_year".to_string(), as_of.year() as f64),
            ("as_of_month".to_string(), as_of.month() as f64),
            ("as_of_day_of_month".to_string(), as_of.day() as f64),
            ("this_month_start".to_string(), (this_month - epoch).num_days() as f64),
            ("last_month_start".to_string(), (last_month - epoch).num_days() as f64),
        ];
        for (name, _) in &constants {
            env.add(name, VarType::Num);
        }
        let feature_slot = |env: &SlotEnv, name: &str, owner: &str| -> Result<usize> {
            match env.resolve(name) {
                Some((slot, VarType::Num)) if slot < feature_names.len() => Ok(slot),
                _ => Err(cat_err(format!("{owner}: `{name}` is not a numeric feature"))),
            }
        };
        let compile_among = |env: &SlotEnv, text: &str, owner: &str| -> Result<Program> {
            let expr = rule::parse(text).map_err(|e| rule_err(owner, text, e))?;
            rule::compile(&expr, env).map_err(|e| rule_err(owner, text, e))
        };

        let mut tags: Vec<TagDef> = Vec::new();
        let mut scores = Vec::new();
        for s in &catalog.score {
            let owner = format!("[[score]] {}", s.name);
            let feature = feature_slot(&env, &s.feature, &owner)?;
            let among = compile_among(&env, &s.among, &owner)?;
            let sign = if s.better == Better::Higher { 1.0 } else { -1.0 };
            scores.push((
                s.name.clone(),
                Cut { feature, sign, among, groups: Groups::Ntile(s.buckets), starts: Vec::new() },
            ));
            for bucket in 1..=s.buckets {
                tags.push(TagDef {
                    name: format!("{}_{bucket}", s.name),
                    family: s.family.clone(),
                    description: substitute(&s.description, &bucket.to_string(), &bucket.to_string()),
                    rule: format!(
                        "{} = {bucket}: ntile({}) of {} ({} is better) among {}",
                        s.name,
                        s.buckets,
                        s.feature,
                        if sign > 0.0 { "higher" } else { "lower" },
                        s.among
                    ),
                    kind: Kind::Score { score: scores.len() - 1, bucket },
                });
            }
        }
        for (name, _) in &scores {
            env.add(name, VarType::Num);
        }
        let mut lookups = Vec::new();
        for l in &catalog.lookup {
            let find = |n: &str| {
                scores.iter().position(|(s, _)| s == n).ok_or_else(|| {
                    cat_err(format!("[[lookup]] {}: `{n}` is not a score declared with [[score]]", l.family))
                })
            };
            let (r, c) = (find(&l.rows)?, find(&l.columns)?);
            let mut labels: Vec<&String> = Vec::new();
            for label in l.grid.iter().flatten() {
                if !labels.contains(&label) {
                    labels.push(label);
                }
            }
            for label in labels {
                let cells: Vec<String> = l
                    .grid
                    .iter()
                    .enumerate()
                    .flat_map(|(i, row)| {
                        row.iter()
                            .enumerate()
                            .filter(|(_, v)| *v == label)
                            .map(move |(j, _)| format!("({},{})", i + 1, j + 1))
                    })
                    .collect();
                tags.push(TagDef {
                    name: format!("{}{label}", l.prefix),
                    family: l.family.clone(),
                    description: l.descriptions[label].clone(),
                    rule: format!("({}, {}) in {}", l.rows, l.columns, cells.join(" ")),
                    kind: Kind::Lookup { lookup: lookups.len(), label: label.clone() },
                });
            }
            lookups.push((r, c, l.grid.clone()));
        }
        let mut ranks = Vec::new();
        for r in &catalog.rank {
            let owner = format!("[[rank]] by {}", r.by);
            let feature = feature_slot(&env, &r.by, &owner)?;
            let among = compile_among(&env, &r.among, &owner)?;
            let sign = if r.better == Better::Higher { -1.0 } else { 1.0 };
            let mut prev = 0.0;
            for (i, b) in r.bands.iter().enumerate() {
                tags.push(TagDef {
                    name: b.name.clone(),
                    family: r.family.clone(),
                    description: b.description.clone(),
                    rule: format!(
                        "rank by {} ({} first) among {}: {prev} % to {} %",
                        r.by,
                        if sign < 0.0 { "highest" } else { "lowest" },
                        r.among,
                        b.up_to_percent
                    ),
                    kind: Kind::Band { rank: ranks.len(), band: i },
                });
                prev = b.up_to_percent;
            }
            let percents = r.bands.iter().map(|b| b.up_to_percent).collect();
            ranks.push(Cut { feature, sign, among, groups: Groups::Percents(percents), starts: Vec::new() });
        }
        // Rule tags: single tags, then families expanded.
        let mut rule_texts: Vec<(usize, String)> = Vec::new();
        for t in &catalog.tag {
            rule_texts.push((tags.len(), t.rule.clone()));
            tags.push(TagDef {
                name: t.name.clone(),
                family: t.family.clone(),
                description: t.description.clone(),
                rule: t.rule.clone(),
                kind: Kind::Rule,
            });
        }
        let mut skipped = Vec::new();
        let cap_of = |own: Option<usize>| own.unwrap_or(catalog.max_family_values());
        for f in &catalog.family {
            let owner = format!("[[family]] {}", f.name);
            let values = expand_values(fs, &f.values, source, &owner)?;
            if let Values::Data(name) = &f.values
                && values.len() > cap_of(f.max_values)
            {
                skipped.push(too_many(&owner, name, values.len(), cap_of(f.max_values)));
                continue;
            }
            for (slug, raw) in values {
                let rule = substitute(&f.rule, &slug, &raw);
                rule_texts.push((tags.len(), rule.clone()));
                tags.push(TagDef {
                    name: f.name.replace("{value}", &slug),
                    family: f.family.clone(),
                    description: substitute(&f.description, &slug, &raw).replace("''", "'"),
                    rule,
                    kind: Kind::Rule,
                });
            }
        }
        let mut partitions = Vec::new();
        for p in &catalog.partition {
            let owner = format!("[[partition]] {}", p.name);
            let Some(col) = sample.columns.iter().position(|c| c.name == p.feature) else {
                return Err(cat_err(format!("{owner}: unknown feature `{}`", p.feature)));
            };
            let mut part = Partition { feature: col, by_code: Vec::new(), by_number: HashMap::new() };
            match sample.columns[col].kind {
                FeatureKind::Text(kind) => {
                    let dict = &fs.dictionary(kind).values;
                    let wanted: Option<Vec<String>> = match &p.values {
                        None => None,
                        Some(Values::Text(list)) => Some(list.clone()),
                        Some(Values::Data(name)) => Some(
                            data_values(fs, name)
                                .ok_or_else(|| cat_err(format!("{owner}: unknown values `{name}`")))?
                                .to_vec(),
                        ),
                        Some(Values::Numbers(_)) => {
                            return Err(cat_err(format!("{owner}: `{}` is text; list text values", p.feature)));
                        }
                    };
                    part.by_code = vec![None; dict.len()];
                    let chosen: Vec<(usize, &String, String)> = dict
                        .iter()
                        .enumerate()
                        .zip(unique_slugs(dict))
                        .filter(|((_, raw), _)| wanted.as_ref().is_none_or(|w| w.contains(raw)))
                        .map(|((code, raw), slug)| (code, raw, slug))
                        .collect();
                    // Values the catalog lists itself are meant; values of the data are capped.
                    let listed = matches!(p.values, Some(Values::Text(_)));
                    if !listed && chosen.len() > cap_of(p.max_values) {
                        skipped.push(too_many(&owner, data_name(kind), chosen.len(), cap_of(p.max_values)));
                        continue;
                    }
                    for (code, raw, slug) in chosen {
                        part.by_code[code] = Some(tags.len());
                        tags.push(TagDef {
                            name: p.name.replace("{value}", &slug),
                            family: p.family.clone(),
                            description: substitute(&p.description, &slug, raw).replace("''", "'"),
                            rule: format!("{} = '{}'", p.feature, raw.replace('\'', "''")),
                            kind: Kind::Partition,
                        });
                    }
                }
                _ => {
                    let Some(Values::Numbers(list)) = &p.values else {
                        return Err(cat_err(format!(
                            "{owner}: `{}` is a number; list the values that get a tag (values = [1, 2, …])",
                            p.feature
                        )));
                    };
                    for n in list {
                        part.by_number.insert(*n, tags.len());
                        tags.push(TagDef {
                            name: p.name.replace("{value}", &n.to_string()),
                            family: p.family.clone(),
                            description: substitute(&p.description, &n.to_string(), &n.to_string()),
                            rule: format!("{} = {n}", p.feature),
                            kind: Kind::Partition,
                        });
                    }
                }
            }
            partitions.push(part);
        }
        // Names are unique and do not shadow features.
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for t in &tags {
            crate::catalog::check_name(&t.name).map_err(cat_err)?;
            if seen.insert(&t.name, 0).is_some() {
                return Err(cat_err(format!("tag `{}` is declared twice", t.name)));
            }
            if env.resolve(&t.name).is_some() {
                return Err(cat_err(format!("tag `{}` has the name of a feature or score", t.name)));
            }
        }
        // Every non-partition tag gets a mask slot rules can read.
        let mut tag_slot = vec![None; tags.len()];
        for (i, t) in tags.iter().enumerate() {
            if !matches!(t.kind, Kind::Partition) {
                tag_slot[i] = Some(env.add(&t.name, VarType::Bool));
            }
        }
        let index: HashMap<String, usize> = tags.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
        let mut rules = Vec::new();
        let mut deps: Vec<Vec<usize>> = Vec::new();
        for (tag, text) in &rule_texts {
            let name = &tags[*tag].name;
            let expr = rule::parse(text).map_err(|e| rule_err(name, text, e))?;
            let mut d = Vec::new();
            for id in expr.identifiers() {
                if let Some(&t) = index.get(&id) {
                    if matches!(tags[t].kind, Kind::Partition) {
                        return Err(cat_err(format!(
                            "tag `{name}`: `{id}` is a partition tag and cannot be used in rules; compare its feature instead ({})",
                            tags[t].rule
                        )));
                    }
                    d.push(t);
                }
            }
            let program = rule::compile(&expr, &env).map_err(|e| rule_err(name, text, e))?;
            rules.push((*tag, program));
            deps.push(d);
        }
        // Rules in dependency order (a rule after the rule tags it reads).
        let rule_of_tag: HashMap<usize, usize> = rules.iter().enumerate().map(|(r, (t, _))| (*t, r)).collect();
        let mut order = Vec::with_capacity(rules.len());
        let mut state = vec![0u8; rules.len()];
        fn visit(
            r: usize,
            deps: &[Vec<usize>],
            rule_of_tag: &HashMap<usize, usize>,
            state: &mut [u8],
            order: &mut Vec<usize>,
            path: &mut Vec<usize>,
        ) -> std::result::Result<(), Vec<usize>> {
            if state[r] == 2 {
                return Ok(());
            }
            if state[r] == 1 {
                path.push(r);
                return Err(path.clone());
            }
            state[r] = 1;
            path.push(r);
            for t in &deps[r] {
                if let Some(&d) = rule_of_tag.get(t) {
                    visit(d, deps, rule_of_tag, state, order, path)?;
                }
            }
            path.pop();
            state[r] = 2;
            order.push(r);
            Ok(())
        }
        for r in 0..rules.len() {
            visit(r, &deps, &rule_of_tag, &mut state, &mut order, &mut Vec::new()).map_err(|cycle| {
                let names: Vec<&str> = cycle.iter().map(|r| tags[rules[*r].0].name.as_str()).collect();
                cat_err(format!("tags refer to each other in a cycle: {}", names.join(" → ")))
            })?;
        }
        skipped.splice(0..0, fs.skipped.iter().cloned());
        Ok(Compiled {
            tags,
            feature_names,
            constants,
            scores,
            ranks,
            lookups,
            rules,
            order,
            partitions,
            tag_slot,
            skipped,
        })
    }

    fn slots_len(&self) -> usize {
        self.feature_names.len() + self.constants.len() + self.scores.len() + self.tag_slot.iter().flatten().count()
    }

    /// Computes the cut points of every score and rank over the whole base.
    /// One cut at a time, each reading only the columns it needs, so the
    /// sort buffer is one (value, key) pair per ranked member of one cut.
    pub fn prepare(&mut self, fs: &FeatureSet) {
        for i in 0..self.cuts() {
            let pairs = self.cut_pairs(fs, i);
            let starts = self
                .cut_positions(i, pairs.len())
                .into_iter()
                .map(|p| pairs.get(p).copied().unwrap_or(CUT_END))
                .collect();
            self.set_cut_starts(i, starts);
        }
    }

    /// How many cuts (scores, then ranks) the catalog has.
    pub fn cuts(&self) -> usize {
        self.scores.len() + self.ranks.len()
    }

    fn cut(&self, i: usize) -> &Cut {
        if i < self.scores.len() { &self.scores[i].1 } else { &self.ranks[i - self.scores.len()] }
    }

    /// The ranked members of cut `i` in `fs` as (ordered value, key) pairs,
    /// sorted: a member's place in this order decides its group.
    pub fn cut_pairs(&self, fs: &FeatureSet, i: usize) -> Vec<CutStart> {
        let nf = self.feature_names.len();
        let cut = self.cut(i);
        let mut needed: Vec<&str> = vec![self.feature_names[cut.feature].as_str()];
        needed.extend(cut.among.slots().into_iter().filter(|s| *s < nf).map(|s| self.feature_names[s].as_str()));
        let constants = &self.constants;
        let per_chunk: Vec<Vec<CutStart>> = (0..fs.chunks())
            .into_par_iter()
            .map(|c| {
                let chunk = fs.chunk_columns(c, &|name| needed.contains(&name));
                let consts = constant_columns(constants, chunk.len());
                let cols = base_columns(&chunk, &consts, nf);
                let mut among = Vec::new();
                cut.among.eval(&cols, chunk.len(), &mut among);
                let FeatureData::Num(values) = &chunk.columns[cut.feature].data else { unreachable!() };
                (0..chunk.len())
                    .filter(|&m| chunk.base[m] == 1 && among[m] == 1 && !values[m].is_nan())
                    .map(|m| (ordered_bits(cut.sign * values[m]), chunk.start + m as u32))
                    .collect()
            })
            .collect();
        // Exact capacity: a growing Vec would briefly hold twice the base.
        let mut pairs = Vec::with_capacity(per_chunk.iter().map(|c| c.len()).sum());
        for c in per_chunk {
            pairs.extend(c);
        }
        pairs.par_sort_unstable();
        pairs
    }

    /// Where cut `i`'s groups start among `n` sorted ranked members.
    pub fn cut_positions(&self, i: usize, n: usize) -> Vec<usize> {
        match &self.cut(i).groups {
            Groups::Ntile(b) => {
                let b = *b as usize;
                let (q, r) = (n / b, n % b);
                (1..b).map(|g| if g <= r { g * (q + 1) } else { r * (q + 1) + (g - r) * q }).collect()
            }
            Groups::Percents(p) => {
                p[..p.len() - 1].iter().map(|pct| (pct * n as f64 / 100.0).floor() as usize).collect()
            }
        }
    }

    /// Sets the first (value, key) of each group of cut `i` after the first.
    pub fn set_cut_starts(&mut self, i: usize, starts: Vec<CutStart>) {
        let n_scores = self.scores.len();
        if i < n_scores {
            self.scores[i].1.starts = starts;
        } else {
            self.ranks[i - n_scores].starts = starts;
        }
    }

    /// Evaluates every tag over one chunk: one bitmap per tag.
    pub fn evaluate(&self, chunk: &Chunk) -> Vec<RoaringBitmap> {
        let len = chunk.len();
        let nf = self.feature_names.len();
        let mut owned: Vec<Vec<f64>> = Vec::new();
        // Scores and ranks.
        let group_of = |cut: &Cut, among: &[u8], m: usize| -> Option<usize> {
            let FeatureData::Num(values) = &chunk.columns[cut.feature].data else { return None };
            if chunk.base[m] == 0 || among[m] == 0 || values[m].is_nan() {
                return None;
            }
            let me = (ordered_bits(cut.sign * values[m]), chunk.start + m as u32);
            Some(cut.starts.iter().filter(|s| **s <= me).count())
        };
        let consts = constant_columns(&self.constants, len);
        let base_cols = base_columns(chunk, &consts, nf);
        let mut among = Vec::new();
        let mut score_values: Vec<Vec<f64>> = Vec::new();
        let mut masks: Vec<Option<Vec<u8>>> = vec![None; self.tags.len()];
        let mut bitmaps: Vec<RoaringBitmap> = vec![RoaringBitmap::new(); self.tags.len()];
        for (_, cut) in &self.scores {
            cut.among.eval(&base_cols, len, &mut among);
            score_values
                .push((0..len).map(|m| group_of(cut, &among, m).map(|g| (g + 1) as f64).unwrap_or(f64::NAN)).collect());
        }
        let mut band_of: Vec<Vec<u8>> = Vec::new();
        for cut in &self.ranks {
            cut.among.eval(&base_cols, len, &mut among);
            band_of.push((0..len).map(|m| group_of(cut, &among, m).map(|g| g as u8).unwrap_or(u8::MAX)).collect());
        }
        drop(base_cols);
        for (t, def) in self.tags.iter().enumerate() {
            masks[t] = match &def.kind {
                Kind::Score { score, bucket } => {
                    Some(score_values[*score].iter().map(|v| (*v == *bucket as f64) as u8).collect())
                }
                Kind::Band { rank, band } => {
                    Some(band_of[*rank].iter().map(|b| (*b as usize == *band) as u8).collect())
                }
                Kind::Lookup { lookup, label } => {
                    let (r, c, grid) = &self.lookups[*lookup];
                    let (rv, cv) = (&score_values[*r], &score_values[*c]);
                    Some(
                        (0..len)
                            .map(|m| {
                                if rv[m].is_nan() || cv[m].is_nan() {
                                    return 0;
                                }
                                let cell = grid.get(rv[m] as usize - 1).and_then(|row| row.get(cv[m] as usize - 1));
                                cell.is_some_and(|l| l == label) as u8
                            })
                            .collect(),
                    )
                }
                _ => None,
            };
        }
        owned.extend(score_values);
        // Rules, in dependency order.
        let mut out = Vec::new();
        for &r in &self.order {
            let (tag, program) = &self.rules[r];
            {
                let cols = self.columns(chunk, &consts, &owned, &masks);
                program.eval(&cols, len, &mut out);
            }
            for (o, b) in out.iter_mut().zip(&chunk.base) {
                *o &= *b;
            }
            masks[*tag] = Some(std::mem::take(&mut out));
        }
        for (t, mask) in masks.iter().enumerate() {
            if let Some(mask) = mask {
                bitmaps[t] = mask_to_bitmap(chunk.start, mask);
            }
        }
        // Partitions: each member into the tag of its value.
        for p in &self.partitions {
            let mut members: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
            match &chunk.columns[p.feature].data {
                FeatureData::Text(codes) => {
                    for (m, code) in codes.iter().enumerate() {
                        if chunk.base[m] == 1
                            && let Some(Some(t)) = p.by_code.get(*code as usize)
                        {
                            members.entry(*t).or_default().push(chunk.start + m as u32);
                        }
                    }
                }
                FeatureData::Num(values) => {
                    for (m, value) in values.iter().enumerate() {
                        if chunk.base[m] == 1
                            && !value.is_nan()
                            && let Some(t) = p.by_number.get(&(*value as i64))
                        {
                            members.entry(*t).or_default().push(chunk.start + m as u32);
                        }
                    }
                }
            }
            for (t, keys) in members {
                bitmaps[t] = RoaringBitmap::from_sorted_iter(keys).expect("keys are ascending");
            }
        }
        bitmaps
    }

    fn columns<'a>(
        &self,
        chunk: &'a Chunk,
        consts: &'a [Vec<f64>],
        scores: &'a [Vec<f64>],
        masks: &'a [Option<Vec<u8>>],
    ) -> Vec<ColumnRef<'a>> {
        let mut cols = base_columns(chunk, consts, self.feature_names.len());
        for s in scores {
            cols.push(ColumnRef::Num(s));
        }
        for (t, slot) in self.tag_slot.iter().enumerate() {
            if slot.is_some() {
                cols.push(ColumnRef::Bool(masks[t].as_deref().unwrap_or(&[])));
            }
        }
        debug_assert_eq!(cols.len(), self.slots_len());
        cols
    }
}

/// The catalog constants broadcast to a chunk's length.
fn constant_columns(constants: &[(String, f64)], len: usize) -> Vec<Vec<f64>> {
    constants.iter().map(|(_, v)| vec![*v; len]).collect()
}

/// Feature and constant columns of a chunk (slots `0..features+constants`).
fn base_columns<'a>(chunk: &'a Chunk, constants: &'a [Vec<f64>], nf: usize) -> Vec<ColumnRef<'a>> {
    let mut cols: Vec<ColumnRef<'a>> = Vec::with_capacity(nf + constants.len() + 256);
    for c in &chunk.columns[..nf] {
        cols.push(match &c.data {
            FeatureData::Num(v) => ColumnRef::Num(v),
            FeatureData::Text(v) => ColumnRef::Text(v),
        });
    }
    for c in constants {
        cols.push(ColumnRef::Num(c));
    }
    cols
}

/// Packs a 0/1 mask into the bitmap of keys `start + i`.
fn mask_to_bitmap(start: u32, mask: &[u8]) -> RoaringBitmap {
    let mut bytes = vec![0u8; mask.len().div_ceil(8)];
    for (i, chunk) in mask.chunks(8).enumerate() {
        let mut b = 0u8;
        for (j, v) in chunk.iter().enumerate() {
            b |= (*v & 1) << j;
        }
        bytes[i] = b;
    }
    debug_assert_eq!(start as usize % CHUNK, 0);
    let bitmap = RoaringBitmap::from_lsb0_bytes(start, &bytes);
    // roaring 0.11's `from_lsb0_bytes` keeps a container of exactly 4,096
    // members as a bitmap, and serializes it so: the portable format (and
    // roaring's own reader) takes every container of at most 4,096 members
    // for an array, so such a tag could not be read back. A chunk is one
    // container: rebuilding it through `insert` stores it as an array.
    if bitmap.len() == 4096 { bitmap.iter().collect() } else { bitmap }
}

#[cfg(test)]
mod mask_tests {
    use super::*;

    /// A tag with exactly 4,096 members in one key chunk serializes to
    /// bytes that deserialize (with validation) to the same members.
    #[test]
    fn a_chunk_with_exactly_4096_members_round_trips() {
        for members in [4095usize, 4096, 4097] {
            let mut mask = vec![0u8; CHUNK];
            for i in 0..members {
                mask[i * 13 % CHUNK] = 1;
            }
            let bm = mask_to_bitmap(CHUNK as u32, &mask);
            assert_eq!(bm.len(), members as u64);
            let mut bytes = Vec::new();
            bm.serialize_into(&mut bytes).unwrap();
            let back = RoaringBitmap::deserialize_from(&bytes[..]).unwrap_or_else(|e| panic!("{members}: {e}"));
            assert_eq!(back, bm);
            assert!(back.iter().all(|k| mask[k as usize - CHUNK] == 1));
        }
    }
}
