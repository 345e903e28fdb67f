//! Statements in, rows out: the protocol handlers.
//!
//! `datafusion-postgres` parses (PostgreSQL dialect), plans prepared
//! statements, answers `SET`/`SHOW`/transactions/cursors and encodes Arrow
//! as PostgreSQL rows. Execution is ours, because a shared server needs
//! what it leaves out:
//!
//! - **Read-only**, checked before planning ([`crate::policy`]), at `Parse`
//!   for prepared statements too.
//! - **A memory pool per query** ([`Live::query_context`]): a query over
//!   `--query-memory` fails with SQLSTATE 53200 and no other query notices.
//! - **A statement timeout that covers streaming**: DataFusion produces rows
//!   while the client reads them, so the deadline is checked while
//!   planning, while starting and between batches; it ends with 57014. A
//!   client can lower it (`SET statement_timeout`), never raise it.
//! - **Errors with SQLSTATE codes** clients act on (42P01 for an unknown
//!   table with the tables that exist, 42703, 42601, 53200, 57014, 25006).
//! - **Live tables**: a prepared statement whose tables were replaced by a
//!   refresh is planned again before it runs.

use std::fmt::Debug;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::ParamValues;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::{EmptyRelation, LogicalPlan};
use datafusion::sql::parser::{DFParser, Statement as DfStatementKind};
use datafusion::sql::sqlparser::ast::Statement;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion_postgres::arrow_pg::datatypes::df::deserialize_parameters_with_server_types;
use datafusion_postgres::arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch};
use datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::hooks::{HookClient, QueryHook};
use datafusion_postgres::pgwire::api::auth::noop::NoopStartupHandler;
use datafusion_postgres::pgwire::api::auth::sasl::SASLAuthStartupHandler;
use datafusion_postgres::pgwire::api::auth::sasl::scram::ScramAuth;
use datafusion_postgres::pgwire::api::auth::{DefaultServerParameterProvider, StartupHandler};
use datafusion_postgres::pgwire::api::cancel::DefaultCancelHandler;
use datafusion_postgres::pgwire::api::portal::{Format, Portal};
use datafusion_postgres::pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use datafusion_postgres::pgwire::api::results::{FieldInfo, QueryResponse, Response, Tag};
use datafusion_postgres::pgwire::api::stmt::QueryParser;
use datafusion_postgres::pgwire::api::store::PortalStore;
use datafusion_postgres::pgwire::api::{
    ClientInfo, ClientPortalStore, ConnectionManager, ErrorHandler, PgWireServerHandlers, Type,
};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use datafusion_postgres::pgwire::types::format::FormatOptions;
use datafusion_postgres::{DfSessionService, Parser};
use futures::{Sink, Stream, StreamExt, stream};

use crate::config::ServeConfig;
use crate::live::Live;
use crate::log;
use crate::policy::{self, CopyPlan, Kind, Refusal};

