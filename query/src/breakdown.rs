//! Breakdowns of an audience by exclusive families and tags, answered by
//! intersection counts instead of rows.
//!
//! `SELECT tier, count(*) FROM members WHERE category_lover_beauty AND NOT
//! dormant_90_plus GROUP BY tier` needs, per tier, how many members of the
//! audience hold that tier's tag: one count of `audience AND tier_gold`
//! per value (plus the members without a tier), each a container walk of
//! the count engine ([`crate::count`]), where producing the rows would
//! build the audience, look up each member's tier and hash it into groups.
//!
//! [`FamilyGroupBy`] is an optimizer rule that does this for an
//! `Aggregate` directly over a scan of `members` (or `audience('…')`) whose
//! filters were all pushed down, grouped only by family and tag columns,
//! with only `count(*)`-like aggregates (`count(*)`, `count(1)`,
//! `count(member_key)`, `count(<tag>)`: never null). It replaces that
//! subtree by the groups and their counts as `Values`, computed when the
//! statement is optimized, so a kept plan still counts afresh each time.
//! Empty groups are left out, as `GROUP BY` leaves them out. Anything
//! else (an attribute in the key, `sum`, `DISTINCT`, a join) is left to
//! DataFusion, which gets the same values from the scan's columns.
//!
//! [`breakdown`] is the same count per value for the CLI, with the share of
//! each value among all members beside it.

use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::catalog::default_table_source::source_as_provider;
use datafusion::common::Column;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{DataFusionError, Result as DfResult, ScalarValue};
use datafusion::logical_expr::logical_plan::{Aggregate, TableScan};
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};
use datafusion::prelude::SessionContext;

use crate::audience::Node;
use crate::members::{Col, MembersTable};
use crate::tagset::TagSet;

/// Most groups a statement is answered for by counts (the product of the
/// grouped columns' values); beyond, rows are cheaper.
pub const MAX_GROUPS: usize = 4_096;

/// The optimizer rule (see the module docs).
#[derive(Debug, Default)]
pub struct FamilyGroupBy;

impl FamilyGroupBy {
    /// Its name among a session's optimizer rules.
    pub const NAME: &'static str = "taglake_family_group_by";
}

/// Adds [`FamilyGroupBy`] to `ctx`'s optimizer (once), after every other
/// rule, so filters are pushed into the scan before it looks.
pub fn install(ctx: &SessionContext) {
    if ctx.state().optimizers().iter().all(|r| r.name() != FamilyGroupBy::NAME) {
        ctx.add_optimizer_rule(Arc::new(FamilyGroupBy));
    }
}

/// `rules` with [`FamilyGroupBy`] last (once): for a session built elsewhere.
pub fn with_rule(mut rules: Vec<Arc<dyn OptimizerRule + Send + Sync>>) -> Vec<Arc<dyn OptimizerRule + Send + Sync>> {
    if rules.iter().all(|r| r.name() != FamilyGroupBy::NAME) {
        rules.push(Arc::new(FamilyGroupBy));
    }
    rules
}

impl OptimizerRule for FamilyGroupBy {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(&self, plan: LogicalPlan, _config: &dyn OptimizerConfig) -> DfResult<Transformed<LogicalPlan>> {
        let LogicalPlan::Aggregate(agg) = &plan else { return Ok(Transformed::no(plan)) };
        match counted(agg)? {
            Some(rewritten) => Ok(Transformed::yes(rewritten)),
            None => Ok(Transformed::no(plan)),
        }
    }
}

/// One grouped column: its values and the members holding each.
type Dimension = Vec<(ScalarValue, Node)>;

