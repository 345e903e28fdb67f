//! "Did you mean …?" for names people type: columns of an export, mapping
//! keys, features and tags in rules, tag names on the command line.
//!
//! One definition for every crate, so a typo gets the same help wherever it
//! is made.

/// The closest of `candidates` to an unknown `name`, compared without case:
/// within edit distance 2 (1 for names of 1–2 characters, a third of the
/// length for long names), else sharing a prefix of at least 3 characters
/// with one a prefix of the other, or sharing the first 5 characters.
/// Ties go to the closer, then the first in name order.
pub fn suggest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let name = name.to_lowercase();
    let chars = name.chars().count();
    let max_distance = if chars <= 2 { 1 } else { 2.max(chars / 3) };
    let mut best: Option<((usize, usize), &'a str)> = None;
    for c in candidates {
        let lower = c.to_lowercase();
        let d = edit_distance(&name, &lower);
        let key = if d <= max_distance {
            (0, d)
        } else {
            let common = name.chars().zip(lower.chars()).take_while(|(a, b)| a == b).count();
            let prefix = lower.starts_with(&name) || name.starts_with(lower.as_str());
            if !((prefix && common >= 3) || common >= 5) {
                continue;
            }
            (1, usize::MAX - common)
        };
        if best.is_none_or(|(k, b)| (key, c) < (k, b)) {
            best = Some((key, c));
        }
    }
    best.map(|(_, c)| c)
}

/// Levenshtein distance over characters.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, &cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_name_wins() {
        let names = ["recency_days", "frequency", "member_id", "ordered_at"];
        assert_eq!(suggest("recency_dys", names), Some("recency_days"));
        assert_eq!(suggest("recency_", names), Some("recency_days"));
        assert_eq!(suggest("frequenc", names), Some("frequency"));
        assert_eq!(suggest("Member ID", names), Some("member_id"));
        assert_eq!(suggest("monetary", names), None);
        assert_eq!(suggest("x", ["y", "xy", "abc"]), Some("xy"));
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
