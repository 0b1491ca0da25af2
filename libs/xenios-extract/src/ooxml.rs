//! Reading the parts of an OOXML (zip) package under the decompression guards, plus
//! the XML helpers DOCX and XLSX share.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::rc::Rc;

use flate2::read::DeflateDecoder;
use flate2::Crc;

use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, XmlVersion};

use crate::limits::{Clock, RATIO_GRACE_BYTES};
use crate::{ExtractError, ExtractOptions};

/// More entries than any real document has; a central directory listing millions of
/// entries is an attack on the index, not a document.
const MAX_ENTRIES: usize = 50_000;

pub(crate) struct Package<'a> {
    archive: zip::ZipArchive<Cursor<&'a [u8]>>,
    /// Part names are case-insensitive in OPC, so look-ups go through lower-cased names.
    index: HashMap<String, usize>,
    /// Decompressed bytes still allowed across all parts read.
    budget: u64,
    max_ratio: u64,
}

/// Whether the package has more than `MAX_ENTRIES` central directory headers, counted before
/// the zip crate indexes them. It keeps about 200 bytes per entry (measured: 1 million empty
/// entries, an 86 MB file, took 206 MB), so a 200 MB upload of empty entries would hold half
/// a gigabyte before the count could be checked on the index. Every entry the crate reads
/// begins with this signature, so the count bounds what it reads.
pub(crate) fn too_many_entries(bytes: &[u8]) -> bool {
    memchr::memmem::find_iter(bytes, b"PK\x01\x02")
        .nth(MAX_ENTRIES)
        .is_some()
}

/// The package's index, once it is known not to be too large to build.
pub(crate) fn open_archive(bytes: &[u8]) -> Result<zip::ZipArchive<Cursor<&[u8]>>, ExtractError> {
    if too_many_entries(bytes) {
        return Err(ExtractError::too_large(format!(
            "the package has more than {MAX_ENTRIES} entries"
        )));
    }
    zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| ExtractError::corrupt(format!("not a readable zip package: {e}")))
}

impl<'a> Package<'a> {
    pub(crate) fn open(bytes: &'a [u8], opts: &ExtractOptions) -> Result<Self, ExtractError> {
        let archive = open_archive(bytes)?;
        let index = archive
            .file_names_raw()
            .enumerate()
            .map(|(i, raw)| (String::from_utf8_lossy(raw).to_ascii_lowercase(), i))
            .collect();
        Ok(Package {
            archive,
            index,
            budget: opts.max_decompressed_bytes,
            max_ratio: u64::from(opts.max_compression_ratio.max(1)),
        })
    }

    pub(crate) fn has(&self, name: &str) -> bool {
        self.index
            .contains_key(&name.trim_start_matches('/').to_ascii_lowercase())
    }

    /// The decompressed part `name`, or `None` if the package has no such part.
    ///
    /// The part is inflated here rather than by the zip crate so that the compressed
    /// bytes consumed so far are known: the ratio is checked as the data comes out, along
    /// with the remaining budget and the size the entry declares. A zip bomb therefore
    /// fails after about a MiB of output, whatever its header claims.
    pub(crate) fn read(
        &mut self,
        name: &str,
        clock: &Clock,
    ) -> Result<Option<Vec<u8>>, ExtractError> {
        let Some(&i) = self
            .index
            .get(&name.trim_start_matches('/').to_ascii_lowercase())
        else {
            return Ok(None);
        };
        let budget = self.budget;
        let max_ratio = self.max_ratio;
        let entry = self
            .archive
            .by_index_raw(i)
            .map_err(|e| ExtractError::corrupt(format!("cannot open part {name}: {e}")))?;
        if entry.encrypted() {
            return Err(ExtractError::UnsupportedFormat(format!(
                "part {name} is encrypted"
            )));
        }
        let declared = entry.size();
        let compressed = entry.compressed_size().max(1);
        let expected_crc = entry.crc32();
        let method = entry.compression();
        if declared > budget {
            return Err(too_large_part(name, budget));
        }
        if declared > RATIO_GRACE_BYTES && declared / compressed > max_ratio {
            return Err(ratio_exceeded(name, max_ratio));
        }

        let consumed = Rc::new(Cell::new(0u64));
        let raw = Counting {
            inner: entry,
            count: consumed.clone(),
        };
        let mut reader: Box<dyn Read + '_> = if method == zip::CompressionMethod::STORE {
            Box::new(raw)
        } else if method == zip::CompressionMethod::DEFLATE {
            Box::new(DeflateDecoder::new(raw))
        } else {
            return Err(ExtractError::UnsupportedFormat(format!(
                "part {name} uses the unsupported zip compression {method}"
            )));
        };

