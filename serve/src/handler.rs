//! Statements in, rows out: the protocol handlers.
//!
//! `datafusion-postgres` parses (PostgreSQL dialect), plans prepared
//! statements, answers `SET`/`SHOW`/transactions and encodes Arrow as
//! PostgreSQL rows. Execution is ours, because a shared server needs what
//! it leaves out:
//!
//! - **Read-only**, checked before planning ([`crate::policy`]), at `Parse`
//!   for prepared statements too, and on the *plan* of every statement
//!   that runs, whichever path it came by (simple query, portal, cursor,
//!   the source of a `COPY`): `SELECT … INTO` plans to a table creation.
//! - **Memory per query and per connection** ([`crate::pool`]): a query
//!   over `--query-memory`, or a connection whose queries and cursors
//!   together pass `--connection-memory`, fails with SQLSTATE 53200 and no
//!   other connection notices.
//! - **A statement timeout that covers streaming**: DataFusion produces rows
//!   while the client reads them, so the deadline is checked while
//!   planning, while starting and between rows; it ends with 57014. Each
//!   `Execute` of a portal and each `FETCH` of a cursor is a statement
//!   with its own deadline. A client can lower it (`SET
//!   statement_timeout`), never raise it.
//! - **Results stream**: `Execute` sends rows as they are encoded, at most
//!   its row limit (any `max_rows` a client sends is only a loop bound,
//!   never an allocation), and a suspended portal keeps its query, not its
//!   rows. Cursors are the server's own ([`crate::cursor`]): planned and
//!   checked like any query, under the timeout, at most `--max-cursors`
//!   open per connection.
//! - **Errors with SQLSTATE codes** clients act on (42P01 for an unknown
//!   table with the tables that exist, 42703, 42601, 53200, 57014, 25006).
//! - **Live tables**: a prepared statement whose tables were replaced by a
//!   refresh is planned again before it runs.

