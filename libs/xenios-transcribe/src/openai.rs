//! An OpenAI-compatible `POST /audio/transcriptions` (OpenAI itself, or a local whisper
//! server), asked for `verbose_json`.

use bytes::Bytes;
use reqwest::header::{HeaderValue, AUTHORIZATION};
use reqwest::multipart::{Form, Part};
use reqwest::{Body, Client};
use serde::Deserialize;

use crate::transcript::{single_segment, Heard, Segment};
use crate::{http, AudioFormat, TranscribeError, TranscribeOptions};

pub(crate) const NAME: &str = "openai";
/// Like the LLM client's, the base URL includes the API version.
pub(crate) const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
pub(crate) const DEFAULT_MODEL: &str = "whisper-1";

pub(crate) fn endpoint(base: &str) -> String {
    format!("{base}/audio/transcriptions")
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
    let length = audio.len() as u64;
    let file = Part::stream_with_length(Body::from(audio), length)
        .file_name(format!("audio.{}", format.extension()))
        .mime_str(format.mime_type())
        .map_err(|e| TranscribeError::Config(e.to_string()))?;
    let mut form = Form::new()
        .part("file", file)
        .text("model", model.to_owned())
        .text("response_format", "verbose_json");
    if let Some(language) = &opts.language {
        // Whisper takes ISO 639-1 codes only: `en`, not `en-US`.
        let primary = language.split('-').next().unwrap_or(language);
        form = form.text("language", primary.to_ascii_lowercase());
    }
    let mut request = http.post(url).multipart(form);
    if let Some(auth) = auth {
        request = request.header(AUTHORIZATION, auth);
    }
    let answer: VerboseJson = http::call(NAME, request).await?;
    Ok(normalise(answer, opts))
}

#[derive(Deserialize)]
struct VerboseJson {
    #[serde(default)]
    text: String,
    language: Option<String>,
    duration: Option<f64>,
    #[serde(default)]
    segments: Vec<VerboseSegment>,
}

#[derive(Deserialize)]
struct VerboseSegment {
    start: f64,
    end: f64,
    text: String,
}

fn normalise(answer: VerboseJson, opts: &TranscribeOptions) -> Heard {
    let segments: Vec<Segment> = if answer.segments.is_empty() {
        single_segment(&answer.text, answer.duration)
    } else {
        answer
            .segments
            .into_iter()
            .filter(|s| !s.text.trim().is_empty())
            .map(|s| Segment {
                start: s.start,
                end: s.end,
                text: s.text.trim().to_owned(),
                speaker: None,
            })
            .collect()
    };
    Heard {
        text: answer.text.trim().to_owned(),
        segments,
        language: opts
            .language
            .clone()
            .or_else(|| answer.language.as_deref().map(language_code)),
        duration_s: answer.duration,
    }
}

/// OpenAI names the detected language (`english`); local servers often give the code. Both
/// become the code, as Deepgram gives it.
fn language_code(language: &str) -> String {
    let language = language.trim().to_ascii_lowercase();
    WHISPER_LANGUAGES
        .iter()
        .find(|(_, name)| *name == language)
        .map_or(language, |(code, _)| (*code).to_owned())
}

/// Whisper's language table (code, name).
#[rustfmt::skip]
const WHISPER_LANGUAGES: &[(&str, &str)] = &[
    ("en", "english"), ("zh", "chinese"), ("de", "german"), ("es", "spanish"),
    ("ru", "russian"), ("ko", "korean"), ("fr", "french"), ("ja", "japanese"),
    ("pt", "portuguese"), ("tr", "turkish"), ("pl", "polish"), ("ca", "catalan"),
    ("nl", "dutch"), ("ar", "arabic"), ("sv", "swedish"), ("it", "italian"),
    ("id", "indonesian"), ("hi", "hindi"), ("fi", "finnish"), ("vi", "vietnamese"),
    ("he", "hebrew"), ("uk", "ukrainian"), ("el", "greek"), ("ms", "malay"),
    ("cs", "czech"), ("ro", "romanian"), ("da", "danish"), ("hu", "hungarian"),
    ("ta", "tamil"), ("no", "norwegian"), ("th", "thai"), ("ur", "urdu"),
    ("hr", "croatian"), ("bg", "bulgarian"), ("lt", "lithuanian"), ("la", "latin"),
    ("mi", "maori"), ("ml", "malayalam"), ("cy", "welsh"), ("sk", "slovak"),
    ("te", "telugu"), ("fa", "persian"), ("lv", "latvian"), ("bn", "bengali"),
    ("sr", "serbian"), ("az", "azerbaijani"), ("sl", "slovenian"), ("kn", "kannada"),
    ("et", "estonian"), ("mk", "macedonian"), ("br", "breton"), ("eu", "basque"),
    ("is", "icelandic"), ("hy", "armenian"), ("ne", "nepali"), ("mn", "mongolian"),
    ("bs", "bosnian"), ("kk", "kazakh"), ("sq", "albanian"), ("sw", "swahili"),
    ("gl", "galician"), ("mr", "marathi"), ("pa", "punjabi"), ("si", "sinhala"),
    ("km", "khmer"), ("sn", "shona"), ("yo", "yoruba"), ("so", "somali"),
    ("af", "afrikaans"), ("oc", "occitan"), ("ka", "georgian"), ("be", "belarusian"),
    ("tg", "tajik"), ("sd", "sindhi"), ("gu", "gujarati"), ("am", "amharic"),
    ("yi", "yiddish"), ("lo", "lao"), ("uz", "uzbek"), ("fo", "faroese"),
    ("ht", "haitian creole"), ("ps", "pashto"), ("tk", "turkmen"), ("nn", "nynorsk"),
    ("mt", "maltese"), ("sa", "sanskrit"), ("lb", "luxembourgish"), ("my", "myanmar"),
    ("bo", "tibetan"), ("tl", "tagalog"), ("mg", "malagasy"), ("as", "assamese"),
    ("tt", "tatar"), ("haw", "hawaiian"), ("ln", "lingala"), ("ha", "hausa"),
    ("ba", "bashkir"), ("jw", "javanese"), ("su", "sundanese"), ("yue", "cantonese"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_languages_by_code() {
        assert_eq!(language_code("english"), "en");
        assert_eq!(language_code("German"), "de");
        assert_eq!(language_code("en"), "en");
        assert_eq!(language_code("klingon"), "klingon");
    }
}
