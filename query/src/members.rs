//! `members` as SQL sees it: the member attributes plus one boolean column
//! per tag, with filters on tag columns answered by bitmap algebra.
//!
//! A filter made only of tag columns, `AND`/`OR`/`NOT`, `= true/false`,
//! `IS [NOT] TRUE/FALSE` and boolean literals is translated into an audience
//! tree and accepted as an *exact* pushdown, so DataFusion drops it from the
//! plan and the scan produces only the matching members. Anything else
//! (`city = 'Shanghai'`, `tier_gold OR points_balance > 100`) is left to
//! DataFusion's own filter above the scan, which sees real tag values.
//!
//! An exclusive family (see [`TagSet::families`]) is also one text column
//! holding each member's value (`tier = 'gold'`; null without one), named
//! by [`family_column`]. Comparisons of it with text literals (`=`, `<>`,
//! `IN`, `IS [NOT] DISTINCT FROM`, `IS [NOT] NULL`) push down like tags. A
//! filter is translated with SQL's three-valued logic: each part becomes
//! the members for whom it is true and those for whom it is false, so
//! `NOT (tier = 'gold')` keeps members of another tier and drops those
//! without one, exactly as DataFusion's own filter would.
//!
//! When a query needs no attribute besides `member_key` (a count, a list of
//! keys, tag columns) the scan never opens a Parquet file: [`TagBitmapExec`]
//! produces rows straight from the selected bitmap, and its statistics state
//! the exact row count, so `SELECT count(*) … WHERE <tags>` is answered by
//! DataFusion's aggregate-statistics rule from the bitmap cardinality
//! without producing a row. Otherwise [`TagFilterExec`] reads the Delta
//! table and keeps the rows whose key is selected.

use std::fmt;
use std::sync::{Arc, OnceLock};

use arrow::array::{ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, RecordBatchOptions, StringBuilder};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, ScalarValue, Statistics};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::expr::InList;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown, TableType};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::statistics::StatisticsArgs;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties, SendableRecordBatchStream,
};
use futures::StreamExt;
use roaring::RoaringBitmap;

use crate::audience::{self, Node};
use crate::tagset::TagSet;

type DfResult<T> = datafusion::common::Result<T>;

/// The `members` table provider (also what `audience('…')` returns).
#[derive(Debug)]
pub struct MembersTable {
    tags: Arc<TagSet>,
    inner: Arc<dyn TableProvider>,
    /// `audience('…')`: only these members, and the text they came from.
    base: Option<(Node, String)>,
    schema: SchemaRef,
    /// Attribute columns (the Delta table's), then tag columns.
    attributes: usize,
    /// Tag position of every tag column, in schema order.
    tag_columns: Vec<usize>,
    /// Family (an index into [`TagSet::families`]) of every family
    /// column, in schema order, after the tag columns.
    families: Vec<usize>,
    /// Bitmap scans in one partition (a cluster cannot split a leaf it
    /// does not know; see [`MembersTable::rebuild`]).
    single_partition: bool,
}

impl MembersTable {
    /// Attributes from `inner` (the Delta `members` table) plus a column per
    /// tag whose name is not already an attribute.
    pub fn new(tags: Arc<TagSet>, inner: Arc<dyn TableProvider>) -> MembersTable {
        let base_schema = inner.schema();
        let mut fields: Vec<Field> = base_schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        let attributes = fields.len();
        let mut tag_columns = Vec::new();
        for (i, t) in tags.tags.iter().enumerate() {
            if base_schema.index_of(&t.name).is_err() {
                fields.push(Field::new(&t.name, DataType::Boolean, false));
                tag_columns.push(i);
            }
        }
        let mut families = Vec::new();
        for (f, family) in tags.families().iter().enumerate() {
            let taken = |name: &str| {
                base_schema.index_of(name).is_ok()
                    || tags.position(name).is_some()
                    || fields.iter().any(|x| x.name() == name)
            };
            if let Some(name) = family_column(&family.name, &taken) {
                fields.push(Field::new(name, DataType::Utf8, true));
                families.push(f);
            }
        }
        let schema = Arc::new(Schema::new(fields));
        MembersTable { tags, inner, base: None, schema, attributes, tag_columns, families, single_partition: false }
    }

    /// The same table restricted to an audience.
    pub fn restricted(&self, node: Node, text: String) -> MembersTable {
        MembersTable {
            tags: self.tags.clone(),
            inner: self.inner.clone(),
            base: Some((node, text)),
            schema: self.schema.clone(),
            attributes: self.attributes,
            tag_columns: self.tag_columns.clone(),
            families: self.families.clone(),
            single_partition: self.single_partition,
        }
    }

