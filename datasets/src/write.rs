//! Arrow schemas of the four tables, batch builders, and one writer type for
//! the three file formats.
//!
//! Batches are built directly with Arrow builders; identifiers are formatted
//! digit by digit into a reused `String` (no per-row allocation), because at
//! millions of lines per second formatting is a large share of the work.
//! Files are written under a temporary name and renamed when complete, so an
//! interrupted run never leaves a truncated file that looks finished.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanBuilder, Date32Builder, Float64Builder, Int32Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType};
use arrow::json::writer::LineDelimited;
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use crate::catalog::{CATEGORIES, IP_SERIES};
use crate::config::Format;
use crate::error::{Error, Result};
use crate::member::{CHANNELS, GENDERS, History, Profile, REGISTER_CHANNELS, World, category_name};

/// Time zone of every timestamp column.
const UTC: &str = "UTC";
/// Timestamp format of the text formats: RFC 3339 in UTC (all values are
/// whole seconds).
const TIMESTAMP_FORMAT: &str = "%Y-%m-%dT%H:%M:%SZ";
/// Date format of the text formats.
const DATE_FORMAT: &str = "%Y-%m-%d";

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into()))
}

/// Schema of `members.{ext}` (canonical input schema; required columns are
/// non-nullable).
pub fn members_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                Field::new("member_id", DataType::Utf8, false),
                Field::new("registered_at", timestamp(), false),
                Field::new("birthday", DataType::Date32, true),
                Field::new("gender", DataType::Utf8, true),
                Field::new("city", DataType::Utf8, true),
                Field::new("register_channel", DataType::Utf8, true),
                Field::new("home_store_id", DataType::Utf8, true),
                Field::new("points_balance", DataType::Int64, true),
            ]))
        })
        .clone()
}

/// Schema of `orders/part-NNNNN.{ext}`: one row per order line.
pub fn orders_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                Field::new("order_id", DataType::Utf8, false),
                Field::new("line_no", DataType::Int32, false),
                Field::new("member_id", DataType::Utf8, false),
                Field::new("ordered_at", timestamp(), false),
                Field::new("channel", DataType::Utf8, false),
                Field::new("store_id", DataType::Utf8, true),
                Field::new("sku", DataType::Utf8, false),
                Field::new("category", DataType::Utf8, true),
                Field::new("quantity", DataType::Int32, false),
                Field::new("amount", DataType::Float64, false),
                Field::new("discount", DataType::Float64, true),
                Field::new("coupon_used", DataType::Boolean, true),
            ]))
        })
        .clone()
}

/// Schema of `products.{ext}`.
pub fn products_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                Field::new("sku", DataType::Utf8, false),
                Field::new("category", DataType::Utf8, false),
                Field::new("subcategory", DataType::Utf8, true),
                Field::new("brand", DataType::Utf8, true),
                Field::new("ip_series", DataType::Utf8, true),
            ]))
        })
        .clone()
}

/// Schema of `personas.{ext}`, the ground truth (not part of the canonical
/// input; the pipeline never reads it).
pub fn personas_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                Field::new("member_id", DataType::Utf8, false),
                Field::new("persona", DataType::Utf8, false),
            ]))
        })
        .clone()
}

/// Appends `n` in decimal, left-padded with zeros to at least `width` digits.
pub(crate) fn push_padded(buf: &mut String, n: u64, width: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for _ in digits.len() - i..width {
        buf.push('0');
    }
    for &d in &digits[i..] {
        buf.push(char::from(d));
    }
}

/// Writes the id of member `index` (0-based): `M00000001` for index 0.
pub(crate) fn member_id(buf: &mut String, index: u64) {
    buf.clear();
    buf.push('M');
    push_padded(buf, index + 1, 8);
}

/// Writes the id of order `seq` (1-based) of member `index`: `O` + the
/// member number (8+ digits) + the sequence (4 digits), e.g. `O000000010003`.
/// Unique because the sequence always has exactly 4 digits.
pub(crate) fn order_id(buf: &mut String, index: u64, seq: u32) {
    buf.clear();
    buf.push('O');
    push_padded(buf, index + 1, 8);
    push_padded(buf, u64::from(seq), 4);
}

