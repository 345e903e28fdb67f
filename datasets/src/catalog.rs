//! The fixed world members shop in: categories, ~8,000 products, ~4,500
//! stores in 30 cities.
//!
//! Sizes follow the real brand of the repository's DESIGN.md ("Scale of a
//! real brand": ~4,500 stores, ~8,000 core SKUs). The catalog is a pure
//! function of the seed, built once and shared read-only by every thread.
//! Per-category price ranges make category spend shares realistic (a
//! lipstick costs more than a bag of crisps), and Zipf-like popularity inside
//! each category gives best sellers and a long tail.

use crate::rng::{Rng, cumulative};

/// Index of a category in [`CATEGORIES`].
pub(crate) type CategoryId = usize;

/// One product category with its SKU count, price range and subcategories.
#[derive(Debug)]
pub(crate) struct Category {
    pub(crate) name: &'static str,
    pub(crate) skus: u32,
    pub(crate) price_min: f64,
    pub(crate) price_max: f64,
    pub(crate) subcategories: &'static [&'static str],
    pub(crate) brands: u32,
}

pub(crate) const BEAUTY: CategoryId = 0;
pub(crate) const SNACKS: CategoryId = 1;
pub(crate) const IP_LICENSED: CategoryId = 2;
pub(crate) const TOYS: CategoryId = 3;
pub(crate) const HOUSEHOLD: CategoryId = 4;
pub(crate) const STATIONERY: CategoryId = 6;
pub(crate) const PERSONAL_CARE: CategoryId = 7;
pub(crate) const APPAREL: CategoryId = 8;
pub(crate) const DIGITAL: CategoryId = 9;
pub(crate) const HOME_FRAGRANCE: CategoryId = 10;
pub(crate) const BAGS: CategoryId = 11;

/// The categories, 8,000 SKUs in total.
pub(crate) const CATEGORIES: [Category; 13] = [
    cat("beauty", 1400, 29.0, 199.0, &["skincare", "makeup", "fragrance", "nail", "masks", "beauty_tools"], 40),
    cat(
        "snacks",
        900,
        5.0,
        39.0,
        &["chips", "candy", "chocolate", "nuts", "drinks", "biscuits", "imported_snacks"],
        35,
    ),
    cat("ip_licensed", 800, 19.0, 299.0, &["plush", "blind_box", "figure", "keychain", "gift_set"], 1),
    cat("toys", 600, 15.0, 199.0, &["building_blocks", "puzzles", "plush_toys", "remote_control", "educational"], 25),
    cat("household", 800, 9.0, 89.0, &["kitchen", "cleaning", "storage", "bathroom", "tableware"], 30),
    cat("accessories", 700, 9.0, 79.0, &["hair", "jewelry", "eyewear", "phone_cases", "watches"], 30),
    cat("stationery", 500, 3.0, 49.0, &["pens", "notebooks", "office", "art_supplies"], 20),
    cat("personal_care", 600, 9.0, 69.0, &["oral_care", "hair_care", "body_care", "sanitary"], 25),
    cat("apparel", 500, 29.0, 199.0, &["socks", "underwear", "t_shirts", "sleepwear", "hats"], 20),
    cat("digital", 400, 29.0, 299.0, &["earphones", "chargers", "cables", "speakers", "power_banks"], 20),
    cat("home_fragrance", 250, 19.0, 129.0, &["candles", "diffusers", "sachets"], 12),
    cat("bags", 300, 29.0, 249.0, &["backpacks", "handbags", "wallets", "travel"], 15),
    cat("pet_supplies", 250, 9.0, 99.0, &["pet_food", "pet_toys", "pet_care"], 12),
];

const fn cat(
    name: &'static str,
    skus: u32,
    price_min: f64,
    price_max: f64,
    subcategories: &'static [&'static str],
    brands: u32,
) -> Category {
    Category { name, skus, price_min, price_max, subcategories, brands }
}

/// Number of categories.
pub(crate) const N_CATEGORIES: usize = CATEGORIES.len();

