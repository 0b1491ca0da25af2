use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::{ExtractError, ExtractOptions};

/// Below this many decompressed bytes an entry is never judged by its compression ratio:
/// small runs of repetitive XML legitimately compress far better than 100:1.
pub(crate) const RATIO_GRACE_BYTES: u64 = 1 << 20;

/// Cells (and rows) one table may gather before it is written. A spanning cell counts as
/// every cell it spans: `colspan`/`gridSpan` would otherwise turn a few input bytes into
/// dozens of cells held in memory until the table ends.
pub(crate) const MAX_TABLE_CELLS: usize = 1 << 20;

pub(crate) fn table_too_large() -> ExtractError {
    ExtractError::too_large(format!("a table has more than {MAX_TABLE_CELLS} cells"))
}

/// The deadline, checked from the loops of every extractor. Reading the clock costs tens
/// of nanoseconds, so hot loops ask only every [`Clock::EVERY`] iterations.
pub(crate) struct Clock {
    deadline: Option<Instant>,
    stop: Option<Arc<AtomicBool>>,
    ticks: u32,
}

impl Clock {
    const EVERY: u32 = 256;

    pub(crate) fn new(deadline: Option<Instant>, stop: Option<Arc<AtomicBool>>) -> Self {
        Clock {
            deadline,
            stop,
            ticks: 0,
        }
    }

    /// Checks the clock (and whether to stop) now.
    pub(crate) fn check(&self) -> Result<(), ExtractError> {
        if self
            .stop
            .as_ref()
            .is_some_and(|stop| stop.load(Ordering::Relaxed))
        {
            return Err(ExtractError::Stopped);
        }
        match self.deadline {
            Some(deadline) if Instant::now() >= deadline => Err(ExtractError::Timeout),
            _ => Ok(()),
        }
    }

    /// Checks the clock every [`Clock::EVERY`] calls.
    pub(crate) fn tick(&mut self) -> Result<(), ExtractError> {
        self.ticks = self.ticks.wrapping_add(1);
        if self.ticks.is_multiple_of(Self::EVERY) {
            self.check()
        } else {
            Ok(())
        }
    }
}

/// The output text, which refuses to grow past `max_output_chars`: a document that would
/// produce more fails early rather than after building a huge string.
pub(crate) struct Out {
    buf: String,
    chars: usize,
    max: usize,
}

impl Out {
    pub(crate) fn new(max: usize) -> Self {
        Out {
            buf: String::new(),
            chars: 0,
            max,
        }
    }

    pub(crate) fn push_str(&mut self, s: &str) -> Result<(), ExtractError> {
        self.chars += s.chars().count();
        if self.chars > self.max {
            return Err(ExtractError::too_large(format!(
                "the extracted text exceeds {} characters",
                self.max
            )));
        }
        self.buf.push_str(s);
        Ok(())
    }

    pub(crate) fn into_string(self) -> String {
        self.buf
    }
}

/// Everything an extractor needs besides the bytes.
pub(crate) struct Ctx<'a> {
    pub(crate) opts: &'a ExtractOptions,
    pub(crate) clock: Clock,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(opts: &'a ExtractOptions) -> Self {
        Ctx {
            opts,
            clock: Clock::new(opts.deadline, opts.stop.clone()),
        }
    }

    pub(crate) fn markdown(&self) -> bool {
        self.opts.output == crate::OutputFormat::Markdown
    }

    pub(crate) fn out(&self) -> Out {
        Out::new(self.opts.max_output_chars)
    }

    /// The decompression budget as a `usize`, for APIs that take one.
    pub(crate) fn max_decompressed(&self) -> usize {
        usize::try_from(self.opts.max_decompressed_bytes).unwrap_or(usize::MAX)
    }
}