/// Accumulates order lines into an Arrow batch.
pub(crate) struct OrdersBatch {
    order_id: StringBuilder,
    line_no: Int32Builder,
    member_id: StringBuilder,
    ordered_at: TimestampMicrosecondBuilder,
    channel: StringBuilder,
    store_id: StringBuilder,
    sku: StringBuilder,
    category: StringBuilder,
    quantity: Int32Builder,
    amount: Float64Builder,
    discount: Float64Builder,
    coupon_used: BooleanBuilder,
    rows: usize,
    id_buf: String,
    capacity: usize,
}

impl OrdersBatch {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            order_id: StringBuilder::with_capacity(capacity, capacity * 13),
            line_no: Int32Builder::with_capacity(capacity),
            member_id: StringBuilder::with_capacity(capacity, capacity * 9),
            ordered_at: TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone(UTC),
            channel: StringBuilder::with_capacity(capacity, capacity * 8),
            store_id: StringBuilder::with_capacity(capacity, capacity * 5),
            sku: StringBuilder::with_capacity(capacity, capacity * 9),
            category: StringBuilder::with_capacity(capacity, capacity * 10),
            quantity: Int32Builder::with_capacity(capacity),
            amount: Float64Builder::with_capacity(capacity),
            discount: Float64Builder::with_capacity(capacity),
            coupon_used: BooleanBuilder::with_capacity(capacity),
            rows: 0,
            id_buf: String::with_capacity(24),
            capacity,
        }
    }

    /// Rows appended since the last [`finish`](Self::finish).
    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    /// Appends every line of member `index`'s history.
    pub(crate) fn append(&mut self, world: &World, index: u64, member: &str, history: &History) {
        let catalog = &world.catalog;
        for (seq, order) in history.orders.iter().enumerate() {
            order_id(&mut self.id_buf, index, seq as u32 + 1);
            let store = order.store.map(|s| catalog.stores[s as usize].as_str());
            let lines = &history.lines[order.first_line as usize..(order.first_line + order.n_lines) as usize];
            for (k, line) in lines.iter().enumerate() {
                self.order_id.append_value(&self.id_buf);
                self.line_no.append_value(k as i32 + 1);
                self.member_id.append_value(member);
                self.ordered_at.append_value(order.ordered_at_us);
                self.channel.append_value(CHANNELS[order.channel]);
                self.store_id.append_option(store);
                self.sku.append_value(&catalog.products[line.product as usize].sku);
                self.category.append_value(category_name(world, line.product));
                self.quantity.append_value(line.quantity);
                self.amount.append_value(line.amount);
                self.discount.append_value(line.discount);
                self.coupon_used.append_value(line.coupon_used);
            }
            self.rows += lines.len();
        }
    }

    /// The accumulated rows as a batch; the builders start over.
    pub(crate) fn finish(&mut self) -> std::result::Result<RecordBatch, arrow::error::ArrowError> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.order_id.finish()),
            Arc::new(self.line_no.finish()),
            Arc::new(self.member_id.finish()),
            Arc::new(self.ordered_at.finish()),
            Arc::new(self.channel.finish()),
            Arc::new(self.store_id.finish()),
            Arc::new(self.sku.finish()),
            Arc::new(self.category.finish()),
            Arc::new(self.quantity.finish()),
            Arc::new(self.amount.finish()),
            Arc::new(self.discount.finish()),
            Arc::new(self.coupon_used.finish()),
        ];
        self.rows = 0;
        // `finish` leaves empty builders; restore the capacity for the next batch.
        *self = Self::new(self.capacity);
        RecordBatch::try_new(orders_schema(), columns)
    }
}

/// Accumulates members and their personas into two Arrow batches.
pub(crate) struct MembersBatch {
    member_id: StringBuilder,
    registered_at: TimestampMicrosecondBuilder,
    birthday: Date32Builder,
    gender: StringBuilder,
    city: StringBuilder,
    register_channel: StringBuilder,
    home_store_id: StringBuilder,
    points_balance: Int64Builder,
    persona_member_id: StringBuilder,
    persona: StringBuilder,
}

