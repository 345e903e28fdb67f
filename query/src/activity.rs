//! What a set of members bought in a few windows of time, from one scan of
//! `orders`.
//!
//! An experiment report, a plan and the holdout report all ask the same
//! question: for each member of a set, in each of a few windows (the
//! experiment's window, the pre-period CUPED adjusts by), how much did the
//! member spend, in how many distinct orders, and when did they first buy.
//! One scan answers it for every window at once.
//!
//! Memory follows the windows, never the history: each batch's lines in a
//! window are folded into one 32-byte record per (member, window, order)
//! as they arrive, and only those records are kept. An order is told apart
//! by the 64-bit xxh3 hash of its id: two orders of one member in one
//! window collide with probability about k²/2⁶⁵ for k orders, far below
//! anything a report can show.

use std::sync::Mutex;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, Int64Type, TimestampMicrosecondType};
use roaring::RoaringBitmap;
use taglake_storage::scan::{Wanted, scan, table_files};
use taglake_storage::{Table, Warehouse};
use xxhash_rust::xxh3::xxh3_64;

use crate::{Error, Result};

/// What one member did in one window.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Cell {
    /// Sum of the member's line amounts.
    pub revenue: f64,
    /// Distinct orders.
    pub orders: u32,
    /// When the member first bought in the window (µs since the epoch;
    /// meaningless when `orders` is 0).
    pub first_at: i64,
}

/// The members of a set who bought in at least one of the windows, in key
/// order, with a [`Cell`] per window; the others bought nothing in any.
#[derive(Debug, Clone, Default)]
pub struct Activity {
    windows: Vec<(i64, i64)>,
    keys: Vec<u32>,
    cells: Vec<Cell>,
    /// The newest order in the whole table (µs), to tell a window not yet
    /// complete; `None` when there are no orders.
    pub newest: Option<i64>,
}

impl Activity {
    /// The windows, `[from, to)` in µs since the epoch, in the order asked.
    pub fn windows(&self) -> &[(i64, i64)] {
        &self.windows
    }

    /// Members who bought in some window, with their cells (one per window).
    pub fn members(&self) -> impl ExactSizeIterator<Item = (u32, &[Cell])> + '_ {
        let w = self.windows.len().max(1);
        self.keys.iter().copied().zip(self.cells.chunks(w))
    }

    /// This activity with `extra` added to window `window` (member, what
    /// to add; any order): revenue and orders add up, the first purchase is
    /// the earlier. For simulations that plant a known effect.
    pub fn with_added(&self, window: usize, mut extra: Vec<(u32, Cell)>) -> Activity {
        let w = self.windows.len();
        assert!(window < w, "window {window} of {w}");
        extra.sort_unstable_by_key(|e| e.0);
        let mut out =
            Activity { windows: self.windows.clone(), keys: Vec::new(), cells: Vec::new(), newest: self.newest };
        let mut mine = self.members().peekable();
        let mut theirs = extra.into_iter().peekable();
        loop {
            let next_mine = mine.peek().map(|m| m.0);
            let next_theirs = theirs.peek().map(|t| t.0);
            let key = match (next_mine, next_theirs) {
                (None, None) => break,
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) => a,
                (None, Some(b)) => b,
            };
            let mut cells = match mine.next_if(|m| m.0 == key) {
                Some((_, c)) => c.to_vec(),
                None => vec![Cell::default(); w],
            };
            while let Some((_, add)) = theirs.next_if(|t| t.0 == key) {
                let c = &mut cells[window];
                c.first_at = match (c.orders, add.orders) {
                    (0, _) => add.first_at,
                    (_, 0) => c.first_at,
                    _ => c.first_at.min(add.first_at),
                };
                c.revenue += add.revenue;
                c.orders += add.orders;
            }
            out.keys.push(key);
            out.cells.extend(cells);
        }
        out
    }

    /// Builds an activity from `(member, window index, order hash, amount,
    /// ordered at)` lines in any order: what [`scan_activity`] folds the
    /// table into, and what tests and simulations feed directly.
    pub fn from_lines(windows: &[(i64, i64)], mut lines: Vec<Line>, newest: Option<i64>) -> Activity {
        lines.sort_unstable_by_key(|l| (l.key, l.window, l.order));
        let lines = fold(lines);
        let w = windows.len();
        let mut out = Activity { windows: windows.to_vec(), keys: Vec::new(), cells: Vec::new(), newest };
        for l in lines {
            if out.keys.last() != Some(&l.key) {
                out.keys.push(l.key);
                out.cells.extend(std::iter::repeat_n(Cell::default(), w));
            }
            let base = out.cells.len() - w;
            let cell = &mut out.cells[base + l.window as usize];
            cell.first_at = if cell.orders == 0 { l.at } else { cell.first_at.min(l.at) };
            cell.revenue += l.amount;
            cell.orders += 1;
        }
        out
    }
}

