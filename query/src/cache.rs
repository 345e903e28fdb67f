//! Plans of repeated statements, kept.
//!
//! A dashboard, a nightly job or a BI tool sends the same statements again
//! and again, and each time DataFusion parsed the text, built the session
//! overlay of [`crate::narrow`] and planned it: most of a tag count's time.
//! A [`PlanCache`] in a session (a `SessionConfig` extension) keeps the
//! planned (not yet optimized) logical plan per statement text, so a repeat
//! starts at the optimizer; the optimizer, physical planning and the count
//! itself still run every time, so `now()` and `random()` are evaluated
//! per execution as before.
//!
//! A kept plan holds the table providers it was planned over. It is used
//! only while every one of them is still the one the session has
//! registered (a refreshed server registers new ones: the plans of the old
//! tables stop matching and are planned again); a statement that is not a
//! query and may change how text plans (`SET`, DDL; not `DESCRIBE`, `SHOW`)
//! empties the cache ([`plan`] does both, for the CLI's sessions and the
//! server). Statements with volatile functions and those over per-call
//! tables (`information_schema`) are not kept.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use datafusion::catalog::TableProvider;
use datafusion::common::TableReference;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::source_as_provider;
use datafusion::execution::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::parser::Statement as DfStatement;

use crate::members::MembersTable;

type DfResult<T> = datafusion::common::Result<T>;

/// Statements kept by default.
pub const DEFAULT_CAPACITY: usize = 512;
/// Longest statement text kept (a generated audience can be megabytes).
const MAX_TEXT: usize = 64 * 1024;
/// Most text kept in all (with [`DEFAULT_CAPACITY`] typical statements of
/// a few hundred bytes, far from it; 16 of the longest).
const MAX_TOTAL_TEXT: usize = 1024 * 1024;

/// Planned statements by text (see the module docs).
#[derive(Debug)]
pub struct PlanCache {
    capacity: usize,
    entries: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    plans: HashMap<String, (LogicalPlan, u64)>,
    /// Use counter, for evicting the least recently used.
    clock: u64,
    hits: u64,
    misses: u64,
}

impl Default for PlanCache {
    fn default() -> Self {
        PlanCache::new(DEFAULT_CAPACITY)
    }
}

impl PlanCache {
    /// An empty cache of at most `capacity` statements (0 keeps none).
    pub fn new(capacity: usize) -> PlanCache {
        PlanCache { capacity, entries: Mutex::new(Entries::default()) }
    }

    /// The cache of `state`'s session, if it has one.
    pub fn of(state: &SessionState) -> Option<Arc<PlanCache>> {
        state.config().get_extension::<PlanCache>()
    }

    /// The kept plan of `text`, if its tables are still `state`'s.
    pub async fn get(&self, text: &str, state: &SessionState) -> Option<LogicalPlan> {
        let found = {
            let mut e = self.lock();
            e.clock += 1;
            let clock = e.clock;
            e.plans.get_mut(text).map(|(plan, used)| {
                *used = clock;
                plan.clone()
            })
        };
        let usable = match found {
            Some(plan) if current(&plan, state).await => Some(plan),
            Some(_) => {
                self.lock().plans.remove(text);
                None
            }
            None => None,
        };
        let mut e = self.lock();
        match usable {
            Some(_) => e.hits += 1,
            None => e.misses += 1,
        }
        usable
    }

    /// Keeps `plan` for `text` when it can be reused (see the module docs).
    pub async fn put(&self, text: &str, plan: &LogicalPlan, state: &SessionState) {
        if self.capacity == 0 || text.len() > MAX_TEXT || volatile(plan) || !current(plan, state).await {
            return;
        }
        let mut e = self.lock();
        e.plans.remove(text);
        // A plan's size follows its text's: bounding both the count and the
        // texts' total bounds the memory a client can make the cache hold.
        while e.plans.len() >= self.capacity
            || e.plans.keys().map(String::len).sum::<usize>() + text.len() > MAX_TOTAL_TEXT
        {
            let oldest = e.plans.iter().min_by_key(|(_, (_, used))| *used).map(|(k, _)| k.clone());
            match oldest {
                Some(k) => e.plans.remove(&k),
                None => break,
            };
        }
        e.clock += 1;
        let clock = e.clock;
        e.plans.insert(text.to_string(), (plan.clone(), clock));
    }

    /// Forgets every plan.
    pub fn clear(&self) {
        self.lock().plans.clear();
    }

