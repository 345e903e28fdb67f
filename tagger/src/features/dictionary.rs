//! Text columns as codes: each distinct value gets a code when a batch
//! first shows it (in any thread, so in no fixed order), and the codes are
//! renumbered in sorted order of the values once the pass is over, so that
//! the columns and the tags expanded over the values do not depend on the
//! thread schedule. Batches arrive dictionary-encoded: a batch maps its
//! few distinct values once, never a value per line.

use std::collections::HashMap;
use std::sync::Mutex;

use arrow::array::{Array, AsArray, DictionaryArray, StringArray};
use arrow::datatypes::Int32Type;

use super::NO_CODE;
use crate::{Error, Result};

/// Values of a text column, assigned codes in the order first seen by any
/// thread (so not deterministic) and sorted into final codes after the pass.
pub(super) struct Interner {
    map: HashMap<String, u32>,
    values: Vec<String>,
    /// Values kept at most; a new value past them gets no code.
    pub(super) limit: usize,
    /// A value was refused for the limit.
    pub(super) over: bool,
}

impl Default for Interner {
    fn default() -> Interner {
        Interner::capped(usize::MAX)
    }
}

impl Interner {
    /// An interner that already knows `values` (sorted), so their codes are
    /// their sorted positions from the start.
    pub(super) fn seeded(values: &[String]) -> Interner {
        let mut it = Interner::default();
        for v in values {
            it.code(v);
        }
        it
    }

    /// An interner that keeps at most `limit` values.
    pub(super) fn capped(limit: usize) -> Interner {
        Interner { map: HashMap::new(), values: Vec::new(), limit, over: false }
    }

    fn code(&mut self, v: &str) -> u32 {
        if let Some(c) = self.map.get(v) {
            return *c;
        }
        if self.values.len() >= self.limit {
            self.over = true;
            return NO_CODE;
        }
        let c = self.values.len() as u32;
        self.map.insert(v.to_string(), c);
        self.values.push(v.to_string());
        c
    }

    /// Global codes of one batch's dictionary values.
    fn codes_of(lock: &Mutex<Interner>, values: &StringArray) -> Vec<u32> {
        let mut g = lock.lock().expect("interner lock");
        (0..values.len()).map(|i| if values.is_null(i) { NO_CODE } else { g.code(values.value(i)) }).collect()
    }

    /// Sorted values and the map from first-seen code to sorted code.
    pub(super) fn finish(self) -> Dictionary {
        let mut order: Vec<u32> = (0..self.values.len() as u32).collect();
        order.sort_by(|a, b| self.values[*a as usize].cmp(&self.values[*b as usize]));
        let mut remap = vec![0u32; order.len()];
        for (sorted, first_seen) in order.iter().enumerate() {
            remap[*first_seen as usize] = sorted as u32;
        }
        let values = order.iter().map(|c| self.values[*c as usize].clone()).collect();
        Dictionary { values, remap }
    }
}

/// The distinct values of a text column, sorted.
#[derive(Debug, Clone, Default)]
pub struct Dictionary {
    /// Values; a member's code indexes this.
    pub values: Vec<String>,
    pub(super) remap: Vec<u32>,
}

impl Dictionary {
    pub(super) fn sorted_code(&self, first_seen: u32) -> u32 {
        if first_seen == NO_CODE { NO_CODE } else { self.remap[first_seen as usize] }
    }
}
pub(super) struct Interners {
    pub(super) category: Mutex<Interner>,
    pub(super) channel: Mutex<Interner>,
    pub(super) store: Mutex<Interner>,
    pub(super) gender: Mutex<Interner>,
    pub(super) city: Mutex<Interner>,
    pub(super) register_channel: Mutex<Interner>,
}
pub(super) fn dict_codes(lock: &Mutex<Interner>, col: &dyn Array) -> Result<(Vec<u32>, DictionaryArray<Int32Type>)> {
    let dict = col
        .as_dictionary_opt::<Int32Type>()
        .ok_or_else(|| Error::Internal(format!("expected a dictionary column, got {}", col.data_type())))?
        .clone();
    let values = dict.values().as_string_opt::<i32>().ok_or_else(|| Error::Internal("dictionary values".into()))?;
    Ok((Interner::codes_of(lock, values), dict))
}

#[inline]
pub(super) fn code_at(codes: &[u32], dict: &DictionaryArray<Int32Type>, row: usize) -> u32 {
    if dict.is_null(row) { NO_CODE } else { codes[dict.keys().value(row) as usize] }
}
/// Makes a value usable in a column or tag name: lowercase ASCII letters,
/// digits and single underscores (`"Mini Program"` → `mini_program`).
pub fn slug(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for ch in value.chars().flat_map(char::to_lowercase) {
        if ch.is_ascii_alphanumeric() {
            out.push(ch);
        } else if !out.ends_with('_') && !out.is_empty() {
            out.push('_');
        }
    }
    while out.ends_with('_') {
        out.pop();
    }
    if out.is_empty() { "unknown".into() } else { out }
}

/// Slugs of a dictionary's values, made unique by a `_2`, `_3` … suffix.
pub fn unique_slugs(values: &[String]) -> Vec<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    values
        .iter()
        .map(|v| {
            let s = slug(v);
            let n = seen.entry(s.clone()).or_insert(0);
            *n += 1;
            if *n == 1 { s } else { format!("{s}_{n}") }
        })
        .collect()
}