    /// The same table with every attribute column but only the tag and
    /// family columns named in `names`, in the same order (see
    /// [`crate::narrow`]). Costs a look-up per name, not a pass over the
    /// ~4,800 columns.
    pub fn narrowed<'n>(&self, names: impl IntoIterator<Item = &'n str>) -> MembersTable {
        let fields = self.schema.fields();
        let names: Vec<&str> = names.into_iter().collect();
        // Tag columns are in tag order, so a tag's column is found by its position.
        let mut columns: Vec<usize> = names
            .iter()
            .filter_map(|name| self.tags.position(name))
            .filter_map(|tag| self.tag_columns.binary_search(&tag).ok())
            .collect();
        columns.sort_unstable();
        columns.dedup();
        let mut kept: Vec<_> = fields[..self.attributes].to_vec();
        kept.extend(columns.iter().map(|&j| fields[self.attributes + j].clone()));
        let first_family = self.attributes + self.tag_columns.len();
        let families: Vec<usize> =
            (0..self.families.len()).filter(|&j| names.contains(&fields[first_family + j].name().as_str())).collect();
        kept.extend(families.iter().map(|&j| fields[first_family + j].clone()));
        MembersTable {
            tags: self.tags.clone(),
            inner: self.inner.clone(),
            base: self.base.clone(),
            schema: Arc::new(Schema::new_with_metadata(kept, self.schema.metadata().clone())),
            attributes: self.attributes,
            tag_columns: columns.iter().map(|&j| self.tag_columns[j]).collect(),
            families: families.iter().map(|&j| self.families[j]).collect(),
            single_partition: self.single_partition,
        }
    }

    /// How many tag columns the table has.
    pub fn tag_column_count(&self) -> usize {
        self.tag_columns.len()
    }

    /// The tags this table answers from.
    pub fn tags(&self) -> &Arc<TagSet> {
        &self.tags
    }

    /// The attribute table this one adds tag columns to.
    pub fn inner(&self) -> &Arc<dyn TableProvider> {
        &self.inner
    }

    /// The audience text of an `audience('…')` table, `None` for `members`.
    pub fn audience_text(&self) -> Option<&str> {
        self.base.as_ref().map(|(_, text)| text.as_str())
    }

    /// The table again in another process: `members` over `inner`, or
    /// `audience(text)` when `audience` is set. A cluster scheduler hands
    /// each task a slice of a stage's partitions by rewriting the leaves it
    /// knows; it cannot slice [`TagBitmapExec`], so there the bitmap scan is
    /// one partition (it is cheap; the work above it is spread as usual).
    pub fn rebuild(
        tags: Arc<TagSet>,
        inner: Arc<dyn TableProvider>,
        audience: Option<&str>,
    ) -> crate::Result<MembersTable> {
        let mut table = MembersTable::new(tags, inner);
        table.single_partition = true;
        Ok(match audience {
            Some(text) => {
                let node = audience::parse(text, table.tags())?;
                table.restricted(node, text.to_string())
            }
            None => table,
        })
    }

    pub(crate) fn translate(&self, expr: &Expr) -> Option<Node> {
        filter_to_node(expr, &self.tags, &|name| self.resolve(name))
    }

    /// What the column named `name` is (`None`: an attribute or unknown).
    pub(crate) fn resolve(&self, name: &str) -> Option<Col> {
        match self.column(self.schema.index_of(name).ok()?) {
            Out::Tag(t) => Some(Col::Tag(t)),
            Out::Family(f) => Some(Col::Family(f)),
            _ => None,
        }
    }

    /// Where schema column `i` comes from (attributes as [`Out::Child`]
    /// of their own index).
    fn column(&self, i: usize) -> Out {
        let tags = self.attributes + self.tag_columns.len();
        if i < self.attributes {
            Out::Child(i)
        } else if i < tags {
            Out::Tag(self.tag_columns[i - self.attributes])
        } else {
            Out::Family(self.families[i - tags])
        }
    }

    /// The audience of the table (`audience('…')`) and of `filters`
    /// pushed into a scan of it; `None`: everyone.
    pub(crate) fn selection(&self, filters: &[Expr]) -> DfResult<Option<Node>> {
        let mut parts = Vec::new();
        if let Some((node, _)) = &self.base {
            parts.push(node.clone());
        }
        for f in filters {
            parts.push(self.translate(f).ok_or_else(|| {
                DataFusionError::Internal(format!("filter {f} was not accepted for pushdown into members"))
            })?);
        }
        Ok(match parts.len() {
            0 => None,
            1 => parts.pop(),
            _ => Some(Node::And(parts)),
        })
    }
}

