//! Uploads a job names by `file_id`, read by the consumer that runs it: every kind that takes
//! files reads them here, with the same limits and the same errors.
use std::time::Duration;

use async_nats::jetstream::object_store::{GetErrorKind, InfoErrorKind, ObjectInfo, ObjectStore};
use bytes::Bytes;
use tokio::io::AsyncReadExt;
use xenios_contract::subjects::FILES_BUCKET;

use crate::{HandlerError, JobContext};

/// How long a read may wait for the next part of a file. The store is the local broker: its
/// chunks arrive in milliseconds, so a wait this long means they are not coming.
const READ_STALL: Duration = Duration::from_secs(10);

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
        let mut limited = (&mut object).take(max_bytes + 1);
        loop {
            // A read waits for chunks for ever when they are gone while the metadata is not
            // (the TTL takes the older chunks first), and it would not hear a cancellation.
            let read = tokio::select! {
                _ = self.cancel.cancelled() => return Err(HandlerError::transient(
                    "cancelled",
                    format!("stopped while reading the file `{file_id}`"),
                )),
                read = tokio::time::timeout(READ_STALL, limited.read_buf(&mut bytes)) => read,
            };
            match read {
                Ok(Ok(0)) => break,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(unavailable(e)),
                Err(_) => return Err(self.stalled(file_id).await),
            }
        }
        if bytes.len() as u64 > max_bytes {
            return Err(too_large("more than that".into()));
        }
        Ok(StoredFile {
            bytes: bytes.into(),
            info,
        })
    }

    /// Why no part of a file arrived for a while: gone meanwhile (its TTL passed), or a store
    /// that does not answer.
    async fn stalled(&self, file_id: &str) -> HandlerError {
        match self.file_size(file_id).await {
            Err(gone) => gone,
            Ok(_) => HandlerError::transient(
                "unavailable",
                format!(
                    "object store: no part of the file `{file_id}` arrived within {} s",
                    READ_STALL.as_secs()
                ),
            ),
        }
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