impl MembersBatch {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            member_id: StringBuilder::with_capacity(capacity, capacity * 9),
            registered_at: TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone(UTC),
            birthday: Date32Builder::with_capacity(capacity),
            gender: StringBuilder::with_capacity(capacity, capacity),
            city: StringBuilder::with_capacity(capacity, capacity * 8),
            register_channel: StringBuilder::with_capacity(capacity, capacity * 6),
            home_store_id: StringBuilder::with_capacity(capacity, capacity * 5),
            points_balance: Int64Builder::with_capacity(capacity),
            persona_member_id: StringBuilder::with_capacity(capacity, capacity * 9),
            persona: StringBuilder::with_capacity(capacity, capacity * 12),
        }
    }

    /// Appends one member with its points balance.
    pub(crate) fn append(&mut self, world: &World, member: &str, profile: &Profile, points_balance: u32) {
        self.member_id.append_value(member);
        self.registered_at.append_value(profile.registered_at_us);
        self.birthday.append_option(profile.birthday);
        self.gender.append_option(profile.gender.map(|g| GENDERS[g]));
        self.city.append_value(crate::catalog::CITIES[profile.city].0);
        self.register_channel.append_value(REGISTER_CHANNELS[profile.register_channel]);
        self.home_store_id.append_value(&world.catalog.stores[profile.home_store as usize]);
        self.points_balance.append_value(i64::from(points_balance));
        self.persona_member_id.append_value(member);
        self.persona.append_value(profile.persona.as_str());
    }

    /// The members batch and the personas batch.
    pub(crate) fn finish(mut self) -> std::result::Result<(RecordBatch, RecordBatch), arrow::error::ArrowError> {
        let members = RecordBatch::try_new(
            members_schema(),
            vec![
                Arc::new(self.member_id.finish()),
                Arc::new(self.registered_at.finish()),
                Arc::new(self.birthday.finish()),
                Arc::new(self.gender.finish()),
                Arc::new(self.city.finish()),
                Arc::new(self.register_channel.finish()),
                Arc::new(self.home_store_id.finish()),
                Arc::new(self.points_balance.finish()),
            ],
        )?;
        let personas = RecordBatch::try_new(
            personas_schema(),
            vec![Arc::new(self.persona_member_id.finish()), Arc::new(self.persona.finish())],
        )?;
        Ok((members, personas))
    }
}

/// The products table as one batch.
pub(crate) fn products_batch(world: &World) -> std::result::Result<RecordBatch, arrow::error::ArrowError> {
    let products = &world.catalog.products;
    let n = products.len();
    let mut sku = StringBuilder::with_capacity(n, n * 9);
    let mut category = StringBuilder::with_capacity(n, n * 10);
    let mut subcategory = StringBuilder::with_capacity(n, n * 10);
    let mut brand = StringBuilder::with_capacity(n, n * 8);
    let mut ip_series = StringBuilder::with_capacity(n, n);
    for p in products {
        sku.append_value(&p.sku);
        category.append_value(CATEGORIES[p.category].name);
        subcategory.append_value(p.subcategory);
        brand.append_value(&p.brand);
        ip_series.append_option(p.ip_series.map(|s| IP_SERIES[s]));
    }
    RecordBatch::try_new(
        products_schema(),
        vec![
            Arc::new(sku.finish()),
            Arc::new(category.finish()),
            Arc::new(subcategory.finish()),
            Arc::new(brand.finish()),
            Arc::new(ip_series.finish()),
        ],
    )
}

enum Inner {
    Parquet(ArrowWriter<BufWriter<File>>),
    Csv(arrow::csv::Writer<BufWriter<File>>),
    Jsonl(arrow::json::Writer<BufWriter<File>, LineDelimited>),
}

/// Streams batches of one table to one file in the configured format.
///
/// Writes to `<path>.tmp`; [`finish`](Self::finish) renames it into place.
/// Dropped unfinished (after an error), it removes the temporary file.
pub(crate) struct TableWriter {
    path: PathBuf,
    tmp: PathBuf,
    inner: Option<Inner>,
}

