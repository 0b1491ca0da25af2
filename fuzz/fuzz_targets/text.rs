#![no_main]

use libfuzzer_sys::fuzz_target;
use xenios_extract::{extract_as, DocumentFormat, ExtractOptions, OutputFormat};

fuzz_target!(|data: &[u8]| {
    let opts = ExtractOptions { max_output_chars: 1 << 20, ..ExtractOptions::default() };
    let _ = extract_as(data, DocumentFormat::Markdown, &opts);
    let text = ExtractOptions { output: OutputFormat::Text, ..opts };
    let _ = extract_as(data, DocumentFormat::Text, &text);
});
