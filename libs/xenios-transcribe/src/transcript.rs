use serde::{Deserialize, Serialize};

/// The result of a transcription job (SPEC §3 `transcription`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transcript {
    pub text: String,
    pub segments: Vec<Segment>,
    /// As asked, or as the provider detected it; `None` when neither says.
    pub language: Option<String>,
    pub duration_s: f64,
    /// `deepgram` or `openai`.
    pub provider: String,
    pub model: String,
}

/// A stretch of speech: an utterance, a sentence, or the provider's own segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    pub start: f64,
    pub end: f64,
    pub text: String,
    /// The provider's speaker number (0, 1, …), when the audio was diarized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speaker: Option<u32>,
}

/// What a provider heard, before the transcriber adds what it knows.
pub(crate) struct Heard {
    pub text: String,
    pub segments: Vec<Segment>,
    pub language: Option<String>,
    pub duration_s: Option<f64>,
}

/// A word with its timing, as providers give them.
pub(crate) struct TimedWord<'a> {
    pub text: &'a str,
    pub start: f64,
    pub end: f64,
    pub speaker: Option<u32>,
}

/// A silence this long between two words starts a new segment.
const PAUSE_S: f64 = 1.0;

/// Words grouped into segments: a new one at a sentence end, a change of speaker or a pause.
pub(crate) fn group_words<'a>(words: impl IntoIterator<Item = TimedWord<'a>>) -> Vec<Segment> {
    let mut segments: Vec<Segment> = Vec::new();
    for word in words {
        match segments.last_mut() {
            Some(seg)
                if !seg.text.ends_with(['.', '?', '!'])
                    && seg.speaker == word.speaker
                    && word.start - seg.end <= PAUSE_S =>
            {
                seg.text.push(' ');
                seg.text.push_str(word.text);
                seg.end = word.end;
            }
            _ => segments.push(Segment {
                start: word.start,
                end: word.end,
                text: word.text.to_owned(),
                speaker: word.speaker,
            }),
        }
    }
    segments
}

/// The whole text as one segment, for answers without timings.
pub(crate) fn single_segment(text: &str, duration_s: Option<f64>) -> Vec<Segment> {
    if text.trim().is_empty() {
        return Vec::new();
    }
    vec![Segment {
        start: 0.0,
        end: duration_s.unwrap_or(0.0),
        text: text.trim().to_owned(),
        speaker: None,
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(text: &str, start: f64, speaker: Option<u32>) -> TimedWord<'_> {
        TimedWord {
            text,
            start,
            end: start + 0.3,
            speaker,
        }
    }

    #[test]
    fn groups_words_at_sentences_speakers_and_pauses() {
        let segments = group_words([
            word("Hello", 0.0, Some(0)),
            word("there.", 0.4, Some(0)),
            word("How", 0.8, Some(0)),
            word("are", 1.2, Some(0)),
            word("you", 1.6, Some(1)),
            word("doing", 3.5, Some(1)),
            word("today?", 3.9, Some(1)),
        ]);
        let texts: Vec<_> = segments.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(texts, ["Hello there.", "How are", "you", "doing today?"]);
        assert_eq!(segments[0].start, 0.0);
        assert_eq!(segments[0].end, 0.7);
        assert_eq!(segments[2].speaker, Some(1));
    }
}