    /// Statements kept, lookups that found one and lookups that did not.
    pub fn stats(&self) -> (usize, u64, u64) {
        let e = self.lock();
        (e.plans.len(), e.hits, e.misses)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The kept plan of `text` in `state`'s session, if it has one that is
/// still current.
pub async fn kept(state: &SessionState, text: &str) -> Option<LogicalPlan> {
    PlanCache::of(state)?.get(text, state).await
}

/// Plans `statement` (whose text is `text`) over a narrowed `members`
/// ([`crate::narrow::plan`]) and keeps the plan of a query in `state`'s
/// session; a statement that may change how text plans (`SET`, DDL)
/// empties the cache. Look for a kept plan with [`kept`] first.
pub async fn plan(state: &SessionState, text: &str, statement: DfStatement) -> DfResult<LogicalPlan> {
    let query = crate::narrow::is_query(&statement);
    let reads_only = query || describes(&statement);
    let plan = crate::narrow::plan(state, statement).await?;
    match PlanCache::of(state) {
        Some(c) if query => c.put(text, &plan, state).await,
        Some(c) if !reads_only => c.clear(),
        _ => {}
    }
    Ok(plan)
}

/// `DESCRIBE`, `SHOW …` and `EXPLAIN`: statements that change nothing (any
/// other statement that is not a query is taken to change how text plans).
fn describes(statement: &DfStatement) -> bool {
    use datafusion::sql::sqlparser::ast::Statement as S;
    match statement {
        DfStatement::Statement(s) => matches!(
            **s,
            S::ExplainTable { .. }
                | S::Explain { .. }
                | S::ShowTables { .. }
                | S::ShowColumns { .. }
                | S::ShowVariable { .. }
                | S::ShowFunctions { .. }
                | S::ShowCreate { .. }
        ),
        DfStatement::Explain(_) => true,
        _ => false,
    }
}

/// Whether `plan` calls a volatile function (`random()`, …).
fn volatile(plan: &LogicalPlan) -> bool {
    let mut found = false;
    let _ = plan.apply_with_subqueries(|node| {
        let _ = node.apply_expressions(|e| {
            found |= e.is_volatile();
            Ok(if found { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
        });
        Ok(if found { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
    });
    found
}

/// Whether every table `plan` reads is the one `state` has registered under
/// its name (for `members` and `audience('…')`, a table over the same tags).
async fn current(plan: &LogicalPlan, state: &SessionState) -> bool {
    let mut scans: Vec<(TableReference, Arc<dyn TableProvider>)> = Vec::new();
    let mut readable = true;
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            match source_as_provider(&scan.source) {
                Ok(p) => scans.push((scan.table_name.clone(), p)),
                Err(_) => readable = false,
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    if !readable {
        return false;
    }
    for (name, provider) in scans {
        let any: &dyn std::any::Any = provider.as_ref();
        let same = match any.downcast_ref::<MembersTable>() {
            Some(m) => registered(state, TableReference::bare("members"))
                .await
                .is_some_and(|r| r.downcast_ref::<MembersTable>().is_some_and(|r| Arc::ptr_eq(r.tags(), m.tags()))),
            None => registered(state, name).await.is_some_and(|r| Arc::ptr_eq(&r, &provider)),
        };
        if !same {
            return false;
        }
    }
    true
}

async fn registered(state: &SessionState, name: TableReference) -> Option<Arc<dyn TableProvider>> {
    state.schema_for_ref(name.clone()).ok()?.table(name.table()).await.ok()?
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    /// A session with a table `t` and the plan of a count over it.
    async fn planned() -> (SessionState, LogicalPlan) {
        let ctx = SessionContext::new();
        ctx.sql("CREATE TABLE t AS VALUES (1), (2)").await.unwrap().collect().await.unwrap();
        let state = ctx.state();
        let plan = state.create_logical_plan("SELECT count(*) FROM t").await.unwrap();
        (state, plan)
    }

    #[test]
    fn the_cache_holds_at_most_its_capacity_and_its_text_budget() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let (state, plan) = planned().await;
            let cache = PlanCache::new(2);
            for text in ["a", "b", "c"] {
                cache.put(text, &plan, &state).await;
            }
            assert_eq!(cache.stats().0, 2);
            assert!(cache.get("a", &state).await.is_none(), "the least recently used went first");
            assert!(cache.get("c", &state).await.is_some());

            let cache = PlanCache::new(DEFAULT_CAPACITY);
            let long = |i: usize| format!("{i:05}{}", " ".repeat(MAX_TEXT - 5));
            for i in 0..40 {
                cache.put(&long(i), &plan, &state).await;
            }
            assert_eq!(cache.stats().0, MAX_TOTAL_TEXT / MAX_TEXT);
            assert!(cache.get(&long(39), &state).await.is_some());
            // Longer than MAX_TEXT: not kept.
            cache.put(&" ".repeat(MAX_TEXT + 1), &plan, &state).await;
            assert!(cache.get(&" ".repeat(MAX_TEXT + 1), &state).await.is_none());
        });
    }
}