impl TableWriter {
    /// Creates (or truncates) the temporary file for `path`.
    pub(crate) fn create(path: &Path, schema: SchemaRef, format: Format) -> Result<Self> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let out = BufWriter::with_capacity(1 << 20, file);
        let inner = match format {
            Format::Parquet => {
                let props = parquet_properties();
                Inner::Parquet(ArrowWriter::try_new(out, schema, Some(props)).map_err(|e| Error::parquet(path, e))?)
            }
            Format::Csv => Inner::Csv(
                arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .with_timestamp_format(TIMESTAMP_FORMAT.to_string())
                    .with_date_format(DATE_FORMAT.to_string())
                    .build(out),
            ),
            Format::Jsonl => Inner::Jsonl(
                arrow::json::WriterBuilder::new()
                    .with_timestamp_format(TIMESTAMP_FORMAT.to_string())
                    .with_date_format(DATE_FORMAT.to_string())
                    .build::<_, LineDelimited>(out),
            ),
        };
        Ok(Self { path: path.to_path_buf(), tmp, inner: Some(inner) })
    }

    /// Appends a batch.
    pub(crate) fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let path = &self.path;
        match self.inner.as_mut() {
            Some(Inner::Parquet(w)) => w.write(batch).map_err(|e| Error::parquet(path, e)),
            Some(Inner::Csv(w)) => w.write(&without_time_zone(batch)).map_err(|e| Error::arrow(path, e)),
            Some(Inner::Jsonl(w)) => w.write(&without_time_zone(batch)).map_err(|e| Error::arrow(path, e)),
            None => unreachable!("TableWriter used after finish"),
        }
    }

    /// Completes the file (Parquet footer, buffers flushed) and moves it into
    /// place. Returns its final path.
    pub(crate) fn finish(mut self) -> Result<PathBuf> {
        let path = self.path.clone();
        let buffered = match self.inner.take() {
            Some(Inner::Parquet(w)) => w.into_inner().map_err(|e| Error::parquet(&path, e))?,
            Some(Inner::Csv(w)) => w.into_inner(),
            Some(Inner::Jsonl(mut w)) => {
                w.finish().map_err(|e| Error::arrow(&path, e))?;
                w.into_inner()
            }
            None => unreachable!("TableWriter finished twice"),
        };
        let mut file = buffered.into_inner().map_err(|e| Error::io(&self.tmp, e.into_error()))?;
        file.flush().map_err(|e| Error::io(&self.tmp, e))?;
        drop(file);
        std::fs::rename(&self.tmp, &path).map_err(|e| Error::io(&path, e))?;
        Ok(path)
    }
}

impl Drop for TableWriter {
    fn drop(&mut self) {
        if self.inner.is_some() {
            // Unfinished: do not leave a partial file behind. Nothing more to
            // report if removal fails; the original error is already on its way.
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// The batch with its UTC timestamp columns relabelled as zone-less (the
/// values, UTC microseconds, are unchanged; no copy).
///
/// Arrow's text writers can only format named zones such as `UTC` with its
/// `chrono-tz` feature, a large dependency; zone-less values are printed
/// as they are, and [`TIMESTAMP_FORMAT`] appends the `Z` that marks them as UTC.
fn without_time_zone(batch: &RecordBatch) -> RecordBatch {
    let schema = batch.schema();
    if !schema.fields().iter().any(|f| matches!(f.data_type(), DataType::Timestamp(_, Some(_)))) {
        return batch.clone();
    }
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        match field.data_type() {
            DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => {
                let naive = column.as_primitive::<TimestampMicrosecondType>().clone().with_timezone_opt(None::<&str>);
                fields.push(field.as_ref().clone().with_data_type(naive.data_type().clone()));
                columns.push(Arc::new(naive) as ArrayRef);
            }
            _ => {
                fields.push(field.as_ref().clone());
                columns.push(column.clone());
            }
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .expect("relabelling a time zone keeps every column valid")
}

/// Snappy compression; no dictionary for the high-cardinality columns, where
/// it would only cost time before falling back to plain encoding.
fn parquet_properties() -> WriterProperties {
    let mut builder = WriterProperties::builder().set_compression(Compression::SNAPPY);
    for column in ["order_id", "ordered_at", "amount", "discount", "registered_at", "points_balance"] {
        builder = builder.set_column_dictionary_enabled(ColumnPath::from(column), false);
    }
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_zero_padded() {
        let mut buf = String::new();
        member_id(&mut buf, 0);
        assert_eq!(buf, "M00000001");
        member_id(&mut buf, 123_456_788);
        assert_eq!(buf, "M123456789");
        order_id(&mut buf, 9, 3);
        assert_eq!(buf, "O000000100003");
        order_id(&mut buf, 99_999_999, 9_999);
        assert_eq!(buf, "O1000000009999");
        buf.clear();
        push_padded(&mut buf, 0, 0);
        assert_eq!(buf, "0");
    }
}
