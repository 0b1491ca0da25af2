//! The compound file ([MS-CFB], "OLE2") a Word 97–2003 document is stored in: a small file
//! system of fixed-size sectors chained through an allocation table (the FAT), with a
//! directory of named streams, and streams under 4 KiB kept in 64-byte mini sectors inside
//! the root entry's own stream.
//!
//! Read from the bytes in memory, every offset checked: a chain may lead anywhere, loop or
//! stop short, a size may lie. Whatever is missing from a file cut short (the head of an
//! upload) is treated as absent, so that the directory can still be searched as far as it
//! goes; only reading a stream insists on every sector being there.

use crate::limits::Clock;
use crate::ExtractError;

/// The eight bytes every compound file starts with.
pub(crate) const SIGNATURE: [u8; 8] = [0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];

/// The last sector of a chain.
const END_OF_CHAIN: u32 = 0xFFFF_FFFE;
/// Unused: what an allocation table holds where the file ended before it.
const FREE_SECTOR: u32 = 0xFFFF_FFFF;
/// Sector numbers above this are markers, not sectors.
const MAX_SECTOR: u32 = 0xFFFF_FFFA;
/// A directory entry's "no sibling" or "no child".
const NO_ENTRY: u32 = 0xFFFF_FFFF;
const HEADER_FAT_SECTORS: usize = 109;
const ENTRY_BYTES: usize = 128;
const MINI_SECTOR_BYTES: usize = 64;
const STREAM: u8 = 2;

/// One entry of the directory: a stream, a storage (a folder) or the root.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    name: String,
    kind: u8,
    left: u32,
    right: u32,
    child: u32,
    start: u32,
    pub(super) size: u64,
}

pub(super) struct CompoundFile<'a> {
    bytes: &'a [u8],
    sector_shift: u32,
    fat: Vec<u32>,
    mini_fat: Vec<u32>,
    mini_cutoff: u64,
    /// The directory's sectors, as many as could be read.
    directory: Vec<u8>,
    /// Whether the directory's chain was read to its end.
    directory_complete: bool,
    /// The directory says sizes in 64 bits only from version 4 on.
    wide_sizes: bool,
}

impl<'a> CompoundFile<'a> {
    /// Reads the header, the allocation tables and the directory. Fails only when `bytes` is
    /// not a compound file at all; a damaged one opens with what could be read.
    pub(super) fn open(bytes: &'a [u8]) -> Result<Self, ExtractError> {
        let header = bytes
            .get(..512)
            .filter(|h| h.starts_with(&SIGNATURE))
            .ok_or_else(|| corrupt("it has no compound file header"))?;
        let major_version = u16_at(header, 26).unwrap_or(0);
        let sector_shift = u32::from(u16_at(header, 30).unwrap_or(0));
        // Version 3 files have 512-byte sectors, version 4 files 4 KiB ones; nothing else is
        // written, and other shifts would make offsets overflow.
        if u16_at(header, 28) != Some(0xFFFE) || !matches!(sector_shift, 9 | 12) {
            return Err(corrupt("its compound file header is invalid"));
        }
        let mut file = CompoundFile {
            bytes,
            sector_shift,
            fat: Vec::new(),
            mini_fat: Vec::new(),
            mini_cutoff: u64::from(u32_at(header, 56).unwrap_or(4096)),
            directory: Vec::new(),
            directory_complete: false,
            wide_sizes: major_version >= 4,
        };
        file.fat = file.read_fat(header);
        let mini_fat_start = u32_at(header, 60).unwrap_or(END_OF_CHAIN);
        file.mini_fat = match file.chain(&file.fat, mini_fat_start, file.fat.len()) {
            Ok(chain) => file.table_of(&chain),
            Err(_) => Vec::new(),
        };
        let directory_start = u32_at(header, 48).unwrap_or(END_OF_CHAIN);
        file.read_directory(directory_start);
        Ok(file)
    }

    fn sector_bytes(&self) -> usize {
        1 << self.sector_shift
    }

    /// Sectors the bytes hold (the header takes the place of one), a last partial one counted.
    fn sectors_in_file(&self) -> usize {
        self.bytes
            .len()
            .div_ceil(self.sector_bytes())
            .saturating_sub(1)
    }

