//! The `extraction` and `transcription` job kinds (SPEC §3): a job's `file_id` is read from
//! the `FILES` object store, its `url` fetched under the SSRF policy; the bytes go to the
//! pure libraries (`xenios-extract`, `xenios-transcribe`) and the outcome back to the
//! consumer runtime, failures classed transient or permanent by the libraries' own
//! `retryable`.

mod error;
mod extraction;
mod source;
mod transcription;

pub use error::DocumentsError;
pub use extraction::{cache_key, ExtractionHandler};
pub use source::{Loaded, Loader, FILENAME_KEY, OWNER_KEY};
pub use transcription::TranscriptionHandler;

/// A progress event at `fraction` (0 to 1) of the work, in stage `name`.
fn stage(fraction: f64, name: &str) -> xenios_contract::Progress {
    xenios_contract::Progress {
        percent: Some(fraction * 100.0),
        stage: Some(name.to_owned()),
        message: None,
    }
}