/// A prepared statement as `datafusion-postgres` keeps it: the SQL, and the
/// parsed statement with its plan (the cursor hook relies on this type).
pub type Prepared = (String, Option<(Statement, LogicalPlan)>);

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
        let hooks: Vec<Arc<dyn QueryHook>> =
            vec![Arc::new(CursorStatementHook), Arc::new(SetShowHook), Arc::new(TransactionStatementHook)];
        // The parser runs the hooks at Parse time; the policy goes first so
        // a refused statement is never planned.
        let mut parse_hooks: Vec<Arc<dyn QueryHook>> =
            vec![Arc::new(PolicyHook { export_dir: config.export_dir.clone() })];
        parse_hooks.extend(hooks.iter().cloned());
        let ctx = Arc::new(live.context().clone());
        let inner = DfSessionService::new_with_hooks(ctx, parse_hooks).query_parser();
        Service {
            parser: Arc::new(LiveParser { inner, live: live.clone() }),
            live,
            config,
            sql_parser: PostgresCompatibilityParser::new(),
            hooks,
        }
    }

    fn check(&self, statement: &Statement) -> PgWireResult<Kind> {
        policy::check(statement, self.config.export_dir.as_deref()).map_err(refused)
    }

    /// Plans a statement against the current tables.
    async fn plan(&self, statement: &Statement) -> PgWireResult<LogicalPlan> {
        let _reading = self.live.swap.read().await;
        let state = self.live.context().state();
        let plan = state
            .statement_to_plan(DfStatementKind::Statement(Box::new(statement.clone())))
            .await
            .map_err(|e| self.error(e))?;
        // Defence in depth behind the policy: nothing that plans to a write.
        datafusion::execution::context::SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false)
            .verify_plan(&plan)
            .map_err(|e| refused(Refusal { code: "25006", message: format!("taglake serve is read-only: {e}") }))?;
        Ok(plan)
    }

    /// The statement timeout for this client: the server's, or the client's
    /// `SET statement_timeout` when that is shorter.
    fn timeout<C: ClientInfo + ?Sized>(&self, client: &C) -> Duration {
        let server = self.config.statement_timeout;
        client
            .metadata()
            .get(CLIENT_TIMEOUT_KEY)
            .and_then(|ms| ms.parse::<u64>().ok())
            .filter(|&ms| ms > 0)
            .map_or(server, |ms| Duration::from_millis(ms).min(server))
    }

    /// Starts a plan in its own memory pool; the stream ends with an error
    /// at the deadline.
    async fn start(&self, plan: LogicalPlan, timeout: Duration) -> PgWireResult<(SchemaRef, Bounded)> {
        let deadline = tokio::time::Instant::now() + timeout;
        let ctx = match self.live.cluster_context(&plan) {
            Some(on_cluster) => on_cluster,
            None => self.live.query_context(self.config.query_memory).map_err(|e| self.error(e))?,
        };
        let starting = async {
            let frame = ctx.execute_logical_plan(plan).await?;
            let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
            let stream = frame.execute_stream().await?;
            Ok::<_, DataFusionError>((schema, stream))
        };
        match tokio::time::timeout_at(deadline, starting).await {
            Err(_) => Err(timed_out(timeout)),
            Ok(Err(e)) => Err(self.error(e)),
            Ok(Ok((schema, inner))) => {
                let mut rows = Bounded {
                    inner: Some(inner),
                    first: None,
                    deadline: Box::pin(tokio::time::sleep_until(deadline)),
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

    /// Runs a query and streams its rows in `format`.
    async fn run<C: ClientInfo + ?Sized>(
        &self,
        client: &C,
        plan: LogicalPlan,
        format: &Format,
    ) -> PgWireResult<Response> {
        let (schema, rows) = self.start(plan, self.timeout(client)).await?;
        let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        let fields: Arc<Vec<FieldInfo>> = Arc::new(arrow_schema_to_pg_fields(&schema, format, Some(options))?);
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

    /// `COPY … TO` a checked file: DataFusion writes it, we answer `COPY n`.
    async fn copy<C: ClientInfo + ?Sized>(&self, client: &C, copy: CopyPlan) -> PgWireResult<Response> {
        let mut parsed =
            DFParser::parse_sql_with_dialect(&copy.sql, &PostgreSqlDialect {}).map_err(|e| self.error(e))?;
        let statement = parsed.pop_front().ok_or_else(|| internal("COPY translated to nothing"))?;
        let plan = {
            let _reading = self.live.swap.read().await;
            self.live.context().state().statement_to_plan(statement).await.map_err(|e| self.error(e))?
        };
        let (_, mut rows) = self.start(plan, self.timeout(client)).await?;
        let mut written = 0usize;
        while let Some(batch) = rows.next().await {
            let batch = batch?;
            if let Some(counts) = batch.column(0).as_any().downcast_ref::<datafusion::arrow::array::UInt64Array>() {
                written += counts.iter().flatten().sum::<u64>() as usize;
            }
        }
        log(format_args!("{} wrote {} row(s) to {}", client.socket_addr(), written, copy.path.display()));
        Ok(Response::Execution(Tag::new("COPY").with_rows(written)))
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
        Errors { query_memory: self.config.query_memory, live: self.live.clone() }
    }

    fn error(&self, e: DataFusionError) -> PgWireError {
        self.errors().map(e)
    }
}

/// Turns DataFusion errors into PostgreSQL ones.
#[derive(Clone)]
struct Errors {
    query_memory: usize,
    live: Arc<Live>,
}

impl Errors {
    fn map(&self, e: DataFusionError) -> PgWireError {
        let root = e.find_root();
        let text = root.to_string();
        let (code, message) = match root {
            DataFusionError::ResourcesExhausted(_) => (
                "53200",
                format!(
                    "the query needs more memory than the per-query limit of {} MiB (taglake serve --query-memory): {text}",
                    self.query_memory >> 20
                ),
            ),
            DataFusionError::SQL(..) => ("42601", text),
            DataFusionError::SchemaError(..) => ("42703", text),
            DataFusionError::NotImplemented(_) => ("0A000", text),
            DataFusionError::Plan(m) if m.contains("table '") && m.contains("not found") => {
                ("42P01", taglake_query::explain(self.live.context(), &text).to_string())
            }
            DataFusionError::Plan(_) => ("42000", text),
            _ => ("XX000", text),
        };
        user_error("ERROR", code, message)
    }
}

fn user_error(severity: &str, code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(severity.into(), code.into(), message)))
}

fn refused(r: Refusal) -> PgWireError {
    user_error("ERROR", r.code, r.message)
}

fn timed_out(limit: Duration) -> PgWireError {
    user_error("ERROR", "57014", format!("canceling statement due to statement timeout ({:.3}s)", limit.as_secs_f64()))
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

/// A query's batches until its deadline; DataFusion stops (its tasks are
/// dropped) when this is dropped or the deadline passes.
struct Bounded {
    inner: Option<SendableRecordBatchStream>,
    /// The first item, read ahead (`Some(None)`: the stream was empty).
    first: Option<Option<PgWireResult<datafusion::arrow::array::RecordBatch>>>,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
    errors: Errors,
}

impl Stream for Bounded {
    type Item = PgWireResult<datafusion::arrow::array::RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(first);
        }
        let Some(inner) = self.inner.as_mut() else { return Poll::Ready(None) };
        match inner.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(b))) => return Poll::Ready(Some(Ok(b))),
            Poll::Ready(Some(Err(e))) => {
                self.inner = None;
                return Poll::Ready(Some(Err(self.errors.map(e))));
            }
            Poll::Ready(None) => {
                self.inner = None;
                return Poll::Ready(None);
            }
            Poll::Pending => {}
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.inner = None;
            return Poll::Ready(Some(Err(timed_out(self.timeout))));
        }
        Poll::Pending
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
                Kind::Session => match self.session(&statement, client, None).await? {
                    Some(r) => r,
                    None => self.run(client, self.plan(&statement).await?, &Format::UnifiedText).await?,
                },
                Kind::Query => self.run(client, self.plan(&statement).await?, &Format::UnifiedText).await?,
            };
            responses.push(response);
        }
        Ok(responses)
    }
}

