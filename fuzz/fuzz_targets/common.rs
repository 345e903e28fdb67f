//! What the file-conversion targets share: the input written to a file
//! (sources are read from files) and converted to the end.

use taglake_ingest::CheckedMapping;
use taglake_ingest::convert::ConvertedFile;
use taglake_ingest::source::ReadOptions;
use taglake_storage::Table;

/// Converts `data` (after its first byte, which picks the table) as a
/// file with extension `ext`.
pub fn convert_file(ext: &str, data: &[u8]) {
    let Some((&pick, body)) = data.split_first() else { return };
    let table = [Table::Orders, Table::Members, Table::Products][pick as usize % 3];
    // Small batches, so batch boundaries are exercised too.
    let opts = ReadOptions { batch_rows: 1 + (pick as usize >> 2) % 4, ..ReadOptions::default() };
    let dir = std::env::temp_dir().join(format!("taglake-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let path = dir.join(format!("input.{ext}"));
    std::fs::write(&path, body).expect("the input file is written");
    let mapping = CheckedMapping::canonical(table);
    if let Ok(file) = ConvertedFile::open(&path, &mapping, &opts) {
        for batch in file {
            let _ = batch;
        }
    }
}