use std::fmt::Debug;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::ParamValues;
use datafusion::error::DataFusionError;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::{SendableRecordBatchStream, SessionState, TaskContext};
use datafusion::logical_expr::{EmptyRelation, LogicalPlan};
use datafusion::physical_plan::execute_stream;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::{DFParser, Statement as DfStatementKind};
use datafusion::sql::sqlparser::ast::{CloseCursor, DeclareType, Statement};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion_postgres::arrow_pg::datatypes::df::deserialize_parameters_with_server_types;
use datafusion_postgres::arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch};
use datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::hooks::{HookClient, QueryHook};
use datafusion_postgres::pgwire::api::auth::noop::NoopStartupHandler;
use datafusion_postgres::pgwire::api::auth::sasl::SASLAuthStartupHandler;
use datafusion_postgres::pgwire::api::auth::sasl::scram::ScramAuth;
use datafusion_postgres::pgwire::api::auth::{DefaultServerParameterProvider, StartupHandler};
use datafusion_postgres::pgwire::api::cancel::DefaultCancelHandler;
use datafusion_postgres::pgwire::api::portal::{Format, Portal, PortalExecutionState};
use datafusion_postgres::pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler, send_execution_response};
use datafusion_postgres::pgwire::api::results::{FieldInfo, QueryResponse, Response, Tag};
use datafusion_postgres::pgwire::api::stmt::{QueryParser, StoredStatement};
use datafusion_postgres::pgwire::api::store::{Entry, MemPortalStore, PortalStore};
use datafusion_postgres::pgwire::api::{
    ClientInfo, ClientPortalStore, ConnectionHandle, ConnectionManager, DEFAULT_NAME, ErrorHandler,
    PgWireConnectionState, PgWireServerHandlers, Type,
};
use datafusion_postgres::pgwire::error::{PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::extendedquery::{
    Bind, BindComplete, Close, CloseComplete, Execute, PortalSuspended, TARGET_TYPE_BYTE_PORTAL,
    TARGET_TYPE_BYTE_STATEMENT,
};
use datafusion_postgres::pgwire::messages::response::EmptyQueryResponse;
use datafusion_postgres::pgwire::messages::startup::Authentication;
use datafusion_postgres::pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use datafusion_postgres::pgwire::types::format::FormatOptions;
use datafusion_postgres::{DfSessionService, Parser};
use futures::future::{Either, select};
use futures::{Sink, SinkExt, StreamExt, stream};
use taglake_query::cache;

use crate::config::ServeConfig;
use crate::connection::Parts;
use crate::cursor::{Connection, Cursor, fetch, fetch_count};
use crate::export::{Budget, ExportRegistry};
use crate::live::Live;
use crate::log;
use crate::policy::{self, CopyPlan, Kind, Refusal};
use crate::pool::QueryPool;
use crate::reply::{Bounded, Errors, LogErrors, Prepared, timed_out, user_error};

/// The client metadata key `SET statement_timeout` writes.
const CLIENT_TIMEOUT_KEY: &str = "statement_timeout_ms";

/// Everything a connection's handlers share.
pub struct Service {
    live: Arc<Live>,
    config: Arc<ServeConfig>,
    parser: Arc<LiveParser>,
    sql_parser: PostgresCompatibilityParser,
    hooks: Vec<Arc<dyn QueryHook>>,
}

impl Service {
    /// Handlers over `live` under `config`'s limits.
    pub fn new(live: Arc<Live>, config: Arc<ServeConfig>) -> Service {
        let hooks: Vec<Arc<dyn QueryHook>> = vec![Arc::new(SetShowHook), Arc::new(TransactionStatementHook)];
        // The parser runs the hooks at Parse time; the policy goes first so
        // a refused statement is never planned.
        let mut parse_hooks: Vec<Arc<dyn QueryHook>> = vec![Arc::new(PolicyHook {
            export_dir: config.export_dir().map(Into::into),
            export_setting: config.setting("export_dir"),
        })];
        parse_hooks.extend(hooks.iter().cloned());
        let ctx = Arc::new(live.context().clone());
        let inner = DfSessionService::new_with_hooks(ctx, parse_hooks.clone()).query_parser();
        Service {
            parser: Arc::new(LiveParser {
                inner,
                live: live.clone(),
                hooks: parse_hooks,
                sql_parser: PostgresCompatibilityParser::new(),
            }),
            live,
            config,
            sql_parser: PostgresCompatibilityParser::new(),
            hooks,
        }
    }

    fn check(&self, statement: &Statement) -> PgWireResult<Kind> {
        policy::check(statement, self.config.export_dir(), &self.config.setting("export_dir")).map_err(refused)
    }

    /// Plans a statement against the current tables; a plan that would
    /// write is refused.
    async fn plan(&self, statement: &Statement) -> PgWireResult<LogicalPlan> {
        let _reading = self.live.swap.read().await;
        let state = self.live.context().state();
        let plan = planned(&state, statement).await.map_err(|e| self.error(e))?;
        policy::check_plan(&plan, false).map_err(refused)?;
        Ok(plan)
    }

    /// The statement timeout for this client: the server's, or the client's
    /// `SET statement_timeout` when that is shorter.
    fn timeout<C: ClientInfo + ?Sized>(&self, client: &C) -> Duration {
        let server = self.config.statement_timeout();
        client
            .metadata()
            .get(CLIENT_TIMEOUT_KEY)
            .and_then(|ms| ms.parse::<u64>().ok())
            .filter(|&ms| ms > 0)
            .map_or(server, |ms| Duration::from_millis(ms).min(server))
    }

    /// Where one query of `client`'s connection runs: on the cluster when
    /// the plan can run there, else here, in a pool of the per-query size
    /// inside the connection's pool.
    fn query_context<C: ClientInfo + ?Sized>(
        &self,
        client: &C,
        plan: &LogicalPlan,
        exports: Option<Arc<Budget>>,
    ) -> PgWireResult<Runner> {
        if exports.is_none()
            && let Some(on_cluster) = self.live.cluster_context(plan)
        {
            return Ok(Runner::Session(on_cluster));
        }
        let connection = Connection::of(client, self.config.connection_memory());
        let pool = QueryPool::new(
            self.config.query_memory(),
            connection.pool(),
            self.config.connection_memory(),
            self.config.setting("connection_memory"),
        );
        let registry = exports.map(|budget| {
            Arc::new(ExportRegistry::new(self.live.context().runtime_env().object_store_registry.clone(), budget)) as _
        });
        Ok(Runner::Here(self.live.query_runtime(Arc::new(pool), registry).map_err(|e| self.error(e))?))
    }

    /// `plan`'s schema and rows. A query that only reads is planned in the
    /// shared session and run with `runtime` in its task context (its own
    /// memory pool and stores); anything else (`COPY`, a statement DataFusion
    /// executes itself) gets a session of its own with that runtime.
    async fn stream(
        &self,
        runner: Runner,
        plan: LogicalPlan,
    ) -> Result<(SchemaRef, SendableRecordBatchStream), DataFusionError> {
        let runtime = match runner {
            Runner::Session(ctx) => return frame_stream(ctx, plan).await,
            Runner::Here(runtime) => runtime,
        };
        if matches!(plan, LogicalPlan::Copy(_) | LogicalPlan::Ddl(_) | LogicalPlan::Statement(_)) {
            return frame_stream(self.live.session_with(runtime), plan).await;
        }
        let state = self.live.context().state();
        let schema: SchemaRef = Arc::new(plan.schema().as_arrow().clone());
        let physical = state.create_physical_plan(&plan).await?;
        let task = Arc::new(TaskContext::from(&state).with_runtime(runtime));
        Ok((schema, execute_stream(physical, task)?))
    }

    /// Starts a plan (checked again: nothing that writes runs, whatever path
    /// it came by); the stream ends with an error at the deadline.
    async fn start(&self, runner: Runner, plan: LogicalPlan, timeout: Duration) -> PgWireResult<(SchemaRef, Bounded)> {
        policy::check_plan(&plan, matches!(plan, LogicalPlan::Copy(_))).map_err(refused)?;
        let deadline = tokio::time::Instant::now() + timeout;
        match tokio::time::timeout_at(deadline, self.stream(runner, plan)).await {
            Err(_) => Err(timed_out(timeout)),
            Ok(Err(e)) => Err(self.error(e)),
            Ok(Ok((schema, inner))) => {
                let mut rows = Bounded {
                    inner: Some(inner),
                    first: None,
                    deadline: Some(Box::pin(tokio::time::sleep_until(deadline))),
                    timeout,
                    errors: self.errors(),
                };
                // Wait for the first batch here, inside the handler call that
                // a cancel request (psql's Ctrl-C) interrupts: an aggregate
                // does all its work before its first row.
                rows.first = rows.next().await.map(Some);
                Ok((schema, rows))
            }
        }
    }

    /// Runs a query and streams its rows in `format`. A portal's rows are
    /// read without the stream's own deadline: each `Execute` has its own.
    async fn run<C: ClientInfo + ?Sized>(
        &self,
        client: &C,
        plan: LogicalPlan,
        format: &Format,
        portal: bool,
    ) -> PgWireResult<Response> {
        let runner = self.query_context(client, &plan, None)?;
        let (schema, rows) = self.start(runner, plan, self.timeout(client)).await?;
        let rows = if portal { rows.without_deadline() } else { rows };
        let fields = self.fields(client, &schema, format)?;
        let encode = fields.clone();
        let rows = rows
            .map(move |batch| {
                let rows: Box<dyn Iterator<Item = _> + Send + Sync> = match batch {
                    Ok(b) => encode_recordbatch(encode.clone(), b),
                    Err(e) => Box::new(std::iter::once(Err(e))),
                };
                stream::iter(rows)
            })
            .flatten();
        Ok(Response::Query(QueryResponse::new(fields, rows)))
    }

    fn fields<C: ClientInfo + ?Sized>(
        &self,
        client: &C,
        schema: &SchemaRef,
        format: &Format,
    ) -> PgWireResult<Arc<Vec<FieldInfo>>> {
        let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        Ok(Arc::new(arrow_schema_to_pg_fields(schema, format, Some(options))?))
    }

    /// `COPY … TO` a checked file: DataFusion writes it through a store
    /// capped at `--export-max`, we answer `COPY n`.
    async fn copy<C: ClientInfo + ?Sized>(&self, client: &C, copy: CopyPlan) -> PgWireResult<Response> {
        let mut parsed =
            DFParser::parse_sql_with_dialect(&copy.sql, &PostgreSqlDialect {}).map_err(|e| self.error(e))?;
        let statement = parsed.pop_front().ok_or_else(|| internal("COPY translated to nothing"))?;
        let plan = {
            let _reading = self.live.swap.read().await;
            taglake_query::narrow::plan(&self.live.context().state(), statement).await.map_err(|e| self.error(e))?
        };
        let existed = copy.path.exists();
        let budget = Budget::new(self.config.export_max(), self.config.setting("export_max"));
        let written = async {
            let runner = self.query_context(client, &plan, Some(budget.clone()))?;
            let (_, mut rows) = self.start(runner, plan, self.timeout(client)).await?;
            let mut written = 0usize;
            while let Some(batch) = rows.next().await {
                let batch = batch?;
                if let Some(counts) = batch.column(0).as_any().downcast_ref::<datafusion::arrow::array::UInt64Array>() {
                    written += counts.iter().flatten().sum::<u64>() as usize;
                }
            }
            Ok::<_, PgWireError>(written)
        };
        match written.await {
            Ok(n) => {
                log(format_args!("{} wrote {} row(s) to {}", client.socket_addr(), n, copy.path.display()));
                Ok(Response::Execution(Tag::new("COPY").with_rows(n)))
            }
            Err(_) if budget.exceeded() => {
                if !existed {
                    let _ = std::fs::remove_file(&copy.path);
                }
                Err(user_error(
                    "ERROR",
                    "54000",
                    format!(
                        "COPY … TO '{}' stopped: the export would be larger than {} bytes (taglake serve \
                         --export-max); nothing was kept. Export fewer rows or columns, or in parts",
                        copy.path.display(),
                        self.config.export_max()
                    ),
                ))
            }
            Err(e) => Err(e),
        }
    }

    /// `DECLARE`, `FETCH`, `CLOSE` on the server's own cursors. `prepared`
    /// is the cursor query's plan and parameters when it came by `Parse`.
    async fn cursor<C>(
        &self,
        client: &mut C,
        statement: &Statement,
        prepared: Option<(&LogicalPlan, &ParamValues)>,
        format: &Format,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Send + Sync,
        C::PortalStore: PortalStore,
    {
        let connection = Connection::of(client, self.config.connection_memory());
        match statement {
            Statement::Declare { stmts } => {
                let [declare] = &stmts[..] else {
                    return Err(user_error("ERROR", "0A000", "declare one cursor per statement".into()));
                };
                let (Some(DeclareType::Cursor), Some(name), Some(query)) =
                    (&declare.declare_type, declare.names.first(), &declare.for_query)
                else {
                    return Err(user_error(
                        "ERROR",
                        "42601",
                        "only DECLARE name [NO SCROLL] CURSOR [WITH HOLD] FOR query is supported".into(),
                    ));
                };
                if declare.scroll == Some(true) {
                    return Err(user_error(
                        "ERROR",
                        "0A000",
                        "SCROLL cursors are not supported: cursors here only move forward".into(),
                    ));
                }
                let inner = Statement::Query(query.clone());
                let plan = match prepared {
                    Some((plan, params)) if self.live.is_current(plan) => {
                        plan.clone().replace_params_with_values(params).map_err(|e| self.error(e))?
                    }
                    Some((_, params)) => {
                        self.plan(&inner).await?.replace_params_with_values(params).map_err(|e| self.error(e))?
                    }
                    None => self.plan(&inner).await?,
                };
                let open = connection.open(self.config.max_cursors())?;
                let runner = self.query_context(client, &plan, None)?;
                let (schema, rows) = self.start(runner, plan.clone(), self.timeout(client)).await?;
                connection.declare(
                    &name.value,
                    Cursor::new(schema, rows.without_deadline(), declare.hold == Some(true), open),
                )?;
                // A portal of the same name, so a client can Describe it.
                let described =
                    StoredStatement::new(name.value.clone(), (query.to_string(), Some((inner, plan))), vec![]);
                let portal = Portal::new_cursor(name.value.clone(), Arc::new(described));
                *portal.state.lock().await = PortalExecutionState::Finished;
                portal_store(client)?.put_portal(Arc::new(portal));
                Ok(Response::Execution(Tag::new("DECLARE CURSOR")))
            }
            Statement::Fetch { name, direction, into, .. } => {
                if into.is_some() {
                    return Err(refused(Refusal {
                        code: "25006",
                        message: "taglake serve is read-only: FETCH … INTO is not allowed".into(),
                    }));
                }
                let count = fetch_count(direction)?;
                let cursor = connection.cursor(&name.value)?.lock_owned().await;
                let fields = self.fields(client, cursor.schema(), format)?;
                let timeout = self.timeout(client);
                let deadline = tokio::time::Instant::now() + timeout;
                let rows = fetch(cursor, count, fields.clone(), deadline, timeout);
                let mut response = QueryResponse::new(fields, rows);
                response.command_tag = "FETCH".into();
                Ok(Response::Query(response))
            }
            Statement::Close { cursor } => {
                let store = portal_store(client)?;
                match cursor {
                    CloseCursor::All => {
                        for name in connection.close_all(true) {
                            store.rm_portal(&name);
                        }
                    }
                    CloseCursor::Specific { name } => {
                        if !connection.close(&name.value) {
                            return Err(user_error(
                                "ERROR",
                                "34000",
                                format!("cursor \"{}\" does not exist", name.value),
                            ));
                        }
                        store.rm_portal(&name.value);
                    }
                }
                Ok(Response::Execution(Tag::new("CLOSE CURSOR")))
            }
            _ => Err(internal("not a cursor statement")),
        }
    }

    /// Bound parameters of a portal, typed as the plan infers them.
    fn params(&self, portal: &Portal<Prepared>, plan: &LogicalPlan) -> PgWireResult<ParamValues> {
        let wire = self.parser.get_parameter_types(&portal.statement.statement)?;
        let mut inferred: Vec<(usize, Option<DataType>)> = plan
            .get_parameter_types()
            .map_err(|e| self.error(e))?
            .into_iter()
            .map(|(id, t)| (id.trim_start_matches('$').parse().unwrap_or(usize::MAX), t))
            .collect();
        inferred.sort_by_key(|(i, _)| *i);
        let inferred: Vec<Option<&DataType>> = inferred.iter().map(|(_, t)| t.as_ref()).collect();
        let wire: Vec<Option<&Type>> = wire.iter().map(Some).collect();
        deserialize_parameters_with_server_types(portal, &inferred, &wire)
    }

    fn errors(&self) -> Errors {
        Errors {
            query_memory: self.config.query_memory(),
            query_setting: self.config.setting("query_memory"),
            live: self.live.clone(),
        }
    }

    fn error(&self, e: DataFusionError) -> PgWireError {
        self.errors().map(e)
    }
}

/// The connection's portal store, as the type `datafusion-postgres` uses.
fn portal_store<C>(client: &C) -> PgWireResult<&MemPortalStore<Prepared>>
where
    C: ClientPortalStore,
    C::PortalStore: PortalStore,
{
    client
        .portal_store()
        .as_any()
        .downcast_ref::<MemPortalStore<Prepared>>()
        .ok_or_else(|| internal("the connection's portal store has an unexpected type"))
}

fn refused(r: Refusal) -> PgWireError {
    user_error("ERROR", r.code, r.message)
}

fn internal(what: &str) -> PgWireError {
    user_error("ERROR", "XX000", format!("{what} (a bug in taglake serve)"))
}

/// Errors `datafusion-postgres` returns as opaque API errors, given codes.
fn remap(e: PgWireError, errors: &Errors) -> PgWireError {
    match e {
        PgWireError::ApiError(inner) => match inner.downcast::<DataFusionError>() {
            Ok(df) => errors.map(*df),
            Err(other) => PgWireError::ApiError(other),
        },
        other => other,
    }
}

#[async_trait]
impl SimpleQueryHandler for Service {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let query = &*balanced(query)?;
        let statements = self.sql_parser.parse(query).map_err(|e| syntax(query, &e.to_string()))?;
        if statements.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        let mut responses = Vec::with_capacity(statements.len());
        for statement in statements {
            let response = match self.check(&statement)? {
                Kind::Copy(copy) => self.copy(client, copy).await?,
                Kind::Cursor => self.cursor(client, &statement, None, &Format::UnifiedText).await?,
                Kind::Session => match self.session(&statement, client, None).await? {
                    Some(r) => r,
                    None => self.run(client, self.plan(&statement).await?, &Format::UnifiedText, false).await?,
                },
                Kind::Query => self.run(client, self.plan(&statement).await?, &Format::UnifiedText, false).await?,
            };
            responses.push(response);
        }
        Ok(responses)
    }
}

impl Service {
    /// `SET`, `SHOW` and transactions, through the protocol hooks, each
    /// given a throwaway query context (a `SET datafusion.…` cannot change
    /// the shared session). The end of a transaction closes its cursors
    /// (those declared without `WITH HOLD`), as in PostgreSQL.
    async fn session<C>(
        &self,
        statement: &Statement,
        client: &mut C,
        extended: Option<(&LogicalPlan, &ParamValues)>,
    ) -> PgWireResult<Option<Response>>
    where
        C: HookClient,
    {
        if matches!(statement, Statement::Commit { .. } | Statement::Rollback { .. }) {
            let connection = Connection::of(client, self.config.connection_memory());
            for name in connection.close_all(false) {
                client.portal_store().rm_portal(&name);
            }
        }
        let ctx = self.live.query_context(self.config.query_memory()).map_err(|e| self.error(e))?;
        let errors = self.errors();
        for hook in &self.hooks {
            let answer = match extended {
                None => hook.handle_simple_query(statement, &ctx, client).await,
                Some((plan, params)) => hook.handle_extended_query(statement, plan, params, &ctx, client).await,
            };
            if let Some(r) = answer {
                return r.map(Some).map_err(|e| remap(e, &errors));
            }
        }
        Ok(None)
    }

    // Long on purpose: the protocol's `Execute` in order (find the portal, start or resume, send rows under
    // the deadline, suspend or complete).
    /// One `Execute`: the portal's query runs on the first, and each sends
    /// at most `max_rows` rows, as they are encoded, under its own deadline.
    async fn execute<C>(&self, client: &mut C, message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        let mut transaction = client.transaction_status();
        client.set_state(PgWireConnectionState::QueryInProgress);
        // As in PostgreSQL, zero or less means every row. Whatever the
        // number, it only bounds a loop.
        let max_rows = u64::try_from(message.max_rows).ok().filter(|&n| n > 0);
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        let portal = match client.portal_store().get_portal(name) {
            Some(Entry::Value(portal)) => portal,
            Some(Entry::Empty) => {
                client.feed(PgWireBackendMessage::EmptyQueryResponse(EmptyQueryResponse::new())).await?;
                client.set_state(PgWireConnectionState::ReadyForQuery);
                return Ok(());
            }
            None => return Err(PgWireError::PortalNotFound(name.to_owned())),
        };
        let state = portal.state();
        let mut state = state.lock().await;
        if matches!(*state, PortalExecutionState::Initial) {
            // A row limit may leave the portal open: it takes a place
            // among the connection's open results while it is.
            let open = match max_rows {
                Some(_) => {
                    Some(Connection::of(client, self.config.connection_memory()).open(self.config.max_cursors())?)
                }
                None => None,
            };
            let cancel = match client.session_extensions().get::<Arc<ConnectionHandle>>() {
                Some(handle) => Some(handle.start_query().await),
                None => None,
            };
            let response = match cancel {
                Some(cancel) => match select(ExtendedQueryHandler::do_query(self, client, &portal, 0), cancel).await {
                    Either::Left((result, _)) => result,
                    Either::Right(_) => Err(PgWireError::QueryCanceled),
                },
                None => ExtendedQueryHandler::do_query(self, client, &portal, 0).await,
            }?;
            match response {
                Response::Query(mut results) => {
                    if let Some(open) = open {
                        let rows = std::mem::replace(&mut results.data_rows, Box::pin(stream::empty()));
                        results.data_rows = Box::pin(rows.map(move |row| {
                            let _held = &open;
                            row
                        }));
                    }
                    *state = PortalExecutionState::Suspended(results);
                }
                other => {
                    *state = PortalExecutionState::Finished;
                    match other {
                        Response::EmptyQuery => {
                            client.feed(PgWireBackendMessage::EmptyQueryResponse(EmptyQueryResponse::new())).await?;
                        }
                        Response::Execution(tag) => send_execution_response(client, tag).await?,
                        Response::TransactionStart(tag) => {
                            send_execution_response(client, tag).await?;
                            transaction = transaction.to_in_transaction_state();
                        }
                        Response::TransactionEnd(tag) => {
                            send_execution_response(client, tag).await?;
                            transaction = transaction.to_idle_state();
                            client.portal_store().rm_portal(DEFAULT_NAME);
                        }
                        Response::Error(e) => {
                            client.send(PgWireBackendMessage::ErrorResponse((*e).into())).await?;
                            transaction = transaction.to_error_state();
                        }
                        _ => return Err(internal("COPY to or from the client is not supported")),
                    }
                    client.set_state(PgWireConnectionState::ReadyForQuery);
                    client.set_transaction_status(transaction);
                    return Ok(());
                }
            }
        }
        match std::mem::replace(&mut *state, PortalExecutionState::Finished) {
            PortalExecutionState::Suspended(mut results) => {
                let timeout = self.timeout(client);
                let deadline = tokio::time::Instant::now() + timeout;
                let mut sent = 0usize;
                let finished = loop {
                    if max_rows.is_some_and(|m| sent as u64 >= m) {
                        break false;
                    }
                    match tokio::time::timeout_at(deadline, results.data_rows.next()).await {
                        Err(_) => return Err(timed_out(timeout)),
                        Ok(None) => break true,
                        Ok(Some(row)) => {
                            client.feed(PgWireBackendMessage::DataRow(row?)).await?;
                            sent += 1;
                        }
                    }
                };
                if finished {
                    let tag = Tag::new(&results.command_tag).with_rows(sent);
                    client.send(PgWireBackendMessage::CommandComplete(tag.into())).await?;
                } else {
                    *state = PortalExecutionState::Suspended(results);
                    client.send(PgWireBackendMessage::PortalSuspended(PortalSuspended::new())).await?;
                }
            }
            PortalExecutionState::Finished => {
                let tag = Tag::new("SELECT").with_rows(0);
                client.send(PgWireBackendMessage::CommandComplete(tag.into())).await?;
            }
            PortalExecutionState::Initial => return Err(internal("a portal did not start")),
        }
        client.set_state(PgWireConnectionState::ReadyForQuery);
        client.set_transaction_status(transaction);
        Ok(())
    }
}

/// `query` as the protocol library's parser may read it: long AND/OR
/// chains balanced, texts past the parser's limits refused (54001), so no
/// statement can overflow a worker's stack (see `taglake_query::parse`).
fn balanced(query: &str) -> PgWireResult<std::borrow::Cow<'_, str>> {
    taglake_query::parse::balanced_text(query).map_err(|e| match e {
        taglake_query::Error::TooComplex(message) => user_error("ERROR", "54001", message),
        other => syntax(query, &other.to_string()),
    })
}

