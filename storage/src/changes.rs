//! Commits of files written elsewhere, and what changed since a version.
//!
//! Ingest keeps derived state next to a table (the key index of
//! `taglake-ingest`, which knows every key a table holds without reading
//! it). Such state records the table version it reflects; when the table
//! moved on without it (a run killed between its table commit and its
//! index update), [`Warehouse::appended_since`] tells which files the later
//! commits added, so the state catches up by reading those files only. A
//! commit that did anything but append data (a rewrite, a schema change)
//! makes it start over instead.
//!
//! [`Warehouse::commit_files`] is the other half: one commit that adds
//! files written by [`PartWriter`](crate::PartWriter)s (possibly on several
//! threads) and removes current files they replace, so an upsert that
//! rewrites a few files and a parallel append are each one atomic change.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use deltalake::DeltaTableError;
use deltalake::kernel::Action;
use deltalake::kernel::transaction::CommitBuilder;
use deltalake::protocol::{DeltaOperation, SaveMode};

use crate::{Error, Result, Table, Warehouse};

/// The identity of a table's current version: a table deleted and made
/// again starts over at version 0 with another id.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TableState {
    /// Delta version.
    pub version: u64,
    /// Delta table id (`metaData.id`).
    pub id: String,
}

impl Warehouse {
    /// The current version and id of a table; `None` when it does not exist.
    pub async fn state(&self, table: Table) -> Result<Option<TableState>> {
        let Some(delta) = self.load(table).await? else { return Ok(None) };
        let snapshot = delta.snapshot().map_err(self.delta_err(table))?;
        Ok(Some(TableState { version: snapshot.version(), id: snapshot.metadata().id().to_string() }))
    }

    /// The data files added by the commits after version `since` up to and
    /// including `until`, when each of those commits only appended data or
    /// changed no data (an OPTIMIZE, a VACUUM). `None` when any did more (removed
    /// data, changed the schema or the protocol) or its log entry is gone:
    /// the caller must then read the whole table.
    pub fn appended_since(&self, table: Table, since: u64, until: u64) -> Result<Option<Vec<PathBuf>>> {
        let dir = self.table_path(table);
        let log = dir.join("_delta_log");
        let mut added = Vec::new();
        for version in since + 1..=until {
            let path = log.join(format!("{version:020}.json"));
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(source) => return Err(Error::File { path, source }),
            };
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let action: serde_json::Value = serde_json::from_str(line).map_err(|e| Error::Schema {
                    table: table.name(),
                    path: path.clone(),
                    message: "unreadable Delta log entry".into(),
                    cause: Some(e.into()),
                })?;
                let Some((kind, body)) = action.as_object().and_then(|o| o.iter().next()) else { continue };
                let data_change = body.get("dataChange").and_then(|v| v.as_bool()).unwrap_or(true);
                match kind.as_str() {
                    "commitInfo" | "txn" | "domainMetadata" | "checkpointMetadata" | "sidecar" => {}
                    "add" if data_change => {
                        let Some(rel) = body.get("path").and_then(|p| p.as_str()) else { return Ok(None) };
                        match local_file(&dir, rel) {
                            Some(p) => added.push(p),
                            None => return Ok(None),
                        }
                    }
                    "add" | "remove" if !data_change => {}
                    _ => return Ok(None),
                }
            }
        }
        Ok(Some(added))
    }

    /// Creates `table` empty when it does not exist yet, so readers find
    /// every table an ingest touched (an ingest without bad rows still
    /// leaves an empty `quarantine`).
    pub async fn ensure_table(&self, table: Table) -> Result<()> {
        if self.load(table).await?.is_none() {
            self.create(table).await?;
        }
        Ok(())
    }

    /// One commit that adds `adds` (the JSON actions of
    /// [`PartWriter::finish`](crate::PartWriter::finish)) to `table` and
    /// removes `removes` (paths of files of its current version). Creates
    /// the table when it does not exist. Fails without changing anything
    /// when a file to remove is no longer part of the current version.
    /// Returns the new version, or `None` when there was nothing to commit.
    pub async fn commit_files(&self, table: Table, removes: &[PathBuf], adds: &[String]) -> Result<Option<u64>> {
        self.commit_files_claiming(table, removes, adds, &[]).await
    }

    /// [`Warehouse::commit_files`] that also claims `(app, id)` pairs as
    /// [`TableWriter::claim`](crate::TableWriter::claim) does: the commit
    /// fails, changing nothing, when another commit claimed the same
    /// application id since the version read. A table written by an older
    /// taglake first gains the columns added since.
    pub async fn commit_files_claiming(
        &self,
        table: Table,
        removes: &[PathBuf],
        adds: &[String],
        claims: &[(&str, i64)],
    ) -> Result<Option<u64>> {
        if removes.is_empty() && adds.is_empty() {
            return Ok(None);
        }
        let err = self.delta_err(table);
        let delta = match self.load(table).await? {
            Some(t) => self.evolve(table, t).await?,
            None => self.create(table).await?,
        };
        let snapshot = delta.snapshot().map_err(&err)?;
        let mut actions = Vec::with_capacity(removes.len() + adds.len());
        let mut wanted: HashSet<&Path> = removes.iter().map(PathBuf::as_path).collect();
        let log_store = delta.log_store();
        for file in snapshot.log_data() {
            let uri = log_store.to_uri(&file.object_store_path());
            let path = uri_path(&uri);
            if path.as_deref().is_some_and(|p| wanted.remove(p)) {
                actions.push(Action::Remove(file.remove_action(true)));
            }
        }
        if let Some(missing) = wanted.into_iter().next() {
            return Err(Error::Unsupported {
                table: table.name(),
                message: format!(
                    "file {} is no longer part of the table (another writer changed it); nothing was committed",
                    missing.display()
                ),
            });
        }
        let claims = claims.iter().map(|&(app, id)| deltalake::kernel::Transaction::new(app, id)).collect();
        let operation = if removes.is_empty() {
            DeltaOperation::Write { mode: SaveMode::Append, partition_by: None, predicate: None }
        } else {
            DeltaOperation::Update { predicate: None }
        };
        let version = commit_on(&delta, actions, adds, claims, operation)
            .await
            .map_err(self.commit_err(table, "another writer changed the table at the same time"))?;
        Ok(Some(version))
    }
}