/// The aggregate's result as `Values`, or `None` when it is not of the
/// shape the module docs describe.
fn counted(agg: &Aggregate) -> DfResult<Option<LogicalPlan>> {
    if agg.group_expr.is_empty() {
        return Ok(None);
    }
    let Some((provider, scan)) = members_scan(&agg.input) else { return Ok(None) };
    let Some(table) = provider.downcast_ref::<MembersTable>() else { return Ok(None) };
    let tags = table.tags();
    let mut dimensions: Vec<Dimension> = Vec::new();
    for g in &agg.group_expr {
        let Expr::Column(c) = g else { return Ok(None) };
        dimensions.push(match table.resolve(&c.name) {
            Some(Col::Tag(t)) => vec![
                (ScalarValue::Boolean(Some(true)), Node::Tag(t)),
                (ScalarValue::Boolean(Some(false)), Node::Not(Box::new(Node::Tag(t)))),
            ],
            Some(Col::Family(f)) => family_groups(tags, f),
            None => return Ok(None),
        });
    }
    if dimensions.iter().try_fold(1usize, |n, d| n.checked_mul(d.len())).is_none_or(|n| n > MAX_GROUPS) {
        return Ok(None);
    }
    if !agg.aggr_expr.iter().all(|e| never_null_count(e, table)) {
        return Ok(None);
    }
    if scan.fetch.is_some() || scan.filters.iter().any(|f| table.translate(f).is_none()) {
        return Ok(None);
    }
    let external = |e: crate::Error| DataFusionError::External(Box::new(e));
    // The filtered audience is built once; each group is counted within it.
    let base = match table.selection(&scan.filters)? {
        Some(node) => Some(crate::count::select(&node, tags).map_err(external)?),
        None => None,
    };
    let mut rows = Vec::new();
    for combination in product(&dimensions) {
        let group = Node::And(combination.iter().map(|(_, n)| (*n).clone()).collect());
        let members = match &base {
            Some(base) => crate::count::count_within(base, &group, tags),
            None => crate::count::count(&group, tags),
        }
        .map_err(external)?;
        if members == 0 {
            continue;
        }
        let members = i64::try_from(members).map_err(|e| DataFusionError::Internal(e.to_string()))?;
        let mut row: Vec<Expr> = combination.iter().map(|(v, _)| Expr::Literal((*v).clone(), None)).collect();
        row.extend(agg.aggr_expr.iter().map(|_| Expr::Literal(ScalarValue::Int64(Some(members)), None)));
        rows.push(row);
    }
    // Plain `Values` (columns `column1` …, as a plan sent to a cluster is
    // rebuilt) under a projection to the aggregate's own names; no rows:
    // typed NULLs over an empty relation.
    let (input, sources): (LogicalPlan, Vec<Expr>) = if rows.is_empty() {
        let nulls = agg
            .schema
            .fields()
            .iter()
            .map(|f| ScalarValue::try_from(f.data_type()).map(|v| Expr::Literal(v, None)))
            .collect::<DfResult<Vec<_>>>()?;
        (LogicalPlanBuilder::empty(false).build()?, nulls)
    } else {
        let n = agg.schema.fields().len();
        let columns = (1..=n).map(|i| Expr::Column(Column::from_name(format!("column{i}")))).collect();
        (LogicalPlanBuilder::values(rows)?.build()?, columns)
    };
    let named = sources
        .into_iter()
        .zip(agg.schema.iter())
        .map(|(e, (qualifier, field))| e.alias_qualified(qualifier.cloned(), field.name()))
        .collect::<Vec<_>>();
    Ok(Some(LogicalPlanBuilder::from(input).project(named)?.build()?))
}

/// The table and scan under an aggregate (through an alias).
fn members_scan(plan: &LogicalPlan) -> Option<(Arc<dyn TableProvider>, &TableScan)> {
    let scan = match plan {
        LogicalPlan::TableScan(scan) => scan,
        LogicalPlan::SubqueryAlias(alias) => match alias.input.as_ref() {
            LogicalPlan::TableScan(scan) => scan,
            _ => return None,
        },
        _ => return None,
    };
    Some((source_as_provider(&scan.source).ok()?, scan))
}

