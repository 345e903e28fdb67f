//! Planning a query at the cost of the columns it names, not of the ~4,800
//! tag columns `members` holds.
//!
//! DataFusion's planner and optimizer walk a table's whole schema many
//! times per statement (name checks, schema merges and copies, column
//! look-ups by name), so a tag count over `members` spent almost all of its
//! time on the columns it does not touch. [`plan`] gives each query its own
//! `members` (and `audience('…')`) holding every attribute column but only
//! the tag columns whose names occur in the statement, through a catalog
//! overlay on that statement's copy of the session: DataFusion still
//! resolves, types and optimizes everything, and the answer is the same.
//!
//! A name that occurs is kept whatever it turns out to mean (a string, a
//! column of another table): keeping too many columns costs a little time,
//! never a different answer. The statements whose meaning depends on
//! columns they do not name get the full table: `*` and `t.*` (except in
//! `count(*)`), `NATURAL` joins, `information_schema` and `pg_catalog`, and
//! every statement that is not a query (`DESCRIBE`, `SHOW`, DDL, `COPY`
//! of a table). If a narrowed plan fails, the statement is planned again
//! over the full table, so an error (and its "valid fields" list) is
//! always the full table's.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, CatalogProviderList, SchemaProvider, TableProvider};
use datafusion::common::TableReference;
use datafusion::execution::SessionState;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::parser::{CopyToSource, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::Statement;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use crate::function::AudienceFunction;
use crate::members::MembersTable;

type DfResult<T> = datafusion::common::Result<T>;

/// The table whose tag columns are narrowed.
const MEMBERS: &str = "members";
/// The table function over the same table.
const AUDIENCE: &str = "audience";

/// Plans `statement` in `state` (what `SessionState::statement_to_plan`
/// does), over a `members` narrowed to the tag columns the statement names
/// when that cannot change the answer.
pub async fn plan(state: &SessionState, statement: DfStatement) -> DfResult<LogicalPlan> {
    let Some(members) = narrowed_members(state, &statement).await else {
        return state.statement_to_plan(statement).await;
    };
    let narrowed = overlay(state, members);
    match narrowed.statement_to_plan(statement.clone()).await {
        Ok(plan) => Ok(plan),
        // The full table's answer, error message included.
        Err(_) => state.statement_to_plan(statement).await,
    }
}

/// `members` narrowed for `statement`, or `None` when the statement plans
/// over the full table (it needs every column, or narrowing saves nothing).
async fn narrowed_members(state: &SessionState, statement: &DfStatement) -> Option<Arc<MembersTable>> {
    if !is_query(statement) {
        return None;
    }
    let names = named(&statement.to_string())?;
    // A statement that names neither reads no tag column: rebuilding its
    // session state for an overlay would be pure cost.
    if !names.contains(MEMBERS) && !names.contains(AUDIENCE) {
        return None;
    }
    let provider = state.schema_for_ref(TableReference::bare(MEMBERS)).ok()?.table(MEMBERS).await.ok()??;
    let members = provider.downcast_ref::<MembersTable>()?;
    let narrowed = members.narrowed(names.iter().map(String::as_str));
    (narrowed.tag_column_count() < members.tag_column_count()).then(|| Arc::new(narrowed))
}

/// A query, alone or under `EXPLAIN` or `COPY (…) TO`.
pub fn is_query(statement: &DfStatement) -> bool {
    fn sql(s: &Statement) -> bool {
        match s {
            Statement::Query(_) => true,
            Statement::Explain { statement, .. } => sql(statement),
            _ => false,
        }
    }
    match statement {
        DfStatement::Statement(s) => sql(s),
        DfStatement::Explain(e) => is_query(&e.statement),
        DfStatement::CopyTo(c) => matches!(c.source, CopyToSource::Query(_)),
        _ => false,
    }
}

/// Every identifier and keyword of `sql` (unquoted ones also in lower
/// case, as DataFusion normalizes them), or `None` when the statement may
/// use columns it does not name.
pub fn named(sql: &str) -> Option<HashSet<String>> {
    let tokens: Vec<Token> = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize()
        .ok()?
        .into_iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .collect();
    let mut names = HashSet::new();
    for (i, token) in tokens.iter().enumerate() {
        match token {
            Token::Word(w) => {
                if w.quote_style.is_none() {
                    let lower = w.value.to_lowercase();
                    if matches!(lower.as_str(), "natural" | "information_schema" | "pg_catalog") {
                        return None;
                    }
                    names.insert(lower);
                }
                names.insert(w.value.clone());
            }
            // `count(*)` names no column; any other `*` may be a wildcard.
            Token::Mul => {
                let counted =
                    i > 0 && matches!(tokens[i - 1], Token::LParen) && matches!(tokens.get(i + 1), Some(Token::RParen));
                if !counted {
                    return None;
                }
            }
            _ => {}
        }
    }
    Some(names)
}

/// `state` with `members` (and `audience('…')`) replaced by `members`.
fn overlay(state: &SessionState, members: Arc<MembersTable>) -> SessionState {
    let options = &state.config_options().catalog;
    let list = Arc::new(Overlay {
        inner: state.catalog_list().clone(),
        catalog: options.default_catalog.clone(),
        schema: options.default_schema.clone(),
        members: members.clone(),
    });
    let has_audience = state.table_functions().contains_key(AUDIENCE);
    let mut narrowed = SessionStateBuilder::new_from_existing(state.clone()).with_catalog_list(list).build();
    if has_audience {
        narrowed.register_udtf(AUDIENCE, Arc::new(AudienceFunction::new(members)));
    }
    narrowed
}

/// The session's catalogs, with `members` of the default schema replaced.
#[derive(Debug)]
struct Overlay {
    inner: Arc<dyn CatalogProviderList>,
    catalog: String,
    schema: String,
    members: Arc<MembersTable>,
}

impl CatalogProviderList for Overlay {
    fn register_catalog(&self, name: String, catalog: Arc<dyn CatalogProvider>) -> Option<Arc<dyn CatalogProvider>> {
        self.inner.register_catalog(name, catalog)
    }

    fn catalog_names(&self) -> Vec<String> {
        self.inner.catalog_names()
    }

    fn catalog(&self, name: &str) -> Option<Arc<dyn CatalogProvider>> {
        let inner = self.inner.catalog(name)?;
        if name != self.catalog {
            return Some(inner);
        }
        Some(Arc::new(CatalogOverlay { inner, schema: self.schema.clone(), members: self.members.clone() }))
    }
}

#[derive(Debug)]
struct CatalogOverlay {
    inner: Arc<dyn CatalogProvider>,
    schema: String,
    members: Arc<MembersTable>,
}

impl CatalogProvider for CatalogOverlay {
    fn schema_names(&self) -> Vec<String> {
        self.inner.schema_names()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        let inner = self.inner.schema(name)?;
        if name != self.schema {
            return Some(inner);
        }
        Some(Arc::new(SchemaOverlay { inner, members: self.members.clone() }))
    }

    fn register_schema(
        &self,
        name: &str,
        schema: Arc<dyn SchemaProvider>,
    ) -> DfResult<Option<Arc<dyn SchemaProvider>>> {
        self.inner.register_schema(name, schema)
    }

    fn deregister_schema(&self, name: &str, cascade: bool) -> DfResult<Option<Arc<dyn SchemaProvider>>> {
        self.inner.deregister_schema(name, cascade)
    }
}

#[derive(Debug)]
struct SchemaOverlay {
    inner: Arc<dyn SchemaProvider>,
    members: Arc<MembersTable>,
}

#[async_trait]
impl SchemaProvider for SchemaOverlay {
    fn owner_name(&self) -> Option<&str> {
        self.inner.owner_name()
    }

    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        if name == MEMBERS {
            return Ok(Some(self.members.clone()));
        }
        self.inner.table(name).await
    }

    fn register_table(&self, name: String, table: Arc<dyn TableProvider>) -> DfResult<Option<Arc<dyn TableProvider>>> {
        self.inner.register_table(name, table)
    }

    fn deregister_table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        self.inner.deregister_table(name)
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(sql: &str) -> Option<Vec<String>> {
        named(sql).map(|n| {
            let mut v: Vec<String> = n.into_iter().collect();
            v.sort();
            v
        })
    }

    /// Unquoted names are kept as written and in lower case; quoted ones
    /// as written; `count(*)` is no wildcard.
    #[test]
    fn names_are_every_word_in_both_cases() {
        let w = words(r#"SELECT count(*) FROM members WHERE Tier_Gold AND "VIP""#).unwrap();
        for name in ["tier_gold", "Tier_Gold", "VIP", "members", "count", "select"] {
            assert!(w.contains(&name.to_string()), "{name} in {w:?}");
        }
        assert!(!w.contains(&"vip".to_string()), "a quoted name is not lowered: {w:?}");
    }

    /// Statements that may use columns they do not name are not narrowed.
    #[test]
    fn wildcards_natural_joins_and_catalog_tables_use_the_full_table() {
        for sql in [
            "SELECT * FROM members",
            "SELECT m.* FROM members m",
            "SELECT count(m.*) FROM members m",
            "SELECT points * 2 FROM members",
            "SELECT * EXCLUDE (city) FROM members",
            "SELECT member_key FROM members NATURAL JOIN features",
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'members'",
            "SELECT attname FROM pg_catalog.pg_attribute",
        ] {
            assert_eq!(words(sql), None, "{sql}");
        }
        for sql in ["SELECT count(*) FROM members WHERE tier_gold", "SELECT count( * ) FROM members"] {
            assert!(words(sql).is_some(), "{sql}");
        }
    }
}
