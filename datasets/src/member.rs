//! One member: profile and order history, each a pure function of
//! `(seed, member index)`.
//!
//! Purity is what makes the generator parallel and deterministic at once: the
//! members file (which needs the total spend for the points balance) and the
//! order part that holds a member's lines both recompute the member from
//! scratch, on any thread, in any order, and agree exactly. Two independent
//! random streams per member keep the profile cheap to recompute without
//! simulating orders.
//!
//! Order volume is calibrated analytically ([`World::new`]) so the average
//! number of lines per member over the whole base hits
//! `lines_per_member_year * years`, whatever the persona mix does to it.

use crate::calendar::{Calendar, Rhythm};
use crate::catalog::{
    APPAREL, BAGS, BEAUTY, CATEGORIES, Catalog, CategoryId, DIGITAL, HOME_FRAGRANCE, HOUSEHOLD, IP_LICENSED, IP_SERIES,
    N_CATEGORIES, PERSONAL_CARE, SNACKS, STATIONERY, TOYS,
};
use crate::config::GenerateConfig;
use crate::persona::{Persona, RECENT_DAYS};
use crate::rng::{Rng, SmallPoisson, cumulative};

/// Stream tag of the member profile draws.
const STREAM_PROFILE: u64 = 1;
/// Stream tag of the order-history draws.
const STREAM_ORDERS: u64 = 2;

/// Share of members who registered before the order window opened.
const REGISTERED_BEFORE_WINDOW: f64 = 0.65;
/// How far before the window the earliest members registered, in days.
const REGISTRATION_HISTORY_DAYS: u64 = 3 * 365;
/// Spread of the per-member activity (log-normal sigma); drives the 80/20 skew.
const ACTIVITY_SIGMA: f64 = 1.4;
/// Microseconds per day.
const DAY_US: i64 = 86_400 * 1_000_000;
/// Most orders one member can have: the order id holds a 4-digit sequence.
pub(crate) const MAX_ORDERS_PER_MEMBER: u32 = 9_999;
/// Most lines in one order.
const MAX_LINES_PER_ORDER: u32 = 40;
/// One-time buyers bought in the last this many days of the window: they
/// tried the brand once and have not come back yet (older one-timers are
/// indistinguishable from lapsed members and are left to the sleeping persona).
pub(crate) const ONE_TIME_DAYS: i64 = 270;
/// Sleeping members' last order is at least this many days before the end.
pub(crate) const SLEEPING_DAYS: i64 = 181;

/// Sales channels of an order, in the order of [`CHANNEL_BASE`].
pub(crate) const CHANNELS: [&str; 5] = ["store", "mini_program", "app", "marketplaces", "delivery"];
const CH_STORE: usize = 0;
const CH_APP: usize = 2;
const CH_MARKETPLACES: usize = 3;
const CH_DELIVERY: usize = 4;
/// Typical channel mix of a member.
const CHANNEL_BASE: [f64; 5] = [0.55, 0.20, 0.10, 0.10, 0.05];
/// Where members sign up.
pub(crate) const REGISTER_CHANNELS: [&str; 4] = ["store", "mini_program", "app", "marketplaces"];
const REGISTER_WEIGHTS: [f64; 4] = [0.60, 0.25, 0.10, 0.05];
/// Gender codes.
pub(crate) const GENDERS: [&str; 3] = ["F", "M", "U"];

/// Base line share of each category, before member noise; a persona's own
/// categories then take a fixed share and this mix fills the rest.
const GENERAL_MIX: [f64; N_CATEGORIES] = [0.16, 0.12, 0.08, 0.07, 0.09, 0.08, 0.06, 0.08, 0.07, 0.06, 0.05, 0.05, 0.03];

/// Everything shared by all members: catalog, calendar, calibrated rates.
#[derive(Debug)]
pub(crate) struct World {
    pub(crate) seed: u64,
    pub(crate) catalog: Catalog,
    pub(crate) calendar: Calendar,
    /// Orders per year of a member with activity 1 and frequency 1.
    pub(crate) orders_per_year: f64,
    persona_cum: Vec<f64>,
    register_cum: Vec<f64>,
    /// Per persona: lines-per-order law and, per category, the quantity law.
    basket_laws: Vec<(SmallPoisson, [SmallPoisson; N_CATEGORIES])>,
}