/// A parse error, with a hint for DataFusion's own COPY syntax.
fn syntax(query: &str, message: &str) -> PgWireError {
    let mut message = message.to_string();
    let upper = query.to_ascii_uppercase();
    if upper.trim_start().starts_with("COPY") && upper.contains("STORED AS") {
        message.push_str("; write COPY in PostgreSQL's form: COPY (query) TO 'file.csv' WITH (FORMAT csv, HEADER)");
    }
    user_error("ERROR", "42601", message)
}

/// Checks a Bind as PostgreSQL does: format codes are 0 or 1, and there
/// are none, one for all, or one per parameter (per result column).
fn check_bind(bind: &Bind, parameters: usize, columns: usize) -> PgWireResult<()> {
    let protocol = |message: String| user_error("ERROR", "08P01", message);
    for &code in bind.parameter_format_codes.iter().chain(&bind.result_column_format_codes) {
        if code != 0 && code != 1 {
            return Err(user_error("ERROR", "22023", format!("unsupported format code: {code}")));
        }
    }
    let formats = bind.parameter_format_codes.len();
    if formats > 1 && formats != bind.parameters.len() {
        return Err(protocol(format!(
            "bind message has {formats} parameter formats but {} parameters",
            bind.parameters.len()
        )));
    }
    if bind.parameters.len() < parameters {
        return Err(protocol(format!(
            "bind message supplies {} parameters, but prepared statement requires {parameters}",
            bind.parameters.len()
        )));
    }
    let results = bind.result_column_format_codes.len();
    if results > 1 && results != columns {
        return Err(protocol(format!("bind message has {results} result formats but query has {columns} columns")));
    }
    Ok(())
}

