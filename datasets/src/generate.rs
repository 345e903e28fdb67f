//! Orchestration: lays out the output directory and writes the tables, the
//! order parts in parallel.
//!
//! Work is split by member so every file has exactly one writer and its bytes
//! depend only on the configuration: order part `p` holds the members
//! `[p * members_per_part, (p + 1) * members_per_part)` and is written by one
//! rayon task, streaming batches of about [`ORDER_BATCH_LINES`] lines, so
//! memory stays bounded at any size (plus 4 bytes per member: the points
//! balances the parts compute for the members file). The members and personas
//! files are then built in parallel chunks, written in member order.

use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;

use crate::catalog::N_STORES;
use crate::config::GenerateConfig;
use crate::error::{Error, Result};
use crate::member::{History, Profile, World};
use crate::write::{
    MembersBatch, OrdersBatch, TableWriter, member_id, members_schema, orders_schema, personas_schema, products_batch,
    products_schema,
};

/// A batch of order lines is flushed once it holds at least this many lines.
pub(crate) const ORDER_BATCH_LINES: usize = 64 * 1024;
/// Members per members/personas batch.
const MEMBER_CHUNK: u64 = 64 * 1024;
/// Member chunks built in parallel before they are written, in order.
const MEMBER_CHUNKS_IN_FLIGHT: u64 = 8;

/// What [`generate`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateSummary {
    /// Rows of `members` (and of `personas`).
    pub members: u64,
    /// Rows over all order parts.
    pub order_lines: u64,
    /// Distinct orders.
    pub orders: u64,
    /// Rows of `products`.
    pub products: u64,
    /// Distinct store ids that orders and home stores refer to.
    pub stores: u64,
    /// Every file written: members, products, personas, then the order parts in order.
    pub files: Vec<PathBuf>,
    /// Wall-clock time of the whole run.
    pub seconds: f64,
}

impl GenerateSummary {
    /// Order lines written per second.
    pub fn lines_per_second(&self) -> f64 {
        if self.seconds > 0.0 { self.order_lines as f64 / self.seconds } else { 0.0 }
    }
}

/// Path of order part `part`.
fn part_path(orders_dir: &Path, part: u64, ext: &str) -> PathBuf {
    orders_dir.join(format!("part-{part:05}.{ext}"))
}

