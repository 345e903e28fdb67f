//! The warehouse tables and their columns.
//!
//! One definition per table serves three readers: ingest (which columns a
//! source must provide and how to parse them), the Delta writer (the Arrow
//! schema of the files) and every later stage (which reads columns by name).
//! Keeping them in one place is what makes "the canonical schema" a single
//! fact instead of a convention.

use std::sync::{Arc, OnceLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::{Error, Result};

/// Logical type of a warehouse column, mapped to one Arrow (and Delta) type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// UTF-8 text (`string`).
    Text,
    /// 32-bit signed integer (`integer`).
    Int32,
    /// 64-bit signed integer (`long`).
    Int64,
    /// 64-bit float (`double`).
    Float64,
    /// Boolean (`boolean`).
    Bool,
    /// Instant in UTC with microsecond precision (`timestamp`).
    Timestamp,
    /// Calendar date (`date`).
    Date,
    /// Opaque bytes (`binary`), e.g. a serialized roaring bitmap.
    Binary,
}

impl ColumnType {
    /// The Arrow type columns of this type have in the warehouse.
    pub fn arrow(self) -> DataType {
        match self {
            ColumnType::Text => DataType::Utf8,
            ColumnType::Int32 => DataType::Int32,
            ColumnType::Int64 => DataType::Int64,
            ColumnType::Float64 => DataType::Float64,
            ColumnType::Bool => DataType::Boolean,
            ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            ColumnType::Date => DataType::Date32,
            ColumnType::Binary => DataType::Binary,
        }
    }

    /// Name used in messages ("an integer", "a timestamp", …).
    pub fn describe(self) -> &'static str {
        match self {
            ColumnType::Text => "text",
            ColumnType::Int32 => "a 32-bit integer",
            ColumnType::Int64 => "a 64-bit integer",
            ColumnType::Float64 => "a number",
            ColumnType::Bool => "a boolean",
            ColumnType::Timestamp => "a timestamp",
            ColumnType::Date => "a date",
            ColumnType::Binary => "bytes",
        }
    }
}

/// One column of a warehouse table.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    /// Column name (a public interface: never renamed).
    pub name: &'static str,
    /// Logical type.
    pub ty: ColumnType,
    /// A row without a value here is invalid (after defaults are applied).
    pub required: bool,
    /// Part of the canonical *input* schema (what exports provide); `false`
    /// for columns taglake computes itself, such as `member_key`.
    pub input: bool,
}

const fn col(name: &'static str, ty: ColumnType, required: bool) -> Column {
    Column { name, ty, required, input: true }
}

const fn derived(name: &'static str, ty: ColumnType) -> Column {
    Column { name, ty, required: true, input: false }
}

use ColumnType::*;

const MEMBERS: &[Column] = &[
    derived("member_key", Int64),
    col("member_id", Text, true),
    col("registered_at", Timestamp, true),
    col("birthday", Date, false),
    col("gender", Text, false),
    col("city", Text, false),
    col("register_channel", Text, false),
    col("home_store_id", Text, false),
    col("points_balance", Int64, false),
];

const ORDERS: &[Column] = &[
    col("order_id", Text, true),
    col("line_no", Int32, true),
    derived("member_key", Int64),
    col("member_id", Text, true),
    col("ordered_at", Timestamp, true),
    col("channel", Text, true),
    col("store_id", Text, false),
    col("sku", Text, true),
    col("category", Text, false),
    col("quantity", Int32, true),
    col("amount", Float64, true),
    // Required in the warehouse; ingest fills the documented defaults
    // (0 and false) when a source leaves them out.
    col("discount", Float64, true),
    col("coupon_used", Bool, true),
];

const PRODUCTS: &[Column] = &[
    col("sku", Text, true),
    col("category", Text, true),
    col("subcategory", Text, false),
    col("brand", Text, false),
    col("ip_series", Text, false),
];

const MEMBER_IDS: &[Column] = &[derived("member_id", Text), derived("member_key", Int64)];

const QUARANTINE: &[Column] = &[
    derived("table_name", Text),
    derived("source_file", Text),
    derived("row_number", Int64),
    Column { name: "column_name", ty: Text, required: false, input: false },
    derived("reason", Text),
    Column { name: "raw_record", ty: Text, required: false, input: false },
    derived("ingested_at", Timestamp),
];

const fn nullable(name: &'static str, ty: ColumnType) -> Column {
    Column { name, ty, required: false, input: false }
}