    /// Sector `id`, or as much of it as the bytes hold; `None` past their end.
    fn sector(&self, id: u32) -> Option<&'a [u8]> {
        let start = usize::try_from(id)
            .ok()?
            .checked_add(1)?
            .checked_mul(self.sector_bytes())?;
        let end = start
            .saturating_add(self.sector_bytes())
            .min(self.bytes.len());
        self.bytes.get(start..end).filter(|s| !s.is_empty())
    }

    /// The allocation table: the sectors the header lists, then those the DIFAT chain lists.
    /// A table sector past the end of the bytes reads as free sectors, so that the entries
    /// after it keep their numbers.
    fn read_fat(&self, header: &[u8]) -> Vec<u32> {
        // A table cannot have more sectors than the file: the count is capped before
        // anything is allocated for it.
        let declared = u32_at(header, 44).map_or(0, |n| n as usize);
        let count = declared.min(self.sectors_in_file());
        let mut table_sectors: Vec<u32> = header
            .get(76..76 + 4 * HEADER_FAT_SECTORS)
            .unwrap_or_default()
            .chunks_exact(4)
            .map(le_u32)
            .take(count)
            .collect();
        let mut difat = u32_at(header, 68).unwrap_or(END_OF_CHAIN);
        let per_difat_sector = self.sector_bytes() / 4 - 1;
        let mut visited = 0;
        while table_sectors.len() < count && difat <= MAX_SECTOR && visited < count {
            visited += 1;
            let Some(sector) = self.sector(difat) else {
                break;
            };
            let entries: Vec<u32> = sector.chunks_exact(4).map(le_u32).collect();
            let listed = entries.get(..per_difat_sector).unwrap_or(&entries);
            let room = count - table_sectors.len();
            table_sectors.extend(listed.iter().take(room));
            difat = entries
                .get(per_difat_sector)
                .copied()
                .unwrap_or(END_OF_CHAIN);
        }
        let per_sector = self.sector_bytes() / 4;
        let mut fat = Vec::with_capacity(table_sectors.len() * per_sector);
        for id in table_sectors {
            let entries = self.sector(id).unwrap_or_default();
            let start = fat.len();
            fat.extend(entries.chunks_exact(4).map(le_u32));
            fat.resize(start + per_sector, FREE_SECTOR);
        }
        fat
    }

    /// The sectors of the chain from `start` through `table`, at most `max_len` of them (a
    /// longer chain loops, or runs past what the caller needs).
    fn chain(&self, table: &[u32], start: u32, max_len: usize) -> Result<Vec<u32>, ExtractError> {
        let mut chain = Vec::new();
        let mut id = start;
        while id != END_OF_CHAIN && chain.len() < max_len {
            let next = usize::try_from(id)
                .ok()
                .filter(|_| id <= MAX_SECTOR)
                .and_then(|i| table.get(i))
                .ok_or_else(|| corrupt("a sector chain leads out of its allocation table"))?;
            chain.push(id);
            id = *next;
        }
        Ok(chain)
    }

    /// The 32-bit entries of the sectors of `chain`, as a table (the mini FAT).
    fn table_of(&self, chain: &[u32]) -> Vec<u32> {
        let mut table = Vec::new();
        for &id in chain {
            let Some(sector) = self.sector(id) else {
                break;
            };
            table.extend(sector.chunks_exact(4).map(le_u32));
        }
        table
    }

    fn read_directory(&mut self, start: u32) {
        let mut id = start;
        let mut directory = Vec::new();
        // Each sector is visited at most once: a chain with more links loops.
        for _ in 0..=self.sectors_in_file() {
            if id == END_OF_CHAIN {
                self.directory_complete = true;
                break;
            }
            let Some(sector) = self.sector(id) else {
                break;
            };
            directory.extend_from_slice(sector);
            let next = usize::try_from(id).ok().and_then(|i| self.fat.get(i));
            match next {
                Some(&next) if next <= MAX_SECTOR || next == END_OF_CHAIN => id = next,
                _ => break,
            }
        }
        self.directory = directory;
    }

    /// Whether the whole directory was read: only then does a stream it does not list not
    /// exist.
    pub(super) fn directory_complete(&self) -> bool {
        self.directory_complete
    }

    /// Whether any sector the bytes hold in full passes `test`.
    pub(super) fn any_sector(&self, test: impl Fn(&[u8]) -> bool) -> bool {
        (0..self.sectors_in_file())
            .filter_map(|id| self.sector(u32::try_from(id).ok()?))
            .any(|sector| sector.len() == self.sector_bytes() && test(sector))
    }

    fn entry(&self, index: u32) -> Option<Entry> {
        let start = usize::try_from(index).ok()?.checked_mul(ENTRY_BYTES)?;
        let raw = self.directory.get(start..start.checked_add(ENTRY_BYTES)?)?;
        let name_bytes = usize::from(u16_at(raw, 64)?).min(64);
        let units: Vec<u16> = raw
            .get(..name_bytes.saturating_sub(2))?
            .chunks_exact(2)
            .map(|pair| u16::from_le_bytes([pair[0], pair[1]]))
            .collect();
        let size = u64_at(raw, 120)?;
        Some(Entry {
            name: String::from_utf16_lossy(&units),
            kind: *raw.get(66)?,
            left: u32_at(raw, 68)?,
            right: u32_at(raw, 72)?,
            child: u32_at(raw, 76)?,
            start: u32_at(raw, 116)?,
            // Version 3 files may leave garbage in the high half.
            size: if self.wide_sizes {
                size
            } else {
                size & 0xFFFF_FFFF
            },
        })
    }

    /// The stream named `name` (compared as CFB does, without regard to ASCII case) among the
    /// root storage's children, not inside a sub-storage: an embedded object has streams of
    /// its own, a `WordDocument` among them when it is a Word document.
    pub(super) fn root_stream(&self, name: &str) -> Option<Entry> {
        let root = self.entry(0)?;
        let entries = self.directory.len() / ENTRY_BYTES;
        let mut pending = vec![root.child];
        // The children form a tree through their sibling links; a damaged one may loop, so
        // the walk visits no more nodes than the directory has entries.
        for _ in 0..entries {
            let entry = self.entry(pending.pop()?);
            let Some(entry) = entry else {
                continue;
            };
            if entry.kind == STREAM && entry.name.eq_ignore_ascii_case(name) {
                return Some(entry);
            }
            pending.extend(
                [entry.left, entry.right]
                    .into_iter()
                    .filter(|&i| i != NO_ENTRY),
            );
        }
        None
    }

    /// The bytes of `entry`'s stream, its size charged to `budget` (bytes left to read)
    /// before anything is read.
    pub(super) fn read(
        &self,
        entry: &Entry,
        budget: &mut u64,
        clock: &mut Clock,
    ) -> Result<Vec<u8>, ExtractError> {
        // A stream is made of the file's own sectors: one larger than the file lies.
        if entry.size > self.bytes.len() as u64 {
            return Err(corrupt(format!(
                "its {} stream claims more bytes than the file has",
                entry.name
            )));
        }
        if entry.size > *budget {
            return Err(ExtractError::too_large(
                "its streams exceed the decompressed size limit",
            ));
        }
        *budget -= entry.size;
        let size = usize::try_from(entry.size).unwrap_or(usize::MAX);
        if entry.size < self.mini_cutoff {
            self.read_mini(entry, size, clock)
        } else {
            self.read_regular(entry, size, clock)
        }
    }

    fn read_regular(
        &self,
        entry: &Entry,
        size: usize,
        clock: &mut Clock,
    ) -> Result<Vec<u8>, ExtractError> {
        let sectors = size.div_ceil(self.sector_bytes());
        let chain = self.chain(&self.fat, entry.start, sectors)?;
        let mut data = Vec::with_capacity(size);
        for id in chain {
            clock.tick()?;
            let sector = self.sector(id).unwrap_or_default();
            let wanted = (size - data.len()).min(sector.len());
            data.extend_from_slice(sector.get(..wanted).unwrap_or_default());
        }
        if data.len() < size {
            return Err(short_stream(entry));
        }
        Ok(data)
    }

    /// A stream kept in mini sectors: each lies at `64 × n` in the root entry's stream.
    fn read_mini(
        &self,
        entry: &Entry,
        size: usize,
        clock: &mut Clock,
    ) -> Result<Vec<u8>, ExtractError> {
        let root = self.entry(0).ok_or_else(|| short_stream(entry))?;
        let root_sectors = usize::try_from(root.size)
            .unwrap_or(usize::MAX)
            .div_ceil(self.sector_bytes());
        let container = self.chain(&self.fat, root.start, root_sectors)?;
        let chain = self.chain(
            &self.mini_fat,
            entry.start,
            size.div_ceil(MINI_SECTOR_BYTES),
        )?;
        let mut data = Vec::with_capacity(size);
        for id in chain {
            clock.tick()?;
            let offset = (id as usize).saturating_mul(MINI_SECTOR_BYTES);
            let sector = container
                .get(offset >> self.sector_shift)
                .and_then(|&sector| self.sector(sector))
                .ok_or_else(|| short_stream(entry))?;
            let within = offset & (self.sector_bytes() - 1);
            let wanted = (size - data.len()).min(MINI_SECTOR_BYTES);
            let bytes = sector
                .get(within..within + wanted)
                .ok_or_else(|| short_stream(entry))?;
            data.extend_from_slice(bytes);
        }
        if data.len() < size {
            return Err(short_stream(entry));
        }
        Ok(data)
    }
}

fn short_stream(entry: &Entry) -> ExtractError {
    corrupt(format!(
        "its {} stream's sectors are missing or past the end of the file",
        entry.name
    ))
}

fn corrupt(why: impl std::fmt::Display) -> ExtractError {
    ExtractError::corrupt(format!("the Word document is damaged: {why}"))
}

fn le_u32(bytes: &[u8]) -> u32 {
    bytes
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map_or(FREE_SECTOR, u32::from_le_bytes)
}

pub(super) fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    let b = bytes.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes(b.try_into().ok()?))
}

pub(super) fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(b.try_into().ok()?))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    let b = bytes.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(b.try_into().ok()?))
}