/// The name of an exclusive family's column in `members`: the family's
/// name, or when an attribute, a tag or an earlier family column already
/// has it (`city`, `birthday`), the name followed by `_value`; `None` (no
/// column) when that is taken too.
pub fn family_column(family: &str, taken: &dyn Fn(&str) -> bool) -> Option<String> {
    family_column_names(family).into_iter().find(|n| !taken(n))
}

/// The names [`family_column`] chooses from, in order: whichever a
/// `members` table gave family `family`, it is one of these.
pub fn family_column_names(family: &str) -> [String; 2] {
    [family.to_string(), format!("{family}_value")]
}

/// A column a filter can be pushed down on.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Col {
    /// A tag column (tag position).
    Tag(usize),
    /// An exclusive family's column (index into [`TagSet::families`]).
    Family(usize),
}

/// Translates a filter over tag and family columns into an audience tree
/// (the members for whom it is true); `None` when any part of it is not a
/// tag column, a family column compared with text, a boolean literal or
/// boolean logic.
pub(crate) fn filter_to_node(expr: &Expr, tags: &TagSet, resolve: &dyn Fn(&str) -> Option<Col>) -> Option<Node> {
    Truth::of(expr, tags, resolve).map(|t| t.when_true)
}

/// A filter part under SQL's three-valued logic: the members for whom it
/// is true and those for whom it is false (the rest: null).
#[derive(Debug, Clone)]
struct Truth {
    when_true: Node,
    when_false: Node,
    /// Whether it can be null (family columns can; tags and literals cannot).
    nullable: bool,
}

impl Truth {
    fn never_null(when_true: Node) -> Truth {
        Truth { when_false: not(when_true.clone()), when_true, nullable: false }
    }

    fn negate(self) -> Truth {
        Truth { when_true: self.when_false, when_false: self.when_true, nullable: self.nullable }
    }

    /// `IS TRUE` (`want`) or `IS FALSE`: never null.
    fn is(self, want: bool) -> Truth {
        Truth::never_null(if want { self.when_true } else { self.when_false })
    }

    // Long on purpose: one arm per SQL expression kind of the three-valued truth table the pushdown relies
    // on.
    fn of(expr: &Expr, tags: &TagSet, resolve: &dyn Fn(&str) -> Option<Col>) -> Option<Truth> {
        let go = |e: &Expr| Truth::of(e, tags, resolve);
        let bool_literal = |e: &Expr| match e {
            Expr::Literal(ScalarValue::Boolean(Some(b)), _) => Some(*b),
            _ => None,
        };
        let family = |e: &Expr| match e {
            Expr::Column(c) => match resolve(&c.name)? {
                Col::Family(f) => Some(f),
                Col::Tag(_) => None,
            },
            _ => None,
        };
        Some(match expr {
            Expr::Column(c) => match resolve(&c.name)? {
                Col::Tag(t) => Truth::never_null(Node::Tag(t)),
                Col::Family(_) => return None,
            },
            Expr::Literal(ScalarValue::Boolean(Some(b)), _) => Truth::never_null(Node::Const(*b)),
            Expr::Literal(ScalarValue::Boolean(None), _) => {
                Truth { when_true: Node::Const(false), when_false: Node::Const(false), nullable: true }
            }
            Expr::Not(e) => go(e)?.negate(),
            Expr::IsTrue(e) => go(e)?.is(true),
            Expr::IsFalse(e) => go(e)?.is(false),
            Expr::IsNotTrue(e) => go(e)?.is(true).negate(),
            Expr::IsNotFalse(e) => go(e)?.is(false).negate(),
            Expr::IsNull(e) | Expr::IsNotNull(e) => {
                let known = match family(e) {
                    Some(f) => any_of(tags, f, |_| true),
                    None => {
                        let t = go(e)?;
                        if t.nullable { Node::Or(vec![t.when_true, t.when_false]) } else { Node::Const(true) }
                    }
                };
                let known = Truth::never_null(known);
                if matches!(expr, Expr::IsNull(_)) { known.negate() } else { known }
            }
            Expr::BinaryExpr(BinaryExpr { op: op @ (Operator::And | Operator::Or), .. }) => {
                // A chain of one operator becomes one n-ary node, its terms
                // gathered in a loop: however long the chain and however
                // DataFusion nested it, its length costs no recursion here.
                let mut terms = Vec::new();
                let mut chain = vec![expr];
                while let Some(e) = chain.pop() {
                    match e {
                        Expr::BinaryExpr(BinaryExpr { left, op: o, right }) if o == op => {
                            chain.push(right);
                            chain.push(left);
                        }
                        term => terms.push(go(term)?),
                    }
                }
                let nullable = terms.iter().any(|t| t.nullable);
                let (t, f): (Vec<Node>, Vec<Node>) = terms.into_iter().map(|t| (t.when_true, t.when_false)).unzip();
                if *op == Operator::And {
                    Truth { when_true: Node::And(t), when_false: Node::Or(f), nullable }
                } else {
                    Truth { when_true: Node::Or(t), when_false: Node::And(f), nullable }
                }
            }
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                let (equal, distinct) = match op {
                    Operator::Eq => (true, false),
                    Operator::NotEq => (false, false),
                    Operator::IsNotDistinctFrom => (true, true),
                    Operator::IsDistinctFrom => (false, true),
                    _ => return None,
                };
                // A family column compared with a text literal (or NULL).
                let compared = match (family(left), family(right)) {
                    (Some(f), None) => Some((f, text_literal(right)?)),
                    (None, Some(f)) => Some((f, text_literal(left)?)),
                    (Some(_), Some(_)) => return None,
                    (None, None) => None,
                };
                if let Some((f, value)) = compared {
                    let t = family_equals(tags, f, &[value], distinct);
                    return Some(if equal { t } else { t.negate() });
                }
                // A boolean side compared with a boolean literal; anything
                // else (tag vs tag, two literals) stays with DataFusion.
                let (side, value) = match (bool_literal(left), bool_literal(right)) {
                    (None, Some(v)) => (go(left)?, v),
                    (Some(v), None) => (go(right)?, v),
                    _ => return None,
                };
                let t = if distinct {
                    side.is(value)
                } else if value {
                    side
                } else {
                    side.negate()
                };
                if equal { t } else { t.negate() }
            }
            Expr::InList(InList { expr, list, negated }) => {
                let f = family(expr)?;
                let values = list.iter().map(text_literal).collect::<Option<Vec<_>>>()?;
                let t = family_equals(tags, f, &values, false);
                if *negated { t.negate() } else { t }
            }
            _ => return None,
        })
    }
}

