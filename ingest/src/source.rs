//! Reading exports: CSV, JSON lines and Parquet into raw column batches.
//!
//! A reader does not interpret values: it turns each file into
//! [`RawBatch`]es whose columns are exactly the file's columns (text for
//! CSV and JSON lines, the stored types for Parquet) and the row numbers a
//! person would use to find a row again (the line number for text files,
//! the record number for Parquet). Rows that cannot even be split into
//! fields (wrong field count, invalid UTF-8, broken JSON) come out as
//! [`Reject`]s at this stage, so one bad line never costs the file.
//!
//! CSV line numbers are counted here, not taken from the csv crate: its
//! positions put a record after a CRLF line end on the line before, and
//! the first record after a blank line on the blank one. [`LineCounter`]
//! sees the bytes the parser reads and maps a record's start to its line.
//!
//! A JSON-lines line is read whole before it is parsed, so its length is
//! capped ([`MAX_JSONL_LINE_BYTES`]): a longer line (a file that is not
//! really line-delimited, a runaway field) is quarantined after its first
//! bytes, and the rest of it skipped without being held. A batch stops
//! taking lines at [`JSONL_BATCH_BYTES`], so one batch holds at most that
//! plus one line of text.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatchReader, StringBuilder};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::{Error, Result};

/// A row that failed, with where and why. Becomes one quarantine row.
#[derive(Debug, Clone, PartialEq)]
pub struct Reject {
    /// Line number (CSV, JSON lines) or record number (Parquet), 1-based.
    pub row: u64,
    /// The column at fault, when one is.
    pub column: Option<String>,
    /// Why the row was rejected.
    pub reason: String,
    /// The row as it was read, for a person to inspect.
    pub raw: Option<String>,
}

/// File formats ingest reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceFormat {
    /// Delimited text with a header line.
    Csv,
    /// One JSON object per line.
    Jsonl,
    /// Apache Parquet.
    Parquet,
}

impl SourceFormat {
    /// Format from a file name's extension.
    pub fn from_path(path: &Path) -> Option<SourceFormat> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "csv" | "tsv" | "txt" | "psv" => Some(SourceFormat::Csv),
            "jsonl" | "ndjson" | "json" => Some(SourceFormat::Jsonl),
            "parquet" | "pq" => Some(SourceFormat::Parquet),
            _ => None,
        }
    }
}

/// Expands the command line's file arguments: plain paths, glob patterns
/// and directories (every file below with a known extension). The result
/// is sorted and free of repeats, so the same arguments always ingest in
/// the same order.
pub fn expand_inputs(args: &[impl AsRef<str>]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for arg in args {
        let arg = arg.as_ref();
        let path = Path::new(arg);
        if path.is_dir() {
            let before = out.len();
            walk_dir(path, &mut out)?;
            if out.len() == before {
                return Err(Error::source(path, "directory holds no .csv, .jsonl or .parquet file"));
            }
        } else if path.exists() {
            out.push(path.to_path_buf());
        } else if arg.contains(['*', '?', '[']) {
            let matches = glob::glob(arg).map_err(|e| Error::unreadable(path, "bad pattern", e))?;
            let before = out.len();
            for m in matches {
                let m = m.map_err(|e| Error::unreadable(e.path().to_path_buf(), "", std::io::Error::from(e)))?;
                if m.is_file() {
                    out.push(m);
                }
            }
            if out.len() == before {
                return Err(Error::NoFiles(arg.to_string()));
            }
        } else {
            return Err(Error::source(path, "no such file or directory"));
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn walk_dir(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::unreadable(dir, "", e))?;
    for entry in entries {
        let p = entry.map_err(|e| Error::unreadable(dir, "", e))?.path();
        if p.is_dir() {
            walk_dir(&p, out)?;
        } else if SourceFormat::from_path(&p).is_some() {
            out.push(p);
        }
    }
    Ok(())
}

/// A slice of a source file: its columns as read, and row numbers.
#[derive(Debug, Clone)]
pub struct RawBatch {
    /// Column names as the file spells them.
    pub headers: Arc<Vec<String>>,
    /// One array per header, all of the same length.
    pub columns: Vec<ArrayRef>,
    /// Row number of each row (1-based line or record number).
    pub rows: Vec<u64>,
    /// Rows of this stretch of the file that could not be read at all.
    pub rejects: Vec<Reject>,
}

impl RawBatch {
    /// Number of readable rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// No readable rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The row as text (`name=value` pairs), for the quarantine table.
    pub fn raw_row(&self, i: usize) -> String {
        use arrow::util::display::{ArrayFormatter, FormatOptions};
        let opts = FormatOptions::default().with_null("");
        let mut s = String::new();
        for (h, c) in self.headers.iter().zip(&self.columns) {
            if !s.is_empty() {
                s.push_str(", ");
            }
            s.push_str(h);
            s.push('=');
            match ArrayFormatter::try_new(c.as_ref(), &opts) {
                Ok(f) => s.push_str(&f.value(i).to_string()),
                Err(_) => s.push('?'),
            }
        }
        s
    }
}

/// How to read text sources.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// Field delimiter; `None` sniffs it from the header line.
    pub delimiter: Option<u8>,
    /// Quote character.
    pub quote: u8,
    /// Rows per batch.
    pub batch_rows: usize,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions { delimiter: None, quote: b'"', batch_rows: 65_536 }
    }
}