/// Licensed character series (invented names) of the `ip_licensed` category.
pub(crate) const IP_SERIES: [&str; 20] = [
    "Moonbun",
    "Pixel Paws",
    "Cloud Kitten",
    "Star Pudding",
    "Dino Pals",
    "Sky Whale",
    "Mochi Bear",
    "Space Otter",
    "Candy Ghost",
    "Lucky Fox",
    "Sleepy Panda",
    "Robo Duck",
    "Cactus Kid",
    "Ocean Jelly",
    "Forest Elf",
    "Neon Bunny",
    "Tiny Dragon",
    "Lantern Cat",
    "Bubble Frog",
    "Comet Pup",
];

/// Cities, largest first, with their relative share of stores and members.
pub(crate) const CITIES: [(&str, f64); 30] = [
    ("Shanghai", 9.0),
    ("Beijing", 8.5),
    ("Guangzhou", 7.0),
    ("Shenzhen", 7.0),
    ("Chengdu", 5.5),
    ("Hangzhou", 5.0),
    ("Wuhan", 4.5),
    ("Chongqing", 4.5),
    ("Nanjing", 4.0),
    ("Tianjin", 3.8),
    ("Suzhou", 3.6),
    ("Xi'an", 3.4),
    ("Changsha", 3.2),
    ("Zhengzhou", 3.0),
    ("Qingdao", 2.8),
    ("Shenyang", 2.5),
    ("Dongguan", 2.4),
    ("Foshan", 2.3),
    ("Ningbo", 2.2),
    ("Kunming", 2.1),
    ("Hefei", 2.0),
    ("Fuzhou", 1.9),
    ("Xiamen", 1.8),
    ("Jinan", 1.8),
    ("Dalian", 1.7),
    ("Harbin", 1.6),
    ("Nanning", 1.5),
    ("Changchun", 1.4),
    ("Shijiazhuang", 1.4),
    ("Guiyang", 1.3),
];

/// Number of stores, `S0001` to `S4500`.
pub(crate) const N_STORES: usize = 4_500;

/// Syllables brand names are made of.
const SYLLABLES: [&str; 24] = [
    "lu", "mi", "ko", "ra", "ne", "so", "ta", "vi", "zen", "po", "ka", "li", "mo", "na", "ri", "sa", "to", "ve", "yu",
    "za", "bel", "dor", "fin", "quin",
];

/// One SKU.
#[derive(Debug)]
pub(crate) struct Product {
    pub(crate) sku: String,
    pub(crate) category: CategoryId,
    pub(crate) subcategory: &'static str,
    pub(crate) brand: String,
    /// Index into [`IP_SERIES`]; set only for `ip_licensed`.
    pub(crate) ip_series: Option<usize>,
    /// List price of one unit, in currency units.
    pub(crate) price: f64,
}

/// Products, stores and the lookup tables the order simulation samples from.
#[derive(Debug)]
pub(crate) struct Catalog {
    pub(crate) products: Vec<Product>,
    /// Per category: its product indexes and their cumulative popularity.
    pub(crate) category_skus: Vec<(Vec<u32>, Vec<f64>)>,
    /// Per IP series: its product indexes.
    pub(crate) series_skus: Vec<Vec<u32>>,
    /// Store ids, `S0001` onwards.
    pub(crate) stores: Vec<String>,
    /// Per city: its store indexes (every city has at least one).
    pub(crate) city_stores: Vec<Vec<u32>>,
    /// Cumulative city weights.
    pub(crate) city_cum: Vec<f64>,
}

/// Stream tag of the catalog's random draws.
const STREAM_CATALOG: u64 = 3;

impl Catalog {
    /// Builds the catalog for `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        let mut rng = Rng::for_stream(seed, STREAM_CATALOG, 0);
        let total: u32 = CATEGORIES.iter().map(|c| c.skus).sum();
        let mut products = Vec::with_capacity(total as usize);
        let mut category_skus = Vec::with_capacity(N_CATEGORIES);
        let mut series_skus = vec![Vec::new(); IP_SERIES.len()];