/// `NOT n`, without double negations or negated constants.
fn not(n: Node) -> Node {
    match n {
        Node::Const(b) => Node::Const(!b),
        Node::Not(inner) => *inner,
        n => Node::Not(Box::new(n)),
    }
}

/// A text literal: `Some(None)` for a NULL.
fn text_literal(e: &Expr) -> Option<Option<&str>> {
    match e {
        Expr::Literal(ScalarValue::Utf8(v) | ScalarValue::LargeUtf8(v) | ScalarValue::Utf8View(v), _) => {
            Some(v.as_deref())
        }
        Expr::Literal(ScalarValue::Null, _) => Some(None),
        _ => None,
    }
}

/// The members of family `f` whose value `keep` admits (an `Or` of tags).
fn any_of(tags: &TagSet, f: usize, keep: impl Fn(&str) -> bool) -> Node {
    let family = &tags.families()[f];
    let kept: Vec<Node> = family
        .tags
        .iter()
        .filter(|&&t| tags.tag(t).value.as_deref().is_some_and(&keep))
        .map(|&t| Node::Tag(t))
        .collect();
    match kept.len() {
        0 => Node::Const(false),
        1 => kept.into_iter().next().expect("one"),
        _ => Node::Or(kept),
    }
}

/// `column IN (values)` for family `f`, or with `distinct` the
/// `IS NOT DISTINCT FROM` of one value (never null: a NULL value matches
/// the members without one).
fn family_equals(tags: &TagSet, f: usize, values: &[Option<&str>], distinct: bool) -> Truth {
    let listed = |v: &str| values.contains(&Some(v));
    let when_true = any_of(tags, f, listed);
    if distinct {
        let when_true = match values.first() {
            Some(None) => not(any_of(tags, f, |_| true)),
            _ => when_true,
        };
        return Truth::never_null(when_true);
    }
    // `x IN (…, NULL)` is null, not false, where x matches no value.
    let when_false = if values.contains(&None) { Node::Const(false) } else { any_of(tags, f, |v| !listed(v)) };
    Truth { when_true, when_false, nullable: true }
}