/// A stream of raw batches from one file.
pub type RawBatches = Box<dyn Iterator<Item = Result<RawBatch>> + Send>;

/// Opens a source file for reading.
pub fn open(path: &Path, opts: &ReadOptions) -> Result<RawBatches> {
    let format = SourceFormat::from_path(path).ok_or_else(|| {
        Error::source(path, "unknown file type (expected .csv, .tsv, .jsonl, .ndjson, .json or .parquet)")
    })?;
    let file = File::open(path).map_err(|e| Error::unreadable(path, "", e))?;
    match format {
        SourceFormat::Csv => Ok(Box::new(CsvReader::new(path, file, opts)?)),
        SourceFormat::Jsonl => Ok(Box::new(JsonlReader::new(path, file, opts))),
        SourceFormat::Parquet => open_parquet(path, file, opts),
    }
}

// ---------------------------------------------------------------- CSV

struct CsvReader {
    path: PathBuf,
    reader: csv::Reader<LineCounter<BufReader<File>>>,
    headers: Arc<Vec<String>>,
    batch_rows: usize,
    delimiter: u8,
    done: bool,
}

/// Sniffs the delimiter from the header line: the candidate that occurs
/// most often outside quotes (comma on a tie or none).
fn sniff_delimiter(header: &[u8]) -> u8 {
    let mut counts = [(b',', 0usize), (b';', 0), (b'\t', 0), (b'|', 0)];
    let mut quoted = false;
    for &b in header {
        if b == b'"' {
            quoted = !quoted;
        } else if !quoted {
            for c in counts.iter_mut() {
                if c.0 == b {
                    c.1 += 1;
                }
            }
        }
    }
    counts.iter().fold((b',', 0), |best, c| if c.1 > best.1 { *c } else { best }).0
}

/// A reader that notes where its bytes break lines, so a record's start
/// offset can be turned into the line a person sees it on. `\n`, `\r\n`
/// and a lone `\r` each end one line. Only the breaks ahead of the last
/// record asked about are kept: at most the parser's buffer's worth.
struct LineCounter<R> {
    inner: R,
    /// Runs of line-break bytes: start offset, end offset, and the number
    /// of lines ended once the run is over.
    runs: std::collections::VecDeque<(u64, u64, u64)>,
    /// Lines ended before the first kept run.
    before: u64,
    /// Bytes passed through, and lines ended in them.
    offset: u64,
    lines: u64,
    /// The last line-break byte passed through was a `\r` (it matters only
    /// when the next break is adjacent to it).
    after_cr: bool,
}

impl<R> LineCounter<R> {
    fn new(inner: R) -> Self {
        LineCounter { inner, runs: Default::default(), before: 0, offset: 0, lines: 0, after_cr: false }
    }

    fn note(&mut self, bytes: &[u8]) {
        for i in memchr::memchr2_iter(b'\n', b'\r', bytes) {
            let at = self.offset + i as u64;
            let cr = bytes[i] == b'\r';
            // `\r\n` is one line end, counted at its `\r`.
            let continues_cr = !cr && self.after_cr && self.runs.back().is_some_and(|r| r.1 == at);
            if !continues_cr {
                self.lines += 1;
            }
            match self.runs.back_mut() {
                Some(run) if run.1 == at => {
                    run.1 = at + 1;
                    run.2 = self.lines;
                }
                _ => self.runs.push_back((at, at + 1, self.lines)),
            }
            self.after_cr = cr;
        }
        self.offset += bytes.len() as u64;
    }

