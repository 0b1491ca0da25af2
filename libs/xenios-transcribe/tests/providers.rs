//! The transcriber against stand-ins for Deepgram and an OpenAI-compatible server, speaking
//! their real wire formats over real HTTP on 127.0.0.1.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Multipart, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::{json, Value};
use xenios_config::{ProviderSettings, ProvidersSettings, Secret};
use xenios_transcribe::{
    CancellationToken, Segment, TranscribeError, TranscribeOptions, Transcriber,
};

/// What the stub answers.
#[derive(Clone)]
enum Reply {
    Json {
        status: u16,
        headers: Vec<(&'static str, &'static str)>,
        body: Value,
    },
    Hang,
}

fn ok(body: Value) -> Reply {
    Reply::Json {
        status: 200,
        headers: Vec::new(),
        body,
    }
}

/// One request as the stub saw it.
#[derive(Debug, Default, Clone)]
struct Seen {
    path: &'static str,
    query: HashMap<String, String>,
    headers: HeaderMap,
    body_len: usize,
    fields: HashMap<String, String>,
    file: Option<(String, String, usize)>,
}

#[derive(Clone)]
struct Stub {
    reply: Reply,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Stub {
    async fn answer(&self, seen: Seen) -> Response {
        self.seen.lock().unwrap().push(seen);
        match self.reply.clone() {
            Reply::Json {
                status,
                headers,
                body,
            } => {
                let mut response =
                    (StatusCode::from_u16(status).unwrap(), Json(body)).into_response();
                for (name, value) in headers {
                    response.headers_mut().insert(name, value.parse().unwrap());
                }
                response
            }
            Reply::Hang => std::future::pending().await,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Starts a stub and returns it with its base URL.
async fn stub(reply: Reply) -> (Stub, String) {
    let stub = Stub {
        reply,
        seen: Arc::default(),
    };
    let app = Router::new()
        .route(
            "/v1/listen",
            post(
                |State(stub): State<Stub>,
                 Query(query): Query<HashMap<String, String>>,
                 headers: HeaderMap,
                 body: Bytes| async move {
                    let seen = Seen {
                        path: "/v1/listen",
                        query,
                        headers,
                        body_len: body.len(),
                        ..Seen::default()
                    };
                    stub.answer(seen).await
                },
            ),
        )
        .route(
            "/v1/audio/transcriptions",
            post(
                |State(stub): State<Stub>, headers: HeaderMap, mut form: Multipart| async move {
                    let mut seen = Seen {
                        path: "/v1/audio/transcriptions",
                        headers,
                        ..Seen::default()
                    };
                    while let Some(field) = form.next_field().await.unwrap() {
                        let name = field.name().unwrap_or_default().to_owned();
                        if name == "file" {
                            let file_name = field.file_name().unwrap_or_default().to_owned();
                            let content_type = field.content_type().unwrap_or_default().to_owned();
                            let len = field.bytes().await.unwrap().len();
                            seen.file = Some((file_name, content_type, len));
                        } else {
                            seen.fields.insert(name, field.text().await.unwrap());
                        }
                    }
                    stub.answer(seen).await
                },
            ),
        )
        .with_state(stub.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (stub, base)
}

fn provider(key: Option<&str>, base_url: Option<&str>) -> ProviderSettings {
    ProviderSettings {
        api_key: key.map(Secret::new),
        base_url: base_url.map(str::to_owned),
    }
}

fn deepgram(base: &str) -> Transcriber {
    Transcriber::new(&ProvidersSettings {
        deepgram: provider(Some("dg-key"), Some(base)),
        ..ProvidersSettings::default()
    })
    .unwrap()
}

fn openai(base: &str) -> Transcriber {
    Transcriber::new(&ProvidersSettings {
        openai: provider(Some("sk-test"), Some(&format!("{base}/v1"))),
        ..ProvidersSettings::default()
    })
    .unwrap()
}

/// A 16-bit mono PCM WAV file of `seconds` of silence.
fn wav(seconds: f64) -> Bytes {
    let rate = 8000u32;
    let data_len = (seconds * f64::from(rate)) as u32 * 2;
    let mut b = Vec::with_capacity(44 + data_len as usize);
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data_len).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes()); // PCM
    b.extend_from_slice(&1u16.to_le_bytes()); // mono
    b.extend_from_slice(&rate.to_le_bytes());
    b.extend_from_slice(&(rate * 2).to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data_len.to_le_bytes());
    b.resize(b.len() + data_len as usize, 0);
    b.into()
}

/// Ogg bytes whose duration the headers do not tell.
fn ogg_of_unknown_length() -> Bytes {
    let mut b = b"OggS\0\x02".to_vec();
    b.resize(2048, 0x55);
    b.into()
}

fn word(word: &str, punctuated: &str, start: f64, end: f64, speaker: u32) -> Value {
    json!({"word": word, "start": start, "end": end, "confidence": 0.98,
           "speaker": speaker, "speaker_confidence": 0.7, "punctuated_word": punctuated})
}

/// Deepgram's answer to a diarized request for a two-speaker exchange.
fn deepgram_diarized_answer() -> Value {
    let words = vec![
        word("hello", "Hello", 0.08, 0.4, 0),
        word("there", "there.", 0.4, 0.72, 0),
        word("how", "How", 0.8, 0.96, 0),
        word("are", "are", 0.96, 1.04, 0),
        word("you", "you?", 1.04, 1.2, 0),
        word("i'm", "I'm", 2.0, 2.3, 1),
        word("fine", "fine,", 2.3, 2.7, 1),
        word("thanks", "thanks.", 2.7, 3.1, 1),
    ];
    json!({
        "metadata": {
            "transaction_key": "deprecated",
            "request_id": "5b0a8cbc-2e8e-4b4e-9d3a-0c1e8f6f1a77",
            "sha256": "3d8d1b0c8e5f4e7a9c3e2f1d0b9a8c7e6f5d4c3b2a1908f7e6d5c4b3a2918070",
            "created": "2024-05-01T10:00:00.000Z",
            "duration": 3.4,
            "channels": 1,
            "models": ["c0d1a568-ce81-4fea-97e7-bd45cb1fdf3c"],
            "model_info": {"c0d1a568-ce81-4fea-97e7-bd45cb1fdf3c":
                {"name": "2-general-nova", "version": "2024-01-09.29447", "arch": "nova-2"}}
        },
        "results": {
            "channels": [{
                "alternatives": [{
                    "transcript": "Hello there. How are you? I'm fine, thanks.",
                    "confidence": 0.99,
                    "words": words
                }],
                "detected_language": "en",
                "language_confidence": 0.98
            }],
            "utterances": [
                {"start": 0.08, "end": 1.2, "confidence": 0.97, "channel": 0,
                 "transcript": "Hello there. How are you?", "words": words[..5],
                 "speaker": 0, "id": "0f4c2f2e-3b8a-4d49-8d0b-1a2b3c4d5e6f"},
                {"start": 2.0, "end": 3.1, "confidence": 0.95, "channel": 0,
                 "transcript": "I'm fine, thanks.", "words": words[5..],
                 "speaker": 1, "id": "9a8b7c6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d"}
            ]
        }
    })
}

#[tokio::test]
async fn deepgram_diarized_segments_are_utterances_with_speakers() {
    let (stub, base) = stub(ok(deepgram_diarized_answer())).await;
    let audio = wav(3.4);
    let opts = TranscribeOptions {
        diarize: true,
        max_duration_s: Some(60.0),
        ..TranscribeOptions::default()
    };
    let transcript = deepgram(&base)
        .transcribe(audio.clone(), opts, CancellationToken::new())
        .await
        .unwrap();

    assert_eq!(
        serde_json::to_value(&transcript).unwrap(),
        json!({
            "text": "Hello there. How are you? I'm fine, thanks.",
            "segments": [
                {"start": 0.08, "end": 1.2, "text": "Hello there. How are you?", "speaker": 0},
                {"start": 2.0, "end": 3.1, "text": "I'm fine, thanks.", "speaker": 1}
            ],
            "language": "en",
            "duration_s": 3.4,
            "provider": "deepgram",
            "model": "nova-2"
        })
    );

    let seen = stub.seen();
    assert_eq!(seen.len(), 1);
    let request = &seen[0];
    assert_eq!(request.path, "/v1/listen");
    assert_eq!(request.headers["authorization"], "Token dg-key");
    assert_eq!(request.headers["content-type"], "audio/wav");
    assert_eq!(request.body_len, audio.len());
    for (key, value) in [
        ("model", "nova-2"),
        ("smart_format", "true"),
        ("punctuate", "true"),
        ("diarize", "true"),
        ("utterances", "true"),
        ("detect_language", "true"),
    ] {
        assert_eq!(
            request.query.get(key).map(String::as_str),
            Some(value),
            "{key}"
        );
    }
    assert!(!request.query.contains_key("language"));
}

#[tokio::test]
async fn deepgram_words_become_sentences_without_diarization() {
    let mut answer = deepgram_diarized_answer();
    let results = answer["results"].as_object_mut().unwrap();
    results.remove("utterances");
    for word in results["channels"][0]["alternatives"][0]["words"]
        .as_array_mut()
        .unwrap()
    {
        word.as_object_mut().unwrap().remove("speaker");
    }
    results["channels"][0]
        .as_object_mut()
        .unwrap()
        .remove("detected_language");
    let (stub, base) = stub(ok(answer)).await;
    let opts = TranscribeOptions {
        language: Some("en-US".into()),
        ..TranscribeOptions::default()
    };
    let transcript = deepgram(&format!("{base}/v1/"))
        .with_model("nova-3")
        .transcribe(wav(3.4), opts, CancellationToken::new())
        .await
        .unwrap();

    let texts: Vec<_> = transcript
        .segments
        .iter()
        .map(|s| s.text.as_str())
        .collect();
    assert_eq!(texts, ["Hello there.", "How are you?", "I'm fine, thanks."]);
    assert_eq!(
        transcript.segments[2],
        Segment {
            start: 2.0,
            end: 3.1,
            text: "I'm fine, thanks.".into(),
            speaker: None
        }
    );
    assert!(serde_json::to_value(&transcript).unwrap()["segments"][0]
        .get("speaker")
        .is_none());
    assert_eq!(transcript.language.as_deref(), Some("en-US"));
    assert_eq!(transcript.model, "nova-3");

    let request = &stub.seen()[0];
    assert_eq!(request.query["model"], "nova-3");
    assert_eq!(request.query["language"], "en-US");
    assert!(!request.query.contains_key("diarize"));
    assert!(!request.query.contains_key("detect_language"));
}

fn verbose_json() -> Value {
    json!({
        "task": "transcribe",
        "language": "english",
        "duration": 5.0,
        "text": " The quick brown fox jumped. Over the lazy dog.",
        "segments": [
            {"id": 0, "seek": 0, "start": 0.0, "end": 2.6, "text": " The quick brown fox jumped.",
             "tokens": [50364, 440, 1702, 3699, 21283, 13, 50494], "temperature": 0.0,
             "avg_logprob": -0.21, "compression_ratio": 1.05, "no_speech_prob": 0.01},
            {"id": 1, "seek": 0, "start": 2.6, "end": 4.9, "text": " Over the lazy dog.",
             "tokens": [50494, 4886, 264, 14847, 3000, 13, 50609], "temperature": 0.0,
             "avg_logprob": -0.25, "compression_ratio": 1.05, "no_speech_prob": 0.02}
        ]
    })
}

#[tokio::test]
async fn openai_verbose_json_is_normalised() {
    let (stub, base) = stub(ok(verbose_json())).await;
    let audio = wav(5.0);
    let transcriber = openai(&base);
    assert_eq!(transcriber.provider(), "openai");
    let transcript = transcriber
        .transcribe(
            audio.clone(),
            TranscribeOptions::default(),
            CancellationToken::new(),
        )
        .await
        .unwrap();

    assert_eq!(
        serde_json::to_value(&transcript).unwrap(),
        json!({
            "text": "The quick brown fox jumped. Over the lazy dog.",
            "segments": [
                {"start": 0.0, "end": 2.6, "text": "The quick brown fox jumped."},
                {"start": 2.6, "end": 4.9, "text": "Over the lazy dog."}
            ],
            "language": "en",
            "duration_s": 5.0,
            "provider": "openai",
            "model": "whisper-1"
        })
    );

    let request = &stub.seen()[0];
    assert_eq!(request.path, "/v1/audio/transcriptions");
    assert_eq!(request.headers["authorization"], "Bearer sk-test");
    assert_eq!(request.fields["model"], "whisper-1");
    assert_eq!(request.fields["response_format"], "verbose_json");
    assert!(!request.fields.contains_key("language"));
    assert_eq!(
        request.file,
        Some(("audio.wav".into(), "audio/wav".into(), audio.len()))
    );
}

#[tokio::test]
async fn openai_gets_the_primary_language_subtag() {
    let (stub, base) = stub(ok(verbose_json())).await;
    let opts = TranscribeOptions {
        language: Some("de-AT".into()),
        ..TranscribeOptions::default()
    };
    let transcript = openai(&base)
        .transcribe(wav(1.0), opts, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(stub.seen()[0].fields["language"], "de");
    assert_eq!(transcript.language.as_deref(), Some("de-AT"));
}

#[tokio::test]
async fn server_errors_are_transient_and_client_errors_permanent() {
    let cases = [
        (503, vec![], true, None),
        (
            429,
            vec![("retry-after", "12")],
            true,
            Some(Duration::from_secs(12)),
        ),
        (400, vec![], false, None),
        (401, vec![], false, None),
    ];
    for (status, headers, retryable, retry_after) in cases {
        let body = json!({"err_code": "Bad Request",
                          "err_msg": "Bad Request: failed to process audio: corrupt or unsupported data",
                          "request_id": "d5a0c8e2-1f7b-4c59-9a8e-0b6f3e2d1c4a"});
        let (_stub, base) = stub(Reply::Json {
            status,
            headers,
            body,
        })
        .await;
        let err = deepgram(&base)
            .transcribe(
                wav(1.0),
                TranscribeOptions::default(),
                CancellationToken::new(),
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), "provider_error", "{status}");
        assert_eq!(err.retryable(), retryable, "{status}");
        assert_eq!(err.retry_after(), retry_after, "{status}");
        assert!(matches!(err, TranscribeError::Provider { status: Some(s), .. } if s == status));
        assert!(
            err.to_string().contains("corrupt or unsupported data"),
            "{err}"
        );
    }

    let (_stub, base) = stub(Reply::Json {
        status: 500,
        headers: vec![],
        body: json!({"error": {"message": "model overloaded", "type": "server_error"}}),
    })
    .await;
    let err = openai(&base)
        .transcribe(
            wav(1.0),
            TranscribeOptions::default(),
            CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert!(err.retryable());
    assert!(err.to_string().contains("model overloaded"), "{err}");
}

#[tokio::test]
async fn refuses_unsupported_audio_without_calling_the_provider() {
    let (stub, base) = stub(ok(deepgram_diarized_answer())).await;
    for bytes in [
        &b"%PDF-1.7 not audio"[..],
        b"just some text",
        b"PK\x03\x04zip",
    ] {
        let err = deepgram(&base)
            .transcribe(
                Bytes::copy_from_slice(bytes),
                TranscribeOptions::default(),
                CancellationToken::new(),
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), "unsupported_format");
        assert!(!err.retryable());
    }
    let err = deepgram(&base)
        .transcribe(
            Bytes::new(),
            TranscribeOptions::default(),
            CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), "invalid_input");
    assert!(stub.seen().is_empty());
}

#[tokio::test]
async fn refuses_audio_longer_than_the_limit_before_sending() {
    let (stub, base) = stub(ok(deepgram_diarized_answer())).await;
    let limit = |s| TranscribeOptions {
        max_duration_s: Some(s),
        ..TranscribeOptions::default()
    };
    let err = deepgram(&base)
        .transcribe(wav(3.0), limit(2.0), CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        matches!(err, TranscribeError::TooLong { duration_s, limit_s: 2.0 } if (duration_s - 3.0).abs() < 1e-9),
        "{err}"
    );
    assert_eq!(err.code(), "too_long");
    assert!(!err.retryable());

    // Unknown duration: a file too large for any audio of the allowed length.
    let err = deepgram(&base)
        .transcribe(
            ogg_of_unknown_length(),
            limit(0.001),
            CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, TranscribeError::TooLarge { .. }), "{err}");
    assert_eq!(err.code(), "too_long");
    assert!(stub.seen().is_empty());

    deepgram(&base)
        .transcribe(wav(1.5), limit(2.0), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(stub.seen().len(), 1);
}

#[tokio::test]
async fn unknown_durations_are_held_to_the_providers_figure() {
    let mut answer = verbose_json();
    answer["duration"] = json!(100.0);
    let (stub, base) = stub(ok(answer)).await;
    let opts = TranscribeOptions {
        max_duration_s: Some(60.0),
        ..TranscribeOptions::default()
    };
    let err = openai(&base)
        .transcribe(ogg_of_unknown_length(), opts, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            TranscribeError::TooLong {
                duration_s: 100.0,
                limit_s: 60.0
            }
        ),
        "{err}"
    );
    let request = &stub.seen()[0];
    assert_eq!(
        request.file.as_ref().map(|f| (f.0.as_str(), f.1.as_str())),
        Some(("audio.ogg", "audio/ogg"))
    );
}

#[tokio::test]
async fn cancellation_and_timeouts_end_a_hanging_call() {
    let (stub, base) = stub(Reply::Hang).await;
    let cancel = CancellationToken::new();
    let started = Instant::now();
    let call = tokio::spawn({
        let cancel = cancel.clone();
        let transcriber = deepgram(&base);
        async move {
            transcriber
                .transcribe(wav(1.0), TranscribeOptions::default(), cancel)
                .await
        }
    });
    // Cancel once the provider holds the request, so the call is surely in flight.
    let deadline = Instant::now() + Duration::from_secs(5);
    while stub.seen().is_empty() {
        assert!(Instant::now() < deadline, "the request never arrived");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cancel.cancel();
    let err = call.await.unwrap().unwrap_err();
    assert!(matches!(err, TranscribeError::Cancelled), "{err}");
    assert!(!err.retryable());
    assert!(started.elapsed() < Duration::from_secs(5));

    let err = deepgram(&base)
        .with_timeout(Duration::from_millis(200))
        .transcribe(
            wav(1.0),
            TranscribeOptions::default(),
            CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), "timeout");
    assert!(err.retryable());
}

#[tokio::test]
async fn refuses_bad_options() {
    let (stub, base) = stub(ok(deepgram_diarized_answer())).await;
    for opts in [
        TranscribeOptions {
            language: Some("en&diarize=false".into()),
            ..TranscribeOptions::default()
        },
        TranscribeOptions {
            max_duration_s: Some(-1.0),
            ..TranscribeOptions::default()
        },
    ] {
        let err = deepgram(&base)
            .transcribe(wav(1.0), opts, CancellationToken::new())
            .await
            .unwrap_err();
        assert_eq!(err.code(), "invalid_input", "{err}");
    }
    assert!(stub.seen().is_empty());
}

#[test]
fn chooses_the_provider_from_configuration() {
    let both = ProvidersSettings {
        deepgram: provider(Some("dg"), None),
        openai: provider(Some("sk"), None),
        ..ProvidersSettings::default()
    };
    assert_eq!(Transcriber::new(&both).unwrap().provider(), "deepgram");
    assert_eq!(Transcriber::new(&both).unwrap().model(), "nova-2");

    let local_whisper = ProvidersSettings {
        openai: provider(None, Some("http://whisper:8000/v1")),
        ..ProvidersSettings::default()
    };
    let transcriber = Transcriber::new(&local_whisper).unwrap();
    assert_eq!(transcriber.provider(), "openai");
    assert_eq!(transcriber.model(), "whisper-1");

    let err = Transcriber::new(&ProvidersSettings::default()).unwrap_err();
    assert_eq!(err.code(), "internal");
    assert!(err.to_string().contains("DEEPGRAM_API_KEY"));

    let bad = ProvidersSettings {
        deepgram: provider(None, Some("ftp://x")),
        ..ProvidersSettings::default()
    };
    assert!(Transcriber::new(&bad).is_err());
}