/// The fixed columns of `features`. After them come one column per value
/// of the data's categories and channels (`spend_share_beauty`,
/// `order_share_app`, …), so the full schema is only known per run.
const FEATURES: &[Column] = &[
    derived("member_key", Int64),
    derived("as_of", Date),
    derived("registered_date", Date),
    derived("tenure_days", Int32),
    nullable("first_order_date", Date),
    nullable("last_order_date", Date),
    nullable("recency_days", Int32),
    nullable("first_order_days_ago", Int32),
    derived("orders_30d", Int32),
    derived("orders_90d", Int32),
    derived("orders_365d", Int32),
    derived("orders_total", Int32),
    derived("spend_30d", Float64),
    derived("spend_90d", Float64),
    derived("spend_365d", Float64),
    derived("spend_total", Float64),
    nullable("avg_order_value", Float64),
    derived("items_total", Int64),
    nullable("items_per_order", Float64),
    derived("lines_total", Int64),
    derived("distinct_categories", Int32),
    derived("distinct_channels", Int32),
    nullable("weekend_share", Float64),
    nullable("promotion_share", Float64),
    derived("growth_value", Float64),
    nullable("age", Int32),
    nullable("birthday_month", Int32),
    nullable("gender", Text),
    nullable("city", Text),
    nullable("register_channel", Text),
    nullable("home_store", Text),
    nullable("main_channel", Text),
    nullable("main_category", Text),
    nullable("points_balance", Int64),
];

/// One row per tag per snapshot; the table is partitioned by `snapshot`
/// so reading one snapshot touches only its own files.
///
/// A row either holds its tag's bitmap (`bitmap` set, `bitmap_snapshot`
/// null) or refers to identical bytes in an earlier snapshot (`bitmap`
/// null, `bitmap_snapshot` = the snapshot whose row of the same `name`
/// holds them; that row always holds bytes, references never chain).
/// `bitmap_digest` is the xxh3-128 of the serialized bitmap (32 hex
/// digits) on every row written since references exist. The last two
/// columns were added later: tables written before read them as null,
/// which means "holds its own bitmap", and gain them on their next write.
/// `value` (added later still, null in older snapshots) is the tag's value
/// in its family's `members` column when the family is exclusive.
const TAGS: &[Column] = &[
    derived("snapshot", Int64),
    derived("position", Int32),
    derived("name", Text),
    derived("family", Text),
    derived("description", Text),
    derived("rule", Text),
    derived("members", Int64),
    derived("share", Float64),
    nullable("bitmap", Binary),
    derived("as_of", Date),
    derived("base_members", Int64),
    nullable("features_version", Int64),
    derived("catalog_digest", Text),
    derived("created_at", Timestamp),
    nullable("bitmap_digest", Text),
    nullable("bitmap_snapshot", Int64),
    nullable("value", Text),
];

/// One row per member with orders: the k-means community it belongs to
/// (1 = the largest) and its distance to the community centroid.
const COMMUNITIES: &[Column] = &[
    derived("member_key", Int64),
    derived("member_id", Text),
    derived("community", Int32),
    derived("distance", Float64),
];

/// One row per arm of every exported experiment cohort: who was exported
/// into which arm (`bitmap`, portable roaring format over `member_key`),
/// from which audience, snapshot and salt, and when it runs. Reports and
/// the `in_experiment` tag read it.
const EXPERIMENTS: &[Column] = &[
    derived("experiment_id", Int64),
    derived("name", Text),
    derived("audience", Text),
    derived("snapshot", Int64),
    derived("salt", Text),
    nullable("stratify_by", Text),
    derived("holdout_share", Float64),
    derived("holdout_salt", Text),
    derived("arm", Text),
    derived("arm_share", Float64),
    derived("members", Int64),
    derived("launched_at", Timestamp),
    nullable("ends_at", Timestamp),
    derived("created_at", Timestamp),
    nullable("output", Text),
    derived("bitmap", Binary),
];

/// Saved audiences: one row per save of a named audience expression. A
/// name's current definition is its latest row (by `saved_at`) and the rows
/// before it are its history; a row without an expression removes the
/// name. Written by `taglake audience save` and the studio; read wherever
/// `audience:NAME` is written in an audience expression.
const AUDIENCES: &[Column] = &[
    derived("name", Text),
    nullable("description", Text),
    nullable("expression", Text),
    derived("saved_at", Timestamp),
    nullable("saved_by", Text),
];

/// A warehouse table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    /// One row per member (key `member_id`).
    Members,
    /// One row per order line (key `(order_id, line_no)`).
    Orders,
    /// One row per SKU (key `sku`).
    Products,
    /// The append-only dictionary external `member_id` ↔ dense `member_key`.
    MemberIds,
    /// Rows that failed validation, with file, row, column and reason.
    Quarantine,
    /// One row of computed features per member, replaced by each `tag` run.
    Features,
    /// Tag snapshots: one roaring bitmap per tag and snapshot.
    Tags,
    /// The community of every member with orders, replaced by each `cluster` run.
    Communities,
    /// Exported experiment cohorts, one row per experiment and arm.
    Experiments,
    /// Saved audiences, one row per save (the definition history).
    Audiences,
}

impl Table {
    /// Every table, in dependency order.
    pub const ALL: [Table; 10] = [
        Table::MemberIds,
        Table::Members,
        Table::Products,
        Table::Orders,
        Table::Quarantine,
        Table::Features,
        Table::Tags,
        Table::Communities,
        Table::Experiments,
        Table::Audiences,
    ];