    /// The 1-based line of the first byte that is not a line break at or
    /// after `byte`. Offsets asked about must not decrease.
    fn line_at(&mut self, byte: u64) -> u64 {
        while let Some(&(_, end, lines)) = self.runs.front() {
            if end > byte {
                break;
            }
            self.before = lines;
            self.runs.pop_front();
        }
        match self.runs.front() {
            Some(&(start, _, lines)) if start <= byte => lines + 1,
            _ => self.before + 1,
        }
    }
}

impl<R: Read> Read for LineCounter<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.note(&buf[..n]);
        Ok(n)
    }
}

impl CsvReader {
    fn new(path: &Path, file: File, opts: &ReadOptions) -> Result<Self> {
        let mut buf = BufReader::with_capacity(1 << 20, file);
        // Skip a UTF-8 byte order mark, which spreadsheet exports often add.
        let head = buf.fill_buf().map_err(|e| Error::unreadable(path, "", e))?;
        if head.starts_with(&[0xEF, 0xBB, 0xBF]) {
            buf.consume(3);
        }
        let head = buf.fill_buf().map_err(|e| Error::unreadable(path, "", e))?;
        if head.is_empty() {
            return Err(Error::source(path, "file is empty (expected a header line)"));
        }
        let first_line = head.split(|&b| b == b'\n').next().unwrap_or(head);
        let delimiter = opts.delimiter.unwrap_or_else(|| {
            if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("tsv")) {
                b'\t'
            } else {
                sniff_delimiter(first_line)
            }
        });
        let inner = LineCounter::new(buf);
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .quote(opts.quote)
            .has_headers(true)
            .flexible(true)
            .buffer_capacity(1 << 20)
            .from_reader(inner);
        let raw_headers =
            reader.byte_headers().map_err(|e| Error::unreadable(path, "cannot read the header line", e))?.clone();
        let mut headers = Vec::with_capacity(raw_headers.len());
        for (i, h) in raw_headers.iter().enumerate() {
            let h = std::str::from_utf8(h)
                .map_err(|_| Error::source(path, format!("line 1: header {} is not valid UTF-8", i + 1)))?
                .trim();
            if h.is_empty() {
                return Err(Error::source(path, format!("line 1: header {} is empty", i + 1)));
            }
            if headers.iter().any(|x: &String| x == h) {
                return Err(Error::source(path, format!("line 1: column `{h}` appears twice in the header")));
            }
            headers.push(h.to_string());
        }
        Ok(CsvReader {
            path: path.into(),
            reader,
            headers: Arc::new(headers),
            batch_rows: opts.batch_rows.max(1),
            delimiter,
            done: false,
        })
    }

    fn read_batch(&mut self) -> Result<Option<RawBatch>> {
        let n = self.headers.len();
        let mut builders: Vec<StringBuilder> =
            (0..n).map(|_| StringBuilder::with_capacity(self.batch_rows, self.batch_rows * 8)).collect();
        let mut rows = Vec::with_capacity(self.batch_rows);
        let mut rejects = Vec::new();
        let mut record = csv::ByteRecord::new();
        while rows.len() < self.batch_rows {
            match self.reader.read_byte_record(&mut record) {
                Ok(false) => {
                    self.done = true;
                    break;
                }
                Ok(true) => {}
                Err(e) => {
                    let line = e.position().map_or(0, |p| self.reader.get_mut().line_at(p.byte()));
                    if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                        return Err(Error::unreadable(&self.path, format!("line {line}"), e));
                    }
                    rejects.push(Reject {
                        row: line,
                        column: None,
                        reason: format!("unreadable CSV row: {e}"),
                        raw: None,
                    });
                    continue;
                }
            }
            let line = record.position().map_or(0, |p| self.reader.get_mut().line_at(p.byte()));
            if record.len() != n {
                // A lone empty field is a blank line with stray whitespace.
                if record.len() == 1 && record[0].iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                rejects.push(Reject {
                    row: line,
                    column: None,
                    reason: format!("expected {n} fields as in the header, found {}", record.len()),
                    raw: Some(self.join_lossy(&record)),
                });
                continue;
            }
            // Validate the record's UTF-8 once; only a bad record is
            // searched for the offending field.
            match csv::StringRecord::from_byte_record(std::mem::take(&mut record)) {
                Ok(text) => {
                    for (b, f) in builders.iter_mut().zip(text.iter()) {
                        b.append_value(f);
                    }
                    record = text.into_byte_record();
                }
                Err(e) => {
                    record = e.into_byte_record();
                    let bad = record.iter().position(|f| std::str::from_utf8(f).is_err()).unwrap_or(0);
                    rejects.push(Reject {
                        row: line,
                        column: Some(self.headers[bad].clone()),
                        reason: "value is not valid UTF-8".into(),
                        raw: Some(self.join_lossy(&record)),
                    });
                    continue;
                }
            }
            rows.push(line);
        }
        if rows.is_empty() && rejects.is_empty() {
            return Ok(None);
        }
        let columns = builders.into_iter().map(|mut b| Arc::new(b.finish()) as ArrayRef).collect();
        Ok(Some(RawBatch { headers: self.headers.clone(), columns, rows, rejects }))
    }

    fn join_lossy(&self, record: &csv::ByteRecord) -> String {
        let d = (self.delimiter as char).to_string();
        record.iter().map(|f| String::from_utf8_lossy(f).into_owned()).collect::<Vec<_>>().join(&d)
    }
}