#[async_trait]
impl ExtendedQueryHandler for Service {
    type Statement = Prepared;
    type QueryParser = LiveParser;

    fn query_parser(&self) -> Arc<LiveParser> {
        self.parser.clone()
    }

    async fn on_bind<C>(&self, client: &mut C, message: Bind) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let statement_name = message.statement_name.as_deref().unwrap_or(DEFAULT_NAME);
        let portal_name = message.portal_name.as_deref().unwrap_or(DEFAULT_NAME);
        match client.portal_store().get_statement(statement_name) {
            Some(Entry::Value(statement)) => {
                let parameters = self.parser.get_parameter_types(&statement.statement)?.len();
                let columns = self.parser.get_result_schema(&statement.statement, None)?.len();
                check_bind(&message, parameters, columns)?;
                let portal = Portal::try_new(&message, statement)?;
                client.portal_store().put_portal(Arc::new(portal));
            }
            Some(Entry::Empty) => {
                check_bind(&message, 0, 0)?;
                if !message.parameters.is_empty() {
                    return Err(user_error(
                        "ERROR",
                        "08P01",
                        format!(
                            "bind message supplies {} parameters, but prepared statement \"{statement_name}\" requires 0",
                            message.parameters.len()
                        ),
                    ));
                }
                client.portal_store().put_empty_portal(portal_name);
            }
            None => return Err(PgWireError::StatementNotFound(statement_name.to_owned())),
        }
        client.send(PgWireBackendMessage::BindComplete(BindComplete::new())).await?;
        Ok(())
    }

    async fn on_execute<C>(&self, client: &mut C, message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.execute(client, message).await
    }

    /// Closing a portal that is a cursor closes the cursor too.
    async fn on_close<C>(&self, client: &mut C, message: Close) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        match message.target_type {
            TARGET_TYPE_BYTE_STATEMENT => client.portal_store().rm_statement(name),
            TARGET_TYPE_BYTE_PORTAL => {
                Connection::of(client, self.config.connection_memory()).close(name);
                client.portal_store().rm_portal(name);
            }
            _ => {}
        }
        client.send(PgWireBackendMessage::CloseComplete(CloseComplete::new())).await?;
        Ok(())
    }

    async fn do_query<C>(&self, client: &mut C, portal: &Portal<Prepared>, _max_rows: usize) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let Some((statement, plan)) = &portal.statement.statement.1 else { return Ok(Response::EmptyQuery) };
        match self.check(statement)? {
            Kind::Copy(copy) => return self.copy(client, copy).await,
            Kind::Cursor => {
                let params = match statement {
                    Statement::Declare { .. } => self.params(portal, plan)?,
                    _ => ParamValues::List(vec![]),
                };
                return self.cursor(client, statement, Some((plan, &params)), &portal.result_column_format).await;
            }
            Kind::Session => {
                let params = self.params(portal, plan)?;
                if let Some(r) = self.session(statement, client, Some((plan, &params))).await? {
                    return Ok(r);
                }
            }
            Kind::Query => {}
        }
        let replanned;
        let plan = if self.live.is_current(plan) {
            plan
        } else {
            replanned = self.plan(statement).await?;
            &replanned
        };
        let params = self.params(portal, plan)?;
        let plan = plan.clone().replace_params_with_values(&params).map_err(|e| self.error(e))?;
        self.run(client, plan, &portal.result_column_format, true).await
    }
}

