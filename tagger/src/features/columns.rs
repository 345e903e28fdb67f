//! The feature columns of a chunk, defined column by column from its
//! shard: the one place that says what each feature means.

use chrono::Datelike;

use super::dictionary::{Dictionary, unique_slugs};
use super::{
    CHUNK, Chunk, DAYPARTS, FeatureColumn, FeatureData, FeatureKind, FeatureSet, NO_CODE, NO_DAY, NO_POINTS, TextKind,
    UNITS, WEEKDAYS, civil,
};

/// Per member, the column (code) with the largest value above zero; ties
/// go to the lower code, which is the first name in sorted order.
fn largest<T: PartialOrd + Default + Copy>(columns: &[Vec<T>], len: usize) -> Vec<u32> {
    let mut best = vec![T::default(); len];
    let mut code = vec![NO_CODE; len];
    for (c, values) in columns.iter().enumerate() {
        for ((b, k), v) in best.iter_mut().zip(&mut code).zip(&values[..len]) {
            if *v > *b {
                *b = *v;
                *k = c as u32;
            }
        }
    }
    code
}

/// Per member, how many of `columns` are set (`set` of the value).
fn count_set<T: Copy>(columns: &[Vec<T>], len: usize, set: impl Fn(T) -> bool) -> Vec<f64> {
    let mut n = vec![0.0; len];
    for values in columns {
        for (n, v) in n.iter_mut().zip(&values[..len]) {
            *n += f64::from(u8::from(set(*v)));
        }
    }
    n
}
/// `d - day` as a number, without overflow for the "no day" marker (the
/// result is then discarded by `nan_if`).
fn days(d: i32, day: i32) -> f64 {
    (d as i64 - day as i64) as f64
}

fn nan_if(cond: bool, v: f64) -> f64 {
    if cond { f64::NAN } else { v }
}

/// The columns of one chunk as they are built: each is computed only when
/// wanted, by a loop over the members that the compiler sees whole (one
/// monomorphised loop per column, no call per value).
struct Columns<'w> {
    len: usize,
    wanted: &'w dyn Fn(&str) -> bool,
    cols: Vec<FeatureColumn>,
}

impl Columns<'_> {
    /// A numeric column, `f(m)` for member `m`.
    fn num(&mut self, name: impl Into<String>, kind: FeatureKind, f: impl Fn(usize) -> f64) {
        let len = self.len;
        self.values(name, kind, || (0..len).map(f).collect());
    }

    /// A numeric column computed whole.
    fn values(&mut self, name: impl Into<String>, kind: FeatureKind, f: impl FnOnce() -> Vec<f64>) {
        let name = name.into();
        let values = if (self.wanted)(&name) { f() } else { Vec::new() };
        self.cols.push(FeatureColumn { name, kind, data: FeatureData::Num(values) });
    }

    /// A text column of dictionary codes, computed whole.
    fn text(&mut self, name: &str, kind: TextKind, f: impl FnOnce() -> Vec<u32>) {
        let codes = if (self.wanted)(name) { f() } else { Vec::new() };
        self.cols.push(FeatureColumn {
            name: name.to_string(),
            kind: FeatureKind::Text(kind),
            data: FeatureData::Text(codes),
        });
    }
}
impl FeatureSet {
    /// The feature columns of chunk `index` (members `index * CHUNK ..`).
    ///
    /// Definitions, for a member as of D (days are UTC dates):
    /// - `recency_days` = D − day of the last order; `first_order_days_ago` likewise for the first;
    /// - `orders_{30d,90d,365d}` = distinct orders dated in `[D − n, D)`, `orders_total` all before D;
    ///   `spend_*` the sum of `amount` over the same lines;
    /// - `avg_order_value` = spend_total / orders_total; `items_per_order` = sum(quantity) / orders_total;
    /// - `weekend_share` = share of orders on Saturday or Sunday; `promotion_share` = share of lines
    ///   with `discount > 0` or `coupon_used`;
    /// - `growth_value` = growth points per unit × spend_365d;
    /// - `age` = whole years from birthday to D; `tenure_days` = D − registration day;
    /// - `home_store` = the store of most orders (ties: first by name), else the member's `home_store_id`;
    /// - `main_channel` = the channel of most orders (ties: first by name);
    /// - `main_category` = the category of most spend, if above 0 (ties: first by name);
    /// - `spend_share_{category}` = category spend / spend_total (null when spend_total ≤ 0);
    ///   `category_recency_days_{category}` = D − day of the last line in the category;
    /// - `order_share_{channel}` = share of orders in the channel; `month_orders_{1..12}`,
    ///   `weekday_orders_{mon..sun}`, `daypart_orders_{night..evening}` = orders by calendar month,
    ///   weekday and part of day.
    ///
    /// Members without orders have null order dates, shares and averages, and zero counts and sums.
    pub fn chunk(&self, index: usize) -> Chunk {
        self.chunk_columns(index, &|_| true)
    }