/// Mean extra units per line a category adds (snacks and household goods
/// come in multiples).
fn category_extra_quantity(category: CategoryId) -> f64 {
    match category {
        SNACKS => 0.4,
        HOUSEHOLD => 0.2,
        _ => 0.0,
    }
}

impl World {
    /// Builds the shared state for `cfg` and calibrates the order rate.
    pub(crate) fn new(cfg: &GenerateConfig) -> Self {
        let window = i64::from(cfg.window_days());
        let shares: Vec<f64> = Persona::ALL.iter().map(|p| p.share()).collect();
        let orders_per_year = calibrate(cfg.lines_per_member_year() * f64::from(cfg.years()), window);
        Self {
            seed: cfg.seed(),
            catalog: Catalog::new(cfg.seed()),
            calendar: Calendar::new(cfg.end_date(), cfg.window_days()),
            orders_per_year,
            persona_cum: cumulative(&shares),
            register_cum: cumulative(&REGISTER_WEIGHTS),
            basket_laws: Persona::ALL
                .iter()
                .map(|p| {
                    let params = p.params();
                    let lines = SmallPoisson::new((params.lines_per_order - 1.0).max(0.0));
                    let quantity =
                        std::array::from_fn(|c| SmallPoisson::new(params.extra_quantity + category_extra_quantity(c)));
                    (lines, quantity)
                })
                .collect(),
        }
    }
}

/// Days of `[lo, hi)` a sleeping member may be active in: the cut-off
/// `W - SLEEPING_DAYS - k` with `k` uniform in `[0, sleeping_spread(W))`.
fn sleeping_spread(window: i64) -> i64 {
    (window - SLEEPING_DAYS - 90).clamp(1, 365)
}

/// Solves for the orders-per-year rate that makes the expected lines per
/// member equal `target` (clamped at 0 when the guaranteed orders alone
/// exceed it). Exact in expectation: the activity has mean 1, the Poisson
/// counts are linear in the rate, and the span expectations below follow
/// the registration rules in [`registration`].
fn calibrate(target: f64, window: i64) -> f64 {
    let w = window as f64;
    let q = REGISTERED_BEFORE_WINDOW;
    // Registered in the window on a uniform day in [0, W-2]; active from the next day.
    let span_regular = q * w + (1.0 - q) * w / 2.0;
    let mean_cutoff = w - SLEEPING_DAYS as f64 - (sleeping_spread(window) - 1) as f64 / 2.0;
    let span_sleeping = q * mean_cutoff + (1.0 - q) * (mean_cutoff + 59.0) / 2.0;
    let mut fixed = 0.0;
    let mut slope = 0.0;
    for p in Persona::ALL {
        let params = p.params();
        let span = if p == Persona::SleepingMember { span_sleeping } else { span_regular };
        fixed += params.share * params.lines_per_order * f64::from(params.base_orders);
        slope += params.share * params.lines_per_order * params.frequency * span / 365.0;
    }
    ((target - fixed) / slope).max(0.0)
}

/// A member's registration day (window-relative; negative: before the
/// window) and active span `[lo, hi)`, by persona: a never-buyer is never
/// active, a sleeping member stops before the end of the window, a
/// one-time buyer is active only in its last days.
fn registration(rng: &mut Rng, persona: Persona, window: i64) -> (i64, (i64, i64)) {
    let before = rng.chance(REGISTERED_BEFORE_WINDOW);
    let history = -1 - rng.below(REGISTRATION_HISTORY_DAYS) as i64;
    match persona {
        Persona::NeverBought => {
            let reg = if before { history } else { rng.below(window as u64) as i64 };
            (reg, (0, 0))
        }
        Persona::SleepingMember => {
            let cutoff = window - SLEEPING_DAYS - rng.below(sleeping_spread(window) as u64) as i64;
            let reg = if before { history } else { rng.below((cutoff - 60) as u64) as i64 };
            (reg, ((reg + 1).max(0), cutoff))
        }
        Persona::OneTimeBuyer => {
            let reg = if before { history } else { rng.below((window - 1) as u64) as i64 };
            (reg, ((reg + 1).max(window - ONE_TIME_DAYS), window))
        }
        _ => {
            let reg = if before { history } else { rng.below((window - 1) as u64) as i64 };
            (reg, ((reg + 1).max(0), window))
        }
    }
}

