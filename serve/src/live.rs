//! The warehouse as the server sees it: one session, kept current.
//!
//! All connections share one DataFusion `SessionContext` (one catalog, one
//! `pg_catalog` with stable OIDs). A background task looks at the version
//! of every warehouse table every `--refresh-interval`; when one changed (a
//! new tag snapshot is a new version of `tags`), it builds the next
//! [`Catalog`] aside — reading and warming every tag bitmap, which is the
//! slow part — and then replaces the registered tables under a short write
//! lock. Planning holds the read lock, so a statement plans against one
//! consistent set of tables. A plan holds its providers, so a query that
//! started on the old snapshot finishes on it; a prepared statement whose
//! tables were replaced is planned again on the next execution
//! ([`Live::is_current`]).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use datafusion::catalog::TableProvider;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::source_as_provider;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{GreedyMemoryPool, MemoryPool, TrackConsumersPool};
use datafusion::execution::object_store::ObjectStoreRegistry;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::setup_pg_catalog;
use taglake_query::members::MembersTable;
use taglake_query::{Catalog, TagSet};
use taglake_storage::{Table, Warehouse};

use crate::{Error, Result, log};

/// A cluster the server runs its warehouse queries on (`taglake serve
/// --cluster`). Statements over `pg_catalog` and `information_schema`, and
/// `COPY … TO` exports, still run here: the cluster cannot read the
/// server's own catalog tables, and exports land in the server's folder.
#[async_trait::async_trait]
pub trait Cluster: Send + Sync {
    /// Readers of the warehouse's existing tables that the cluster's
    /// processes can read too (pinned file lists).
    async fn providers(&self, wh: &Warehouse) -> std::result::Result<Vec<(Table, Arc<dyn TableProvider>)>, String>;
    /// A session state whose plans run on the cluster.
    fn state(&self) -> SessionState;
    /// The cluster's address, for the log.
    fn name(&self) -> String;
}

/// The shared session and what it currently serves.
pub struct Live {
    wh: Warehouse,
    cluster: Option<Arc<dyn Cluster>>,
    ctx: SessionContext,
    /// Held for reading while a statement plans, for writing while tables are swapped.
    pub(crate) swap: tokio::sync::RwLock<()>,
    current: RwLock<Generation>,
}

/// What one refresh installed.
#[derive(Clone, Default)]
struct Generation {
    /// Version of every table (`None` = not written yet), in `Table::ALL` order.
    versions: Vec<Option<u64>>,
    tags: Option<Arc<TagSet>>,
    providers: HashMap<&'static str, Arc<dyn datafusion::catalog::TableProvider>>,
}

/// What the server currently serves, for its log and its tests.
#[derive(Debug, Clone, PartialEq)]
pub struct Served {
    /// The tag snapshot `members` answers from.
    pub snapshot: Option<i64>,
    /// How many tag columns `members` has (including `in_experiment`).
    pub tags: usize,
    /// The warehouse tables registered.
    pub tables: Vec<&'static str>,
}