#[async_trait]
impl TableProvider for MembersTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| match self.translate(f) {
                Some(_) => TableProviderFilterPushDown::Exact,
                None => TableProviderFilterPushDown::Unsupported,
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let selection = self.selection(filters)?;
        let external = |e: crate::Error| DataFusionError::External(Box::new(e));
        // Counted now (statistics answer `count(*)` from it), built only
        // when a row is produced.
        let selection = match selection {
            Some(n) => Selection {
                len: crate::count::count(&n, &self.tags).map_err(external)?,
                everyone: false,
                audience: audience::display(&n, &self.tags),
                keys: Arc::new(Keys::lazy(Some(n), self.tags.clone())),
            },
            None => Selection {
                len: self.tags.universe().map_err(external)?.len(),
                everyone: true,
                audience: "everyone".into(),
                keys: Arc::new(Keys::lazy(None, self.tags.clone())),
            },
        };
        let all: Vec<usize> = (0..self.schema.fields().len()).collect();
        let projection = projection.unwrap_or(&all);
        // Read the projected tags' bitmaps (and build the projected
        // families' value indexes) now, so execution never fails on one.
        for &i in projection {
            match self.column(i) {
                Out::Tag(t) => drop(self.tags.bitmap(t).map_err(external)?),
                Out::Family(f) => drop(self.tags.family_index(f).map_err(external)?),
                _ => {}
            }
        }
        let schema = Arc::new(self.schema.project(projection)?);
        let key = self.inner.schema().index_of("member_key")?;
        let attributes: Vec<usize> = projection.iter().copied().filter(|&i| i < self.attributes).collect();
        if attributes.iter().all(|&i| i == key) {
            let columns = projection
                .iter()
                .map(|&i| match self.column(i) {
                    Out::Child(_) => Out::Key,
                    other => other,
                })
                .collect();
            let partitions =
                if limit.is_some() || self.single_partition { 1 } else { state.config().target_partitions() };
            return Ok(Arc::new(TagBitmapExec::new(schema, self.tags.clone(), selection, columns, limit, partitions)));
        }
        let mut read = attributes;
        read.push(key);
        read.sort_unstable();
        read.dedup();
        let child = self.inner.scan(state, Some(&read), &[], None).await?;
        let child_schema = child.schema();
        let columns = projection
            .iter()
            .map(|&i| match self.column(i) {
                Out::Child(_) => child_schema.index_of(self.schema.field(i).name()).map(Out::Child),
                other => Ok(other),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let key_column = child_schema.index_of("member_key")?;
        Ok(Arc::new(TagFilterExec::new(schema, self.tags.clone(), selection, child, key_column, columns)))
    }
}

/// What a scan selects.
#[derive(Debug, Clone)]
struct Selection {
    /// The selected member keys, built when first needed.
    keys: Arc<Keys>,
    /// How many members are selected.
    len: u64,
    /// No filter: every member (the keys are the universe).
    everyone: bool,
    /// The pushed-down filter as audience text, for EXPLAIN.
    audience: String,
}

impl Selection {
    /// A selection whose keys are known (sent by another process).
    fn known(keys: Arc<RoaringBitmap>, everyone: bool, audience: String) -> Selection {
        let len = keys.len();
        Selection {
            keys: Arc::new(Keys { node: None, tags: None, built: OnceLock::from(keys) }),
            len,
            everyone,
            audience,
        }
    }

    fn keys(&self) -> DfResult<Arc<RoaringBitmap>> {
        self.keys.get()
    }
}

/// A selection's member keys. A `count(*)` is answered from statistics
/// (the count engine's number), so a plan that never produces a row never
/// builds them.
#[derive(Debug)]
struct Keys {
    /// The audience; `None`: everyone.
    node: Option<Node>,
    /// Where to evaluate it (`None` once built elsewhere).
    tags: Option<Arc<TagSet>>,
    built: OnceLock<Arc<RoaringBitmap>>,
}

impl Keys {
    fn lazy(node: Option<Node>, tags: Arc<TagSet>) -> Keys {
        Keys { node, tags: Some(tags), built: OnceLock::new() }
    }

    fn get(&self) -> DfResult<Arc<RoaringBitmap>> {
        if let Some(k) = self.built.get() {
            return Ok(k.clone());
        }
        let tags =
            self.tags.as_ref().ok_or_else(|| DataFusionError::Internal("a selection without its tags".into()))?;
        let external = |e: crate::Error| DataFusionError::External(Box::new(e));
        let keys = match &self.node {
            Some(n) => audience::evaluate(n, tags).map_err(external)?,
            None => tags.universe().map_err(external)?.clone(),
        };
        Ok(self.built.get_or_init(|| Arc::new(keys)).clone())
    }
}

/// Where an output column comes from.
#[derive(Debug, Clone, Copy)]
enum Out {
    /// `member_key`, from the selected keys.
    Key,
    /// A column of the Delta scan.
    Child(usize),
    /// A tag column (tag position).
    Tag(usize),
    /// An exclusive family's column (index into [`TagSet::families`]).
    Family(usize),
}

/// A tag scan node apart from its schema, its child and the tag bitmaps,
/// for plans sent to other processes (the cluster codecs). Tag columns go
/// by name: the receiver reads them from the same snapshot.
#[derive(Debug, Clone)]
pub struct ScanParts {
    /// The selected member keys.
    pub keys: Arc<RoaringBitmap>,
    /// No filter: every member.
    pub everyone: bool,
    /// The selection as audience text (EXPLAIN).
    pub audience: String,
    /// Output columns in order.
    pub columns: Vec<PartColumn>,
    /// [`TagBitmapExec`]: the row limit.
    pub limit: Option<usize>,
    /// [`TagBitmapExec`]: the first key of each partition.
    pub starts: Vec<u32>,
    /// [`TagFilterExec`]: the child's `member_key` column.
    pub key_column: usize,
}

/// Where an output column of a [`ScanParts`] comes from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PartColumn {
    /// `member_key`, from the selected keys.
    Key,
    /// A column of the child scan.
    Child(usize),
    /// A tag column, by tag name.
    Tag(String),
    /// An exclusive family's column, by family name.
    Family(String),
}