/// Where a query runs (see [`Service::query_context`]).
enum Runner {
    /// In a session of its own: the cluster's.
    Session(SessionContext),
    /// In this process, with this runtime (memory pool, object stores).
    Here(Arc<RuntimeEnv>),
}

/// `plan` run in `ctx` the way DataFusion runs a statement.
async fn frame_stream(
    ctx: SessionContext,
    plan: LogicalPlan,
) -> Result<(SchemaRef, SendableRecordBatchStream), DataFusionError> {
    let frame = ctx.execute_logical_plan(plan).await?;
    let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
    Ok((schema, frame.execute_stream().await?))
}

/// `datafusion-postgres`'s parser, planning under the read lock of the
/// live tables through [`taglake_query::narrow::plan`] (a prepared tag
/// query costs what it names, as a simple one does), with errors given
/// SQLSTATE codes and plans that write refused at `Parse`.
pub struct LiveParser {
    inner: Arc<Parser>,
    live: Arc<Live>,
    /// The hooks `inner` runs first at `Parse` (policy, SET/SHOW, BEGIN…).
    hooks: Vec<Arc<dyn QueryHook>>,
    sql_parser: PostgresCompatibilityParser,
}

impl LiveParser {
    /// What `inner.parse_sql` does, with the statement planned over a
    /// narrowed `members`.
    async fn parse<C>(&self, client: &C, sql: &str) -> Result<Option<Prepared>, PgWireError>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let mut statements = self.sql_parser.parse(sql).map_err(|e| PgWireError::ApiError(Box::new(e)))?;
        if statements.is_empty() {
            return Ok(None);
        }
        let statement = statements.remove(0);
        let query = statement.to_string();
        let context = self.live.context();
        for hook in &self.hooks {
            if let Some(plan) = hook.handle_extended_parse_query(&statement, context, client).await {
                return Ok(Some((query, Some((statement, plan?)))));
            }
        }
        let plan = planned(&context.state(), &statement).await.map_err(|e| PgWireError::ApiError(Box::new(e)))?;
        Ok(Some((query, Some((statement, plan)))))
    }
}