impl Live {
    /// Opens the warehouse, sets up `pg_catalog` and loads (and warms) the
    /// current tables and tags.
    pub async fn open(wh: Warehouse, cluster: Option<Arc<dyn Cluster>>) -> Result<Arc<Live>> {
        let config = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema("datafusion", "public")
            .with_extension(Arc::new(taglake_query::cache::PlanCache::default()));
        // Nothing spills: a query over its memory limit fails rather than
        // filling the server's disk.
        let runtime = RuntimeEnvBuilder::new()
            .with_disk_manager_builder(DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled))
            .build_arc()
            .map_err(|e| Error::Setup { what: "cannot set up the query runtime", source: e.into() })?;
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        setup_pg_catalog(&ctx, "datafusion", EmptyContextProvider)
            .map_err(|e| Error::Setup { what: "cannot set up pg_catalog", source: e.into() })?;
        let live = Arc::new(Live {
            wh,
            cluster,
            ctx,
            swap: tokio::sync::RwLock::new(()),
            current: RwLock::new(Generation::default()),
        });
        live.refresh().await?;
        Ok(live)
    }

    /// The shared session (planning only: run queries in [`Live::query_context`]).
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// A session for one query: the shared catalog and functions, with a
    /// memory pool of its own of `limit` bytes.
    pub fn query_context(&self, limit: usize) -> datafusion::error::Result<SessionContext> {
        let pool =
            TrackConsumersPool::new(GreedyMemoryPool::new(limit), std::num::NonZeroUsize::new(3).expect("3 > 0"));
        self.query_context_with(Arc::new(pool), None)
    }

    /// A session for one query: the shared catalog and functions, with
    /// `pool` as its memory and, when given, `registry` for its object
    /// stores (an export's capped local store).
    pub fn query_context_with(
        &self,
        pool: Arc<dyn MemoryPool>,
        registry: Option<Arc<dyn ObjectStoreRegistry>>,
    ) -> datafusion::error::Result<SessionContext> {
        Ok(self.session_with(self.query_runtime(pool, registry)?))
    }

    /// A session of its own for one query: the shared catalog and
    /// functions with `runtime` (see [`Live::query_runtime`]).
    pub fn session_with(&self, runtime: Arc<RuntimeEnv>) -> SessionContext {
        SessionContext::new_with_state(
            SessionStateBuilder::new_from_existing(self.ctx.state()).with_runtime_env(runtime).build(),
        )
    }

    /// The runtime of one query: the shared object stores and spill
    /// directory, with `pool` as its memory and, when given, `registry`
    /// for its object stores. A query that only reads runs in the shared
    /// session with this runtime in its task context, so no session is
    /// rebuilt per query ([`crate::handler`]).
    pub fn query_runtime(
        &self,
        pool: Arc<dyn MemoryPool>,
        registry: Option<Arc<dyn ObjectStoreRegistry>>,
    ) -> datafusion::error::Result<Arc<RuntimeEnv>> {
        let mut runtime = RuntimeEnvBuilder::from_runtime_env(&self.ctx.runtime_env()).with_memory_pool(pool);
        if let Some(registry) = registry {
            runtime = runtime.with_object_store_registry(registry);
        }
        runtime.build_arc()
    }

    /// A session that runs a plan on the cluster, when `plan` can run there:
    /// the server has a cluster and the plan reads only warehouse tables
    /// (no `pg_catalog` or `information_schema`) and writes nothing.
    pub fn cluster_context(&self, plan: &LogicalPlan) -> Option<SessionContext> {
        let cluster = self.cluster.as_ref()?;
        if matches!(plan, LogicalPlan::Copy(_) | LogicalPlan::Dml(_) | LogicalPlan::Ddl(_)) {
            return None;
        }
        let g = self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (mut scans, mut ours) = (0, true);
        let _ = plan.apply_with_subqueries(|node| {
            if let LogicalPlan::TableScan(scan) = node {
                scans += 1;
                let warehouse = source_as_provider(&scan.source).is_ok_and(|provider| {
                    let any: &dyn std::any::Any = provider.as_ref();
                    any.downcast_ref::<MembersTable>().is_some()
                        || g.providers.values().any(|p| Arc::ptr_eq(p, &provider))
                });
                if !warehouse {
                    ours = false;
                    return Ok(TreeNodeRecursion::Stop);
                }
            }
            Ok(TreeNodeRecursion::Continue)
        });
        (ours && scans > 0).then(|| SessionContext::new_with_state(cluster.state()))
    }

    /// The tags `members` answers from now (`None` before the first
    /// snapshot). A caller that reads several figures holds this one
    /// `Arc`, so they all come from the same snapshot even if a refresh
    /// swaps in the next one meanwhile.
    pub fn tags(&self) -> Option<Arc<TagSet>> {
        self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).tags.clone()
    }

    /// The warehouse this session reads.
    pub fn warehouse(&self) -> &Warehouse {
        &self.wh
    }

    /// What is served now.
    pub fn served(&self) -> Served {
        let g = self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut tables: Vec<&'static str> = g.providers.keys().copied().collect();
        tables.sort();
        Served {
            snapshot: g.tags.as_ref().and_then(|t| t.snapshot),
            tags: g.tags.as_ref().map_or(0, |t| t.tags.len()),
            tables,
        }
    }

    /// Installs the warehouse's current tables if any version changed.
    /// Returns whether it did.
    pub async fn refresh(&self) -> Result<bool> {
        let mut versions = Vec::with_capacity(Table::ALL.len());
        for table in Table::ALL {
            versions.push(self.wh.version(table).await?);
        }
        if self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).versions == versions {
            return Ok(false);
        }
        let started = Instant::now();
        // The tag columns come from `members`, `tags` and `experiments`; a
        // new ingest of orders alone keeps the warm bitmaps it has, and a
        // saved audience (`audiences`) is swapped into the set in place.
        let previous = self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let tag_inputs = |v: &[Option<u64>]| -> Vec<Option<u64>> {
            Table::ALL
                .iter()
                .zip(v)
                .filter(|(t, _)| matches!(t, Table::Members | Table::Tags | Table::Experiments))
                .map(|(_, v)| *v)
                .collect()
        };
        let unchanged = !previous.versions.is_empty() && tag_inputs(&previous.versions) == tag_inputs(&versions);
        let tags = match previous.tags {
            Some(t) if unchanged => {
                t.set_saved(taglake_query::saved::current(&self.wh).await?);
                Some(t)
            }
            _ => TagSet::load(&self.wh, None).await?.map(Arc::new),
        };
        if let Some(t) = tags.as_ref().filter(|_| !unchanged) {
            let t = t.clone();
            tokio::task::spawn_blocking(move || t.warm())
                .await
                .map_err(|e| Error::Setup { what: "warming the tags failed", source: e.into() })??;
        }
        let catalog = match &self.cluster {
            None => Catalog::load(&self.wh, &self.ctx, tags.clone()).await?,
            Some(c) => Catalog::from_providers(c.providers(&self.wh).await.map_err(Error::Config)?, tags.clone()),
        };
        {
            let _writing = self.swap.write().await;
            catalog.register(&self.ctx)?;
            let providers = catalog.tables.iter().map(|(n, p)| (*n, p.clone())).collect();
            *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) =
                Generation { versions, tags, providers };
        }
        let s = self.served();
        let on = self.cluster.as_ref().map_or(String::new(), |c| format!(" on the cluster {}", c.name()));
        log(format_args!(
            "serving {} table(s){on}, tag snapshot {}, {} tag column(s) (loaded in {:.2}s)",
            s.tables.len(),
            s.snapshot.map_or("none".into(), |v| v.to_string()),
            s.tags,
            started.elapsed().as_secs_f64()
        ));
        Ok(true)
    }

    /// Checks for new versions every `every`, for as long as the server runs.
    pub fn watch(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let live = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            let mut last_error = String::new();
            loop {
                tick.tick().await;
                let Some(live) = live.upgrade() else { return };
                match live.refresh().await {
                    Ok(_) => last_error.clear(),
                    // A damaged table or a snapshot that cannot be read:
                    // keep serving what we have, and say why (once).
                    Err(e) if e.to_string() != last_error => {
                        last_error = e.to_string();
                        log(format_args!("refresh failed, still serving the previous tables: {e}"));
                    }
                    Err(_) => {}
                }
            }
        })
    }

    /// Whether every table a plan reads is still the one registered (a
    /// prepared statement planned before a refresh is planned again).
    pub fn is_current(&self, plan: &LogicalPlan) -> bool {
        let g = self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut current = true;
        let _ = plan.apply_with_subqueries(|node| {
            if let LogicalPlan::TableScan(scan) = node
                && let Ok(provider) = source_as_provider(&scan.source)
            {
                let any: &dyn std::any::Any = provider.as_ref();
                let same = match any.downcast_ref::<MembersTable>() {
                    // `members` and every `audience('…')` result.
                    Some(m) => g.tags.as_ref().is_some_and(|t| Arc::ptr_eq(t, m.tags())),
                    None => g.providers.get(scan.table_name.table()).is_none_or(|p| Arc::ptr_eq(p, &provider)),
                };
                if !same {
                    current = false;
                    return Ok(TreeNodeRecursion::Stop);
                }
            }
            Ok(TreeNodeRecursion::Continue)
        });
        current
    }
}