        let mut data = Vec::with_capacity(declared.min(16 << 20) as usize);
        let mut chunk = vec![0u8; 64 * 1024];
        let mut crc = Crc::new();
        loop {
            let n = match reader.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(ExtractError::corrupt(format!(
                        "cannot decompress part {name}: {e}"
                    )))
                }
            };
            data.extend_from_slice(&chunk[..n]);
            crc.update(&chunk[..n]);
            let total = data.len() as u64;
            if total > budget {
                return Err(too_large_part(name, budget));
            }
            if total > RATIO_GRACE_BYTES && total / consumed.get().max(1) > max_ratio {
                return Err(ratio_exceeded(name, max_ratio));
            }
            if total > declared {
                return Err(ExtractError::corrupt(format!(
                    "part {name} holds more data than its header declares"
                )));
            }
            clock.check()?;
        }
        if data.len() as u64 != declared || crc.sum() != expected_crc {
            return Err(ExtractError::corrupt(format!(
                "part {name} is damaged (size or CRC mismatch)"
            )));
        }
        self.budget -= data.len() as u64;
        Ok(Some(data))
    }

    /// Like [`Package::read`], as UTF-8 text (a BOM is skipped).
    pub(crate) fn read_text(
        &mut self,
        name: &str,
        clock: &Clock,
    ) -> Result<Option<String>, ExtractError> {
        let Some(data) = self.read(name, clock)? else {
            return Ok(None);
        };
        let data = data
            .strip_prefix(b"\xEF\xBB\xBF")
            .map(<[u8]>::to_vec)
            .unwrap_or(data);
        String::from_utf8(data)
            .map(Some)
            .map_err(|_| ExtractError::corrupt(format!("part {name} is not UTF-8 XML")))
    }

    /// The relationships of `part` (from its `_rels/*.rels`): id → (type, absolute target).
    pub(crate) fn relationships(
        &mut self,
        part: &str,
        clock: &mut Clock,
    ) -> Result<HashMap<String, Relationship>, ExtractError> {
        let (dir, file) = part.rsplit_once('/').unwrap_or(("", part));
        let rels_name = if dir.is_empty() {
            format!("_rels/{file}.rels")
        } else {
            format!("{dir}/_rels/{file}.rels")
        };
        let mut rels = HashMap::new();
        let Some(xml) = self.read_text(&rels_name, clock)? else {
            return Ok(rels);
        };
        let mut reader = xml_reader(&xml);
        loop {
            clock.tick()?;
            match next(&mut reader, &rels_name)? {
                Event::Start(e) | Event::Empty(e) if e.local_name().as_ref() == "Relationship" => {
                    let (Some(id), Some(target)) = (attr(&e, "Id"), attr(&e, "Target")) else {
                        continue;
                    };
                    let external = attr(&e, "TargetMode").is_some_and(|m| m == "External");
                    let target = if external {
                        target
                    } else {
                        resolve(dir, &target)
                    };
                    let kind = attr(&e, "Type").unwrap_or_default();
                    rels.insert(
                        id,
                        Relationship {
                            kind,
                            target,
                            external,
                        },
                    );
                }
                Event::Eof => break,
                _ => {}
            }
        }
        Ok(rels)
    }

    /// The main part the package relationships name (`officeDocument`), else `conventional`.
    pub(crate) fn main_part(
        &mut self,
        conventional: &str,
        clock: &mut Clock,
    ) -> Result<String, ExtractError> {
        let rels = self.relationships("", clock)?;
        let named = rels
            .values()
            .find(|r| r.kind.ends_with("/officeDocument") && !r.external && self.has(&r.target))
            .map(|r| r.target.clone());
        Ok(named.unwrap_or_else(|| conventional.to_owned()))
    }

    /// Title and author from a Dublin Core part (an OOXML `docProps/core.xml`, an OpenDocument
    /// `meta.xml`), when present: `title`, and `initial-creator` or else `creator`.
    pub(crate) fn title_and_author(
        &mut self,
        part: &str,
        clock: &mut Clock,
    ) -> Result<(Option<String>, Option<String>), ExtractError> {
        let Some(xml) = self.read_text(part, clock)? else {
            return Ok((None, None));
        };
        let mut reader = xml_reader(&xml);
        let (mut title, mut creator, mut initial_creator) = (None, None, None);
        let mut field: Option<&'static str> = None;
        let mut text = String::new();
        loop {
            clock.tick()?;
            match next(&mut reader, part)? {
                Event::Start(e) => {
                    field = match e.local_name().as_ref() {
                        "title" => Some("title"),
                        "creator" => Some("creator"),
                        "initial-creator" => Some("initial-creator"),
                        _ => None,
                    };
                    text.clear();
                }
                Event::End(_) => {
                    let value = Some(text.trim().to_owned()).filter(|v| !v.is_empty());
                    match field.take() {
                        Some("title") => title = title.or(value),
                        Some("creator") => creator = creator.or(value),
                        Some("initial-creator") => initial_creator = initial_creator.or(value),
                        _ => {}
                    }
                }
                Event::Eof => break,
                ev => {
                    if field.is_some() {
                        push_text(&mut text, &ev);
                    }
                }
            }
        }
        Ok((title, initial_creator.or(creator)))
    }
}