/// `statement` planned over a narrowed `members`, or its plan kept from an
/// earlier time (`taglake_query::cache`: same text, same tables).
async fn planned(state: &SessionState, statement: &Statement) -> Result<LogicalPlan, DataFusionError> {
    let text = statement.to_string();
    if let Some(plan) = cache::kept(state, &text).await {
        return Ok(plan);
    }
    cache::plan(state, &text, DfStatementKind::Statement(Box::new(statement.clone()))).await
}

#[async_trait]
impl QueryParser for LiveParser {
    type Statement = Prepared;

    async fn parse_sql<C>(&self, client: &C, sql: &str, _types: &[Option<Type>]) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let sql = &*balanced(sql)?;
        let _reading = self.live.swap.read().await;
        let errors = Errors { query_memory: 0, query_setting: String::new(), live: self.live.clone() };
        let prepared = self.parse(client, sql).await.map_err(|e| match e {
            PgWireError::ApiError(inner) => match inner.downcast::<DataFusionError>() {
                Ok(df) if matches!(*df, DataFusionError::SQL(..)) => syntax(sql, &df.to_string()),
                Ok(df) => errors.map(*df),
                Err(other) => PgWireError::ApiError(other),
            },
            other => other,
        })?;
        if let Some((_, Some((statement, plan)))) = &prepared
            && !matches!(statement, Statement::Copy { .. })
        {
            policy::check_plan(plan, false).map_err(refused)?;
        }
        Ok(prepared)
    }

    fn get_parameter_types(&self, statement: &Prepared) -> PgWireResult<Vec<Type>> {
        self.inner.get_parameter_types(statement)
    }

    /// A `DECLARE` returns no rows itself (its plan is the cursor's query,
    /// kept for its parameters).
    fn get_result_schema(&self, statement: &Prepared, format: Option<&Format>) -> PgWireResult<Vec<FieldInfo>> {
        if let (_, Some((Statement::Declare { .. }, _))) = statement {
            return Ok(vec![]);
        }
        self.inner.get_result_schema(statement, format)
    }
}

