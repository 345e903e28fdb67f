//! Keeps `AND` / `OR` chains balanced through DataFusion's optimizer.
//!
//! [`crate::parse`] balances long chains when a statement is parsed, but
//! some optimizer rules take a filter apart into its conjuncts and join the
//! ones they keep again into a left-deep chain (`conjunction`), one level
//! per term; a later rule clones that chain, which recurses once per level
//! and overflows the stack at a few thousand (`WHERE NOT tier_gold AND city
//! <> 'a' AND city <> 'b' AND …`, where only the tag terms go to the bitmaps).
//! [`BalanceChains`] runs after every optimizer rule of a session
//! ([`install`]) and rebuilds any chain nested deeper than
//! [`MAX_CHAIN_DEPTH`] as a balanced tree of the same terms, taking the old
//! one apart without recursion. A plan with nothing that deep costs one walk
//! per node and is left as it is.
//!
//! The physical planner does the same inside one rule (filter pushdown
//! splits a filter into its conjuncts, joins those its input does not take
//! left-deep and walks the result recursively at once), where no rule can
//! step in. So a filter of more than [`MAX_CONJUNCTS`] conjuncts is handed
//! on as `NOT (NOT (…))` of its balanced conjunction — the same rows, one
//! conjunct to split. Such a filter is not pushed into scans piece by piece:
//! `members` still takes it whole when it is made of tags only.

use std::sync::Arc;

use datafusion::common::Result;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::execution::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::{BinaryExpr, Expr, LogicalPlan, Operator};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};
use datafusion::prelude::SessionContext;

/// Chains nested deeper than this are rebuilt (a balanced one of a million
/// terms is 20 deep).
pub const MAX_CHAIN_DEPTH: usize = 64;

/// Filters of more conjuncts than this are handed on as one (see the module docs).
pub const MAX_CONJUNCTS: usize = 64;

/// The optimizer rule (see the module docs).
#[derive(Debug, Default)]
pub struct BalanceChains;

impl BalanceChains {
    /// Its name among a session's optimizer rules.
    pub const NAME: &'static str = "taglake_balance_chains";
}

impl OptimizerRule for BalanceChains {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(&self, plan: LogicalPlan, _config: &dyn OptimizerConfig) -> Result<Transformed<LogicalPlan>> {
        plan.map_expressions(balance)?.transform_data(|plan| match plan {
            LogicalPlan::Filter(mut filter) if conjuncts(&filter.predicate) > MAX_CONJUNCTS => {
                filter.predicate = Expr::Not(Box::new(Expr::Not(Box::new(filter.predicate))));
                Ok(Transformed::yes(LogicalPlan::Filter(filter)))
            }
            plan => Ok(Transformed::no(plan)),
        })
    }
}

/// The terms of the `AND` chain `expr` (1 when it is not one), counted without recursion.
fn conjuncts(expr: &Expr) -> usize {
    let mut terms = 0;
    let mut stack = vec![expr];
    while let Some(e) = stack.pop() {
        match e {
            Expr::BinaryExpr(BinaryExpr { left, op: Operator::And, right }) => {
                stack.push(left);
                stack.push(right);
            }
            _ => terms += 1,
        }
    }
    terms
}

/// `rules` with [`BalanceChains`] after each; as they are when they have it already.
pub fn interleave(rules: Vec<Arc<dyn OptimizerRule + Send + Sync>>) -> Vec<Arc<dyn OptimizerRule + Send + Sync>> {
    if rules.iter().any(|r| r.name() == BalanceChains::NAME) {
        return rules;
    }
    let balance: Arc<dyn OptimizerRule + Send + Sync> = Arc::new(BalanceChains);
    rules.into_iter().flat_map(|rule| [rule, balance.clone()]).collect()
}

/// Puts [`BalanceChains`] after every optimizer rule of `ctx` (once).
pub fn install(ctx: &SessionContext) {
    let rules = ctx.state().optimizers().to_vec();
    if rules.iter().any(|r| r.name() == BalanceChains::NAME) {
        return;
    }
    for rule in &rules {
        ctx.remove_optimizer_rule(rule.name());
    }
    for rule in interleave(rules) {
        ctx.add_optimizer_rule(rule);
    }
}

/// `state` with [`BalanceChains`] after every optimizer rule (once), and
/// [`crate::breakdown::FamilyGroupBy`] last: for a session built
/// elsewhere, such as a cluster scheduler's.
pub fn with_balance(state: SessionState) -> SessionState {
    let rules = interleave(crate::breakdown::with_rule(state.optimizers().to_vec()));
    SessionStateBuilder::new_from_existing(state).with_optimizer_rules(rules).build()
}