/// Who a member is: birthday, gender, city and home store.
struct Demographics {
    birthday: Option<i32>,
    gender: Option<usize>,
    city: usize,
    home_store: u32,
}

impl Demographics {
    fn draw(rng: &mut Rng, world: &World, persona: Persona) -> Demographics {
        let cal = &world.calendar;
        let birthday = if rng.chance(0.12) {
            None
        } else {
            let (mean, sd) = if persona == Persona::WeekendFamily { (37.0, 5.0) } else { (29.0, 8.0) };
            let age = (mean + sd * rng.normal()).clamp(16.0, 70.0);
            let end_day = cal.start_day + cal.days;
            Some((end_day - (age * 365.25).round() as i64) as i32)
        };
        let gender_weights =
            if persona == Persona::BeautyLover { [0.85, 0.10, 0.03, 0.02] } else { [0.60, 0.32, 0.04, 0.04] };
        let gender = match rng.pick_cumulative(&to_cumulative(gender_weights)) {
            3 => None,
            g => Some(g),
        };
        let city = rng.pick_cumulative(&world.catalog.city_cum);
        let stores = &world.catalog.city_stores[city];
        let home_store = stores[rng.below(stores.len() as u64) as usize];
        Demographics { birthday, gender, city, home_store }
    }
}

/// A dormant stretch inside a regular member's long span (for 30 % of
/// them), never in the last 30 days; empty (`(lo, lo)`) otherwise.
fn dormant_gap(rng: &mut Rng, persona: Persona, span: (i64, i64)) -> (i64, i64) {
    let span_days = span.1 - span.0;
    let regular = !matches!(persona, Persona::SleepingMember | Persona::OneTimeBuyer);
    if regular && span_days >= 240 && rng.chance(0.3) {
        let len = 60 + rng.below((span_days / 2).min(240) as u64 - 59) as i64;
        let start = span.0 + rng.below((span.1 - 30 - len - span.0 + 1) as u64) as i64;
        (start, start + len)
    } else {
        (span.0, span.0)
    }
}

/// A member's weights of the categories (not yet cumulative): a noisy
/// general mix, with the persona's categories taking a fixed share.
fn category_mix(rng: &mut Rng, persona: Persona) -> [f64; N_CATEGORIES] {
    let mut mix = [0.0; N_CATEGORIES];
    for (m, base) in mix.iter_mut().zip(GENERAL_MIX) {
        *m = base * (0.25 * rng.normal()).exp();
    }
    // Each persona's typical basket: its categories take a fixed share of
    // the lines, the rest follows the member's noisy general mix.
    match persona {
        Persona::BeautyLover => concentrate(&mut mix, &[(BEAUTY, rng.range_f64(0.60, 0.80))]),
        Persona::SnackLover => concentrate(&mut mix, &[(SNACKS, rng.range_f64(0.75, 0.90))]),
        Persona::IpFan => concentrate(&mut mix, &[(IP_LICENSED, rng.range_f64(0.60, 0.80))]),
        Persona::WeekendFamily => {
            let toys = rng.range_f64(0.35, 0.45);
            let snacks = rng.range_f64(0.25, 0.32);
            concentrate(&mut mix, &[(TOYS, toys), (SNACKS, snacks)]);
        }
        Persona::MultiItemHoarder => {
            // Stocking up on daily necessities.
            let household = rng.range_f64(0.30, 0.40);
            let care = rng.range_f64(0.20, 0.30);
            concentrate(&mut mix, &[(HOUSEHOLD, household), (PERSONAL_CARE, care)]);
        }
        Persona::PromotionDriven => {
            // Gadgets and fashion bought on sale.
            let digital = rng.range_f64(0.25, 0.35);
            let apparel = rng.range_f64(0.20, 0.30);
            concentrate(&mut mix, &[(DIGITAL, digital), (APPAREL, apparel)]);
        }
        Persona::OneTimeBuyer => {
            // A passer-by's single quick buy: a pen, a notebook.
            concentrate(&mut mix, &[(STATIONERY, 0.85)]);
        }
        Persona::SleepingMember => {
            // Seasonal gift buyers who lapsed: candles, diffusers, bags.
            let fragrance = rng.range_f64(0.30, 0.40);
            let bags = rng.range_f64(0.15, 0.25);
            concentrate(&mut mix, &[(HOME_FRAGRANCE, fragrance), (BAGS, bags)]);
        }
        Persona::NeverBought => normalize(&mut mix),
    }
    mix
}

