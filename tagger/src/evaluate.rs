//! Expands the catalog against the data, compiles every rule once, and
//! evaluates all tags over chunks of members in parallel into roaring
//! bitmaps.
//!
//! Scores and rank bands need the whole base: they are computed first, as
//! cut points in the order of `(value, member_key)` (`ntile`, with ties
//! broken by key, so the result is exact and deterministic). Only the
//! members at the cut points matter, so they are found by selection, not by
//! sorting the base. Every other tag is local to a member, so each chunk of
//! [`CHUNK`] members is evaluated on its own rayon task and yields one
//! bitmap container per tag, written as bits from the start; the chunks'
//! bitmaps cover disjoint key ranges and are merged by OR.

use std::collections::HashMap;

use chrono::Datelike;
use rayon::prelude::*;
use roaring::RoaringBitmap;

use crate::catalog::{Better, CatalogFile, PartitionEntry, Values, substitute};
use crate::exclusive::strip_family;
use crate::features::{CHUNK, Chunk, FeatureData, FeatureKind, FeatureSet, TextKind, unique_slugs};
use crate::rule::{self, ColumnRef, Env, Program, VarType, pack_mask};
use crate::select;
pub use crate::tagdef::TagDef;
use crate::tagdef::{Kind, Origin};
use crate::{Error, Result};

pub use crate::select::{CUT_END, CutStart};

/// An ordered cut of the base (a score or a rank).
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

/// A lookup: its row score, its column score and its grid of labels.
type Lookup = (usize, usize, Vec<Vec<String>>);

/// A rule tag and its compiled rule.
type RuleTag = (usize, Program);

/// The catalog compiled against one feature set.
pub struct Compiled {
    /// Every tag, in snapshot order.
    pub tags: Vec<TagDef>,
    /// The catalog's name in errors (a file or the built-in default).
    pub source: String,
    feature_names: Vec<String>,
    constants: Vec<(String, f64)>,
    scores: Vec<(String, Cut)>,
    ranks: Vec<Cut>,
    lookups: Vec<Lookup>,
    /// Per cut (scores, then ranks), the tag of each group.
    cut_tags: Vec<Vec<usize>>,
    /// Per lookup, the tag of each (row score − 1, column score − 1) cell.
    lookup_cells: Vec<Vec<Vec<Option<usize>>>>,
    rules: Vec<RuleTag>,
    /// Rule indices in evaluation order.
    order: Vec<usize>,
    partitions: Vec<Partition>,
    /// Slot of each tag's mask (`None` for partition tags).
    tag_slot: Vec<Option<usize>>,
    /// Families and partitions left out because the data has more values
    /// than they may expand over, one note each (the entry, the column, the
    /// count and the cap).
    pub skipped: Vec<String>,
    /// Whether a rule reads the tag (only those need a byte mask).
    read_by_rules: Vec<bool>,
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
    ///
    /// The steps run in the catalog's order (scores, lookups, ranks, tags,
    /// families, partitions), so a catalog with several mistakes reports
    /// the same first one whatever the step.
    pub fn new(catalog: &CatalogFile, source: &str, fs: &FeatureSet) -> Result<Compiled> {
        if fs.chunks() == 0 {
            return Err(Error::Data("the warehouse has no members to tag".into()));
        }
        let mut x = Expander::new(catalog, source, fs);
        let feature_names: Vec<String> = x.sample.columns.iter().map(|c| c.name.clone()).collect();
        let constants = date_constants(fs.as_of);
        for (name, _) in &constants {
            x.env.add(name, VarType::Num);
        }
        let scores = x.scores()?;
        let lookups = x.lookups(&scores)?;
        let ranks = x.ranks()?;
        x.single_tags();
        x.families()?;
        let partitions = x.partitions()?;
        x.check_names()?;
        crate::exclusive::assign(&mut x.tags).map_err(|m| x.cat_err(m))?;
        let tag_slot = x.tag_slots();
        let (rules, deps) = x.compile_rules()?;
        let order = x.rule_order(&rules, &deps)?;
        let Expander { tags, mut skipped, .. } = x;
        skipped.splice(0..0, fs.skipped.iter().cloned());
        let mut read_by_rules = vec![false; tags.len()];
        for t in deps.iter().flatten() {
            read_by_rules[*t] = true;
        }
        let cut_tags = cut_tags(&tags, scores.len(), ranks.len());
        let lookup_cells = lookup_cells(&tags, &lookups);
        Ok(Compiled {
            tags,
            source: source.to_string(),
            feature_names,
            constants,
            scores,
            ranks,
            lookups,
            cut_tags,
            lookup_cells,
            rules,
            order,
            partitions,
            tag_slot,
            skipped,
            read_by_rules,
        })
    }