impl Iterator for CsvReader {
    type Item = Result<RawBatch>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        self.read_batch().transpose()
    }
}

// ---------------------------------------------------------------- JSON lines

/// Longest JSON-lines line read (without its line end); longer ones are quarantined.
pub const MAX_JSONL_LINE_BYTES: usize = 1 << 20;

/// Text one JSON-lines batch takes before it is handed on.
pub const JSONL_BATCH_BYTES: usize = 64 << 20;

/// Bytes of a too-long line kept for the quarantine's `raw_record`.
const LONG_LINE_SHOWN: usize = 200;

/// Reads one line (through its `\n`) into `buf`, keeping at most `max + 2`
/// bytes of it (the rest is read and dropped). Returns the bytes the line
/// had in the file and whether it is longer than `max` without its line end.
fn read_line_capped(reader: &mut impl BufRead, buf: &mut Vec<u8>, max: usize) -> std::io::Result<(usize, bool)> {
    let mut total = 0;
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            break;
        }
        let (len, end) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        let room = (max + 2).saturating_sub(buf.len());
        buf.extend_from_slice(&available[..len.min(room)]);
        reader.consume(len);
        total += len;
        if end {
            break;
        }
    }
    let line_end = if buf.ends_with(b"\r\n") { 2 } else { usize::from(buf.ends_with(b"\n")) };
    Ok((total, total - line_end > max))
}

struct JsonlReader {
    path: PathBuf,
    reader: BufReader<File>,
    headers: Vec<String>,
    line: u64,
    batch_rows: usize,
    done: bool,
}

impl JsonlReader {
    fn new(path: &Path, file: File, opts: &ReadOptions) -> Self {
        JsonlReader {
            path: path.into(),
            reader: BufReader::with_capacity(1 << 20, file),
            headers: Vec::new(),
            line: 0,
            batch_rows: opts.batch_rows.max(1),
            done: false,
        }
    }