/// A member's weights of the channels (not yet cumulative): noisy, with
/// the deal hunters' marketplaces and the families' stores and delivery
/// weighed up.
fn channel_mix(rng: &mut Rng, persona: Persona) -> [f64; 5] {
    let mut channels = [0.0; 5];
    for (c, base) in channels.iter_mut().zip(CHANNEL_BASE) {
        *c = base * (0.7 * rng.normal()).exp();
    }
    match persona {
        Persona::PromotionDriven => {
            channels[CH_MARKETPLACES] *= 3.0;
            channels[CH_APP] *= 1.5;
        }
        Persona::WeekendFamily => {
            channels[CH_STORE] *= 1.5;
            channels[CH_DELIVERY] *= 1.5;
        }
        _ => {}
    }
    channels
}

/// A member's attributes and behaviour parameters.
#[derive(Debug, Clone)]
pub(crate) struct Profile {
    pub(crate) persona: Persona,
    /// Registration time, microseconds since the Unix epoch (UTC).
    pub(crate) registered_at_us: i64,
    /// Birthday, days since the Unix epoch.
    pub(crate) birthday: Option<i32>,
    /// Index into [`GENDERS`].
    pub(crate) gender: Option<usize>,
    pub(crate) city: usize,
    pub(crate) home_store: u32,
    /// Index into [`REGISTER_CHANNELS`].
    pub(crate) register_channel: usize,
    /// Number of orders in the window.
    pub(crate) orders: u32,
    /// Active days `[lo, hi)` of the window (window-relative).
    span: (i64, i64),
    /// A dormant stretch inside the span (empty when `gap.0 == gap.1`).
    gap: (i64, i64),
    rhythm: Rhythm,
    category_cum: [f64; N_CATEGORIES],
    channel_cum: [f64; 5],
    promo: f64,
    favourite_series: [usize; 2],
    /// Points earned per currency unit (1, 1.5 or 2).
    points_rate: f64,
    /// Share of earned points spent on vouchers, if the member redeems.
    redeemed_share: Option<f64>,
}

impl Profile {
    /// The profile of member `index` (0-based).
    ///
    /// Every draw comes from the member's own stream, in a fixed order (the
    /// order of the steps below): a change of order changes every member.
    pub(crate) fn new(world: &World, index: u64) -> Self {
        let mut rng = Rng::for_stream(world.seed, STREAM_PROFILE, index);
        let cal = &world.calendar;
        let window = cal.days;
        let persona = Persona::ALL[rng.pick_cumulative(&world.persona_cum)];
        let params = persona.params();

        let (reg_day, span) = registration(&mut rng, persona, window);
        let register_channel = rng.pick_cumulative(&world.register_cum);
        let reg_second = cal.sample_second_of_day(&mut rng, register_channel == 0);
        let registered_at_us = ((cal.start_day + reg_day) * 86_400 + reg_second) * 1_000_000;
        let Demographics { birthday, gender, city, home_store } = Demographics::draw(&mut rng, world, persona);

        // Behaviour.
        let activity = rng.lognormal_mean_one(ACTIVITY_SIGMA);
        let span_days = span.1 - span.0;
        let lambda = world.orders_per_year * params.frequency * activity * span_days as f64 / 365.0;
        let orders = (params.base_orders + rng.poisson(lambda)).min(MAX_ORDERS_PER_MEMBER);
        let gap = dormant_gap(&mut rng, persona, span);
        let rhythm = match persona {
            Persona::WeekendFamily => Rhythm::Family,
            Persona::OneTimeBuyer => Rhythm::Workday,
            _ => Rhythm::Usual,
        };
        let mix = category_mix(&mut rng, persona);
        let channels = channel_mix(&mut rng, persona);
        let promo = rng.range_f64(params.promo.0, params.promo.1);
        let favourite_series = [rng.below(IP_SERIES.len() as u64) as usize, rng.below(IP_SERIES.len() as u64) as usize];
        let points_rate = [1.0, 1.5, 2.0][rng.pick_cumulative(&[0.60, 0.85, 1.0])];
        let redeemed_share = rng.chance(0.55).then(|| rng.range_f64(0.2, 0.9));

        Self {
            persona,
            registered_at_us,
            birthday,
            gender,
            city,
            home_store,
            register_channel,
            orders,
            span,
            gap,
            rhythm,
            category_cum: to_cumulative(mix),
            channel_cum: to_cumulative(channels),
            promo,
            favourite_series,
            points_rate,
            redeemed_share,
        }
    }