/// One commit on the version `delta` holds of `actions`, then `adds` (add
/// actions as JSON), then `claims` (txn actions): Delta's conflict checker
/// compares it with every commit since that version.
pub(crate) async fn commit_on(
    delta: &deltalake::DeltaTable,
    mut actions: Vec<Action>,
    adds: &[String],
    claims: Vec<deltalake::kernel::Transaction>,
    operation: DeltaOperation,
) -> std::result::Result<u64, DeltaTableError> {
    for a in adds {
        actions.push(Action::Add(serde_json::from_str(a)?));
    }
    actions.extend(claims.into_iter().map(Action::Txn));
    let done = CommitBuilder::default()
        .with_actions(actions)
        .build(Some(delta.snapshot()?), delta.log_store(), operation)
        .await?;
    Ok(done.version() as u64)
}

impl Warehouse {
    /// Deletes the files of `adds` (add actions never committed), as far
    /// as it can: the cleanup after a failed write, whose own error is the
    /// answer.
    pub(crate) fn remove_added(&self, table: Table, adds: &[String]) {
        for add in adds {
            if let Ok(path) = self.added_file(table, add) {
                let _ = std::fs::remove_file(path);
            }
        }
    }

    /// The local file of a Delta `add` action (as JSON, from
    /// [`PartWriter::finish`](crate::PartWriter::finish)) of `table`.
    pub fn added_file(&self, table: Table, add: &str) -> Result<PathBuf> {
        let bad =
            |message: String| Error::Schema { table: table.name(), path: self.table_path(table), message, cause: None };
        let value: serde_json::Value = serde_json::from_str(add).map_err(|e| Error::Schema {
            table: table.name(),
            path: self.table_path(table),
            message: "unreadable add action".into(),
            cause: Some(e.into()),
        })?;
        let rel = value.get("path").and_then(|p| p.as_str()).ok_or_else(|| bad("add action without a path".into()))?;
        local_file(&self.table_path(table), rel).ok_or_else(|| bad(format!("data file {rel} is not a local file")))
    }
}