/// One order line of a member in a window (or, once folded, one order).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Line {
    /// Member key.
    pub key: u32,
    /// Index of the window.
    pub window: u8,
    /// xxh3 of the order id.
    pub order: u64,
    /// Line amount (once folded: the order's).
    pub amount: f64,
    /// When it was ordered (once folded: the order's first line), µs.
    pub at: i64,
}

impl Line {
    /// A line of order `order_id`.
    pub fn new(key: u32, window: u8, order_id: &str, amount: f64, at: i64) -> Line {
        Line { key, window, order: xxh3_64(order_id.as_bytes()), amount, at }
    }
}

/// Lines sorted by (key, window, order) folded into one per order.
fn fold(lines: Vec<Line>) -> Vec<Line> {
    let mut out: Vec<Line> = Vec::with_capacity(lines.len());
    for l in lines {
        match out.last_mut() {
            Some(o) if (o.key, o.window, o.order) == (l.key, l.window, l.order) => {
                o.amount += l.amount;
                o.at = o.at.min(l.at);
            }
            _ => out.push(l),
        }
    }
    out
}

/// The most windows one scan takes.
pub const MAX_WINDOWS: usize = 8;

/// What the members of `set` bought in each of `windows` (`[from, to)`, µs
/// since the epoch; they may overlap: a line counts in each window it falls
/// in).
pub async fn scan_activity(wh: &Warehouse, set: &RoaringBitmap, windows: &[(i64, i64)]) -> Result<Activity> {
    if windows.is_empty() || windows.len() > MAX_WINDOWS {
        return Err(Error::Invalid(format!("between 1 and {MAX_WINDOWS} windows, not {}", windows.len())));
    }
    let t = Table::Orders;
    let files = table_files(wh, t).await?;
    let wanted = [
        Wanted::plain(t, "member_key"),
        Wanted::plain(t, "order_id"),
        Wanted::plain(t, "ordered_at"),
        Wanted::plain(t, "amount"),
    ];
    let found: Mutex<(Vec<Line>, i64)> = Mutex::new((Vec::new(), i64::MIN));
    let (lo, hi) = (windows.iter().map(|w| w.0).min().unwrap_or(0), windows.iter().map(|w| w.1).max().unwrap_or(0));
    taglake_storage::scan::blocking(|| {
        scan::<_, Error>(t, &files, &wanted, |b| {
            let keys = b.column(0).as_primitive::<Int64Type>();
            let ids = b.column(1).as_string::<i32>();
            let at = b.column(2).as_primitive::<TimestampMicrosecondType>();
            let amount = b.column(3).as_primitive::<Float64Type>();
            let mut local = Vec::new();
            let mut newest = i64::MIN;
            for r in 0..b.num_rows() {
                if at.is_null(r) || keys.is_null(r) {
                    continue;
                }
                let when = at.value(r);
                newest = newest.max(when);
                if when < lo || when >= hi {
                    continue;
                }
                let Ok(key) = u32::try_from(keys.value(r)) else { continue };
                if !set.contains(key) {
                    continue;
                }
                let value = if amount.is_null(r) { 0.0 } else { amount.value(r) };
                for (w, &(from, to)) in windows.iter().enumerate() {
                    if when >= from && when < to {
                        local.push(Line::new(key, w as u8, ids.value(r), value, when));
                    }
                }
            }
            local.sort_unstable_by_key(|l: &Line| (l.key, l.window, l.order));
            let local = fold(local);
            let mut all = found.lock().expect("activity");
            all.0.extend(local);
            all.1 = all.1.max(newest);
            Ok(())
        })
    })?;
    let (lines, newest) = found.into_inner().expect("activity");
    Ok(Activity::from_lines(windows, lines, (newest != i64::MIN).then_some(newest)))
}