    /// The tables a user ingests from exports.
    pub const INPUTS: [Table; 3] = [Table::Members, Table::Orders, Table::Products];

    /// Folder and SQL name of the table.
    pub fn name(self) -> &'static str {
        match self {
            Table::Members => "members",
            Table::Orders => "orders",
            Table::Products => "products",
            Table::MemberIds => "member_ids",
            Table::Quarantine => "quarantine",
            Table::Features => "features",
            Table::Tags => "tags",
            Table::Communities => "communities",
            Table::Experiments => "experiments",
            Table::Audiences => "audiences",
        }
    }

    /// Parses a table name as the CLI and mapping files spell it.
    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The columns, in storage order.
    pub fn columns(self) -> &'static [Column] {
        match self {
            Table::Members => MEMBERS,
            Table::Orders => ORDERS,
            Table::Products => PRODUCTS,
            Table::MemberIds => MEMBER_IDS,
            Table::Quarantine => QUARANTINE,
            Table::Features => FEATURES,
            Table::Tags => TAGS,
            Table::Communities => COMMUNITIES,
            Table::Experiments => EXPERIMENTS,
            Table::Audiences => AUDIENCES,
        }
    }

    /// The columns an export provides (the canonical input schema).
    pub fn input_columns(self) -> impl Iterator<Item = &'static Column> {
        self.columns().iter().filter(|c| c.input)
    }

    /// Looks a column up by name.
    pub fn column(self, name: &str) -> Option<&'static Column> {
        self.columns().iter().find(|c| c.name == name)
    }

    /// The columns that identify a row: a later row with the same key is
    /// the same entity (it replaces or duplicates the earlier one).
    pub fn key(self) -> &'static [&'static str] {
        match self {
            Table::Members => &["member_id"],
            Table::Orders => &["order_id", "line_no"],
            Table::Products => &["sku"],
            Table::MemberIds => &["member_id"],
            Table::Quarantine => &["table_name", "source_file", "row_number"],
            Table::Features => &["member_key"],
            Table::Tags => &["snapshot", "name"],
            Table::Communities => &["member_key"],
            Table::Experiments => &["experiment_id", "arm"],
            Table::Audiences => &["name", "saved_at"],
        }
    }

    /// Whether rows may carry columns beyond [`Table::columns`], whose
    /// names depend on the data (the per-category shares of `features`).
    pub fn has_data_dependent_columns(self) -> bool {
        self == Table::Features
    }

    /// Delta partition columns of the table.
    pub fn partition_columns(self) -> &'static [&'static str] {
        match self {
            Table::Tags => &["snapshot"],
            _ => &[],
        }
    }

    /// The Arrow schema of the table's files.
    pub fn arrow_schema(self) -> SchemaRef {
        static SCHEMAS: OnceLock<Vec<SchemaRef>> = OnceLock::new();
        let all = SCHEMAS.get_or_init(|| {
            Table::ALL
                .iter()
                .map(|t| {
                    Arc::new(Schema::new(
                        t.columns().iter().map(|c| Field::new(c.name, c.ty.arrow(), !c.required)).collect::<Vec<_>>(),
                    ))
                })
                .collect()
        });
        let i = Table::ALL.iter().position(|t| *t == self).expect("every table is in ALL");
        all[i].clone()
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `got` must have `want`'s columns (names and types) in order: exactly
/// those when `exact`, else those first and any after them.
pub(crate) fn check_columns(table: Table, got: &SchemaRef, want: &SchemaRef, exact: bool) -> Result<()> {
    let len_ok =
        if exact { got.fields().len() == want.fields().len() } else { got.fields().len() >= want.fields().len() };
    if !len_ok
        || got.fields().iter().zip(want.fields()).any(|(g, w)| g.name() != w.name() || g.data_type() != w.data_type())
    {
        return Err(Error::BatchSchema { table: table.name(), message: format!("expected {want:?}, got {got:?}") });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for t in Table::ALL {
            assert_eq!(Table::from_name(t.name()), Some(t));
        }
        assert_eq!(Table::from_name("order"), None);
    }

    #[test]
    fn keys_are_columns() {
        for t in Table::ALL {
            for k in t.key() {
                assert!(t.column(k).is_some(), "{t}.{k}");
            }
        }
    }

    #[test]
    fn canonical_input_schema_matches_design() {
        let names = |t: Table| t.input_columns().map(|c| c.name).collect::<Vec<_>>();
        assert_eq!(
            names(Table::Orders),
            [
                "order_id",
                "line_no",
                "member_id",
                "ordered_at",
                "channel",
                "store_id",
                "sku",
                "category",
                "quantity",
                "amount",
                "discount",
                "coupon_used"
            ]
        );
        assert_eq!(
            names(Table::Members),
            [
                "member_id",
                "registered_at",
                "birthday",
                "gender",
                "city",
                "register_channel",
                "home_store_id",
                "points_balance"
            ]
        );
        assert_eq!(names(Table::Products), ["sku", "category", "subcategory", "brand", "ip_series"]);
    }
}
