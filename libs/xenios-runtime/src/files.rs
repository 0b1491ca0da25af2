//! Uploads a job names by `file_id`, read by the consumer that runs it: every kind that takes
//! files reads them here, with the same limits and the same errors.
use async_nats::jetstream::object_store::{GetErrorKind, InfoErrorKind, ObjectInfo, ObjectStore};
use bytes::Bytes;
use tokio::io::AsyncReadExt;
use xenios_contract::subjects::FILES_BUCKET;

use crate::{HandlerError, JobContext};

/// An upload of the `FILES` object store, whole.
#[derive(Debug, Clone)]
pub struct StoredFile {
    pub bytes: Bytes,
    /// Its metadata holds the uploader, the sniffed content type and the file name.
    pub info: ObjectInfo,
}

impl JobContext {
    /// The size of the upload `file_id`, as its metadata says, without reading it.
    pub async fn file_size(&self, file_id: &str) -> Result<u64, HandlerError> {
        let info = self
            .files()
            .await?
            .info(file_id)
            .await
            .map_err(|e| match e.kind() {
                InfoErrorKind::NotFound | InfoErrorKind::InvalidName => not_found(file_id),
                _ => unavailable(e),
            })?;
        match info.deleted {
            true => Err(not_found(file_id)),
            false => Ok(info.size as u64),
        }
    }

    /// Reads the upload `file_id`, at most `max_bytes` of it. A file that is gone (its TTL
    /// passed) or too large fails permanently; a store that cannot be reached, transiently.
    pub async fn read_file(
        &self,
        file_id: &str,
        max_bytes: u64,
    ) -> Result<StoredFile, HandlerError> {
        let mut object = self
            .files()
            .await?
            .get(file_id)
            .await
            .map_err(|e| match e.kind() {
                GetErrorKind::NotFound | GetErrorKind::InvalidName => not_found(file_id),
                _ => unavailable(e),
            })?;
        let info = object.info().clone();
        let too_large = |size: String| {
            HandlerError::permanent(
                "too_large",
                format!("the file `{file_id}` is {size} bytes; the limit is {max_bytes}"),
            )
        };
        if info.size as u64 > max_bytes {
            return Err(too_large(info.size.to_string()));
        }
        let mut bytes = Vec::with_capacity(info.size);
        // `take` holds the read to the limit even if the metadata understated the size.
        (&mut object)
            .take(max_bytes + 1)
            .read_to_end(&mut bytes)
            .await
            .map_err(unavailable)?;
        if bytes.len() as u64 > max_bytes {
            return Err(too_large("more than that".into()));
        }
        Ok(StoredFile {
            bytes: bytes.into(),
            info,
        })
    }

    async fn files(&self) -> Result<ObjectStore, HandlerError> {
        self.jetstream()
            .get_object_store(FILES_BUCKET)
            .await
            .map_err(unavailable)
    }
}

fn not_found(file_id: &str) -> HandlerError {
    HandlerError::permanent(
        "file_not_found",
        format!("no file `{file_id}` (uploads expire after the files TTL)"),
    )
}

fn unavailable(e: impl std::fmt::Display) -> HandlerError {
    HandlerError::transient("unavailable", format!("object store: {e}"))
}
