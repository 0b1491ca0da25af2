//! The shared language of the fleet: what a job is, which subjects and streams carry it, and
//! the envelopes on the wire. Everything that names a subject or a stream goes through here.

mod client;
pub mod envelope;
pub mod error;
pub mod images;
pub mod inputs;
pub mod job;
pub mod streams;
pub mod subjects;
pub mod tools;
pub mod worker;

pub use client::{connect, probe, FailoverPauses, NatsTls};
pub use envelope::{
    CancelRequest, DeadLetter, JobCommand, JobEvent, StatusChange, StoredResult, Token,
};
pub use error::ContractError;
pub use job::{
    first_job_id_at, new_job_id, JobError, JobId, JobKind, JobStatus, Progress, UnknownJobKind,
};
pub use streams::{ApplyReport, Drift, StreamSettings};
pub use worker::WorkerRecord;