/// `expr` with every `AND` / `OR` chain nested deeper than
/// [`MAX_CHAIN_DEPTH`] rebuilt balanced.
pub fn balance(expr: Expr) -> Result<Transformed<Expr>> {
    if depth(&expr)? <= MAX_CHAIN_DEPTH {
        return Ok(Transformed::no(expr));
    }
    // Top down: a chain is rebuilt before the walk goes into it.
    expr.transform_down(|e| match &e {
        Expr::BinaryExpr(BinaryExpr { op: op @ (Operator::And | Operator::Or), .. }) => {
            let op = *op;
            if chain_depth(&e, op) > MAX_CHAIN_DEPTH {
                Ok(Transformed::yes(rebuild(e, op)))
            } else {
                Ok(Transformed::no(e))
            }
        }
        _ => Ok(Transformed::no(e)),
    })
}

/// How deep `expr` nests, measured with an explicit stack.
fn depth(expr: &Expr) -> Result<usize> {
    let mut deepest = 0;
    let mut stack = vec![(expr, 1usize)];
    while let Some((e, d)) = stack.pop() {
        deepest = deepest.max(d);
        e.apply_children(|child| {
            stack.push((child, d + 1));
            Ok(TreeNodeRecursion::Continue)
        })?;
    }
    Ok(deepest)
}

/// How deep the `op` nodes under `expr` nest (1 for a single `a op b`).
fn chain_depth(expr: &Expr, op: Operator) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(expr, 1usize)];
    while let Some((e, d)) = stack.pop() {
        if let Expr::BinaryExpr(BinaryExpr { left, op: o, right }) = e
            && *o == op
        {
            deepest = deepest.max(d);
            stack.push((left, d + 1));
            stack.push((right, d + 1));
        }
    }
    deepest
}

/// The terms of the `op` chain `expr`, in order, joined again as a balanced tree.
fn rebuild(expr: Expr, op: Operator) -> Expr {
    let mut terms = Vec::new();
    let mut stack = vec![expr];
    while let Some(e) = stack.pop() {
        match e {
            Expr::BinaryExpr(BinaryExpr { left, op: o, right }) if o == op => {
                stack.push(*right);
                stack.push(*left);
            }
            term => terms.push(term),
        }
    }
    join(terms, op)
}

fn join(mut terms: Vec<Expr>, op: Operator) -> Expr {
    if terms.len() == 1 {
        return terms.pop().expect("one term");
    }
    let right = terms.split_off(terms.len() / 2);
    Expr::BinaryExpr(BinaryExpr::new(Box::new(join(terms, op)), op, Box::new(join(right, op))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::{col, lit};

    fn left_deep(terms: usize, op: Operator) -> Expr {
        (1..terms).fold(col("c0"), |acc, i| {
            Expr::BinaryExpr(BinaryExpr::new(Box::new(acc), op, Box::new(col(format!("c{}", i % 5)).gt(lit(1)))))
        })
    }

    #[test]
    fn deep_chains_are_rebuilt_balanced_and_keep_their_terms() {
        let deep = left_deep(100_000, Operator::And);
        let balanced = balance(deep).unwrap();
        assert!(balanced.transformed);
        assert!(depth(&balanced.data).unwrap() <= 2 * 18, "{}", depth(&balanced.data).unwrap());
        let mut terms = Vec::new();
        let mut stack = vec![balanced.data];
        while let Some(e) = stack.pop() {
            match e {
                Expr::BinaryExpr(BinaryExpr { left, op: Operator::And, right }) => {
                    stack.push(*right);
                    stack.push(*left);
                }
                t => terms.push(t),
            }
        }
        assert_eq!(terms.len(), 100_000);
        assert_eq!(terms[0], col("c0"));
        assert_eq!(terms[7], col("c2").gt(lit(1)));
        // Shallow chains, and balanced ones, are left as they are.
        let short = left_deep(MAX_CHAIN_DEPTH, Operator::Or);
        assert!(!balance(short.clone()).unwrap().transformed);
        let again = balance(left_deep(5_000, Operator::Or)).unwrap().data;
        assert!(!balance(again).unwrap().transformed);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_session_keeps_chains_the_optimizer_rebuilds_balanced() {
        // Only the tag-like terms could go elsewhere: the optimizer joins the
        // remaining conjuncts of the filter again, left-deep, then clones them.
        let ctx = SessionContext::new();
        install(&ctx);
        install(&ctx);
        let balancers = ctx.state().optimizers().iter().filter(|r| r.name() == BalanceChains::NAME).count();
        assert_eq!(balancers, ctx.state().optimizers().len() / 2);
        ctx.sql("CREATE TABLE t AS VALUES (1, 'a'), (2, 'b'), (3, 'c')").await.unwrap().collect().await.unwrap();
        let filter = (0..20_000).map(|i| format!("column2 <> 'x{}'", i % 997)).collect::<Vec<_>>().join(" AND ");
        let sql = format!("SELECT count(*) FROM t WHERE column1 > 1 AND {filter}");
        assert_eq!(crate::sql_number(&ctx, &sql).await.unwrap(), Some(2));
    }
}