    // Long on purpose: the list of feature columns, one line each; it is a table more than a procedure.
    /// [`FeatureSet::chunk`] computing only the columns `wanted` accepts
    /// (the others are present, with no values). Order statistics a wanted
    /// column does not read are not computed.
    pub fn chunk_columns(&self, index: usize, wanted: &dyn Fn(&str) -> bool) -> Chunk {
        let shard = self.shards[index].lock().expect("shard lock").clone().expect("chunk used after release");
        let s = &*shard;
        let o = self.order_counts(s);
        let mix = std::cell::OnceCell::new();
        let mix = || mix.get_or_init(|| self.order_mix(s));
        let category_spend = std::cell::OnceCell::new();
        let category_spend = || category_spend.get_or_init(|| s.category_spend_wide());
        let len = s.len;
        let d = self.as_of_day;
        let start = ((self.first + index) * CHUNK) as u32;
        let base: Vec<u8> = s.registered.iter().map(|&r| (r != NO_DAY && r < d) as u8).collect();
        let mut c = Columns { len, wanted, cols: Vec::with_capacity(64) };
        let money = |v: i64| v as f64 / UNITS;
        let has_orders = |m: usize| o.orders[0][m] > 0;
        use FeatureKind::*;
        c.num("member_key", Int64, |m| (start as usize + m) as f64);
        c.num("as_of", Date, |_| d as f64);
        c.num("registered_date", Date, |m| nan_if(s.registered[m] == NO_DAY, s.registered[m] as f64));
        c.num("tenure_days", Int32, |m| nan_if(s.registered[m] == NO_DAY, days(d, s.registered[m])));
        c.num("first_order_date", Date, |m| nan_if(!has_orders(m), o.first_day[m] as f64));
        c.num("last_order_date", Date, |m| nan_if(!has_orders(m), o.last_day[m] as f64));
        c.num("recency_days", Int32, |m| nan_if(!has_orders(m), days(d, o.last_day[m])));
        c.num("first_order_days_ago", Int32, |m| nan_if(!has_orders(m), days(d, o.first_day[m])));
        for (name, w) in [("orders_30d", 3), ("orders_90d", 2), ("orders_365d", 1), ("orders_total", 0)] {
            c.num(name, Int32, |m| o.orders[w][m] as f64);
        }
        for (name, w) in [("spend_30d", 3), ("spend_90d", 2), ("spend_365d", 1), ("spend_total", 0)] {
            c.num(name, Float64, |m| money(s.totals[m].spend[w]));
        }
        c.num("avg_order_value", Float64, |m| {
            nan_if(!has_orders(m), money(s.totals[m].spend[0]) / o.orders[0][m] as f64)
        });
        c.num("items_total", Int64, |m| s.totals[m].items as f64);
        c.num("items_per_order", Float64, |m| nan_if(!has_orders(m), s.totals[m].items as f64 / o.orders[0][m] as f64));
        c.num("lines_total", Int64, |m| s.totals[m].lines as f64);
        c.values("distinct_categories", Int32, || count_set(&s.category, len, |t| t.last() != 0));
        c.values("distinct_channels", Int32, || count_set(&mix().channel_orders, len, |n| n > 0));
        c.values("weekend_share", Float64, || {
            let weekend = &mix().weekend_orders;
            (0..len).map(|m| nan_if(!has_orders(m), weekend[m] as f64 / o.orders[0][m] as f64)).collect()
        });
        c.num("promotion_share", Float64, |m| {
            let t = &s.totals[m];
            nan_if(t.lines == 0, t.promo_lines as f64 / t.lines as f64)
        });
        c.num("growth_value", Float64, |m| self.growth_per_unit * money(s.totals[m].spend[1]));
        let (as_of_month, as_of_day) = (self.as_of.month(), self.as_of.day());
        let as_of_year = i64::from(self.as_of.year());
        c.num("age", Int32, |m| {
            if s.birthday[m] == NO_DAY || s.birthday[m] >= d {
                return f64::NAN;
            }
            let (year, month, day) = civil(s.birthday[m]);
            let before = (as_of_month, as_of_day) < (month, day);
            (as_of_year - year - i64::from(before)) as f64
        });
        c.num(
            "birthday_month",
            Int32,
            |m| {
                if s.birthday[m] == NO_DAY { f64::NAN } else { civil(s.birthday[m]).1 as f64 }
            },
        );
        let sorted = |dict: &Dictionary, codes: &[u32]| codes.iter().map(|c| dict.sorted_code(*c)).collect::<Vec<_>>();
        c.text("gender", TextKind::Gender, || sorted(&self.genders, &s.gender));
        c.text("city", TextKind::City, || sorted(&self.cities, &s.city));
        c.text("register_channel", TextKind::RegisterChannel, || sorted(&self.register_channels, &s.register_channel));
        c.text("home_store", TextKind::Store, || mix().store.clone());
        c.text("main_channel", TextKind::Channel, || largest(&mix().channel_orders, len));
        c.text("main_category", TextKind::Category, || largest(category_spend(), len));
        c.num("points_balance", Int64, |m| nan_if(s.points[m] == NO_POINTS, s.points[m] as f64));
        let category_slugs = unique_slugs(&self.categories.values);
        for (k, slug) in category_slugs.iter().enumerate() {
            c.values(format!("spend_share_{slug}"), Float64, || {
                let spend = &category_spend()[k];
                let total = |m: usize| s.totals[m].spend[0];
                (0..len).map(|m| nan_if(total(m) <= 0, spend[m] as f64 / total(m) as f64)).collect()
            });
        }
        for (k, slug) in category_slugs.iter().enumerate() {
            c.values(format!("category_recency_days_{slug}"), Int32, || {
                let last = |m: usize| s.category[k][m].last();
                (0..len).map(|m| nan_if(last(m) == 0, days(d, last(m) as i32 - 1))).collect()
            });
        }
        for (k, slug) in unique_slugs(&self.channels.values).iter().enumerate() {
            c.values(format!("order_share_{slug}"), Float64, || {
                let n = &mix().channel_orders[k];
                (0..len).map(|m| nan_if(!has_orders(m), n[m] as f64 / o.orders[0][m] as f64)).collect()
            });
        }
        for month in 0..12 {
            c.values(format!("month_orders_{}", month + 1), Int32, || {
                mix().month_orders.iter().map(|n| n[month] as f64).collect()
            });
        }
        for (w, name) in WEEKDAYS.iter().enumerate() {
            c.values(format!("weekday_orders_{name}"), Int32, || {
                mix().weekday_orders.iter().map(|n| n[w] as f64).collect()
            });
        }
        for (p, name) in DAYPARTS.iter().enumerate() {
            c.values(format!("daypart_orders_{name}"), Int32, || {
                mix().daypart_orders.iter().map(|n| n[p] as f64).collect()
            });
        }
        Chunk { start, base, columns: c.cols }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn largest_and_count_set_go_member_by_member() {
        let columns = vec![vec![0i64, 5, 3, -1, 7], vec![0, 5, 4, -2, 0], vec![0, 6, 4, 0, 7]];
        // Ties go to the lower code; nothing above zero is no code.
        assert_eq!(largest(&columns, 5), [NO_CODE, 2, 1, NO_CODE, 0]);
        assert_eq!(count_set(&columns, 5, |v| v != 0), [0.0, 3.0, 3.0, 2.0, 2.0]);
        assert_eq!(largest::<i64>(&[], 2), [NO_CODE, NO_CODE]);
    }
}