    fn slots_len(&self) -> usize {
        self.feature_names.len() + self.constants.len() + self.scores.len() + self.tag_slot.iter().flatten().count()
    }

    /// Computes the cut points of every score and rank over the whole base.
    /// One cut at a time, each reading only the columns (and computing only
    /// the order statistics) it needs, into (value, key) pairs held chunk by
    /// chunk. Only the members at the groups' first positions are looked
    /// for (a selection, [`select::positions`]), the order is never sorted.
    ///
    /// The pairs (16 bytes per ranked member) are kept in one vector per
    /// chunk, not in one buffer over the key space: at 42 M members that
    /// buffer was 672 MB of fresh pages, taken when the process is at its
    /// largest (the whole feature set is still held), and it was the peak
    /// of the run; vectors of a chunk's size come from memory the feature
    /// pass has just freed.
    pub fn prepare(&mut self, fs: &FeatureSet) {
        for i in 0..self.cuts() {
            let parts = self.ranked_parts(fs, i);
            let n = parts.iter().map(Vec::len).sum();
            let positions = self.cut_positions(i, n);
            let starts = select::positions(&parts, &positions);
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
        let mut pairs = Vec::new();
        self.ranked_pairs(fs, i, &mut pairs);
        pairs.par_sort_unstable();
        pairs
    }

    /// The ranked members of cut `i` as (ordered value, key) pairs, in key
    /// order, into `pairs` (cleared first). Each chunk writes its pairs
    /// into its own `CHUNK`-long stretch of the buffer, in parallel; the
    /// stretches are then closed up, so the buffer is the only allocation
    /// however many members are ranked.
    fn ranked_pairs(&self, fs: &FeatureSet, i: usize, pairs: &mut Vec<CutStart>) {
        let needed = self.cut_features(i);
        pairs.clear();
        // Filled on every core: for the first cut this is also the first
        // touch of the buffer's pages (16 bytes per key of the key space),
        // which on one core took 3.5 s of page faults at 42 M members.
        pairs.par_extend(rayon::iter::repeat_n(CUT_END, fs.chunks() * CHUNK));
        let counts: Vec<usize> =
            pairs.par_chunks_mut(CHUNK).enumerate().map(|(c, out)| self.chunk_pairs(fs, i, &needed, c, out)).collect();
        let mut end = 0;
        for (c, n) in counts.into_iter().enumerate() {
            pairs.copy_within(c * CHUNK..c * CHUNK + n, end);
            end += n;
        }
        pairs.truncate(end);
    }

    /// The ranked members of cut `i` as (ordered value, key) pairs, one
    /// vector per chunk (in key order, each sized to its pairs).
    fn ranked_parts(&self, fs: &FeatureSet, i: usize) -> Vec<Vec<CutStart>> {
        let needed = self.cut_features(i);
        (0..fs.chunks())
            .into_par_iter()
            .map(|c| {
                let mut out = vec![CUT_END; CHUNK];
                let n = self.chunk_pairs(fs, i, &needed, c, &mut out);
                out.truncate(n);
                out.shrink_to_fit();
                out
            })
            .collect()
    }

    /// The features cut `i` reads: its value and those of its `among` filter.
    fn cut_features(&self, i: usize) -> Vec<&str> {
        let nf = self.feature_names.len();
        let cut = self.cut(i);
        let mut needed: Vec<&str> = vec![self.feature_names[cut.feature].as_str()];
        needed.extend(cut.among.slots().into_iter().filter(|s| *s < nf).map(|s| self.feature_names[s].as_str()));
        needed
    }

    /// Writes the ranked members of chunk `c` for cut `i` to the front of
    /// `out` (at least a chunk long), in key order; returns how many.
    fn chunk_pairs(&self, fs: &FeatureSet, i: usize, needed: &[&str], c: usize, out: &mut [CutStart]) -> usize {
        let cut = self.cut(i);
        let chunk = fs.chunk_columns(c, &|name| needed.contains(&name));
        let consts = constant_columns(&self.constants, chunk.len());
        let cols = base_columns(&chunk, &consts, self.feature_names.len());
        let mut among = Vec::new();
        cut.among.eval(&cols, chunk.len(), &mut among);
        let FeatureData::Num(values) = &chunk.columns[cut.feature].data else { unreachable!() };
        let mut n = 0;
        for m in 0..chunk.len() {
            if chunk.base[m] == 1 && among[m] == 1 && !values[m].is_nan() {
                out[n] = (ordered_bits(cut.sign * values[m]), chunk.start + m as u32);
                n += 1;
            }
        }
        n
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

    // Long on purpose: one pass per tag kind over the same chunk; splitting would pass the chunk's masks
    // between many functions.
    /// Evaluates every tag over one chunk: one bitmap per tag.
    ///
    /// Rules are evaluated straight into bitsets ([`Program::eval_bits`]),
    /// which become the chunk's container of each tag; a tag that other
    /// rules read is also kept as a byte mask for them. Score, band and
    /// lookup tags are set in one pass over the members per score, rank
    /// and lookup, and partition tags in one pass per partition.
    pub fn evaluate(&self, chunk: &Chunk) -> Vec<RoaringBitmap> {
        let len = chunk.len();
        let nf = self.feature_names.len();
        let mut base_bits = vec![0u64; len.div_ceil(64)];
        pack_mask(&chunk.base, 0, &mut base_bits);
        let consts = constant_columns(&self.constants, len);
        let base_cols = base_columns(chunk, &consts, nf);
        // Each member's group in every cut (NO_GROUP: not ranked).
        let mut among = Vec::new();
        let groups: Vec<Vec<u32>> = (0..self.cuts())
            .map(|i| {
                let cut = self.cut(i);
                cut.among.eval(&base_cols, len, &mut among);
                let FeatureData::Num(values) = &chunk.columns[cut.feature].data else { unreachable!() };
                (0..len)
                    .map(|m| {
                        if chunk.base[m] == 0 || among[m] == 0 || values[m].is_nan() {
                            return NO_GROUP;
                        }
                        let me = (ordered_bits(cut.sign * values[m]), chunk.start + m as u32);
                        cut.starts.iter().filter(|s| **s <= me).count() as u32
                    })
                    .collect()
            })
            .collect();
        drop(base_cols);
        let mut bits: Vec<Option<Vec<u64>>> = vec![None; self.tags.len()];
        let mut set = |t: usize, m: usize| {
            bits[t].get_or_insert_with(|| vec![0u64; len.div_ceil(64)])[m / 64] |= 1 << (m % 64);
        };
        for (cut, tags) in groups.iter().zip(&self.cut_tags) {
            for (m, g) in cut.iter().enumerate() {
                if let Some(t) = tags.get(*g as usize) {
                    set(*t, m);
                }
            }
        }
        for ((r, c, _), cells) in self.lookups.iter().zip(&self.lookup_cells) {
            for (m, (rg, cg)) in groups[*r].iter().zip(&groups[*c]).enumerate() {
                if let Some(Some(t)) = cells.get(*rg as usize).and_then(|row| row.get(*cg as usize)) {
                    set(*t, m);
                }
            }
        }
        // Scores as numbers (1..=buckets, null where not ranked) for rules.
        let score_values: Vec<Vec<f64>> = groups[..self.scores.len()]
            .iter()
            .map(|g| g.iter().map(|g| if *g == NO_GROUP { f64::NAN } else { (*g + 1) as f64 }).collect())
            .collect();
        let mut masks: Vec<Option<Vec<u8>>> = vec![None; self.tags.len()];
        for (t, b) in bits.iter().enumerate() {
            if self.read_by_rules[t] {
                masks[t] = Some(unpack(b.as_deref(), len));
            }
        }
        // Rules, in dependency order.
        let mut out = Vec::new();
        for &r in &self.order {
            let (tag, program) = &self.rules[r];
            {
                let cols = self.columns(chunk, &consts, &score_values, &masks);
                program.eval_bits(&cols, len, &mut out);
            }
            for (o, b) in out.iter_mut().zip(&base_bits) {
                *o &= *b;
            }
            if self.read_by_rules[*tag] {
                masks[*tag] = Some(unpack(Some(&out), len));
            }
            bits[*tag] = Some(std::mem::take(&mut out));
        }
        let mut bytes = Vec::new();
        let mut bitmaps: Vec<RoaringBitmap> = bits
            .iter()
            .map(|b| b.as_deref().map_or_else(RoaringBitmap::new, |b| bits_to_bitmap(chunk.start, b, &mut bytes)))
            .collect();
        // Partitions: each member into the tag of its value.
        for p in &self.partitions {
            let mut hits: Vec<(usize, u32)> = Vec::new();
            match &chunk.columns[p.feature].data {
                FeatureData::Text(codes) => {
                    for (m, code) in codes.iter().enumerate() {
                        if chunk.base[m] == 1
                            && let Some(Some(t)) = p.by_code.get(*code as usize)
                        {
                            hits.push((*t, chunk.start + m as u32));
                        }
                    }
                }
                FeatureData::Num(values) => {
                    for (m, value) in values.iter().enumerate() {
                        if chunk.base[m] == 1
                            && !value.is_nan()
                            && let Some(t) = p.by_number.get(&(*value as i64))
                        {
                            hits.push((*t, chunk.start + m as u32));
                        }
                    }
                }
            }
            // A stable sort by tag keeps each tag's keys ascending.
            hits.sort_by_key(|h| h.0);
            for run in hits.chunk_by(|a, b| a.0 == b.0) {
                bitmaps[run[0].0] =
                    RoaringBitmap::from_sorted_iter(run.iter().map(|h| h.1)).expect("keys are ascending");
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

/// The constants rules can read, from the as-of date.
fn date_constants(as_of: chrono::NaiveDate) -> Vec<(String, f64)> {
    let this_month = as_of.with_day(1).expect("day 1");
    let last_month = (this_month - chrono::Duration::days(1)).with_day(1).expect("day 1");
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch");
    vec![
        ("as_of_year".to_string(), as_of.year() as f64),
        ("as_of_month".to_string(), as_of.month() as f64),
        ("as_of_day_of_month".to_string(), as_of.day() as f64),
        ("this_month_start".to_string(), (this_month - epoch).num_days() as f64),
        ("last_month_start".to_string(), (last_month - epoch).num_days() as f64),
    ]
}

/// The work of [`Compiled::new`] between its steps: the names a rule may
/// use so far and the tags expanded so far. Each catalog section is one
/// method that appends its tags; the order of the calls is the order of
/// the tags in the snapshot.
struct Expander<'a> {
    catalog: &'a CatalogFile,
    source: &'a str,
    fs: &'a FeatureSet,
    /// The feature columns, names and kinds only (no values are computed).
    sample: Chunk,
    env: SlotEnv,
    tags: Vec<TagDef>,
    /// Rule tags (single tags, then families) with their rule text.
    rule_texts: Vec<(usize, String)>,
    skipped: Vec<String>,
}

impl<'a> Expander<'a> {
    /// Starts with every feature named in the environment.
    fn new(catalog: &'a CatalogFile, source: &'a str, fs: &'a FeatureSet) -> Expander<'a> {
        let sample = fs.chunk_columns(0, &|_| false);
        let mut env = SlotEnv { names: HashMap::new(), dictionaries: HashMap::new(), order: Vec::new() };
        for c in &sample.columns {
            match c.kind {
                FeatureKind::Text(t) => {
                    let s = env.add(&c.name, VarType::Text);
                    env.dictionaries.insert(s, fs.dictionary(t).values.clone());
                }
                _ => {
                    env.add(&c.name, VarType::Num);
                }
            }
        }
        Expander { catalog, source, fs, sample, env, tags: Vec::new(), rule_texts: Vec::new(), skipped: Vec::new() }
    }

    fn cat_err(&self, message: String) -> Error {
        Error::Catalog { source_name: self.source.into(), message }
    }

    fn rule_err(&self, tag: &str, rule: &str, error: rule::RuleError) -> Error {
        Error::Rule { source_name: self.source.into(), tag: tag.into(), rule: rule.into(), error }
    }

    /// The cap on an entry's values: its own `max_values` or the catalog's.
    fn cap(&self, own: Option<usize>) -> usize {
        own.unwrap_or(self.catalog.max_family_values())
    }

    /// The slot of numeric feature `name` (not a constant or a score).
    fn feature_slot(&self, name: &str, owner: &str) -> Result<usize> {
        match self.env.resolve(name) {
            Some((slot, VarType::Num)) if slot < self.sample.columns.len() => Ok(slot),
            _ => Err(self.cat_err(format!("{owner}: `{name}` is not a numeric feature"))),
        }
    }

    fn compile_among(&self, text: &str, owner: &str) -> Result<Program> {
        let expr = rule::parse(text).map_err(|e| self.rule_err(owner, text, e))?;
        rule::compile(&expr, &self.env).map_err(|e| self.rule_err(owner, text, e))
    }

    /// `[[score]]`: one tag per bucket; afterwards rules (and ranks) can
    /// read the scores by name.
    fn scores(&mut self) -> Result<Vec<(String, Cut)>> {
        let mut scores = Vec::new();
        for s in &self.catalog.score {
            let owner = format!("[[score]] {}", s.name);
            let feature = self.feature_slot(&s.feature, &owner)?;
            let among = self.compile_among(&s.among, &owner)?;
            let sign = if s.better == Better::Higher { 1.0 } else { -1.0 };
            scores.push((
                s.name.clone(),
                Cut { feature, sign, among, groups: Groups::Ntile(s.buckets), starts: Vec::new() },
            ));
            for bucket in 1..=s.buckets {
                self.tags.push(TagDef {
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
                    value: Some(bucket.to_string()),
                    origin: Origin::Entry { kind: "score", index: scores.len() - 1 },
                    kind: Kind::Score { score: scores.len() - 1, bucket },
                });
            }
        }
        for (name, _) in &scores {
            self.env.add(name, VarType::Num);
        }
        Ok(scores)
    }

    /// `[[lookup]]`: one tag per distinct label of the grid, in the order
    /// the labels first appear.
    fn lookups(&mut self, scores: &[(String, Cut)]) -> Result<Vec<Lookup>> {
        let mut lookups = Vec::new();
        for l in &self.catalog.lookup {
            let find = |n: &str| {
                scores.iter().position(|(s, _)| s == n).ok_or_else(|| {
                    self.cat_err(format!("[[lookup]] {}: `{n}` is not a score declared with [[score]]", l.family))
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
                self.tags.push(TagDef {
                    name: format!("{}{label}", l.prefix),
                    family: l.family.clone(),
                    description: l.descriptions[label].clone(),
                    rule: format!("({}, {}) in {}", l.rows, l.columns, cells.join(" ")),
                    value: Some(label.clone()),
                    origin: Origin::Entry { kind: "lookup", index: lookups.len() },
                    kind: Kind::Lookup { lookup: lookups.len(), label: label.clone() },
                });
            }
            lookups.push((r, c, l.grid.clone()));
        }
        Ok(lookups)
    }

    /// `[[rank]]`: one tag per band.
    fn ranks(&mut self) -> Result<Vec<Cut>> {
        let mut ranks = Vec::new();
        for r in &self.catalog.rank {
            let owner = format!("[[rank]] by {}", r.by);
            let feature = self.feature_slot(&r.by, &owner)?;
            let among = self.compile_among(&r.among, &owner)?;
            let sign = if r.better == Better::Higher { -1.0 } else { 1.0 };
            let mut prev = 0.0;
            for (i, b) in r.bands.iter().enumerate() {
                self.tags.push(TagDef {
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
                    value: Some(strip_family(&b.name, &r.family)),
                    origin: Origin::Entry { kind: "rank", index: ranks.len() },
                    kind: Kind::Band { rank: ranks.len(), band: i },
                });
                prev = b.up_to_percent;
            }
            let percents = r.bands.iter().map(|b| b.up_to_percent).collect();
            ranks.push(Cut { feature, sign, among, groups: Groups::Percents(percents), starts: Vec::new() });
        }
        Ok(ranks)
    }

    /// `[[tag]]`: one rule tag each.
    fn single_tags(&mut self) {
        for t in &self.catalog.tag {
            self.rule_texts.push((self.tags.len(), t.rule.clone()));
            self.tags.push(TagDef {
                name: t.name.clone(),
                family: t.family.clone(),
                description: t.description.clone(),
                rule: t.rule.clone(),
                value: Some(strip_family(&t.name, &t.family)),
                origin: Origin::Tag { exclusive: t.exclusive },
                kind: Kind::Rule,
            });
        }
    }

    /// `[[family]]`: one rule tag per value (none, with a note, past the cap).
    fn families(&mut self) -> Result<()> {
        for f in &self.catalog.family {
            let owner = format!("[[family]] {}", f.name);
            let values = expand_values(self.fs, &f.values, self.source, &owner)?;
            if let Values::Data(name) = &f.values
                && values.len() > self.cap(f.max_values)
            {
                self.skipped.push(too_many(&owner, name, values.len(), self.cap(f.max_values)));
                continue;
            }
            for (slug, raw) in values {
                let rule = substitute(&f.rule, &slug, &raw);
                self.rule_texts.push((self.tags.len(), rule.clone()));
                self.tags.push(TagDef {
                    name: f.name.replace("{value}", &slug),
                    family: f.family.clone(),
                    description: substitute(&f.description, &slug, &raw).replace("''", "'"),
                    rule,
                    value: None,
                    origin: Origin::Family,
                    kind: Kind::Rule,
                });
            }
        }
        Ok(())
    }

    /// `[[partition]]`: one tag per value of a feature.
    fn partitions(&mut self) -> Result<Vec<Partition>> {
        let mut partitions = Vec::new();
        for p in &self.catalog.partition {
            let owner = format!("[[partition]] {}", p.name);
            let Some(col) = self.sample.columns.iter().position(|c| c.name == p.feature) else {
                return Err(self.cat_err(format!("{owner}: unknown feature `{}`", p.feature)));
            };
            let part = match self.sample.columns[col].kind {
                FeatureKind::Text(kind) => self.text_partition(p, &owner, col, kind, partitions.len())?,
                _ => Some(self.number_partition(p, &owner, col, partitions.len())?),
            };
            partitions.extend(part);
        }
        Ok(partitions)
    }

    /// A partition of a text feature: a tag per value of its dictionary
    /// (or of the values listed); `None`, with a note, past the cap.
    fn text_partition(
        &mut self,
        p: &PartitionEntry,
        owner: &str,
        col: usize,
        kind: TextKind,
        index: usize,
    ) -> Result<Option<Partition>> {
        let mut part = Partition { feature: col, by_code: Vec::new(), by_number: HashMap::new() };
        let dict = &self.fs.dictionary(kind).values;
        let wanted: Option<Vec<String>> = match &p.values {
            None => None,
            Some(Values::Text(list)) => Some(list.clone()),
            Some(Values::Data(name)) => Some(
                data_values(self.fs, name)
                    .ok_or_else(|| self.cat_err(format!("{owner}: unknown values `{name}`")))?
                    .to_vec(),
            ),
            Some(Values::Numbers(_)) => {
                return Err(self.cat_err(format!("{owner}: `{}` is text; list text values", p.feature)));
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
        if !listed && chosen.len() > self.cap(p.max_values) {
            self.skipped.push(too_many(owner, data_name(kind), chosen.len(), self.cap(p.max_values)));
            return Ok(None);
        }
        for (code, raw, slug) in chosen {
            part.by_code[code] = Some(self.tags.len());
            self.tags.push(TagDef {
                name: p.name.replace("{value}", &slug),
                family: p.family.clone(),
                description: substitute(&p.description, &slug, raw).replace("''", "'"),
                rule: format!("{} = '{}'", p.feature, raw.replace('\'', "''")),
                value: Some(raw.clone()),
                origin: Origin::Entry { kind: "partition", index },
                kind: Kind::Partition,
            });
        }
        Ok(Some(part))
    }

    /// A partition of a numeric feature: a tag per value listed.
    fn number_partition(&mut self, p: &PartitionEntry, owner: &str, col: usize, index: usize) -> Result<Partition> {
        let mut part = Partition { feature: col, by_code: Vec::new(), by_number: HashMap::new() };
        let Some(Values::Numbers(list)) = &p.values else {
            return Err(self.cat_err(format!(
                "{owner}: `{}` is a number; list the values that get a tag (values = [1, 2, …])",
                p.feature
            )));
        };
        for n in list {
            part.by_number.insert(*n, self.tags.len());
            self.tags.push(TagDef {
                name: p.name.replace("{value}", &n.to_string()),
                family: p.family.clone(),
                description: substitute(&p.description, &n.to_string(), &n.to_string()),
                rule: format!("{} = {n}", p.feature),
                value: Some(n.to_string()),
                origin: Origin::Entry { kind: "partition", index },
                kind: Kind::Partition,
            });
        }
        Ok(part)
    }

    /// Names are valid, unique and do not shadow features.
    fn check_names(&self) -> Result<()> {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for t in &self.tags {
            crate::catalog::check_name(&t.name).map_err(|m| self.cat_err(m))?;
            if seen.insert(&t.name, 0).is_some() {
                return Err(self.cat_err(format!("tag `{}` is declared twice", t.name)));
            }
            if self.env.resolve(&t.name).is_some() {
                return Err(self.cat_err(format!("tag `{}` has the name of a feature or score", t.name)));
            }
        }
        Ok(())
    }

    /// Every non-partition tag gets a mask slot rules can read.
    fn tag_slots(&mut self) -> Vec<Option<usize>> {
        let mut tag_slot = vec![None; self.tags.len()];
        for (i, t) in self.tags.iter().enumerate() {
            if !matches!(t.kind, Kind::Partition) {
                tag_slot[i] = Some(self.env.add(&t.name, VarType::Bool));
            }
        }
        tag_slot
    }

    /// Each rule tag's program, and the tags each rule reads.
    fn compile_rules(&self) -> Result<(Vec<RuleTag>, Vec<Vec<usize>>)> {
        let tags = &self.tags;
        let index: HashMap<String, usize> = tags.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
        let mut rules = Vec::new();
        let mut deps: Vec<Vec<usize>> = Vec::new();
        for (tag, text) in &self.rule_texts {
            let name = &tags[*tag].name;
            let expr = rule::parse(text).map_err(|e| self.rule_err(name, text, e))?;
            let mut d = Vec::new();
            for id in expr.identifiers() {
                if let Some(&t) = index.get(&id) {
                    if matches!(tags[t].kind, Kind::Partition) {
                        return Err(self.cat_err(format!(
                            "tag `{name}`: `{id}` is a partition tag and cannot be used in rules; compare its feature instead ({})",
                            tags[t].rule
                        )));
                    }
                    d.push(t);
                }
            }
            let program = rule::compile(&expr, &self.env).map_err(|e| self.rule_err(name, text, e))?;
            rules.push((*tag, program));
            deps.push(d);
        }
        Ok((rules, deps))
    }

    /// Rules in dependency order (a rule after the rule tags it reads); a
    /// cycle is an error naming its tags.
    fn rule_order(&self, rules: &[RuleTag], deps: &[Vec<usize>]) -> Result<Vec<usize>> {
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
            visit(r, deps, &rule_of_tag, &mut state, &mut order, &mut Vec::new()).map_err(|cycle| {
                let names: Vec<&str> = cycle.iter().map(|r| self.tags[rules[*r].0].name.as_str()).collect();
                self.cat_err(format!("tags refer to each other in a cycle: {}", names.join(" → ")))
            })?;
        }
        Ok(order)
    }
}

/// Per cut (scores, then ranks), the tag of each group.
fn cut_tags(tags: &[TagDef], n_scores: usize, n_ranks: usize) -> Vec<Vec<usize>> {
    let mut cut_tags = vec![Vec::new(); n_scores + n_ranks];
    for (t, def) in tags.iter().enumerate() {
        let (cut, group) = match def.kind {
            Kind::Score { score, bucket } => (score, bucket as usize - 1),
            Kind::Band { rank, band } => (n_scores + rank, band),
            _ => continue,
        };
        let groups = &mut cut_tags[cut];
        groups.resize(groups.len().max(group + 1), t);
        groups[group] = t;
    }
    cut_tags
}

/// Per lookup, the tag of each (row score − 1, column score − 1) cell.
fn lookup_cells(tags: &[TagDef], lookups: &[Lookup]) -> Vec<Vec<Vec<Option<usize>>>> {
    lookups
        .iter()
        .enumerate()
        .map(|(l, (_, _, grid))| {
            let tag_of = |label: &String| {
                tags.iter().position(
                    |t| matches!(&t.kind, Kind::Lookup { lookup, label: own } if *lookup == l && own == label),
                )
            };
            grid.iter().map(|row| row.iter().map(tag_of).collect()).collect()
        })
        .collect()
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

/// A cut group meaning "not ranked".
const NO_GROUP: u32 = u32::MAX;

/// A bitset of `len` members as a byte mask (no bitset: all 0).
fn unpack(bits: Option<&[u64]>, len: usize) -> Vec<u8> {
    let mut mask = vec![0u8; len];
    if let Some(bits) = bits {
        for (eight, w) in mask.chunks_mut(64).zip(bits) {
            for (j, m) in eight.iter_mut().enumerate() {
                *m = ((w >> j) & 1) as u8;
            }
        }
    }
    mask
}

/// The bitmap of keys `start + i` for the set bits `i` of `bits` (one
/// chunk: `start` is a multiple of [`CHUNK`]); `bytes` is a reusable buffer.
fn bits_to_bitmap(start: u32, bits: &[u64], bytes: &mut Vec<u8>) -> RoaringBitmap {
    debug_assert_eq!(start as usize % CHUNK, 0);
    bytes.clear();
    bytes.extend(bits.iter().flat_map(|w| w.to_le_bytes()));
    let bitmap = RoaringBitmap::from_lsb0_bytes(start, bytes);
    // roaring 0.11's `from_lsb0_bytes` keeps a container of exactly 4,096
    // members as a bitmap, and serializes it so: the portable format (and
    // roaring's own reader) takes every container of at most 4,096 members
    // for an array, so such a tag could not be read back. A chunk is one
    // container: rebuilding it through `insert` stores it as an array.
    if bitmap.len() == 4096 { bitmap.iter().collect() } else { bitmap }
}

#[cfg(test)]
mod tests {
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
            let mut bits = vec![0u64; CHUNK / 64];
            pack_mask(&mask, 0, &mut bits);
            let bm = bits_to_bitmap(CHUNK as u32, &bits, &mut Vec::new());
            assert_eq!(bm.len(), members as u64);
            let mut bytes = Vec::new();
            bm.serialize_into(&mut bytes).unwrap();
            let back = RoaringBitmap::deserialize_from(&bytes[..]).unwrap_or_else(|e| panic!("{members}: {e}"));
            assert_eq!(back, bm);
            assert!(back.iter().all(|k| mask[k as usize - CHUNK] == 1));
            assert_eq!(unpack(Some(&bits), CHUNK), mask);
        }
    }
}