impl Service {
    /// `SET`, `SHOW`, transactions and cursors, through the protocol hooks,
    /// each given a throwaway query context (a `SET datafusion.…` cannot
    /// change the shared session, and a cursor's query has its own pool).
    async fn session<C>(
        &self,
        statement: &Statement,
        client: &mut C,
        extended: Option<(&LogicalPlan, &ParamValues)>,
    ) -> PgWireResult<Option<Response>>
    where
        C: HookClient,
    {
        let ctx = self.live.query_context(self.config.query_memory).map_err(|e| self.error(e))?;
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

#[async_trait]
impl ExtendedQueryHandler for Service {
    type Statement = Prepared;
    type QueryParser = LiveParser;

    fn query_parser(&self) -> Arc<LiveParser> {
        self.parser.clone()
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
        self.run(client, plan, &portal.result_column_format).await
    }
}

/// `datafusion-postgres`'s parser, planning under the read lock of the
/// live tables, with errors given SQLSTATE codes.
pub struct LiveParser {
    inner: Arc<Parser>,
    live: Arc<Live>,
}

#[async_trait]
impl QueryParser for LiveParser {
    type Statement = Prepared;

    async fn parse_sql<C>(&self, client: &C, sql: &str, types: &[Option<Type>]) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let sql = &*balanced(sql)?;
        let _reading = self.live.swap.read().await;
        let errors = Errors { query_memory: 0, live: self.live.clone() };
        self.inner.parse_sql(client, sql, types).await.map_err(|e| match e {
            PgWireError::ApiError(inner) => match inner.downcast::<DataFusionError>() {
                Ok(df) if matches!(*df, DataFusionError::SQL(..)) => syntax(sql, &df.to_string()),
                Ok(df) => errors.map(*df),
                Err(other) => PgWireError::ApiError(other),
            },
            other => other,
        })
    }

    fn get_parameter_types(&self, statement: &Prepared) -> PgWireResult<Vec<Type>> {
        self.inner.get_parameter_types(statement)
    }

    fn get_result_schema(&self, statement: &Prepared, format: Option<&Format>) -> PgWireResult<Vec<FieldInfo>> {
        self.inner.get_result_schema(statement, format)
    }
}

/// The policy at `Parse` time: refused statements never plan; an allowed
/// `COPY` gets an empty plan (it is translated when it runs).
struct PolicyHook {
    export_dir: Option<std::path::PathBuf>,
}

#[async_trait]
impl QueryHook for PolicyHook {
    async fn handle_simple_query(
        &self,
        _: &Statement,
        _: &datafusion::prelude::SessionContext,
        _: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        None
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _: &datafusion::prelude::SessionContext,
        _: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        match policy::check(statement, self.export_dir.as_deref()) {
            Err(r) => Some(Err(refused(r))),
            Ok(Kind::Copy(_)) => Some(Ok(LogicalPlan::EmptyRelation(EmptyRelation {
                produce_one_row: false,
                schema: Arc::new(datafusion::common::DFSchema::empty()),
            }))),
            Ok(_) => None,
        }
    }