/// The newest `ordered_at` in `orders` (µs), from a scan of that column
/// alone; `None` without orders.
pub async fn newest_order(wh: &Warehouse) -> Result<Option<i64>> {
    let t = Table::Orders;
    let files = table_files(wh, t).await?;
    let newest = Mutex::new(None::<i64>);
    taglake_storage::scan::blocking(|| {
        scan::<_, Error>(t, &files, &[Wanted::plain(t, "ordered_at")], |b| {
            let max = arrow::compute::max(b.column(0).as_primitive::<TimestampMicrosecondType>());
            let mut n = newest.lock().expect("newest");
            *n = (*n).max(max);
            Ok(())
        })
    })?;
    Ok(newest.into_inner().expect("newest"))
}

/// The end of the latest whole day (UTC midnight) at or before `at`, µs:
/// history windows end there, so no window holds a day only in part.
pub fn day_start(at: i64) -> i64 {
    at.div_euclid(DAY_US) * DAY_US
}

/// Microseconds in a day.
pub const DAY_US: i64 = 86_400_000_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_fold_into_orders_per_member_and_window() {
        let windows = [(0, 100), (50, 200)];
        let lines = vec![
            Line::new(7, 0, "a", 10.0, 60),
            Line::new(3, 1, "b", 1.0, 150),
            Line::new(7, 0, "a", 5.0, 55),
            Line::new(7, 1, "a", 10.0, 60),
            Line::new(7, 1, "a", 5.0, 55),
            Line::new(7, 0, "c", 2.5, 90),
        ];
        let a = Activity::from_lines(&windows, lines, Some(150));
        let got: Vec<(u32, Vec<Cell>)> = a.members().map(|(k, c)| (k, c.to_vec())).collect();
        assert_eq!(
            got,
            vec![
                (3, vec![Cell::default(), Cell { revenue: 1.0, orders: 1, first_at: 150 }]),
                (
                    7,
                    vec![
                        Cell { revenue: 17.5, orders: 2, first_at: 55 },
                        Cell { revenue: 15.0, orders: 1, first_at: 55 }
                    ]
                ),
            ]
        );
        assert_eq!(a.newest, Some(150));
        let more = a.with_added(
            0,
            vec![
                (5, Cell { revenue: 2.0, orders: 1, first_at: 9 }),
                (7, Cell { revenue: 1.0, orders: 1, first_at: 99 }),
                (3, Cell { revenue: 4.0, orders: 0, first_at: 0 }),
            ],
        );
        let got: Vec<(u32, Vec<Cell>)> = more.members().map(|(k, c)| (k, c.to_vec())).collect();
        assert_eq!(
            got[0],
            (3, vec![Cell { revenue: 4.0, orders: 0, first_at: 0 }, Cell { revenue: 1.0, orders: 1, first_at: 150 }])
        );
        assert_eq!(got[1], (5, vec![Cell { revenue: 2.0, orders: 1, first_at: 9 }, Cell::default()]));
        assert_eq!(got[2].1[0], Cell { revenue: 18.5, orders: 3, first_at: 55 });
    }
}
