//! `audience('…')`: the members of an audience expression as a table.
//!
//! It returns the `members` table restricted to the audience, with every
//! attribute and tag column, so `SELECT count(*) FROM audience('…')` is a
//! bitmap cardinality and `SELECT member_id, city FROM audience('…')` reads
//! only the selected members' rows.

use std::sync::Arc;

use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::logical_expr::Expr;

use crate::audience;
use crate::members::MembersTable;

/// The table function registered as `audience`.
#[derive(Debug)]
pub struct AudienceFunction {
    members: Arc<MembersTable>,
}

impl AudienceFunction {
    /// A function answering from the session's `members` table.
    pub fn new(members: Arc<MembersTable>) -> AudienceFunction {
        AudienceFunction { members }
    }
}

impl TableFunctionImpl for AudienceFunction {
    fn call_with_args(&self, args: TableFunctionArgs<'_, '_>) -> datafusion::common::Result<Arc<dyn TableProvider>> {
        let text = match args.exprs() {
            [
                Expr::Literal(
                    ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)),
                    _,
                ),
            ] => s.clone(),
            [Expr::Placeholder(p)] => {
                return Err(DataFusionError::Plan(format!(
                    "audience() takes one text literal, not the parameter {}: the expression decides the plan, so it \
                     must be in the SQL text (bind it on the client side, e.g. psycopg's ClientCursor)",
                    p.id
                )));
            }
            _ => {
                return Err(DataFusionError::Plan(
                    "audience() takes one text literal, e.g. audience('tier_gold AND NOT dormant_90_plus')".into(),
                ));
            }
        };
        let node = audience::parse(&text, self.members.tags()).map_err(|e| DataFusionError::Plan(e.to_string()))?;
        Ok(Arc::new(self.members.restricted(node, text)))
    }
}
