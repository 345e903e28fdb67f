//! Exclusive families: families whose tags never share a member, so each
//! member has at most one value in the family (`tier` is `gold`, `silver`
//! or `regular`; `store` is one home store).
//!
//! SQL shows such a family as one text column of `members` and answers
//! `GROUP BY tier` by intersection counts, and `audience breakdown --by`
//! works on them. That is only right when the tags really are disjoint,
//! so a family is exclusive in exactly two cases:
//!
//! - **by construction**: every tag of the family comes from one single
//!   `[[partition]]`, `[[score]]`, `[[rank]]` or `[[lookup]]` entry (each
//!   puts a member in at most one of its tags) — communities are too;
//! - **declared**: every tag of the family is a `[[tag]]` with
//!   `exclusive = true`; [`check`] verifies it on the evaluated bitmaps at
//!   tag time, and an overlap fails the run naming the two tags and how
//!   many members they share.
//!
//! A family that mixes entries (`rfm` holds three scores) is not exclusive,
//! and declaring only some of a family's tags is an error. A tag's value
//! is what the family column holds for its members: the partition's value
//! as the data spells it (`S0042`), the score (`3`), the lookup label
//! (`champions`), or the tag's name without the `family_` prefix
//! (`tier_gold` → `gold`, `value_core` → `core`).

use std::collections::HashMap;

use roaring::RoaringBitmap;

use crate::tagdef::{Origin, TagDef};

/// The value a tag would have in its family's column.
pub(crate) fn strip_family(name: &str, family: &str) -> String {
    name.strip_prefix(family).and_then(|r| r.strip_prefix('_')).filter(|r| !r.is_empty()).unwrap_or(name).to_string()
}

/// Decides which families are exclusive. Each tag arrives with the value
/// it would have (`value` set); the tags of families that are not
/// exclusive lose it. Errors name the family and the tags.
pub(crate) fn assign(tags: &mut [TagDef]) -> Result<(), String> {
    let origins: Vec<Origin> = tags.iter().map(|t| t.origin.clone()).collect();
    let candidates: Vec<String> = tags.iter().map(|t| t.value.clone().unwrap_or_default()).collect();
    let mut families: Vec<(&str, Vec<usize>)> = Vec::new();
    let mut at: HashMap<&str, usize> = HashMap::new();
    for (i, t) in tags.iter().enumerate() {
        let f = *at.entry(t.family.as_str()).or_insert_with(|| {
            families.push((t.family.as_str(), Vec::new()));
            families.len() - 1
        });
        families[f].1.push(i);
    }
    let mut exclusive = Vec::new();
    for (family, members) in &families {
        let declared: Vec<usize> =
            members.iter().copied().filter(|&i| origins[i] == Origin::Tag { exclusive: true }).collect();
        let first = &origins[members[0]];
        let one_entry = matches!(first, Origin::Entry { .. }) && members.iter().all(|&i| &origins[i] == first);
        if !declared.is_empty() && declared.len() != members.len() {
            let other = members.iter().copied().find(|i| !declared.contains(i)).expect("not all declared");
            let how = match &origins[other] {
                Origin::Tag { .. } => "does not".to_string(),
                Origin::Family => "comes from a [[family]] and cannot".to_string(),
                Origin::Entry { kind, .. } => format!("comes from a [[{kind}]] and cannot"),
            };
            return Err(format!(
                "family `{family}`: tag `{}` says `exclusive = true` but tag `{}` of the same family {how}; \
                 an exclusive family is declared on all of its [[tag]] entries",
                tags[declared[0]].name, tags[other].name
            ));
        }
        if !declared.is_empty() || one_entry {
            let mut seen: HashMap<&str, usize> = HashMap::new();
            for &i in members {
                if let Some(j) = seen.insert(candidates[i].as_str(), i) {
                    return Err(format!(
                        "family `{family}` is exclusive, but tags `{}` and `{}` both have the value `{}` in its column; rename one",
                        tags[j].name, tags[i].name, candidates[i]
                    ));
                }
            }
            exclusive.extend(members.iter().copied());
        }
    }
    let mut keep = vec![false; tags.len()];
    for i in exclusive {
        keep[i] = true;
    }
    for (t, keep) in tags.iter_mut().zip(keep) {
        if !keep {
            t.value = None;
        }
    }
    Ok(())
}

