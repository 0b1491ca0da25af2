use std::time::Duration;

use bytes::Bytes;
use reqwest::header::HeaderValue;
use reqwest::Client;
use tokio_util::sync::CancellationToken;
use xenios_config::{ProviderSettings, ProvidersSettings};

use crate::{deepgram, estimate_duration, openai, sniff_audio, TranscribeError, Transcript};

/// A rate no real audio upload reaches (8 Mbit/s, video included): when the headers do not
/// tell the duration, a file larger than the limit's worth of it cannot be within the limit.
const MAX_BYTES_PER_SECOND: f64 = 1_000_000.0;

/// What to ask of one transcription.
#[derive(Debug, Clone, Default)]
pub struct TranscribeOptions {
    /// A BCP-47 code (`en`, `en-US`); detected when `None`.
    pub language: Option<String>,
    /// Tell speakers apart (Deepgram only; OpenAI-compatible endpoints ignore it).
    pub diarize: bool,
    /// Longer audio fails with `too_long`, before sending when the headers tell the
    /// duration, else after the provider reports it.
    pub max_duration_s: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    Deepgram,
    OpenAi,
}

/// Sends audio to the configured provider and normalises its answer to a [`Transcript`].
///
/// One attempt per call: retries, and waiting out a `Retry-After`, are the job runtime's.
#[derive(Clone)]
pub struct Transcriber {
    http: Client,
    wire: Wire,
    url: String,
    auth: Option<HeaderValue>,
    model: String,
    timeout: Duration,
}