/// The policy at `Parse` time: refused statements never plan; an allowed
/// `COPY` gets an empty plan (it is translated when it runs), a `DECLARE`
/// the plan of its query (for its parameters), `FETCH` and `CLOSE` an
/// empty one.
struct PolicyHook {
    export_dir: Option<std::path::PathBuf>,
    export_setting: String,
}

fn empty_plan() -> LogicalPlan {
    LogicalPlan::EmptyRelation(EmptyRelation {
        produce_one_row: false,
        schema: Arc::new(datafusion::common::DFSchema::empty()),
    })
}

#[async_trait]
impl QueryHook for PolicyHook {
    async fn handle_simple_query(
        &self,
        _: &Statement,
        _: &SessionContext,
        _: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        None
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        _: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        match policy::check(statement, self.export_dir.as_deref(), &self.export_setting) {
            Err(r) => Some(Err(refused(r))),
            Ok(Kind::Copy(_)) => Some(Ok(empty_plan())),
            Ok(Kind::Cursor) => match statement {
                Statement::Declare { stmts } => {
                    let query = stmts.first().and_then(|d| d.for_query.clone())?;
                    let inner = DfStatementKind::Statement(Box::new(Statement::Query(query)));
                    Some(
                        taglake_query::narrow::plan(&ctx.state(), inner)
                            .await
                            .map_err(|e| PgWireError::ApiError(Box::new(e))),
                    )
                }
                _ => Some(Ok(empty_plan())),
            },
            Ok(_) => None,
        }
    }

    async fn handle_extended_query(
        &self,
        _: &Statement,
        _: &LogicalPlan,
        _: &ParamValues,
        _: &SessionContext,
        _: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        None
    }
}

/// One connection's startup: the login (SCRAM-SHA-256 against the users
/// file, or none on loopback), then a connection slot.
///
/// The slot is taken when the login succeeds, just before the server
/// would say so (`AuthenticationOk`): a client still logging in (or one
/// that never finishes) holds none, and a client over `--max-connections`
/// gets PostgreSQL's own FATAL 53300 instead of a session.
pub struct Startup {
    login: Login,
    slots: Arc<tokio::sync::Semaphore>,
    max_connections: usize,
    /// How the refusal names the `max_connections` setting.
    max_connections_setting: String,
    /// Held for as long as the connection lives (pgwire keeps this handler).
    slot: Mutex<Option<tokio::sync::OwnedSemaphorePermit>>,
}

enum Login {
    Open(OpenStartup),
    Scram(Box<SASLAuthStartupHandler<DefaultServerParameterProvider>>),
}

/// The startup of a server without users.
pub struct OpenStartup {
    connections: Arc<ConnectionManager>,
}

impl NoopStartupHandler for OpenStartup {
    fn connection_manager(&self) -> Option<Arc<ConnectionManager>> {
        Some(self.connections.clone())
    }
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(&self, client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut gate = Gate { inner: client, startup: self, refused: false };
        match &self.login {
            Login::Open(h) => h.on_startup(&mut gate, message).await?,
            Login::Scram(h) => h.on_startup(&mut gate, message).await?,
        }
        if gate.refused {
            log(format_args!("{}: refused, {} connections open", gate.socket_addr(), self.max_connections));
            return Err(user_error(
                "FATAL",
                "53300",
                format!("sorry, too many clients already ({} {})", self.max_connections_setting, self.max_connections),
            ));
        }
        Ok(())
    }
}

impl Startup {
    /// Takes this connection's slot; `false` when every slot is taken.
    fn take_slot(&self) -> bool {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            match self.slots.clone().try_acquire_owned() {
                Ok(permit) => *slot = Some(permit),
                Err(_) => return false,
            }
        }
        true
    }
}

/// The client as the login handlers see it: the message that ends a
/// successful login (`AuthenticationOk`) first takes a connection slot;
/// without one, it and everything after it is held back and the startup
/// fails with 53300.
struct Gate<'a, C> {
    inner: &'a mut C,
    startup: &'a Startup,
    refused: bool,
}

