//! Looking at audiences before using them: how much they overlap, and a
//! few of their members.
//!
//! `taglake audience overlap` and `taglake audience sample` print these;
//! the counting and the choice of members live here, beside the audience
//! language, so the CLI only parses arguments and renders. On a cluster
//! the overlap is counted by the cluster (one `audience('…')` count per
//! pair, through the caller's counter) instead of from local bitmaps.

use arrow::datatypes::Schema;
use roaring::RoaringBitmap;

use crate::audience::{self, Node};
use crate::tagset::TagSet;

/// Members in both audiences of each pair: `matrix[i][j]` is the size of
/// `sets[i] ∩ sets[j]`, so the diagonal holds each audience's size.
pub fn overlap(sets: &[RoaringBitmap]) -> Vec<Vec<u64>> {
    sets.iter().map(|a| sets.iter().map(|b| a.intersection_len(b)).collect()).collect()
}

/// The audience of the members in both `a` and `b`.
pub fn both(a: &str, b: &str) -> String {
    format!("({a}) AND ({b})")
}

/// [`overlap`] by counting audience expressions with `count` (e.g. on a
/// cluster): each audience, then [`both`] of each pair once, in row order;
/// the matrix is symmetric. Stops at the first count that fails.
pub async fn overlap_counted<E>(
    exprs: &[String],
    count: impl AsyncFn(&str) -> std::result::Result<u64, E>,
) -> std::result::Result<Vec<Vec<u64>>, E> {
    let n = exprs.len();
    let mut matrix = vec![vec![0u64; n]; n];
    for i in 0..n {
        for j in i..n {
            let text = if i == j { exprs[i].clone() } else { both(&exprs[i], &exprs[j]) };
            matrix[i][j] = count(&text).await?;
            matrix[j][i] = matrix[i][j];
        }
    }
    Ok(matrix)
}

/// Members drawn from an audience to look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// The members drawn, in key order ([`audience::sample`]).
    pub keys: Vec<u32>,
    /// How many members the audience has.
    pub audience: u64,
}

impl Sample {
    /// `n` members of `node`'s audience, the same ones for the same seed.
    pub fn draw(node: &Node, tags: &TagSet, n: usize, seed: u64) -> crate::Result<Sample> {
        let selected = audience::evaluate(node, tags)?;
        Ok(Sample { keys: audience::sample(&selected, n, seed), audience: selected.len() })
    }

    /// The statement reading `columns` of `members` for the members drawn,
    /// ordered by member id (no rows, but the columns, when none were).
    pub fn sql(&self, columns: &[String]) -> String {
        let select = columns.iter().map(|c| format!("\"{}\"", c.replace('"', "\"\""))).collect::<Vec<_>>().join(", ");
        if self.keys.is_empty() {
            format!("SELECT {select} FROM members WHERE false")
        } else {
            let list = self.keys.iter().map(|k| k.to_string()).collect::<Vec<_>>().join(", ");
            format!("SELECT {select} FROM members WHERE member_key IN ({list}) ORDER BY member_id")
        }
    }
}

/// The columns a sample shows by default: the member attributes, that is
/// the Delta table's columns `members` (whose schema this is) has, not the
/// tag and family columns it adds, nor the internal key.
pub fn attribute_columns(members: &Schema) -> Vec<String> {
    taglake_storage::Table::Members
        .columns()
        .iter()
        .map(|c| c.name.to_string())
        .filter(|c| c != "member_key" && members.field_with_name(c).is_ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::{DataType, Field};

    use super::*;
    use crate::audience::tests::small_tags;

    fn sets(exprs: &[&str]) -> Vec<RoaringBitmap> {
        let tags = small_tags();
        exprs.iter().map(|e| audience::evaluate(&audience::parse(e, &tags).unwrap(), &tags).unwrap()).collect()
    }

    #[test]
    fn overlap_holds_sizes_on_the_diagonal_and_is_symmetric() {
        let m = overlap(&sets(&["tier_gold", "category_lover_beauty", "tier_gold AND NOT tier_gold"]));
        // Multiples of 5 and of 3 below 200: 40 and 67, 14 of both.
        assert_eq!(m, vec![vec![40, 14, 0], vec![14, 67, 0], vec![0, 0, 0]]);
    }

    #[test]
    fn counted_overlap_is_the_bitmap_overlap() {
        let exprs: Vec<String> =
            ["tier_gold", "category_lover_beauty OR dormant_60_90", "NOT in_experiment"].map(String::from).to_vec();
        let tags = small_tags();
        let asked = std::cell::RefCell::new(Vec::new());
        let count = async |text: &str| -> crate::Result<u64> {
            asked.borrow_mut().push(text.to_string());
            audience::count(&audience::parse(text, &tags)?, &tags)
        };
        let counted = futures::executor::block_on(overlap_counted(&exprs, count)).unwrap();
        let strs: Vec<&str> = exprs.iter().map(String::as_str).collect();
        assert_eq!(counted, overlap(&sets(&strs)));
        // Each pair once: n (n + 1) / 2 counts.
        assert_eq!(asked.borrow().len(), 6);
        assert_eq!(asked.borrow()[1], "(tier_gold) AND (category_lover_beauty OR dormant_60_90)");
    }

    #[test]
    fn a_failed_count_stops_the_overlap() {
        let exprs: Vec<String> = vec!["a".into(), "b".into()];
        let count = async |text: &str| if text == "b" { Err(text.to_string()) } else { Ok(1) };
        assert_eq!(futures::executor::block_on(overlap_counted(&exprs, count)), Err("b".to_string()));
    }

    #[test]
    fn a_sample_reads_its_members_or_no_rows() {
        let tags = small_tags();
        let node = audience::parse("tier_gold", &tags).unwrap();
        let s = Sample::draw(&node, &tags, 3, 1).unwrap();
        assert_eq!(s.audience, 40);
        assert_eq!(s.keys.len(), 3);
        assert!(s.keys.iter().all(|k| k % 5 == 0));
        assert_eq!(Sample::draw(&node, &tags, 3, 1).unwrap(), s);
        let columns = vec!["member_id".to_string(), "odd\"name".to_string()];
        let keys = s.keys.iter().map(|k| k.to_string()).collect::<Vec<_>>().join(", ");
        assert_eq!(
            s.sql(&columns),
            format!(
                "SELECT \"member_id\", \"odd\"\"name\" FROM members WHERE member_key IN ({keys}) ORDER BY member_id"
            )
        );
        let none = Sample { keys: Vec::new(), audience: 0 };
        assert_eq!(none.sql(&columns), "SELECT \"member_id\", \"odd\"\"name\" FROM members WHERE false");
    }

    #[test]
    fn attribute_columns_are_the_stored_ones_present() {
        let stored: Vec<&str> = taglake_storage::Table::Members.columns().iter().map(|c| c.name).collect();
        let mut fields: Vec<Field> = stored.iter().map(|n| Field::new(*n, DataType::Utf8, true)).collect();
        fields.push(Field::new("tier_gold", DataType::Boolean, false));
        let all = attribute_columns(&Schema::new(fields.clone()));
        assert_eq!(all, stored.iter().filter(|n| **n != "member_key").map(|n| n.to_string()).collect::<Vec<_>>());
        // A column the table lacks (an older warehouse) is left out.
        let fewer = attribute_columns(&Schema::new(fields[..fields.len() - 2].to_vec()));
        assert!(fewer.len() < all.len());
        assert!(!fewer.contains(&"tier_gold".to_string()));
    }
}