    fn read_batch(&mut self) -> Result<Option<RawBatch>> {
        use serde_json::Value;
        let mut objects: Vec<serde_json::Map<String, Value>> = Vec::with_capacity(self.batch_rows.min(65_536));
        let mut rows = Vec::new();
        let mut rejects = Vec::new();
        let mut buf = Vec::new();
        let mut taken = 0;
        while objects.len() < self.batch_rows && taken < JSONL_BATCH_BYTES {
            buf.clear();
            let (n, too_long) = read_line_capped(&mut self.reader, &mut buf, MAX_JSONL_LINE_BYTES)
                .map_err(|e| Error::unreadable(&self.path, format!("line {}", self.line + 1), e))?;
            if n == 0 {
                self.done = true;
                break;
            }
            self.line += 1;
            taken += buf.len();
            if too_long {
                let shown = String::from_utf8_lossy(&buf[..LONG_LINE_SHOWN.min(buf.len())]).to_string();
                rejects.push(Reject {
                    row: self.line,
                    column: None,
                    reason: format!(
                        "line is {n} bytes long; a JSON-lines record may have at most {MAX_JSONL_LINE_BYTES} bytes \
                         (is the file one JSON document rather than one object per line?)"
                    ),
                    raw: Some(format!("{}…", shown.trim_end_matches('\u{FFFD}'))),
                });
                continue;
            }
            let mut bytes = &buf[..];
            if self.line == 1 && bytes.starts_with(&[0xEF, 0xBB, 0xBF]) {
                bytes = &bytes[3..];
            }
            if bytes.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let Ok(text) = std::str::from_utf8(bytes) else {
                rejects.push(Reject {
                    row: self.line,
                    column: None,
                    reason: "line is not valid UTF-8".into(),
                    raw: Some(String::from_utf8_lossy(bytes).trim_end().to_string()),
                });
                continue;
            };
            match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(map)) => {
                    for k in map.keys() {
                        if !self.headers.iter().any(|h| h == k) {
                            self.headers.push(k.clone());
                        }
                    }
                    objects.push(map);
                    rows.push(self.line);
                }
                Ok(other) => rejects.push(Reject {
                    row: self.line,
                    column: None,
                    reason: format!("expected a JSON object, found {}", json_kind(&other)),
                    raw: Some(text.trim_end().to_string()),
                }),
                Err(e) => rejects.push(Reject {
                    row: self.line,
                    column: None,
                    reason: format!("invalid JSON: {e}"),
                    raw: Some(text.trim_end().to_string()),
                }),
            }
        }
        if objects.is_empty() && rejects.is_empty() {
            return Ok(None);
        }
        let mut columns = Vec::with_capacity(self.headers.len());
        for h in &self.headers {
            let mut b = StringBuilder::with_capacity(objects.len(), objects.len() * 8);
            for o in &objects {
                match o.get(h) {
                    None | Some(Value::Null) => b.append_null(),
                    Some(Value::String(s)) => b.append_value(s),
                    Some(v) => b.append_value(v.to_string()),
                }
            }
            columns.push(Arc::new(b.finish()) as ArrayRef);
        }
        Ok(Some(RawBatch { headers: Arc::new(self.headers.clone()), columns, rows, rejects }))
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

impl Iterator for JsonlReader {
    type Item = Result<RawBatch>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        self.read_batch().transpose()
    }
}

// ---------------------------------------------------------------- Parquet

