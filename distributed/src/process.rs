//! The cluster's processes: Ballista's scheduler and executor with
//! taglake's codecs, as `taglake scheduler` and `taglake executor` run them.
//!
//! Both use pull scheduling: executors ask the scheduler for tasks, so an
//! executor behind NAT or started later just joins. An executor that stops
//! heartbeating for `executor_timeout` is dropped and its tasks run again
//! elsewhere; a task that fails is retried up to 4 times before its job
//! fails with the task's error.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ballista_core::config::TaskSchedulingPolicy;
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::{create_scheduler, start_grpc_service_with_listener};
use datafusion::execution::SessionState;
use datafusion::prelude::SessionConfig;
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};
use taglake_storage::ParamMessage;

use crate::codec::{LogicalCodec, PhysicalCodec};
use crate::{Error, Result};

pub use crate::session::MAX_MESSAGE;

/// How `taglake scheduler` runs.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// The address executors and clients reach it at, as they see it
    /// (`--bind` when not given).
    pub external_host: Option<String>,
    /// Drop an executor that has not sent a heartbeat for this long.
    pub executor_timeout: Duration,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        SchedulerOptions { external_host: None, executor_timeout: Duration::from_secs(30) }
    }
}

/// Runs a scheduler on an already bound listener until the process ends.
pub async fn run_scheduler(listener: tokio::net::TcpListener, options: SchedulerOptions) -> Result<()> {
    let bound = listener.local_addr().map_err(Error::engine("reading the scheduler address"))?;
    let timeout = options.executor_timeout.as_secs().max(1);
    let config = SchedulerConfig {
        bind_host: bound.ip().to_string(),
        bind_port: bound.port(),
        external_host: options.external_host.unwrap_or_else(|| bound.ip().to_string()),
        scheduling_policy: TaskSchedulingPolicy::PullStaged,
        executor_timeout_seconds: timeout,
        expire_dead_executor_interval_seconds: timeout.div_ceil(3).max(1),
        grpc_server_max_decoding_message_size: MAX_MESSAGE as u32,
        grpc_server_max_encoding_message_size: MAX_MESSAGE as u32,
        grpc_client_max_message_size: MAX_MESSAGE as u32,
        override_logical_codec: Some(Arc::new(LogicalCodec::default())),
        override_physical_codec: Some(Arc::new(PhysicalCodec::default())),
        override_config_producer: Some(Arc::new(crate::session::cluster_config)),
        override_session_builder: Some(Arc::new(scheduler_session)),
        ..SchedulerConfig::default()
    };
    config.validate().map_err(Error::engine("scheduler settings"))?;
    let cluster = BallistaCluster::new_from_config(&config).await.map_err(Error::engine("starting the scheduler"))?;
    let scheduler = create_scheduler::<LogicalPlanNode, PhysicalPlanNode>(cluster, Arc::new(config))
        .await
        .map_err(Error::engine("starting the scheduler"))?;
    start_grpc_service_with_listener(listener, scheduler).await.map_err(Error::engine("the scheduler stopped"))
}

/// The session a scheduler plans a job in: Ballista's, with its optimizer
/// keeping `AND` / `OR` chains balanced ([`taglake_query::balance`]). A
/// job's plan arrives balanced, but the scheduler optimizes it again, and
/// some rules rejoin a long filter left-deep and then walk it recursively,
/// which would overflow a scheduler thread's stack.
pub fn scheduler_session(config: SessionConfig) -> datafusion::common::Result<SessionState> {
    Ok(taglake_query::balance::with_balance(ballista_core::utils::default_session_builder(config)?))
}

/// How `taglake executor` runs.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// The scheduler's host and port.
    pub scheduler: (String, u16),
    /// Where its Arrow Flight service (results and shuffle data) listens;
    /// the gRPC port is the next one.
    pub bind: SocketAddr,
    /// The address others reach it at (the bind address when not given).
    pub external_host: Option<String>,
    /// Tasks it runs at once (default: its cores).
    pub slots: usize,
    /// Where it keeps shuffle files (a temporary folder when not given).
    pub work_dir: Option<PathBuf>,
    /// How often it tells the scheduler it is alive.
    pub heartbeat: Duration,
}

/// Runs an executor until it is stopped (SIGTERM, Ctrl-C or the scheduler).
pub async fn run_executor(options: ExecutorOptions) -> Result<()> {
    if options.bind.port() == u16::MAX {
        return Err(Error::Parameter(
            ParamMessage::param("bind").then_text(": the port must leave room for the gRPC port after it"),
        ));
    }
    let external = options.external_host.clone().or_else(|| {
        let ip = options.bind.ip();
        (!ip.is_unspecified()).then(|| ip.to_string())
    });
    let config = ExecutorProcessConfig {
        bind_host: options.bind.ip().to_string(),
        external_host: external,
        port: options.bind.port(),
        grpc_port: options.bind.port() + 1,
        scheduler_host: options.scheduler.0.clone(),
        scheduler_port: options.scheduler.1,
        scheduler_connect_timeout_seconds: 30,
        vcores: options.slots,
        task_scheduling_policy: TaskSchedulingPolicy::PullStaged,
        work_dir: options.work_dir.map(|p| p.to_string_lossy().into_owned()),
        executor_heartbeat_interval_seconds: options.heartbeat.as_secs().max(1),
        grpc_max_decoding_message_size: MAX_MESSAGE as u32,
        grpc_max_encoding_message_size: MAX_MESSAGE as u32,
        override_logical_codec: Some(Arc::new(LogicalCodec::default())),
        override_physical_codec: Some(Arc::new(PhysicalCodec::default())),
        override_config_producer: Some(Arc::new(crate::session::cluster_config)),
        ..ExecutorProcessConfig::default()
    };
    start_executor_process(Arc::new(config)).await.map_err(Error::engine("the executor stopped"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    /// A job whose filter keeps thousands of conjuncts (those not on tags)
    /// is optimized again by the scheduler: its rules rejoin them left-deep
    /// and then clone the chain, once per level, on a 2 MiB worker stack.
    #[tokio::test(flavor = "multi_thread")]
    async fn the_scheduler_plans_long_filters_without_deep_recursion() {
        let state = scheduler_session(crate::session::cluster_config()).unwrap();
        let balancers = state.optimizers().iter().filter(|r| r.name() == "taglake_balance_chains").count();
        assert_eq!(balancers * 2, state.optimizers().len());
        let ctx = SessionContext::new_with_state(state);
        ctx.sql("CREATE TABLE t AS VALUES (1, 'a'), (2, 'b'), (3, 'c')").await.unwrap().collect().await.unwrap();
        let filter = (0..20_000).map(|i| format!("column2 <> 'x{}'", i % 997)).collect::<Vec<_>>().join(" AND ");
        let sql = format!("SELECT count(*) FROM t WHERE column1 > 1 AND {filter}");
        let count = tokio::spawn(async move { taglake_query::sql_number(&ctx, &sql).await.unwrap() });
        assert_eq!(count.await.unwrap(), Some(2));
    }
}