impl Selection {
    /// The parts every scan node shares (no limit, one partition start, key column 0).
    fn parts(&self, tags: &TagSet, columns: &[Out]) -> DfResult<ScanParts> {
        let columns = columns
            .iter()
            .map(|c| match c {
                Out::Key => PartColumn::Key,
                Out::Child(i) => PartColumn::Child(*i),
                Out::Tag(t) => PartColumn::Tag(tags.tag(*t).name.clone()),
                Out::Family(f) => PartColumn::Family(tags.families()[*f].name.clone()),
            })
            .collect();
        Ok(ScanParts {
            keys: self.keys()?,
            everyone: self.everyone,
            audience: self.audience.clone(),
            columns,
            limit: None,
            starts: Vec::new(),
            key_column: 0,
        })
    }
}

fn from_parts(tags: &TagSet, columns: &[PartColumn]) -> DfResult<Vec<Out>> {
    columns
        .iter()
        .map(|c| {
            Ok(match c {
                PartColumn::Key => Out::Key,
                PartColumn::Child(i) => Out::Child(*i),
                PartColumn::Tag(name) => {
                    let t = tags.position(name).ok_or_else(|| {
                        DataFusionError::Plan(format!(
                            "tag `{name}` is not in snapshot {} here: the cluster reads another warehouse than the client",
                            tags.snapshot.unwrap_or_default()
                        ))
                    })?;
                    tags.bitmap(t).map_err(|e| DataFusionError::External(Box::new(e)))?;
                    Out::Tag(t)
                }
                PartColumn::Family(name) => {
                    let f = tags.exclusive(name).ok_or_else(|| {
                        DataFusionError::Plan(format!(
                            "family `{name}` is not exclusive in snapshot {} here: the cluster reads another warehouse than the client",
                            tags.snapshot.unwrap_or_default()
                        ))
                    })?;
                    tags.family_index(f).map_err(|e| DataFusionError::External(Box::new(e)))?;
                    Out::Family(f)
                }
            })
        })
        .collect()
}

/// Tag `tag`'s column for `keys`: its containers are walked alongside
/// the keys, which come in increasing order from a selection or a members
/// file written in key order (any order is still answered right).
fn tag_array(tags: &TagSet, tag: usize, keys: impl Iterator<Item = u32>) -> ArrayRef {
    let mut bits = tags.bitmap(tag).expect("projected bitmaps are read when the scan is planned").cursor();
    Arc::new(BooleanArray::new(keys.map(|k| bits.contains(k)).collect(), None))
}

/// The values of family `f` for `keys` (null: no tag of the family).
fn family_array(tags: &TagSet, f: usize, keys: impl Iterator<Item = u32>) -> ArrayRef {
    let family = tags.family_index(f).expect("projected families are indexed when the scan is planned");
    let (lower, _) = keys.size_hint();
    let mut out = StringBuilder::with_capacity(lower, lower * 8);
    for k in keys {
        out.append_option(family.of(k).and_then(|j| tags.tag(family.tags[j]).value.as_deref()));
    }
    Arc::new(out.finish())
}

fn properties(schema: SchemaRef, partitions: usize) -> Arc<PlanProperties> {
    Arc::new(PlanProperties::new(
        EquivalenceProperties::new(schema),
        Partitioning::UnknownPartitioning(partitions),
        EmissionType::Incremental,
        Boundedness::Bounded,
    ))
}

/// The exact row count of the whole scan (per partition it is not tracked).
fn exact_rows(schema: &SchemaRef, args: &StatisticsArgs, rows: u64) -> Arc<Statistics> {
    let stats = Statistics::new_unknown(schema);
    Arc::new(if args.partition().is_some() { stats } else { stats.with_num_rows(Precision::Exact(rows as usize)) })
}