    /// Points balance after spending `spend`: earned at the member's rate,
    /// minus whole 100-point vouchers redeemed; never negative (and capped at
    /// `u32::MAX`, which would take a spend of two billion).
    pub(crate) fn points_balance(&self, spend: f64) -> u32 {
        let earned = (spend * self.points_rate).floor() as i64;
        let redeemed = match self.redeemed_share {
            Some(share) => ((earned as f64 * share) / 100.0).floor() as i64 * 100,
            None => 0,
        };
        u32::try_from((earned - redeemed).max(0)).unwrap_or(u32::MAX)
    }
}

/// Gives each `(category, share)` its share and scales the rest of `mix` to
/// fill the remainder.
fn concentrate(mix: &mut [f64; N_CATEGORIES], fixed: &[(CategoryId, f64)]) {
    let taken: f64 = fixed.iter().map(|f| f.1).sum();
    for &(c, _) in fixed {
        mix[c] = 0.0;
    }
    let rest: f64 = mix.iter().sum();
    for m in mix.iter_mut() {
        *m *= (1.0 - taken) / rest;
    }
    for &(c, share) in fixed {
        mix[c] = share;
    }
}

fn normalize(mix: &mut [f64; N_CATEGORIES]) {
    let total: f64 = mix.iter().sum();
    for m in mix.iter_mut() {
        *m /= total;
    }
}

fn to_cumulative<const N: usize>(weights: [f64; N]) -> [f64; N] {
    let mut acc = 0.0;
    weights.map(|w| {
        acc += w;
        acc
    })
}

/// One order of a member.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Order {
    /// Microseconds since the Unix epoch (UTC).
    pub(crate) ordered_at_us: i64,
    /// Index into [`CHANNELS`].
    pub(crate) channel: usize,
    /// Store index; `None` for marketplace orders.
    pub(crate) store: Option<u32>,
    /// Its lines: `lines[first_line..first_line + n_lines]`.
    pub(crate) first_line: u32,
    pub(crate) n_lines: u32,
}

/// One order line.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Line {
    /// Product index in the catalog.
    pub(crate) product: u32,
    pub(crate) quantity: i32,
    /// Net paid, rounded to cents.
    pub(crate) amount: f64,
    /// Discount off the list price, rounded to cents (0 if none).
    pub(crate) discount: f64,
    pub(crate) coupon_used: bool,
}

/// A member's order history; reused across members to avoid allocation.
#[derive(Debug, Default)]
pub(crate) struct History {
    pub(crate) orders: Vec<Order>,
    pub(crate) lines: Vec<Line>,
}

impl History {
    /// Total net amount of all lines.
    pub(crate) fn spend(&self) -> f64 {
        self.lines.iter().map(|l| l.amount).sum()
    }

