#![no_main]

//! The Word 97–2003 reader on any bytes: the compound file, the FIB, the piece table, the
//! property pages and the stylesheet, from the seed's structure as the fuzzer mutates it.

use libfuzzer_sys::fuzz_target;
use xenios_extract::{extract_as, sniff, DocumentFormat, ExtractOptions, OutputFormat};

fuzz_target!(|data: &[u8]| {
    let _ = sniff(data);
    let opts = ExtractOptions {
        max_decompressed_bytes: 16 << 20,
        max_output_chars: 1 << 20,
        ..ExtractOptions::default()
    };
    let _ = extract_as(data, DocumentFormat::Doc, &opts);
    let text = ExtractOptions {
        output: OutputFormat::Text,
        ..opts
    };
    let _ = extract_as(data, DocumentFormat::Doc, &text);
});
