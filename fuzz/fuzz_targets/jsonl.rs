//! JSON-lines exports: any bytes, read as a JSON-lines file and converted
//! with the canonical layout of a table (the first byte picks it), give
//! converted batches, quarantined rows or a file-level error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| common::convert_file("jsonl", data));
