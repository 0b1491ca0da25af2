use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Job ids are UUIDv7: time-ordered, so "newest first" and cursors are plain id order.
pub type JobId = uuid::Uuid;

pub fn new_job_id() -> JobId {
    uuid::Uuid::now_v7()
}

/// The smallest id [`new_job_id`] can give at `at`: every job submitted before `at` has a
/// smaller id, so "submitted before" is a range of the primary key.
pub fn first_job_id_at(at: chrono::DateTime<chrono::Utc>) -> JobId {
    let millis = u64::try_from(at.timestamp_millis()).unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(millis, &[0; 10]).into_uuid()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    Transcription,
    Extraction,
    Llm,
    Echo,
}

impl JobKind {
    pub const ALL: [JobKind; 4] = [
        JobKind::Transcription,
        JobKind::Extraction,
        JobKind::Llm,
        JobKind::Echo,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Transcription => "transcription",
            JobKind::Extraction => "extraction",
            JobKind::Llm => "llm",
            JobKind::Echo => "echo",
        }
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown job kind `{0}` (expected one of transcription, extraction, llm, echo)")]
pub struct UnknownJobKind(pub String);

impl FromStr for JobKind {
    type Err = UnknownJobKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownJobKind(s.to_owned()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 5] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled
        )
    }

    /// The only transitions SPEC §3 allows: queued→running→(succeeded|failed|cancelled),
    /// running→queued (retry), queued→cancelled.
    pub fn can_become(self, next: JobStatus) -> bool {
        use JobStatus::*;
        matches!(
            (self, next),
            (Queued, Running)
                | (Queued, Cancelled)
                | (Running, Succeeded)
                | (Running, Failed)
                | (Running, Cancelled)
                | (Running, Queued)
        )
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobStatus::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown job status `{s}`"))
    }
}

/// A job's failure, as stored and as shown to clients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobError {
    pub code: String,
    pub message: String,
    pub retryable: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub percent: Option<f64>,
    pub stage: Option<String>,
    pub message: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_of_jobs_submitted_before_a_time_sort_below_its_first_id() {
        let before = new_job_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let at = chrono::Utc::now();
        let first = first_job_id_at(at);
        std::thread::sleep(std::time::Duration::from_millis(1));
        let after = new_job_id();
        assert!(before < first, "{before} < {first}");
        assert!(first < after, "{first} < {after}");
        assert_eq!(first.get_version_num(), 7);
        let (secs, _) = first.get_timestamp().unwrap().to_unix();
        assert_eq!(i64::try_from(secs).unwrap(), at.timestamp());
        // The order the databases keep: PostgreSQL's uuid bytes, SQLite's lowercase text.
        assert!(before.to_string() < first.to_string());
        assert!(first.to_string() < after.to_string());
    }

    #[test]
    fn transitions_follow_the_spec() {
        use JobStatus::*;
        assert!(Queued.can_become(Running));
        assert!(Running.can_become(Queued));
        assert!(!Succeeded.can_become(Running));
        assert!(!Queued.can_become(Succeeded));
        assert!(!Cancelled.can_become(Queued));
        for s in JobStatus::ALL {
            assert_eq!(s.as_str().parse::<JobStatus>().unwrap(), s);
        }
    }

    #[test]
    fn kinds_round_trip() {
        for k in JobKind::ALL {
            assert_eq!(k.as_str().parse::<JobKind>().unwrap(), k);
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{k}\""));
        }
        assert!("video".parse::<JobKind>().is_err());
    }
}
