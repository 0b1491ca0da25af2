#![no_main]

use libfuzzer_sys::fuzz_target;
use xenios_extract::{extract_as, DocumentFormat, ExtractOptions};

fuzz_target!(|data: &[u8]| {
    let opts = ExtractOptions {
        max_decompressed_bytes: 16 << 20,
        max_output_chars: 1 << 20,
        ..ExtractOptions::default()
    };
    let _ = extract_as(data, DocumentFormat::Csv, &opts);
});