/// `count(*)`, `count(<literal>)`, `count(member_key)` or `count(<tag>)`:
/// a count of rows, with no DISTINCT, FILTER or ORDER BY.
fn never_null_count(e: &Expr, table: &MembersTable) -> bool {
    let e = match e {
        Expr::Alias(a) => a.expr.as_ref(),
        e => e,
    };
    let Expr::AggregateFunction(f) = e else { return false };
    let p = &f.params;
    if f.func.name() != "count" || p.distinct || p.filter.is_some() || !p.order_by.is_empty() || p.args.len() != 1 {
        return false;
    }
    match &p.args[0] {
        Expr::Literal(v, _) => !v.is_null(),
        Expr::Column(c) => c.name == "member_key" || matches!(table.resolve(&c.name), Some(Col::Tag(_))),
        _ => false,
    }
}

/// Each value of family `f` with its tag, then NULL with the members of
/// the universe holding none of them.
fn family_groups(tags: &TagSet, f: usize) -> Dimension {
    let family = &tags.families()[f];
    let mut groups: Dimension =
        family.tags.iter().map(|&t| (ScalarValue::Utf8(tags.tag(t).value.clone()), Node::Tag(t))).collect();
    let any = Node::Or(family.tags.iter().map(|&t| Node::Tag(t)).collect());
    groups.push((ScalarValue::Utf8(None), Node::Not(Box::new(any))));
    groups
}

/// Every combination of one group per dimension.
fn product(dimensions: &[Dimension]) -> Vec<Vec<&(ScalarValue, Node)>> {
    let mut out: Vec<Vec<&(ScalarValue, Node)>> = vec![Vec::new()];
    for d in dimensions {
        out = out.iter().flat_map(|prefix| d.iter().map(move |g| [prefix.clone(), vec![g]].concat())).collect();
    }
    out
}

/// One value of a family within an audience.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Share {
    /// The value (`None`: members without one).
    pub value: Option<String>,
    /// The tag holding the value (`None` for the members without one).
    pub tag: Option<String>,
    /// Members of the audience with the value.
    pub members: u64,
    /// Members of the audience with it / members of the audience.
    pub share: f64,
    /// Members with it among all members.
    pub base_members: u64,
    /// `base_members` / all members.
    pub base_share: f64,
    /// `share / base_share × 100`: over 100, over-represented in the audience.
    pub index: Option<f64>,
}

impl Share {
    /// A value's shares and index from its counts and the two totals
    /// (the audience's and all members').
    pub fn new(
        value: Option<String>,
        tag: Option<String>,
        (members, total): (u64, u64),
        (base_members, base_total): (u64, u64),
    ) -> Share {
        let ratio = |n: u64, d: u64| if d == 0 { 0.0 } else { n as f64 / d as f64 };
        let (share, base_share) = (ratio(members, total), ratio(base_members, base_total));
        let index = (base_share > 0.0).then(|| share / base_share * 100.0);
        Share { value, tag, members, share, base_members, base_share, index }
    }
}

/// The audience `node` (everyone when `None`) broken down by the
/// exclusive family `f`: each value with its members in the audience and
/// among all members, in catalog order, then the members without a value.
pub fn breakdown(node: Option<&Node>, tags: &TagSet, f: usize) -> crate::Result<Vec<Share>> {
    let everyone = Node::Const(true);
    let audience = crate::count::select(node.unwrap_or(&everyone), tags)?;
    let universe = tags.universe_bits()?;
    let (total, base_total) = (audience.len(), universe.len());
    family_groups(tags, f)
        .into_iter()
        .map(|(value, group)| {
            let members = crate::count::count_within(&audience, &group, tags)?;
            let base_members = crate::count::count_within(universe, &group, tags)?;
            let ScalarValue::Utf8(value) = value else { unreachable!("family values are text") };
            let tag = match group {
                Node::Tag(t) => Some(tags.tag(t).name.clone()),
                _ => None,
            };
            Ok(Share::new(value, tag, (members, total), (base_members, base_total)))
        })
        .collect()
}