    /// Replaces the contents with the order history of member `index`.
    pub(crate) fn simulate(&mut self, world: &World, profile: &Profile, index: u64) {
        self.orders.clear();
        self.lines.clear();
        if profile.orders == 0 {
            return;
        }
        let mut rng = Rng::for_stream(world.seed, STREAM_ORDERS, index);
        let cal = &world.calendar;
        let catalog = &world.catalog;
        let params = profile.persona.params();

        let (lines_law, quantity_laws) = world.basket_laws[profile.persona as usize];
        let (lo, hi) = profile.span;
        for _ in 0..profile.orders {
            let channel = rng.pick_cumulative(&profile.channel_cum);
            let day = cal.sample_day(&mut rng, profile.rhythm, lo, hi, profile.gap);
            let second = cal.sample_second_of_day(&mut rng, channel == CH_STORE);
            self.orders.push(Order {
                ordered_at_us: (cal.start_day + day) * DAY_US + second * 1_000_000,
                channel,
                store: None,
                first_line: 0,
                n_lines: 0,
            });
        }
        self.orders.sort_unstable_by_key(|o| (o.ordered_at_us, o.channel));
        // Active members bought recently: if their last order is older than
        // RECENT_DAYS, it moves into that stretch (same time of day). Moving
        // only when needed keeps the bump in the last months small.
        if params.active {
            let recent_lo = (hi - RECENT_DAYS).max(lo);
            if let Some(last) = self.orders.last_mut()
                && last.ordered_at_us.div_euclid(DAY_US) - cal.start_day < recent_lo
            {
                let gap = (profile.gap.0.clamp(recent_lo, hi), profile.gap.1.clamp(recent_lo, hi));
                let day = cal.sample_day(&mut rng, profile.rhythm, recent_lo, hi, gap);
                last.ordered_at_us = (cal.start_day + day) * DAY_US + last.ordered_at_us.rem_euclid(DAY_US);
            }
        }

        for o in &mut self.orders {
            o.store = match o.channel {
                CH_MARKETPLACES => None,
                CH_STORE => Some(if rng.chance(0.75) {
                    profile.home_store
                } else if rng.chance(0.8) {
                    let stores = &catalog.city_stores[profile.city];
                    stores[rng.below(stores.len() as u64) as usize]
                } else {
                    rng.below(catalog.stores.len() as u64) as u32
                }),
                _ => Some(profile.home_store),
            };
            let promo_order = rng.chance(profile.promo);
            let coupon_order = promo_order && rng.chance(0.5);
            let wanted = (1 + rng.small_poisson(lines_law)).min(MAX_LINES_PER_ORDER);
            let first = self.lines.len();
            o.first_line = first as u32;
            for _ in 0..wanted {
                // Distinct SKUs within an order: redraw on a repeat.
                let mut product = None;
                for _ in 0..16 {
                    let p = pick_product(&mut rng, world, profile);
                    if !self.lines[first..].iter().any(|l| l.product == p) {
                        product = Some(p);
                        break;
                    }
                }
                let Some(product) = product else { continue };
                let item = &catalog.products[product as usize];
                let quantity = (1 + rng.small_poisson(quantity_laws[item.category])).min(99) as i32;
                let gross = item.price * f64::from(quantity);
                let promoted = rng.chance(if promo_order { 0.85 } else { 0.05 });
                let discount = if promoted { cents(gross * rng.range_f64(0.10, 0.35)) } else { 0.0 };
                self.lines.push(Line {
                    product,
                    quantity,
                    amount: cents(gross - discount),
                    discount,
                    coupon_used: promoted && coupon_order,
                });
            }
            o.n_lines = (self.lines.len() - first) as u32;
        }
    }
}

/// A product for one line of the member's basket.
fn pick_product(rng: &mut Rng, world: &World, profile: &Profile) -> u32 {
    let catalog = &world.catalog;
    let category = rng.pick_cumulative(&profile.category_cum);
    if category == IP_LICENSED && profile.persona == Persona::IpFan && rng.chance(0.65) {
        let series = &catalog.series_skus[profile.favourite_series[rng.below(2) as usize]];
        return series[rng.below(series.len() as u64) as usize];
    }
    let (skus, cum) = &catalog.category_skus[category];
    skus[rng.pick_cumulative(cum)]
}