fn open_parquet(path: &Path, file: File, opts: &ReadOptions) -> Result<RawBatches> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| Error::unreadable(path, "not a readable Parquet file", e))?;
    let reader = builder
        .with_batch_size(opts.batch_rows.max(1))
        .build()
        .map_err(|e| Error::unreadable(path, "not a readable Parquet file", e))?;
    let headers = Arc::new(reader.schema().fields().iter().map(|f| f.name().clone()).collect::<Vec<_>>());
    let path = path.to_path_buf();
    let mut next_row = 1u64;
    Ok(Box::new(reader.map(move |batch| {
        let batch = batch.map_err(|e| Error::unreadable(&path, format!("record {next_row}"), e))?;
        let rows: Vec<u64> = (next_row..next_row + batch.num_rows() as u64).collect();
        next_row += batch.num_rows() as u64;
        Ok(RawBatch { headers: headers.clone(), columns: batch.columns().to_vec(), rows, rejects: Vec::new() })
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn read_all(p: &Path) -> (Vec<RawBatch>, Vec<Reject>) {
        let batches: Vec<RawBatch> = open(p, &ReadOptions::default()).unwrap().map(|b| b.unwrap()).collect();
        let rejects = batches.iter().flat_map(|b| b.rejects.clone()).collect();
        (batches, rejects)
    }

    #[test]
    fn csv_with_bom_quotes_and_semicolons() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "m.csv", "\u{feff}id;name\n1;\"a;b\"\n2;\"say \"\"hi\"\"\"\n".as_bytes());
        let (b, rej) = read_all(&p);
        assert!(rej.is_empty());
        assert_eq!(*b[0].headers, ["id", "name"]);
        assert_eq!(b[0].columns[1].as_string::<i32>().value(0), "a;b");
        assert_eq!(b[0].columns[1].as_string::<i32>().value(1), "say \"hi\"");
        assert_eq!(b[0].rows, [2, 3]);
    }

    #[test]
    fn csv_bad_rows_are_rejected_with_line_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "o.csv", b"a,b\n1,2\n3\n4,\xff\xfe\n5,6,7\n8,9\n");
        let (b, rej) = read_all(&p);
        assert_eq!(b[0].rows, [2, 6]);
        assert_eq!(
            rej[0],
            Reject {
                row: 3,
                column: None,
                reason: "expected 2 fields as in the header, found 1".into(),
                raw: Some("3".into())
            }
        );
        assert_eq!(rej[1].row, 4);
        assert_eq!(rej[1].column.as_deref(), Some("b"));
        assert_eq!(rej[1].reason, "value is not valid UTF-8");
        assert_eq!(rej[2].reason, "expected 2 fields as in the header, found 3");
    }

    #[test]
    fn csv_line_numbers_survive_crlf_blank_lines_and_quoted_breaks() {
        let dir = tempfile::tempdir().unwrap();
        // Line:        1       2         3    4       5                6     7      8
        let body = b"a,b\r\n1,2\r\n\r\n3,4\r\n\"x\r\ny\",5\r\n6,7\n\n8,9\r10,11";
        let p = write(dir.path(), "o.csv", body);
        let (b, rej) = read_all(&p);
        assert!(rej.is_empty(), "{rej:?}");
        let rows: Vec<u64> = b.iter().flat_map(|b| b.rows.iter().copied()).collect();
        assert_eq!(rows, [2, 4, 5, 7, 9, 10]);
    }

    /// The line of every row is the one a text editor shows, whatever the
    /// line ends, blank lines and quoted line breaks: checked against
    /// counting the lines of a file written row by row.
    #[test]
    fn csv_line_numbers_match_a_line_count() {
        use proptest::prelude::*;
        let ends = prop::sample::select(vec!["\n", "\r\n", "\r"]);
        proptest!(|(rows in prop::collection::vec((any::<bool>(), 0u8..4), 1..30), end in ends, batch in 1usize..4)| {
            let dir = tempfile::tempdir().unwrap();
            let mut body = b"a,b\n".to_vec();
            let mut want = Vec::new();
            let mut line = 2u64;
            for (i, (quoted_break, blanks)) in rows.iter().enumerate() {
                for _ in 0..*blanks {
                    body.extend(end.as_bytes());
                    line += 1;
                }
                want.push(line);
                if *quoted_break {
                    body.extend(format!("\"{i}{end}x\",{i}").as_bytes());
                    line += 1;
                } else {
                    body.extend(format!("{i},{i}").as_bytes());
                }
                body.extend(end.as_bytes());
                line += 1;
            }
            let p = write(dir.path(), "o.csv", &body);
            let opts = ReadOptions { batch_rows: batch, ..ReadOptions::default() };
            let mut got = Vec::new();
            for b in open(&p, &opts).unwrap() {
                let b = b.unwrap();
                prop_assert!(b.rejects.is_empty(), "{:?}", b.rejects);
                got.extend(b.rows);
            }
            prop_assert_eq!(got, want);
        });
    }

    #[test]
    fn csv_header_problems_fail_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "e.csv", b"");
        assert!(
            open(&p, &ReadOptions::default())
                .err()
                .unwrap()
                .to_string()
                .ends_with("file is empty (expected a header line)")
        );
        let p = write(dir.path(), "d.csv", b"a,a\n1,2\n");
        assert!(
            open(&p, &ReadOptions::default())
                .err()
                .unwrap()
                .to_string()
                .ends_with("line 1: column `a` appears twice in the header")
        );
    }

    #[test]
    fn tsv_and_sniffing() {
        assert_eq!(sniff_delimiter(b"a|b|c"), b'|');
        assert_eq!(sniff_delimiter(b"\"a,b\";c;d"), b';');
        assert_eq!(sniff_delimiter(b"abc"), b',');
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "t.tsv", b"a\tb\n1\t2\n");
        let (b, _) = read_all(&p);
        assert_eq!(b[0].columns.len(), 2);
    }

    #[test]
    fn jsonl_mixed_keys_types_and_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "x.jsonl",
            b"{\"a\":1,\"b\":\"x\"}\n\n{\"b\":null,\"c\":true}\n[1]\n{bad\n\xff\n{\"a\":{\"n\":1}}\n",
        );
        let (b, rej) = read_all(&p);
        let b = &b[0];
        assert_eq!(*b.headers, ["a", "b", "c"]);
        assert_eq!(b.rows, [1, 3, 7]);
        let a = b.columns[0].as_string::<i32>();
        assert_eq!(a.value(0), "1");
        assert!(a.is_null(1));
        assert_eq!(a.value(2), "{\"n\":1}");
        assert_eq!(b.columns[2].as_string::<i32>().value(1), "true");
        assert_eq!(rej.iter().map(|r| r.row).collect::<Vec<_>>(), [4, 5, 6]);
        assert_eq!(rej[0].reason, "expected a JSON object, found an array");
        assert!(rej[1].reason.starts_with("invalid JSON: "), "{}", rej[1].reason);
        assert_eq!(rej[2].reason, "line is not valid UTF-8");
    }

    #[test]
    fn jsonl_lines_longer_than_the_cap_are_quarantined_and_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let long = format!("{{\"a\":\"{}\"}}", "x".repeat(MAX_JSONL_LINE_BYTES));
        let at_cap = format!("{{\"a\":\"{}\"}}", "y".repeat(MAX_JSONL_LINE_BYTES - 8));
        let text = format!("{{\"a\":1}}\n{long}\r\n{at_cap}\r\n{{\"a\":2}}\n{long}");
        let p = write(dir.path(), "x.jsonl", text.as_bytes());
        let (b, rej) = read_all(&p);
        let rows: Vec<u64> = b.iter().flat_map(|b| b.rows.clone()).collect();
        assert_eq!(rows, [1, 3, 4]);
        assert_eq!(rej.iter().map(|r| r.row).collect::<Vec<_>>(), [2, 5]);
        let bytes = long.len();
        assert_eq!(
            rej[0].reason,
            format!(
                "line is {} bytes long; a JSON-lines record may have at most 1048576 bytes (is the file one JSON \
                 document rather than one object per line?)",
                bytes + 2
            )
        );
        assert_eq!(rej[0].raw.as_deref(), Some(format!("{}…", &long[..200]).as_str()));
        assert!(rej[1].reason.starts_with(&format!("line is {bytes} bytes long")), "{}", rej[1].reason);
        let a = b[0].columns[0].as_string::<i32>();
        assert_eq!(a.value(1).len(), MAX_JSONL_LINE_BYTES - 8);
    }

    #[test]
    fn jsonl_batches_stop_at_the_byte_budget() {
        let dir = tempfile::tempdir().unwrap();
        let line = format!("{{\"a\":\"{}\"}}\n", "z".repeat(20_000));
        let lines = JSONL_BATCH_BYTES / line.len() + 10;
        let p = write(dir.path(), "x.jsonl", line.repeat(lines).as_bytes());
        let (b, rej) = read_all(&p);
        assert!(rej.is_empty());
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].len() + b[1].len(), lines);
        assert!(b[0].len() * line.len() <= JSONL_BATCH_BYTES + line.len(), "{}", b[0].len());
    }

    #[test]
    fn expand_globs_and_dirs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("parts")).unwrap();
        write(&dir.path().join("parts"), "b.csv", b"a\n1\n");
        write(&dir.path().join("parts"), "a.csv", b"a\n1\n");
        write(&dir.path().join("parts"), "notes.md", b"x");
        let d = dir.path().join("parts");
        let got = expand_inputs(&[d.to_string_lossy().to_string()]).unwrap();
        assert_eq!(
            got.iter().map(|p| p.file_name().unwrap().to_str().unwrap()).collect::<Vec<_>>(),
            ["a.csv", "b.csv"]
        );
        let pat = format!("{}/*.csv", d.display());
        assert_eq!(expand_inputs(&[pat.clone(), pat]).unwrap().len(), 2);
        let none = format!("{}/*.parquet", d.display());
        assert_eq!(
            expand_inputs(std::slice::from_ref(&none)).unwrap_err().to_string(),
            format!("no input file matches `{none}`")
        );
        assert!(expand_inputs(&["/no/such/file.csv"]).unwrap_err().to_string().ends_with("no such file or directory"));
    }
}