/// Counts the compressed bytes the inflater has pulled.
struct Counting<R> {
    inner: R,
    count: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

pub(crate) struct Relationship {
    pub(crate) kind: String,
    pub(crate) target: String,
    pub(crate) external: bool,
}

fn too_large_part(name: &str, budget: u64) -> ExtractError {
    ExtractError::too_large(format!(
        "part {name} decompresses past the remaining budget of {budget} bytes"
    ))
}

fn ratio_exceeded(name: &str, max_ratio: u64) -> ExtractError {
    ExtractError::too_large(format!(
        "part {name} exceeds the compression ratio limit of {max_ratio}:1"
    ))
}

/// `target` relative to the folder `dir`, as a package part name without leading `/`.
pub(crate) fn resolve(dir: &str, target: &str) -> String {
    let mut parts: Vec<&str> = if target.starts_with('/') {
        Vec::new()
    } else {
        dir.split('/').filter(|s| !s.is_empty()).collect()
    };
    for segment in target.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    parts.join("/")
}

pub(crate) fn xml_reader(xml: &str) -> Reader<&[u8]> {
    let mut reader = Reader::from_str(xml);
    let config = reader.config_mut();
    config.trim_text(false);
    config.check_end_names = false;
    config.allow_dangling_amp = true;
    reader
}

/// The next event; a malformed part is a corrupt document.
pub(crate) fn next<'x>(
    reader: &mut Reader<&'x [u8]>,
    part: &str,
) -> Result<Event<'x>, ExtractError> {
    reader
        .read_event()
        .map_err(|e| ExtractError::corrupt(format!("malformed XML in {part}: {e}")))
}

/// Appends the character data an event carries: text, CDATA, or an entity or character
/// reference (which quick-xml reports apart from the text around it).
pub(crate) fn push_text(out: &mut String, event: &Event) {
    match event {
        Event::Text(t) => out.push_str(&t.xml10_content()),
        Event::CData(t) => out.push_str(t),
        Event::GeneralRef(r) => {
            if let Ok(Some(c)) = r.resolve_char_ref() {
                out.push(c);
            } else if let Some(s) = quick_xml::escape::resolve_predefined_entity(&r.xml10_content())
            {
                out.push_str(s);
            }
        }
        _ => {}
    }
}

/// The value of the attribute whose local name is `name` (prefixes ignored).
pub(crate) fn attr(e: &BytesStart, name: &str) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.local_name().as_ref() == name)
        .map(|a| {
            a.normalized_value(XmlVersion::Implicit1_0)
                .unwrap_or_else(|_| Cow::Borrowed(a.value.as_ref()))
                .into_owned()
        })
}

/// An OOXML on/off property such as `<w:b/>` or `<w:b w:val="false"/>`.
pub(crate) fn toggle(e: &BytesStart) -> bool {
    !matches!(
        attr(e, "val").as_deref(),
        Some("0" | "false" | "off" | "none")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_relationship_targets() {
        assert_eq!(
            resolve("xl", "worksheets/sheet1.xml"),
            "xl/worksheets/sheet1.xml"
        );
        assert_eq!(
            resolve("xl", "/xl/worksheets/sheet1.xml"),
            "xl/worksheets/sheet1.xml"
        );
        assert_eq!(resolve("word", "../media/a.png"), "media/a.png");
        assert_eq!(resolve("", "word/document.xml"), "word/document.xml");
    }
}
