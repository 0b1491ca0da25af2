//! Transcription for `transcription` jobs (SPEC §3): audio in, a [`Transcript`] out —
//! `{"text","segments":[{"start","end","text","speaker"?}],"language","duration_s",
//! "provider","model"}`.
//!
//! [`Transcriber`] speaks to one provider, chosen from configuration:
//!
//! * **Deepgram** (`DEEPGRAM_API_KEY`, `DEEPGRAM_BASE_URL`, default
//!   `https://api.deepgram.com`): `POST {base}/v1/listen?model=…&smart_format=true&
//!   punctuate=true` with `language` or `detect_language=true`, and `diarize=true&
//!   utterances=true` when diarizing; the audio is the body, `Authorization: Token <key>`.
//!   Segments are the utterances when diarized (with their speaker), else the words grouped
//!   into sentences.
//! * **OpenAI-compatible** (`OPENAI_API_KEY`, `OPENAI_BASE_URL`, default
//!   `https://api.openai.com/v1`; the base includes `/v1`, as for the LLM client, so one
//!   setting serves both): `POST {base}/audio/transcriptions`, multipart `file`, `model`,
//!   `response_format=verbose_json`, `language`. Segments are the provider's; no speakers.
//!
//! Before anything is sent, the format is sniffed from the bytes ([`sniff_audio`]) and the
//! duration read from the headers ([`estimate_duration`]) is held to the limit.

mod audio;
mod deepgram;
mod error;
mod http;
mod openai;
mod transcriber;
mod transcript;

pub use audio::{estimate_duration, sniff_audio, AudioFormat};
pub use error::TranscribeError;
pub use tokio_util::sync::CancellationToken;
pub use transcriber::{TranscribeOptions, Transcriber};
pub use transcript::{Segment, Transcript};
