//! A warehouse table as a cluster reads it: the exact Parquet files of one
//! Delta version, scanned by DataFusion's own Parquet source.
//!
//! Embedded sessions read through deltalake's table provider, whose
//! physical scan node has no plan codec, so it cannot be sent to an
//! executor. A [`FilesTable`] pins the same version instead: the client
//! lists the version's files (with partition values) once, the scheduler
//! plans a `DataSourceExec` over them, and that node travels in DataFusion's
//! standard plan format. Every process therefore reads the files the client
//! saw, even if a commit lands meanwhile.

use std::sync::Arc;

use arrow::datatypes::{FieldRef, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use serde::{Deserialize, Serialize};
use taglake_storage::{Table, Warehouse};

use crate::{Error, Result};

type DfResult<T> = datafusion::common::Result<T>;

/// One data file of a pinned version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Absolute local path (a shared volume mounted at the same place on
    /// every machine).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Values of the partition columns, in schema order.
    pub partition: Vec<Option<String>>,
}

/// A table over the files of one Delta version.
#[derive(Debug, Clone)]
pub struct FilesTable {
    /// The warehouse table name.
    pub table: String,
    /// File columns, then partition columns.
    pub schema: SchemaRef,
    /// How many trailing columns of `schema` are partition columns.
    pub partition_columns: usize,
    /// The files.
    pub files: Vec<FileEntry>,
}

impl FilesTable {
    /// The current version of `table`, `None` when it does not exist yet.
    /// Its columns have the embedded provider's types, so both modes return
    /// the same types; schema and files come from one read of the log.
    pub async fn load(wh: &Warehouse, table: Table) -> Result<Option<FilesTable>> {
        let Some((like, files)) = wh.pinned(table).await? else { return Ok(None) };
        let partition_names: Vec<String> =
            files.first().map(|f| f.partition.iter().map(|(c, _)| c.clone()).collect()).unwrap_or_default();
        let mut fields: Vec<FieldRef> = Vec::with_capacity(like.fields().len());
        let mut partition_fields: Vec<FieldRef> = Vec::new();
        for f in like.fields() {
            if partition_names.contains(f.name()) {
                partition_fields.push(f.clone());
            } else {
                fields.push(f.clone());
            }
        }
        let partition_columns = partition_fields.len();
        let order: Vec<String> = partition_fields.iter().map(|f| f.name().clone()).collect();
        fields.extend(partition_fields);
        let entries = files
            .into_iter()
            .map(|f| {
                let partition = order
                    .iter()
                    .map(|name| f.partition.iter().find(|(c, _)| c == name).and_then(|(_, v)| v.clone()))
                    .collect();
                let path =
                    f.path.to_str().ok_or_else(|| Error::Invalid(format!("{}: not a UTF-8 path", f.path.display())))?;
                Ok(FileEntry { path: path.to_string(), size: f.size, partition })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(FilesTable {
            table: table.name().to_string(),
            schema: Arc::new(Schema::new(fields)),
            partition_columns,
            files: entries,
        }))
    }

    fn table_schema(&self) -> TableSchema {
        let n = self.schema.fields().len() - self.partition_columns;
        let file_schema = Arc::new(Schema::new(self.schema.fields()[..n].to_vec()));
        TableSchema::builder(file_schema).with_table_partition_cols(self.schema.fields()[n..].to_vec()).build()
    }

    fn partitioned_file(&self, entry: &FileEntry) -> DfResult<PartitionedFile> {
        let n = self.schema.fields().len() - self.partition_columns;
        let values = entry
            .partition
            .iter()
            .zip(&self.schema.fields()[n..])
            .map(|(v, field)| match v {
                Some(v) => ScalarValue::try_from_string(v.clone(), field.data_type()),
                None => ScalarValue::try_from(field.data_type()),
            })
            .collect::<DfResult<Vec<_>>>()?;
        let path = entry.path.trim_start_matches('/');
        Ok(PartitionedFile::new(path.to_string(), entry.size).with_partition_values(values))
    }
}

#[async_trait]
impl TableProvider for FilesTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // Row-group and page pruning only: DataFusion still filters above.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let mut source = ParquetSource::new(self.table_schema());
        if let Some(predicate) = conjunction(filters.to_vec()) {
            let df_schema = DFSchema::try_from(self.schema.as_ref().clone())?;
            source = source.with_predicate(state.create_physical_expr(predicate, &df_schema)?);
        }
        // Files in as many groups as the session has partitions, largest first
        // into the smallest group, so tasks get similar work.
        let partitions = state.config().target_partitions().max(1).min(self.files.len().max(1));
        let mut order: Vec<&FileEntry> = self.files.iter().collect();
        order.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.path.cmp(&b.path)));
        let mut groups: Vec<(u64, Vec<PartitionedFile>)> = vec![(0, Vec::new()); partitions];
        for entry in order {
            let smallest = groups.iter_mut().min_by_key(|(size, _)| *size).expect("one group at least");
            smallest.0 += entry.size;
            smallest.1.push(self.partitioned_file(entry)?);
        }
        let groups: Vec<FileGroup> =
            groups.into_iter().filter(|(_, f)| !f.is_empty()).map(|(_, f)| FileGroup::new(f)).collect();
        let config = FileScanConfigBuilder::new(ObjectStoreUrl::local_filesystem(), Arc::new(source))
            .with_file_groups(groups)
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        Ok(DataSourceExec::from_data_source(config))
    }
}
