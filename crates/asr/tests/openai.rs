//! The OpenAI-compatible client against a local double of that API.

use std::time::Duration;

use rop_asr::{AsrEngine, AsrError, OpenAiConfig, OpenAiEngine};
use rop_testkit::transcription::TranscriptionDouble;

fn engine(base: &str, key: Option<&str>, language: &str, timeout: Duration) -> OpenAiEngine {
    OpenAiEngine::new(OpenAiConfig {
        base_url: base.parse().unwrap(),
        api_key: key.map(str::to_owned),
        model: "whisper-large-v3".into(),
        language: language.into(),
        timeout,
    })
    .unwrap()
}

/// `seconds` of 16 kHz audio: silence with a tone of `hz` from `from` to `to`.
fn tone(seconds: f64, hz: f64, from: f64, to: f64) -> Vec<f32> {
    (0..(seconds * 16_000.0) as usize)
        .map(|i| {
            let t = i as f64 / 16_000.0;
            if (from..to).contains(&t) {
                ((2.0 * std::f64::consts::PI * hz * t).sin() * 0.3) as f32
            } else {
                0.0
            }
        })
        .collect()
}

#[tokio::test]
async fn segments_words_and_fields_round_trip() {
    let double = TranscriptionDouble::start(Some("sk-test")).await;
    let asr = engine(
        &double.base_url(),
        Some("sk-test"),
        "ru",
        Duration::from_secs(10),
    );
    let segments = asr.transcribe(tone(3.0, 440.0, 0.5, 1.5)).await.unwrap();
    assert_eq!(segments.len(), 1, "{segments:?}");
    let segment = &segments[0];
    assert_eq!(segment.text, "тон 440 герц");
    assert!(
        (segment.start - 0.5).abs() < 0.05 && (segment.end - 1.5).abs() < 0.05,
        "{segment:?}"
    );
    let words: Vec<&str> = segment.words.iter().map(|w| w.text.as_str()).collect();
    assert_eq!(words, ["тон", "440", "герц"]);

    let fields = double.last_fields();
    let field = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(field("model").as_deref(), Some("whisper-large-v3"));
    assert_eq!(field("language").as_deref(), Some("ru"));
    assert_eq!(field("response_format").as_deref(), Some("verbose_json"));
}

#[tokio::test]
async fn auto_language_is_left_to_the_server() {
    let double = TranscriptionDouble::start(None).await;
    let asr = engine(&double.base_url(), None, "auto", Duration::from_secs(10));
    asr.transcribe(tone(1.0, 300.0, 0.0, 1.0)).await.unwrap();
    assert!(double
        .last_fields()
        .iter()
        .all(|(name, _)| name != "language"));
}

#[tokio::test]
async fn silence_and_empty_input_give_no_segments() {
    let double = TranscriptionDouble::start(None).await;
    let asr = engine(&double.base_url(), None, "ru", Duration::from_secs(10));
    assert!(asr.transcribe(vec![0.0; 16_000]).await.unwrap().is_empty());
    assert!(asr.transcribe(Vec::new()).await.unwrap().is_empty());
    assert_eq!(double.requests(), 1, "nothing is sent for no audio");
}

#[tokio::test]
async fn busy_servers_are_worth_retrying_and_refusals_are_not() {
    let double = TranscriptionDouble::start(Some("sk-test")).await;
    let asr = engine(
        &double.base_url(),
        Some("sk-test"),
        "ru",
        Duration::from_secs(10),
    );
    let audio = || tone(1.0, 440.0, 0.0, 1.0);
    for status in [503, 500, 429] {
        double.fail_next(&[status]);
        let error = asr.transcribe(audio()).await.unwrap_err();
        assert!(
            matches!(error, AsrError::Unavailable(_)),
            "{status}: {error}"
        );
        assert!(error.to_string().contains("overloaded"), "{error}");
    }
    double.fail_next(&[400]);
    assert!(matches!(
        asr.transcribe(audio()).await.unwrap_err(),
        AsrError::Failed(_)
    ));

    let wrong_key = engine(
        &double.base_url(),
        Some("sk-wrong"),
        "ru",
        Duration::from_secs(10),
    );
    let error = wrong_key.transcribe(audio()).await.unwrap_err();
    assert!(matches!(error, AsrError::Failed(_)), "{error}");
    assert!(error.to_string().contains("Incorrect API key"), "{error}");
    assert!(
        !error.to_string().contains("sk-wrong"),
        "the key is never echoed"
    );

    assert!(asr.transcribe(audio()).await.is_ok(), "works again");
}

#[tokio::test]
async fn a_server_that_is_down_or_too_slow_is_unavailable() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let down = engine(
        &format!("http://{closed}/v1"),
        None,
        "ru",
        Duration::from_secs(5),
    );
    let error = down
        .transcribe(tone(1.0, 440.0, 0.0, 1.0))
        .await
        .unwrap_err();
    assert!(matches!(error, AsrError::Unavailable(_)), "{error}");

    let double = TranscriptionDouble::start(None).await;
    double.set_delay(Duration::from_secs(3));
    let slow = engine(&double.base_url(), None, "ru", Duration::from_millis(500));
    let error = slow
        .transcribe(tone(1.0, 440.0, 0.0, 1.0))
        .await
        .unwrap_err();
    assert!(matches!(error, AsrError::Unavailable(_)), "{error}");
}