impl<C> Sink<PgWireBackendMessage> for Gate<'_, C>
where
    C: Sink<PgWireBackendMessage> + Unpin,
{
    type Error = C::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.refused {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut *self.inner).poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: PgWireBackendMessage) -> Result<(), Self::Error> {
        if !self.refused
            && matches!(item, PgWireBackendMessage::Authentication(Authentication::Ok))
            && !self.startup.take_slot()
        {
            self.refused = true;
        }
        if self.refused {
            return Ok(());
        }
        Pin::new(&mut *self.inner).start_send(item)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut *self.inner).poll_close(cx)
    }
}

impl<C: ClientInfo> ClientInfo for Gate<'_, C> {
    fn socket_addr(&self) -> std::net::SocketAddr {
        self.inner.socket_addr()
    }
    fn is_secure(&self) -> bool {
        self.inner.is_secure()
    }
    fn protocol_version(&self) -> datafusion_postgres::pgwire::messages::ProtocolVersion {
        self.inner.protocol_version()
    }
    fn set_protocol_version(&mut self, version: datafusion_postgres::pgwire::messages::ProtocolVersion) {
        self.inner.set_protocol_version(version)
    }
    fn pid_and_secret_key(&self) -> (i32, datafusion_postgres::pgwire::messages::startup::SecretKey) {
        self.inner.pid_and_secret_key()
    }
    fn set_pid_and_secret_key(
        &mut self,
        pid: i32,
        secret_key: datafusion_postgres::pgwire::messages::startup::SecretKey,
    ) {
        self.inner.set_pid_and_secret_key(pid, secret_key)
    }
    fn state(&self) -> PgWireConnectionState {
        self.inner.state()
    }
    fn set_state(&mut self, new_state: PgWireConnectionState) {
        self.inner.set_state(new_state)
    }
    fn transaction_status(&self) -> datafusion_postgres::pgwire::messages::response::TransactionStatus {
        self.inner.transaction_status()
    }
    fn set_transaction_status(
        &mut self,
        new_status: datafusion_postgres::pgwire::messages::response::TransactionStatus,
    ) {
        self.inner.set_transaction_status(new_status)
    }
    fn metadata(&self) -> &std::collections::HashMap<String, String> {
        self.inner.metadata()
    }
    fn metadata_mut(&mut self) -> &mut std::collections::HashMap<String, String> {
        self.inner.metadata_mut()
    }
    fn session_extensions(&self) -> &datafusion_postgres::pgwire::api::SessionExtensions {
        self.inner.session_extensions()
    }
    fn sni_server_name(&self) -> Option<&str> {
        self.inner.sni_server_name()
    }
    fn client_certificates<'a>(
        &self,
    ) -> Option<&[datafusion_postgres::pgwire::tokio::tokio_rustls::rustls::pki_types::CertificateDer<'a>]> {
        self.inner.client_certificates()
    }
}

/// The handlers of every connection.
pub struct Handlers {
    service: Arc<Service>,
    connections: Arc<ConnectionManager>,
    cancel: Arc<DefaultCancelHandler>,
    scram: Option<(crate::Users, Arc<DefaultServerParameterProvider>)>,
    slots: Arc<tokio::sync::Semaphore>,
    max_connections: usize,
    max_connections_setting: String,
    panics: Arc<std::sync::atomic::AtomicUsize>,
}

impl Handlers {
    /// Handlers for a server over `live`.
    pub fn new(live: Arc<Live>, config: Arc<ServeConfig>) -> Handlers {
        let connections = Arc::new(ConnectionManager::new());
        let scram = config.users().cloned().map(|users| {
            let mut params = DefaultServerParameterProvider::default();
            params.server_version = format!("16.6 (taglake {})", env!("CARGO_PKG_VERSION"));
            params.default_transaction_read_only = true;
            params.scram_iterations = users.iterations();
            (users, Arc::new(params))
        });
        Handlers {
            slots: Arc::new(tokio::sync::Semaphore::new(config.max_connections())),
            max_connections: config.max_connections(),
            max_connections_setting: config.setting("max_connections"),
            service: Arc::new(Service::new(live, config)),
            cancel: Arc::new(DefaultCancelHandler::new(connections.clone())),
            connections,
            scram,
            panics: Arc::default(),
        }
    }
}

impl Handlers {
    /// What one connection's loop drives: a new startup handler (see
    /// [`PgWireServerHandlers::startup_handler`]), the statement handlers,
    /// the cancel handler and the server's count of caught panics.
    pub fn parts(&self) -> Parts<Startup, Service, Service, DefaultCancelHandler> {
        Parts {
            startup: self.startup(),
            simple: self.service.clone(),
            extended: self.service.clone(),
            cancel: self.cancel.clone(),
            panics: self.panics.clone(),
        }
    }

    /// How many panics the connection loops caught so far.
    pub fn panics(&self) -> usize {
        self.panics.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn startup(&self) -> Arc<Startup> {
        let login = match &self.scram {
            None => Login::Open(OpenStartup { connections: self.connections.clone() }),
            Some((users, params)) => {
                // No SCRAM-SHA-256-PLUS (channel binding): the plain
                // exchange never sends the password, and TLS authenticates
                // the server to a client that verifies its certificate.
                let mut scram = ScramAuth::new(Arc::new(users.clone()));
                scram.set_iterations(users.iterations());
                Login::Scram(Box::new(
                    SASLAuthStartupHandler::new(params.clone())
                        .with_scram(scram)
                        .with_connection_manager(self.connections.clone()),
                ))
            }
        };
        Arc::new(Startup {
            login,
            slots: self.slots.clone(),
            max_connections: self.max_connections,
            max_connections_setting: self.max_connections_setting.clone(),
            slot: Mutex::new(None),
        })
    }
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.service.clone()
    }
    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.service.clone()
    }
    /// A new one per connection: it holds the connection's slot, and the
    /// SASL handler keeps the exchange's state, which must not be shared
    /// between clients logging in at once.
    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.startup()
    }
    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(LogErrors)
    }
    fn cancel_handler(&self) -> Arc<impl datafusion_postgres::pgwire::api::cancel::CancelHandler> {
        self.cancel.clone()
    }
}