/// Produces the selected members straight from the bitmap: `member_key`
/// and tag columns only, no file read.
#[derive(Debug)]
pub struct TagBitmapExec {
    schema: SchemaRef,
    tags: Arc<TagSet>,
    selection: Selection,
    columns: Vec<Out>,
    limit: Option<usize>,
    /// How many partitions.
    partitions: usize,
    /// First key of each partition (by rank, so partitions split the work
    /// evenly), found when the scan first runs.
    starts: OnceLock<Vec<u32>>,
    properties: Arc<PlanProperties>,
}

impl TagBitmapExec {
    fn new(
        schema: SchemaRef,
        tags: Arc<TagSet>,
        selection: Selection,
        columns: Vec<Out>,
        limit: Option<usize>,
        partitions: usize,
    ) -> TagBitmapExec {
        let partitions = (partitions.max(1) as u64).min(selection.len.div_ceil(8192).max(1)) as usize;
        let properties = properties(schema.clone(), partitions);
        TagBitmapExec { schema, tags, selection, columns, limit, partitions, starts: OnceLock::new(), properties }
    }

    /// First key of each partition.
    fn starts(&self) -> DfResult<&[u32]> {
        if self.starts.get().is_none() {
            let keys = self.selection.keys()?;
            let (n, parts) = (keys.len(), self.partitions as u64);
            let mut starts: Vec<u32> = (0..parts).filter_map(|p| keys.select((n * p / parts) as u32)).collect();
            // An empty selection: every partition starts (and ends) at 0.
            starts.resize(self.partitions, starts.last().copied().unwrap_or(0));
            let _ = self.starts.set(starts);
        }
        Ok(self.starts.get().expect("set just above"))
    }

    /// Members the scan produces.
    pub fn rows(&self) -> u64 {
        let n = self.selection.len;
        self.limit.map_or(n, |l| n.min(l as u64))
    }

    /// The tags it answers from.
    pub fn tags(&self) -> &Arc<TagSet> {
        &self.tags
    }

    /// Its content apart from schema and bitmaps (the selection built).
    pub fn parts(&self) -> DfResult<ScanParts> {
        Ok(ScanParts {
            limit: self.limit,
            starts: self.starts()?.to_vec(),
            ..self.selection.parts(&self.tags, &self.columns)?
        })
    }

    /// The node again from [`TagBitmapExec::parts`], tag columns read from `tags`.
    pub fn from_parts(schema: SchemaRef, tags: Arc<TagSet>, parts: ScanParts) -> DfResult<TagBitmapExec> {
        let columns = from_parts(&tags, &parts.columns)?;
        let selection = Selection::known(parts.keys, parts.everyone, parts.audience);
        let starts = if parts.starts.is_empty() { vec![0] } else { parts.starts };
        let properties = properties(schema.clone(), starts.len());
        let (partitions, starts) = (starts.len(), OnceLock::from(starts));
        Ok(TagBitmapExec { schema, tags, selection, columns, limit: parts.limit, partitions, starts, properties })
    }
}

impl DisplayAs for TagBitmapExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.selection;
        write!(f, "TagBitmapExec: audience=[{}], members={} (bitmap cardinality)", s.audience, s.len)?;
        if let Some(l) = self.limit {
            write!(f, ", limit={l}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for TagBitmapExec {
    fn name(&self) -> &str {
        "TagBitmapExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(self: Arc<Self>, _children: Vec<Arc<dyn ExecutionPlan>>) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        let batch = context.session_config().batch_size().max(1);
        let starts = self.starts()?;
        let start = starts[partition];
        let end = starts.get(partition + 1).copied();
        let (schema, tags, keys, columns) =
            (self.schema.clone(), self.tags.clone(), self.selection.keys()?, self.columns.clone());
        let mut left = self.limit.unwrap_or(usize::MAX);
        let mut next = Some(start);
        let batches = std::iter::from_fn(move || {
            let from = next?;
            let take = batch.min(left);
            let chunk: Vec<u32> = match end {
                Some(e) => keys.range(from..e).take(take).collect(),
                None => keys.range(from..).take(take).collect(),
            };
            if chunk.is_empty() {
                return None;
            }
            left -= chunk.len();
            next = chunk.last().and_then(|k| k.checked_add(1)).filter(|_| left > 0);
            let arrays: Vec<ArrayRef> = columns
                .iter()
                .map(|c| match c {
                    Out::Key => Arc::new(Int64Array::from_iter_values(chunk.iter().map(|&k| k as i64))) as ArrayRef,
                    Out::Tag(t) => tag_array(&tags, *t, chunk.iter().copied()),
                    Out::Family(f) => family_array(&tags, *f, chunk.iter().copied()),
                    Out::Child(_) => unreachable!("the bitmap scan reads no file"),
                })
                .collect();
            let options = RecordBatchOptions::new().with_row_count(Some(chunk.len()));
            Some(RecordBatch::try_new_with_options(schema.clone(), arrays, &options).map_err(DataFusionError::from))
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), futures::stream::iter(batches))))
    }

    fn statistics_from_inputs(
        &self,
        _input_stats: &[Arc<Statistics>],
        args: &StatisticsArgs,
    ) -> DfResult<Arc<Statistics>> {
        Ok(exact_rows(&self.schema, args, self.rows()))
    }
}

