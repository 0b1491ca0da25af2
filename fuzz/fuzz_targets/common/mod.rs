//! What the OOXML part targets share: the fuzzed part put in an otherwise valid package, and
//! extracted as its format.

use std::io::Write;

use xenios_extract::{extract_as, DocumentFormat, ExtractOptions};
use zip::write::SimpleFileOptions;

/// Extracts, as `format`, a stored (uncompressed) zip of `parts`.
pub fn extract_package(format: DocumentFormat, parts: &[(&str, &[u8])]) {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, body) in parts {
        zip.start_file(*name, stored).unwrap();
        zip.write_all(body).unwrap();
    }
    let bytes = zip.finish().unwrap().into_inner();
    let opts = ExtractOptions { max_output_chars: 1 << 20, ..ExtractOptions::default() };
    let _ = extract_as(&bytes, format, &opts);
}
