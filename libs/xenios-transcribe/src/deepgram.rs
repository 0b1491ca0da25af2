//! Deepgram's prerecorded API: `POST /v1/listen` with the audio as the body.

use bytes::Bytes;
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::Client;
use serde::Deserialize;

use crate::transcript::{group_words, single_segment, Heard, Segment, TimedWord};
use crate::{http, AudioFormat, TranscribeError, TranscribeOptions};

pub(crate) const NAME: &str = "deepgram";
pub(crate) const DEFAULT_BASE_URL: &str = "https://api.deepgram.com";
pub(crate) const DEFAULT_MODEL: &str = "nova-2";

/// `base` with or without its `/v1`.
pub(crate) fn endpoint(base: &str) -> String {
    match base.strip_suffix("/v1") {
        Some(root) => format!("{root}/v1/listen"),
        None => format!("{base}/v1/listen"),
    }
}

pub(crate) async fn transcribe(
    http: &Client,
    url: &str,
    auth: Option<&HeaderValue>,
    model: &str,
    audio: Bytes,
    format: AudioFormat,
    opts: &TranscribeOptions,
) -> Result<Heard, TranscribeError> {
    let mut query = vec![
        ("model", model),
        ("smart_format", "true"),
        ("punctuate", "true"),
    ];
    match &opts.language {
        Some(language) => query.push(("language", language)),
        None => query.push(("detect_language", "true")),
    }
    if opts.diarize {
        query.extend([("diarize", "true"), ("utterances", "true")]);
    }
    let mut request = http
        .post(url)
        .query(&query)
        .header(CONTENT_TYPE, format.mime_type())
        .body(audio);
    if let Some(auth) = auth {
        request = request.header(AUTHORIZATION, auth);
    }
    let answer: Answer = http::call(NAME, request).await?;
    Ok(normalise(answer, opts))
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    results: Results,
}

#[derive(Deserialize, Default)]
struct Metadata {
    duration: Option<f64>,
}

#[derive(Deserialize, Default)]
struct Results {
    #[serde(default)]
    channels: Vec<Channel>,
    #[serde(default)]
    utterances: Vec<Utterance>,
}

#[derive(Deserialize)]
struct Channel {
    #[serde(default)]
    alternatives: Vec<Alternative>,
    detected_language: Option<String>,
}

#[derive(Deserialize)]
struct Alternative {
    #[serde(default)]
    transcript: String,
    #[serde(default)]
    words: Vec<Word>,
}

#[derive(Deserialize)]
struct Word {
    word: String,
    start: f64,
    end: f64,
    speaker: Option<u32>,
    punctuated_word: Option<String>,
}

#[derive(Deserialize)]
struct Utterance {
    start: f64,
    end: f64,
    transcript: String,
    speaker: Option<u32>,
}

/// Segments are the utterances (speaker turns) when diarized, else the words grouped into
/// sentences; with neither, the transcript whole.
fn normalise(answer: Answer, opts: &TranscribeOptions) -> Heard {
    let channel = answer.results.channels.into_iter().next();
    let detected = channel.as_ref().and_then(|c| c.detected_language.clone());
    let alternative = channel.and_then(|c| c.alternatives.into_iter().next());
    let (text, words) = alternative.map_or_else(Default::default, |a| (a.transcript, a.words));
    let speaker = |s: Option<u32>| s.filter(|_| opts.diarize);
    let segments = if opts.diarize && !answer.results.utterances.is_empty() {
        answer
            .results
            .utterances
            .into_iter()
            .filter(|u| !u.transcript.trim().is_empty())
            .map(|u| Segment {
                start: u.start,
                end: u.end,
                text: u.transcript.trim().to_owned(),
                speaker: speaker(u.speaker),
            })
            .collect()
    } else if !words.is_empty() {
        group_words(words.iter().map(|w| TimedWord {
            text: w.punctuated_word.as_deref().unwrap_or(&w.word),
            start: w.start,
            end: w.end,
            speaker: speaker(w.speaker),
        }))
    } else {
        single_segment(&text, answer.metadata.duration)
    };
    Heard {
        text: text.trim().to_owned(),
        segments,
        language: opts.language.clone().or(detected),
        duration_s: answer.metadata.duration,
    }
}