/// Checks that the tags of every declared exclusive family are disjoint;
/// an overlap names the first two tags that share members and how many.
pub(crate) fn check(tags: &[TagDef], bitmaps: &[RoaringBitmap]) -> Result<(), String> {
    let mut families: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, t) in tags.iter().enumerate() {
        if t.value.is_some() && t.origin == (Origin::Tag { exclusive: true }) {
            families.entry(t.family.as_str()).or_default().push(i);
        }
    }
    let mut names: Vec<&&str> = families.keys().collect();
    names.sort();
    for family in names {
        let members = &families[*family];
        let mut union = RoaringBitmap::new();
        for (n, &i) in members.iter().enumerate() {
            if !union.is_disjoint(&bitmaps[i]) {
                let (j, shared) = members[..n]
                    .iter()
                    .map(|&j| (j, bitmaps[j].intersection_len(&bitmaps[i])))
                    .find(|&(_, s)| s > 0)
                    .expect("the union meets one of its parts");
                return Err(format!(
                    "family `{family}` is declared exclusive, but tags `{}` and `{}` share {shared} member{}; \
                     fix their rules or remove `exclusive = true`",
                    tags[j].name,
                    tags[i].name,
                    if shared == 1 { "" } else { "s" }
                ));
            }
            union |= &bitmaps[i];
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_the_family_prefix_only() {
        assert_eq!(strip_family("tier_gold", "tier"), "gold");
        assert_eq!(strip_family("value_core", "value"), "core");
        assert_eq!(strip_family("tiered", "tier"), "tiered");
        assert_eq!(strip_family("tier_", "tier"), "tier_");
        assert_eq!(strip_family("gold", "tier"), "gold");
    }

    fn def(name: &str, family: &str, origin: Origin) -> TagDef {
        let value = strip_family(name, family);
        TagDef::for_test(name, family, Some(&value), origin)
    }

    fn values(tags: &[TagDef]) -> Vec<Option<&str>> {
        tags.iter().map(|t| t.value.as_deref()).collect()
    }

    #[test]
    fn one_entry_or_all_declared_tags_make_a_family_exclusive() {
        let part = |i| Origin::Entry { kind: "partition", index: i };
        let declared = Origin::Tag { exclusive: true };
        let mut tags = vec![
            def("store_a", "store", part(0)),
            def("store_b", "store", part(0)),
            // Two scores in one family: each member has three values.
            def("rfm_r_1", "rfm", Origin::Entry { kind: "score", index: 0 }),
            def("rfm_f_1", "rfm", Origin::Entry { kind: "score", index: 1 }),
            def("tier_gold", "tier", declared.clone()),
            def("tier_regular", "tier", declared.clone()),
            def("dormant_30", "dormancy", Origin::Tag { exclusive: false }),
            def("lover_a", "interest", Origin::Family),
            def("main_a", "interest", part(1)),
        ];
        assign(&mut tags).unwrap();
        assert_eq!(values(&tags), [Some("a"), Some("b"), None, None, Some("gold"), Some("regular"), None, None, None]);
        let mut mixed = vec![def("tier_gold", "tier", declared.clone()), def("tier_x", "tier", part(0))];
        let err = assign(&mut mixed).unwrap_err();
        assert!(err.contains("tag `tier_x` of the same family comes from a [[partition]]"), "{err}");
        let mut same = vec![def("tier_gold", "tier", declared.clone()), def("gold", "tier", declared)];
        let err = assign(&mut same).unwrap_err();
        assert!(err.contains("both have the value `gold`"), "{err}");
    }

    #[test]
    fn overlapping_declared_tags_are_named_with_what_they_share() {
        let declared = Origin::Tag { exclusive: true };
        let mut tags = vec![
            def("band_low", "band", declared.clone()),
            def("band_mid", "band", declared.clone()),
            def("band_high", "band", declared),
        ];
        assign(&mut tags).unwrap();
        let bitmaps: Vec<RoaringBitmap> = vec![(0..10).collect(), (10..20).collect(), (19..30).collect()];
        let err = check(&tags, &bitmaps).unwrap_err();
        assert!(err.contains("`band_mid` and `band_high` share 1 member;"), "{err}");
        let disjoint: Vec<RoaringBitmap> = vec![(0..10).collect(), (10..20).collect(), (20..30).collect()];
        check(&tags, &disjoint).unwrap();
    }
}