        for (cid, c) in CATEGORIES.iter().enumerate() {
            let brands: Vec<String> = (0..c.brands).map(|_| brand_name(&mut rng)).collect();
            let first = products.len() as u32;
            for k in 0..c.skus {
                let ip_series = (cid == IP_LICENSED).then(|| rng.below(IP_SERIES.len() as u64) as usize);
                // Licensed products carry the series name as their brand.
                let brand = match ip_series {
                    Some(s) => IP_SERIES[s].to_string(),
                    None => brands[rng.below(brands.len() as u64) as usize].clone(),
                };
                let subcategory = c.subcategories[rng.below(c.subcategories.len() as u64) as usize];
                let raw = (c.price_min.ln() + rng.f64() * (c.price_max / c.price_min).ln()).exp();
                let price = retail_price(raw);
                let index = first + k;
                if let Some(s) = ip_series {
                    series_skus[s].push(index);
                }
                products.push(Product {
                    sku: format!("SKU{:06}", index + 1),
                    category: cid,
                    subcategory,
                    brand,
                    ip_series,
                    price,
                });
            }
            // Popularity: Zipf(0.8) over a random ranking of the category.
            let mut ranked: Vec<u32> = (first..first + c.skus).collect();
            for i in (1..ranked.len()).rev() {
                let j = rng.below(i as u64 + 1) as usize;
                ranked.swap(i, j);
            }
            let weights: Vec<f64> = (0..ranked.len()).map(|r| 1.0 / ((r + 1) as f64).powf(0.8)).collect();
            category_skus.push((ranked, cumulative(&weights)));
        }

        let city_weights: Vec<f64> = CITIES.iter().map(|c| c.1).collect();
        let city_cum = cumulative(&city_weights);
        let mut stores = Vec::with_capacity(N_STORES);
        let mut city_stores = vec![Vec::new(); CITIES.len()];
        for i in 0..N_STORES {
            // The first 30 stores open one per city, so every city has a store.
            let city = if i < CITIES.len() { i } else { rng.pick_cumulative(&city_cum) };
            city_stores[city].push(i as u32);
            stores.push(format!("S{:04}", i + 1));
        }

        Self { products, category_skus, series_skus, stores, city_stores, city_cum }
    }
}

/// A made-up brand name of two or three syllables, e.g. "Lumira".
fn brand_name(rng: &mut Rng) -> String {
    let n = 2 + rng.below(2);
    let mut name = String::new();
    for _ in 0..n {
        name.push_str(SYLLABLES[rng.below(SYLLABLES.len() as u64) as usize]);
    }
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
        None => name,
    }
}

/// Rounds a raw price the way shops label them: 29.9, 159.9, or 6.5 below 10.
fn retail_price(raw: f64) -> f64 {
    if raw >= 10.0 { raw.round() - 0.1 } else { (raw * 2.0).round() / 2.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_has_the_documented_shape() {
        let c = Catalog::new(1);
        assert_eq!(c.products.len(), 8_000);
        assert_eq!(c.stores.len(), N_STORES);
        const { assert!(N_CATEGORIES >= 12) };
        assert_eq!(c.products[0].sku, "SKU000001");
        assert_eq!(c.products[7_999].sku, "SKU008000");
        assert_eq!(c.stores[4_499], "S4500");
        assert!(c.city_stores.iter().all(|s| !s.is_empty()));
        for p in &c.products {
            let cat = &CATEGORIES[p.category];
            assert!(p.price >= cat.price_min - 0.5 && p.price <= cat.price_max + 0.5, "{p:?}");
            assert_eq!(p.ip_series.is_some(), p.category == IP_LICENSED);
        }
        assert!(c.series_skus.iter().all(|s| !s.is_empty()));
    }

    #[test]
    fn catalog_is_a_function_of_the_seed() {
        let a = Catalog::new(7);
        let b = Catalog::new(7);
        let c = Catalog::new(8);
        let prices = |c: &Catalog| c.products.iter().map(|p| p.price).collect::<Vec<_>>();
        assert_eq!(prices(&a), prices(&b));
        assert_ne!(prices(&a), prices(&c));
    }

    #[test]
    fn retail_prices_end_in_nine_tenths() {
        assert_eq!(retail_price(29.4), 28.9);
        assert_eq!(retail_price(6.3), 6.5);
    }
}