impl std::fmt::Debug for Transcriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transcriber")
            .field("provider", &self.provider())
            .field("url", &self.url)
            .field("model", &self.model)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Transcriber {
    /// Deepgram when a Deepgram key or base URL is configured, else the OpenAI-compatible
    /// endpoint when an OpenAI key or base URL is; an error when neither is. The model is
    /// `nova-2` or `whisper-1` unless [`Transcriber::with_model`] says otherwise; calls time
    /// out after 5 minutes unless [`Transcriber::with_timeout`] says otherwise.
    pub fn new(settings: &ProvidersSettings) -> Result<Transcriber, TranscribeError> {
        let (wire, provider, default_base) = if configured(&settings.deepgram) {
            (
                Wire::Deepgram,
                &settings.deepgram,
                deepgram::DEFAULT_BASE_URL,
            )
        } else if configured(&settings.openai) {
            (Wire::OpenAi, &settings.openai, openai::DEFAULT_BASE_URL)
        } else {
            return Err(TranscribeError::Config(
                "no transcription provider: set DEEPGRAM_API_KEY or DEEPGRAM_BASE_URL, \
                 or OPENAI_API_KEY or OPENAI_BASE_URL"
                    .into(),
            ));
        };
        let name = match wire {
            Wire::Deepgram => deepgram::NAME,
            Wire::OpenAi => openai::NAME,
        };
        let base = provider
            .base_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .unwrap_or(default_base)
            .trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(TranscribeError::Config(format!(
                "providers.{name}.base_url must be an http(s) URL"
            )));
        }
        let auth = match key(provider) {
            None => None,
            Some(key) => {
                let scheme = match wire {
                    Wire::Deepgram => "Token",
                    Wire::OpenAi => "Bearer",
                };
                let mut value =
                    HeaderValue::from_str(&format!("{scheme} {key}")).map_err(|_| {
                        TranscribeError::Config(format!(
                            "providers.{name}.api_key is not a valid header value"
                        ))
                    })?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        let (url, model) = match wire {
            Wire::Deepgram => (deepgram::endpoint(base), deepgram::DEFAULT_MODEL),
            Wire::OpenAi => (openai::endpoint(base), openai::DEFAULT_MODEL),
        };
        let http = Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| TranscribeError::Config(e.to_string()))?;
        Ok(Transcriber {
            http,
            wire,
            url,
            auth,
            model: model.into(),
            timeout: Duration::from_secs(300),
        })
    }

    pub fn with_model(mut self, model: impl Into<String>) -> Self {
        self.model = model.into();
        self
    }

    /// The longest one call may take, upload included.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// `deepgram` or `openai`.
    pub fn provider(&self) -> &'static str {
        match self.wire {
            Wire::Deepgram => deepgram::NAME,
            Wire::OpenAi => openai::NAME,
        }
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    /// Transcribes `audio`. The format is sniffed from the bytes and the duration checked
    /// against `opts.max_duration_s` before anything is sent. Cancelling `cancel` stops the
    /// call (the connection is closed) and answers [`TranscribeError::Cancelled`].
    pub async fn transcribe(
        &self,
        audio: Bytes,
        opts: TranscribeOptions,
        cancel: CancellationToken,
    ) -> Result<Transcript, TranscribeError> {
        if audio.is_empty() {
            return Err(TranscribeError::InvalidInput("the audio is empty".into()));
        }
        if let Some(language) = &opts.language {
            check_language(language)?;
        }
        if let Some(limit) = opts.max_duration_s {
            if !(limit.is_finite() && limit > 0.0) {
                return Err(TranscribeError::InvalidInput(
                    "max_duration_s must be a positive number".into(),
                ));
            }
        }
        let format = sniff_audio(&audio).ok_or_else(|| {
            TranscribeError::UnsupportedFormat(
                "not WAV, MP3, FLAC, Ogg, WebM/Matroska or MP4/M4A audio".into(),
            )
        })?;
        let estimated = estimate_duration(&audio, format);
        if let Some(limit_s) = opts.max_duration_s {
            match estimated {
                Some(duration_s) if duration_s > limit_s => {
                    return Err(TranscribeError::TooLong {
                        duration_s,
                        limit_s,
                    })
                }
                None if audio.len() as f64 > limit_s * MAX_BYTES_PER_SECOND => {
                    return Err(TranscribeError::TooLarge {
                        bytes: audio.len(),
                        limit_s,
                    })
                }
                _ => {}
            }
        }

        let (http, url, auth, model) = (&self.http, &self.url, self.auth.as_ref(), &self.model);
        let call = async {
            match self.wire {
                Wire::Deepgram => {
                    deepgram::transcribe(http, url, auth, model, audio, format, &opts).await
                }
                Wire::OpenAi => {
                    openai::transcribe(http, url, auth, model, audio, format, &opts).await
                }
            }
        };
        let heard = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(TranscribeError::Cancelled),
            result = tokio::time::timeout(self.timeout, call) => result.map_err(|_| {
                TranscribeError::Timeout { provider: self.provider(), after: self.timeout }
            })??,
        };

        let duration_s = heard
            .duration_s
            .or(estimated)
            .or_else(|| heard.segments.last().map(|s| s.end))
            .unwrap_or(0.0);
        if let (None, Some(limit_s)) = (estimated, opts.max_duration_s) {
            if duration_s > limit_s {
                return Err(TranscribeError::TooLong {
                    duration_s,
                    limit_s,
                });
            }
        }
        Ok(Transcript {
            text: heard.text,
            segments: heard.segments,
            language: heard.language,
            duration_s,
            provider: self.provider().into(),
            model: self.model.clone(),
        })
    }
}

fn key(settings: &ProviderSettings) -> Option<&str> {
    settings
        .api_key
        .as_ref()
        .map(|k| k.expose().trim())
        .filter(|k| !k.is_empty())
}

fn configured(settings: &ProviderSettings) -> bool {
    key(settings).is_some()
        || settings
            .base_url
            .as_deref()
            .is_some_and(|u| !u.trim().is_empty())
}

/// The rule the submission checks too, so no job accepted there fails here.
fn check_language(language: &str) -> Result<(), TranscribeError> {
    if xenios_contract::inputs::is_language_code(language) {
        Ok(())
    } else {
        Err(TranscribeError::InvalidInput(format!(
            "`{language}` is not a language code"
        )))
    }
}