/// Generates the data set described by `cfg` under `cfg.out()`.
///
/// Writes `members.{ext}`, `products.{ext}`, `personas.{ext}` and
/// `orders/part-NNNNN.{ext}`, creating directories and overwriting existing
/// files. Order parts of the same format left by an earlier, larger run
/// (`part-NNNNN.{ext}` beyond the new last part) are removed, so
/// `orders/*.{ext}` is always exactly this data set.
///
/// `progress` receives the number of order lines just written, each time a
/// batch of a part reaches its file (from any thread); the deltas add up to
/// [`GenerateSummary::order_lines`]. The output depends only on `cfg`, never
/// on the number of threads of the rayon pool it runs in.
pub fn generate(cfg: &GenerateConfig, progress: &(dyn Fn(u64) + Sync)) -> Result<GenerateSummary> {
    let started = Instant::now();
    let out = cfg.out();
    let orders_dir = out.join("orders");
    std::fs::create_dir_all(&orders_dir).map_err(|e| Error::io(&orders_dir, e))?;
    let ext = cfg.format().extension();
    remove_stale_parts(&orders_dir, ext, cfg.parts())?;

    let world = World::new(cfg);

    let products_path = out.join(format!("products.{ext}"));
    let mut products = TableWriter::create(&products_path, products_schema(), cfg.format())?;
    let batch = products_batch(&world).map_err(|e| Error::arrow(&products_path, e))?;
    products.write(&batch)?;
    let products_path = products.finish()?;

    // Points balances need each member's total spend, known once its orders
    // are simulated: the parts record them (4 bytes per member) so the
    // members file does not simulate every order a second time.
    let mut balances = vec![0u32; usize::try_from(cfg.members()).expect("member count fits in memory")];
    let parts = write_parts(cfg, &world, &mut balances, progress)?;
    let [members_path, personas_path] = write_members(cfg, &world, &balances)?;

    let mut files = vec![members_path, products_path, personas_path];
    files.extend(parts.iter().map(|p| p.path.clone()));
    Ok(GenerateSummary {
        members: cfg.members(),
        order_lines: parts.iter().map(|p| p.lines).sum(),
        orders: parts.iter().map(|p| p.orders).sum(),
        products: world.catalog.products.len() as u64,
        stores: N_STORES as u64,
        files,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Removes `part-NNNNN.{ext}` files numbered `parts` or above, and leftover
/// `.tmp` files of any part, from an earlier run.
fn remove_stale_parts(orders_dir: &Path, ext: &str, parts: u64) -> Result<()> {
    let entries = std::fs::read_dir(orders_dir).map_err(|e| Error::io(orders_dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(orders_dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.strip_prefix("part-") else { continue };
        let (number, tmp) = match rest.strip_suffix(".tmp") {
            Some(r) => (r.strip_suffix(&format!(".{ext}")), true),
            None => (rest.strip_suffix(&format!(".{ext}")), false),
        };
        let Some(number) = number else { continue };
        if number.len() < 5 || !number.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let stale = tmp || number.parse::<u64>().is_ok_and(|n| n >= parts);
        if stale {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(())
}

/// Writes `members.{ext}` and `personas.{ext}`; returns their paths.
/// `balances[i]` is the points balance of member `i`.
fn write_members(cfg: &GenerateConfig, world: &World, balances: &[u32]) -> Result<[PathBuf; 2]> {
    let ext = cfg.format().extension();
    let members_path = cfg.out().join(format!("members.{ext}"));
    let personas_path = cfg.out().join(format!("personas.{ext}"));
    let mut members = TableWriter::create(&members_path, members_schema(), cfg.format())?;
    let mut personas = TableWriter::create(&personas_path, personas_schema(), cfg.format())?;

    let chunks = cfg.members().div_ceil(MEMBER_CHUNK);
    let mut next = 0;
    while next < chunks {
        let window = next..(next + MEMBER_CHUNKS_IN_FLIGHT).min(chunks);
        let batches: Vec<_> = window
            .into_par_iter()
            .map(|chunk| {
                let lo = chunk * MEMBER_CHUNK;
                let hi = (lo + MEMBER_CHUNK).min(cfg.members());
                let mut batch = MembersBatch::new((hi - lo) as usize);
                let mut id = String::with_capacity(16);
                for index in lo..hi {
                    let profile = Profile::new(world, index);
                    member_id(&mut id, index);
                    batch.append(world, &id, &profile, balances[index as usize]);
                }
                batch.finish()
            })
            .collect();
        for batch in batches {
            let (m, p) = batch.map_err(|e| Error::arrow(&members_path, e))?;
            members.write(&m)?;
            personas.write(&p)?;
        }
        next += MEMBER_CHUNKS_IN_FLIGHT;
    }
    Ok([members.finish()?, personas.finish()?])
}

/// One written order part.
struct PartStats {
    path: PathBuf,
    lines: u64,
    orders: u64,
}

/// Writes every order part, in parallel; fills in every member's points balance.
fn write_parts(
    cfg: &GenerateConfig,
    world: &World,
    balances: &mut [u32],
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Vec<PartStats>> {
    let per_part = usize::try_from(cfg.members_per_part()).unwrap_or(usize::MAX);
    balances
        .par_chunks_mut(per_part)
        .enumerate()
        .map(|(part, balances)| write_part(cfg, world, part as u64, balances, progress))
        .collect()
}

/// Writes the order lines of the members of part `part`; `balances` are
/// their points balances, filled in here.
fn write_part(
    cfg: &GenerateConfig,
    world: &World,
    part: u64,
    balances: &mut [u32],
    progress: &(dyn Fn(u64) + Sync),
) -> Result<PartStats> {
    let path = part_path(&cfg.out().join("orders"), part, cfg.format().extension());
    let mut writer = TableWriter::create(&path, orders_schema(), cfg.format())?;
    let lo = part * cfg.members_per_part();
    let hi = (lo + cfg.members_per_part()).min(cfg.members());
    let mut batch = OrdersBatch::new(ORDER_BATCH_LINES + 1024);
    let mut history = History::default();
    let mut id = String::with_capacity(16);
    let (mut lines, mut orders) = (0u64, 0u64);
    for (index, balance) in (lo..hi).zip(balances.iter_mut()) {
        let profile = Profile::new(world, index);
        if profile.orders == 0 {
            *balance = profile.points_balance(0.0);
            continue;
        }
        history.simulate(world, &profile, index);
        *balance = profile.points_balance(history.spend());
        member_id(&mut id, index);
        batch.append(world, index, &id, &history);
        orders += history.orders.len() as u64;
        if batch.rows() >= ORDER_BATCH_LINES {
            let n = batch.rows() as u64;
            writer.write(&batch.finish().map_err(|e| Error::arrow(&path, e))?)?;
            lines += n;
            progress(n);
        }
    }
    // An empty part still gets a batch, so a CSV part has its header row.
    if batch.rows() > 0 || lines == 0 {
        let n = batch.rows() as u64;
        writer.write(&batch.finish().map_err(|e| Error::arrow(&path, e))?)?;
        lines += n;
        if n > 0 {
            progress(n);
        }
    }
    let path = writer.finish()?;
    Ok(PartStats { path, lines, orders })
}