/// The local path of a file named in a table's log (relative and
/// percent-encoded, or an absolute file URL).
fn local_file(dir: &Path, rel: &str) -> Option<PathBuf> {
    if let Ok(url) = url::Url::parse(rel) {
        return url.to_file_path().ok();
    }
    let base = url::Url::from_directory_path(dir).ok()?;
    base.join(rel).ok()?.to_file_path().ok()
}

fn uri_path(uri: &str) -> Option<PathBuf> {
    if uri.starts_with('/') {
        return Some(PathBuf::from(uri));
    }
    url::Url::parse(uri).ok().and_then(|u| u.to_file_path().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::warehouse::tests::ids;

    async fn part(wh: &Warehouse, pairs: &[(&str, i64)]) -> Vec<String> {
        let mut w = wh.part_writer(Table::MemberIds, Table::MemberIds.arrow_schema()).unwrap();
        w.write(ids(pairs)).await.unwrap();
        w.finish().await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn appends_and_rewrites_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let wh = Warehouse::open(dir.path()).unwrap();
        assert_eq!(wh.state(Table::MemberIds).await.unwrap(), None);
        let adds = part(&wh, &[("a", 0), ("b", 1)]).await;
        let v1 = wh.commit_files(Table::MemberIds, &[], &adds).await.unwrap().unwrap();
        let s1 = wh.state(Table::MemberIds).await.unwrap().unwrap();
        assert_eq!(s1.version, v1);
        let first = wh.files(Table::MemberIds).await.unwrap();
        assert_eq!(first.len(), 1);
        // Two appends: both files are reported, in order.
        let adds = part(&wh, &[("c", 2)]).await;
        wh.commit_files(Table::MemberIds, &[], &adds).await.unwrap();
        let adds = part(&wh, &[("d", 3)]).await;
        let v3 = wh.commit_files(Table::MemberIds, &[], &adds).await.unwrap().unwrap();
        let since = wh.appended_since(Table::MemberIds, v1, v3).unwrap().unwrap();
        assert_eq!(since.len(), 2);
        assert!(since.iter().all(|p| p.is_file()), "{since:?}");
        assert_eq!(wh.appended_since(Table::MemberIds, v3, v3).unwrap().unwrap(), Vec::<PathBuf>::new());
        // A rewrite: the first file is replaced.
        let adds = part(&wh, &[("a", 0), ("b", 9)]).await;
        let v4 = wh.commit_files(Table::MemberIds, &[first[0].path.clone()], &adds).await.unwrap().unwrap();
        assert_eq!(wh.row_count(Table::MemberIds).await.unwrap(), 4);
        assert_eq!(wh.appended_since(Table::MemberIds, v3, v4).unwrap(), None);
        assert_eq!(wh.state(Table::MemberIds).await.unwrap().unwrap().id, s1.id);
        // Removing a file that is gone changes nothing.
        let err = wh.commit_files(Table::MemberIds, &[first[0].path.clone()], &[]).await.unwrap_err().to_string();
        assert!(err.contains("no longer part of the table"), "{err}");
        assert_eq!(wh.version(Table::MemberIds).await.unwrap(), Some(v4));
        // Sorting changes no data: still append-only.
        let sorted = wh.sort_by_member_key(Table::MemberIds, 1 << 20).await.unwrap();
        let v5 = sorted.version.unwrap();
        assert_eq!(wh.appended_since(Table::MemberIds, v4, v5).unwrap().unwrap(), Vec::<PathBuf>::new());
        // A missing log entry means "read everything".
        std::fs::remove_file(dir.path().join("member_ids/_delta_log").join(format!("{v5:020}.json"))).unwrap();
        assert_eq!(wh.appended_since(Table::MemberIds, v4, v5).unwrap(), None);
        assert_eq!(wh.commit_files(Table::MemberIds, &[], &[]).await.unwrap(), None);
    }
}
