#![no_main]

//! The RTF reader on any bytes: behind an RTF header, so that every input reaches the
//! tokenizer and the group stack rather than being refused at the first byte.

use libfuzzer_sys::fuzz_target;
use xenios_extract::{extract_as, DocumentFormat, ExtractOptions, OutputFormat};

fuzz_target!(|data: &[u8]| {
    let opts = ExtractOptions { max_output_chars: 1 << 20, ..ExtractOptions::default() };
    let _ = extract_as(data, DocumentFormat::Rtf, &opts);
    let mut rtf = b"{\\rtf1\\ansi ".to_vec();
    rtf.extend_from_slice(data);
    let text = ExtractOptions { output: OutputFormat::Text, ..opts };
    let _ = extract_as(&rtf, DocumentFormat::Rtf, &text);
});