    async fn handle_extended_query(
        &self,
        _: &Statement,
        _: &LogicalPlan,
        _: &ParamValues,
        _: &datafusion::prelude::SessionContext,
        _: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        None
    }
}

/// One connection's startup: a connection slot, then the login
/// (SCRAM-SHA-256 against the users file, or none on loopback).
///
/// The slot is taken when the startup message arrives, after any TLS
/// negotiation, so a client over `--max-connections` gets PostgreSQL's own
/// FATAL 53300 on the channel it asked for, while a cancel request (its
/// own short-lived socket, handled before any startup) is never refused.
pub struct Startup {
    login: Login,
    slots: Arc<tokio::sync::Semaphore>,
    max_connections: usize,
    /// Held for as long as the connection lives (pgwire keeps this handler).
    slot: std::sync::Mutex<Option<tokio::sync::OwnedSemaphorePermit>>,
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
        if matches!(message, PgWireFrontendMessage::Startup(_)) {
            let mut slot = self.slot.lock().expect("not poisoned");
            if slot.is_none() {
                match self.slots.clone().try_acquire_owned() {
                    Ok(permit) => *slot = Some(permit),
                    Err(_) => {
                        log(format_args!(
                            "{}: refused, {} connections open",
                            client.socket_addr(),
                            self.max_connections
                        ));
                        return Err(user_error(
                            "FATAL",
                            "53300",
                            format!(
                                "sorry, too many clients already (taglake serve --max-connections {})",
                                self.max_connections
                            ),
                        ));
                    }
                }
            }
        }
        match &self.login {
            Login::Open(h) => h.on_startup(client, message).await,
            Login::Scram(h) => h.on_startup(client, message).await,
        }
    }
}

/// Logs what the server answers with an error, with the peer.
pub struct LogErrors;

impl ErrorHandler for LogErrors {
    fn on_error<C: ClientInfo>(&self, client: &C, error: &mut PgWireError) {
        log(format_args!("{}: {error}", client.socket_addr()));
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
}

impl Handlers {
    /// Handlers for a server over `live`.
    pub fn new(live: Arc<Live>, config: Arc<ServeConfig>) -> Handlers {
        let connections = Arc::new(ConnectionManager::new());
        let scram = config.users.clone().map(|users| {
            let mut params = DefaultServerParameterProvider::default();
            params.server_version = format!("16.6 (taglake {})", env!("CARGO_PKG_VERSION"));
            params.default_transaction_read_only = true;
            params.scram_iterations = users.iterations();
            (users, Arc::new(params))
        });
        Handlers {
            slots: Arc::new(tokio::sync::Semaphore::new(config.max_connections)),
            max_connections: config.max_connections,
            service: Arc::new(Service::new(live, config)),
            cancel: Arc::new(DefaultCancelHandler::new(connections.clone())),
            connections,
            scram,
        }
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
            slot: std::sync::Mutex::new(None),
        })
    }
    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(LogErrors)
    }
    fn cancel_handler(&self) -> Arc<impl datafusion_postgres::pgwire::api::cancel::CancelHandler> {
        self.cancel.clone()
    }
}
