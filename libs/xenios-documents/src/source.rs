//! Where a job's bytes come from: an upload in the `FILES` object store (`file_id`) or a
//! download under the fetch policy (`url`).

use bytes::Bytes;
use xenios_config::Settings;
use xenios_fetch::{FetchError, FetchPolicy, Fetcher};
use xenios_runtime::{HandlerError, JobContext};

use crate::DocumentsError;

/// Object metadata key holding the upload's original file name.
pub const FILENAME_KEY: &str = "filename";
/// Object metadata key holding the uploader's user id.
pub const OWNER_KEY: &str = "user_id";

/// The bytes of a job's input, with a name that hints at their format (for docling-serve).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub bytes: Bytes,
    pub filename: String,
}

/// Reads a job's `file_id` or `url` within the configured limits.
#[derive(Clone)]
pub struct Loader {
    fetcher: Fetcher,
    max_file_bytes: u64,
}

impl Loader {
    pub fn new(settings: &Settings) -> Result<Loader, DocumentsError> {
        Ok(Loader {
            fetcher: Fetcher::new(FetchPolicy::from(&settings.fetch))?,
            max_file_bytes: settings.files.max_bytes,
        })
    }

    /// Exactly one of `file_id` and `url` is set (the input parsers see to it).
    pub async fn load(
        &self,
        job: &JobContext,
        file_id: Option<&str>,
        url: Option<&str>,
    ) -> Result<Loaded, HandlerError> {
        match (file_id, url) {
            (Some(id), _) => self.load_file(job, id).await,
            (None, Some(url)) => self.fetch(url).await,
            (None, None) => Err(HandlerError::permanent(
                "invalid_input",
                "give exactly one of `file_id` and `url`",
            )),
        }
    }

    async fn load_file(&self, job: &JobContext, file_id: &str) -> Result<Loaded, HandlerError> {
        let file = job.read_file(file_id, self.max_file_bytes).await?;
        let filename = file
            .info
            .metadata
            .get(FILENAME_KEY)
            .cloned()
            .unwrap_or_else(|| file_id.to_owned());
        Ok(Loaded {
            bytes: file.bytes,
            filename,
        })
    }

    async fn fetch(&self, url: &str) -> Result<Loaded, HandlerError> {
        let fetched = self.fetcher.fetch(url).await.map_err(fetch_failure)?;
        let filename = fetched
            .final_url
            .path_segments()
            .and_then(|mut segments| segments.next_back())
            .filter(|name| !name.is_empty())
            .unwrap_or("download")
            .to_owned();
        Ok(Loaded {
            bytes: fetched.bytes,
            filename,
        })
    }
}

fn fetch_failure(e: FetchError) -> HandlerError {
    if e.retryable() {
        HandlerError::transient(e.code(), e.to_string())
    } else {
        HandlerError::permanent(e.code(), e.to_string())
    }
}