/// Rounds to cents.
fn cents(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Category name of a product.
pub(crate) fn category_name(world: &World, product: u32) -> &'static str {
    CATEGORIES[world.catalog.products[product as usize].category].name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world(members: u64, years: u32, lines: f64) -> World {
        let cfg = GenerateConfig::builder()
            .members(members)
            .years(years)
            .lines_per_member_year(lines)
            .out("/unused")
            .build()
            .unwrap();
        World::new(&cfg)
    }

    #[test]
    fn profiles_and_histories_are_pure() {
        let w = world(100, 2, 10.0);
        for i in [0, 7, 99] {
            let a = Profile::new(&w, i);
            let b = Profile::new(&w, i);
            assert_eq!(format!("{a:?}"), format!("{b:?}"));
            let (mut ha, mut hb) = (History::default(), History::default());
            ha.simulate(&w, &a, i);
            hb.simulate(&w, &b, i);
            assert_eq!(format!("{:?}", ha.lines), format!("{:?}", hb.lines));
        }
    }

    #[test]
    fn histories_follow_the_persona_rules() {
        for years in [1, 2, 5] {
            let w = world(3_000, years, 10.0);
            let end_us = (w.calendar.start_day + w.calendar.days) * 86_400 * 1_000_000;
            let start_us = w.calendar.start_day * 86_400 * 1_000_000;
            let mut h = History::default();
            for i in 0..3_000 {
                let p = Profile::new(&w, i);
                h.simulate(&w, &p, i);
                assert_eq!(h.orders.len() as u32, p.orders);
                match p.persona {
                    Persona::NeverBought => assert!(h.orders.is_empty()),
                    Persona::OneTimeBuyer => assert_eq!(h.orders.len(), 1),
                    Persona::SleepingMember => {
                        let last = h.orders.last().unwrap().ordered_at_us;
                        assert!(end_us - last >= 180 * 86_400 * 1_000_000);
                        assert!(h.orders.len() >= 3);
                    }
                    _ => {
                        assert!(h.orders.len() >= 3);
                        let last = h.orders.last().unwrap().ordered_at_us;
                        assert!(end_us - last <= RECENT_DAYS * 86_400 * 1_000_000);
                    }
                }
                for o in &h.orders {
                    assert!(o.ordered_at_us >= start_us && o.ordered_at_us < end_us);
                    assert!(o.ordered_at_us > p.registered_at_us);
                    assert!(o.n_lines >= 1);
                    assert_eq!(o.store.is_none(), o.channel == CH_MARKETPLACES);
                    let lines = &h.lines[o.first_line as usize..(o.first_line + o.n_lines) as usize];
                    for (k, l) in lines.iter().enumerate() {
                        assert!(l.quantity >= 1 && l.amount > 0.0 && l.discount >= 0.0);
                        assert!(lines[..k].iter().all(|m| m.product != l.product));
                    }
                }
                assert!(h.orders.windows(2).all(|o| o[0].ordered_at_us <= o[1].ordered_at_us));
                assert!(f64::from(p.points_balance(h.spend())) <= 2.0 * h.spend());
            }
        }
    }

    #[test]
    fn calibration_hits_the_target_in_expectation() {
        for (years, lines) in [(1, 10.0), (2, 10.0), (3, 25.0), (10, 4.0)] {
            let w = world(1, years, lines);
            let n = 20_000;
            let mut h = History::default();
            let mut total = 0usize;
            for i in 0..n {
                let p = Profile::new(&w, i);
                h.simulate(&w, &p, i);
                total += h.lines.len();
            }
            let mean = total as f64 / n as f64;
            let target = lines * f64::from(years);
            assert!((mean / target - 1.0).abs() < 0.06, "years {years}: {mean} vs {target}");
        }
    }

    #[test]
    fn rate_is_zero_when_guaranteed_orders_exceed_target() {
        assert_eq!(calibrate(0.1, 365), 0.0);
        assert!(calibrate(20.0, 730) > 0.0);
    }

    #[test]
    fn points_balance_is_rate_times_spend_minus_vouchers() {
        let w = world(10, 2, 10.0);
        let mut p = Profile::new(&w, 0);
        p.points_rate = 2.0;
        p.redeemed_share = None;
        assert_eq!(p.points_balance(100.4), 200);
        p.redeemed_share = Some(0.5);
        assert_eq!(p.points_balance(150.0), 200); // 300 earned, one 100-point voucher
        assert_eq!(p.points_balance(0.0), 0);
    }
}