/// Reads the Delta `members` table and keeps the selected members, adding
/// tag columns.
#[derive(Debug)]
pub struct TagFilterExec {
    schema: SchemaRef,
    tags: Arc<TagSet>,
    selection: Selection,
    child: Arc<dyn ExecutionPlan>,
    key_column: usize,
    columns: Vec<Out>,
    properties: Arc<PlanProperties>,
}

impl TagFilterExec {
    fn new(
        schema: SchemaRef,
        tags: Arc<TagSet>,
        selection: Selection,
        child: Arc<dyn ExecutionPlan>,
        key_column: usize,
        columns: Vec<Out>,
    ) -> TagFilterExec {
        let properties = properties(schema.clone(), child.properties().partitioning.partition_count());
        TagFilterExec { schema, tags, selection, child, key_column, columns, properties }
    }

    /// Members produced: each selected key has exactly one row in `members`.
    fn rows(&self) -> u64 {
        self.selection.len
    }

    /// The tags it answers from.
    pub fn tags(&self) -> &Arc<TagSet> {
        &self.tags
    }

    /// Its content apart from schema, child and bitmaps.
    pub fn parts(&self) -> DfResult<ScanParts> {
        Ok(ScanParts { key_column: self.key_column, ..self.selection.parts(&self.tags, &self.columns)? })
    }

    /// The node again from [`TagFilterExec::parts`] over `child`, tag columns read from `tags`.
    pub fn from_parts(
        schema: SchemaRef,
        tags: Arc<TagSet>,
        parts: ScanParts,
        child: Arc<dyn ExecutionPlan>,
    ) -> DfResult<TagFilterExec> {
        let columns = from_parts(&tags, &parts.columns)?;
        let selection = Selection::known(parts.keys, parts.everyone, parts.audience);
        Ok(TagFilterExec::new(schema, tags, selection, child, parts.key_column, columns))
    }
}

impl DisplayAs for TagFilterExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TagFilterExec: audience=[{}], members={}", self.selection.audience, self.rows())
    }
}

impl ExecutionPlan for TagFilterExec {
    fn name(&self) -> &str {
        "TagFilterExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.child]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> DfResult<Arc<dyn ExecutionPlan>> {
        let [child] = <[_; 1]>::try_from(children)
            .map_err(|_| DataFusionError::Internal("TagFilterExec has one child".into()))?;
        Ok(Arc::new(TagFilterExec::new(
            self.schema.clone(),
            self.tags.clone(),
            self.selection.clone(),
            child,
            self.key_column,
            self.columns.clone(),
        )))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        let input = self.child.execute(partition, context)?;
        let keys = if self.selection.everyone { None } else { Some(self.selection.keys()?) };
        let (schema, tags, columns, key_column) =
            (self.schema.clone(), self.tags.clone(), self.columns.clone(), self.key_column);
        let stream = input.map(move |batch| {
            let batch = batch?;
            let batch = match &keys {
                Some(keys) => {
                    let k = batch.column(key_column).as_primitive::<Int64Type>();
                    let mask: BooleanArray = k
                        .iter()
                        .map(|v| Some(v.is_some_and(|v| u32::try_from(v).is_ok_and(|v| keys.contains(v)))))
                        .collect();
                    arrow::compute::filter_record_batch(&batch, &mask)?
                }
                None => batch,
            };
            let k = batch.column(key_column).as_primitive::<Int64Type>();
            let member_keys = || k.values().iter().map(|&v| v as u32);
            let arrays: Vec<ArrayRef> = columns
                .iter()
                .map(|c| match c {
                    Out::Child(i) => batch.column(*i).clone(),
                    Out::Tag(t) => tag_array(&tags, *t, member_keys()),
                    Out::Family(f) => family_array(&tags, *f, member_keys()),
                    Out::Key => unreachable!("member_key is read from the table"),
                })
                .collect();
            let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
            Ok(RecordBatch::try_new_with_options(schema.clone(), arrays, &options)?)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), stream)))
    }

    fn statistics_from_inputs(
        &self,
        _input_stats: &[Arc<Statistics>],
        args: &StatisticsArgs,
    ) -> DfResult<Arc<Statistics>> {
        Ok(exact_rows(&self.schema, args, self.rows()))
    }
}
