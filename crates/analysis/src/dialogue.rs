//! The transcript as the analysis reads it: numbered lines of normalised,
//! stemmed words that still remember their exact text and time.

use std::sync::LazyLock;

use rop_domain::transcript::{SpeakerRole, Transcript};
use rust_stemmers::{Algorithm, Stemmer};

static RUSSIAN: LazyLock<Stemmer> = LazyLock::new(|| Stemmer::create(Algorithm::Russian));

/// Lower case, `ё` → `е`, letters and digits only: how words compare.
pub fn normalize_word(word: &str) -> String {
    word.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .map(|c| if c == 'ё' { 'е' } else { c })
        .collect()
}

/// The Snowball Russian stem of a normalised word (other scripts and
/// digits pass unchanged).
pub fn stem(normalized: &str) -> String {
    RUSSIAN.stem(normalized).into_owned()
}

/// Normalised words of free text (a phrase, a quote), empty ones dropped.
pub fn normalized_words(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(normalize_word)
        .filter(|w| !w.is_empty())
        .collect()
}

/// One word of a line.
#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub norm: String,
    pub stem: String,
    pub start: f64,
    pub end: f64,
    /// The word as the transcript has it (word timings), or its byte range
    /// in the line's text (no word timings).
    raw: Raw,
}

#[derive(Debug, Clone)]
enum Raw {
    Word(String),
    Span(usize, usize),
}

/// One segment of the transcript.
#[derive(Debug, Clone)]
pub(crate) struct Line {
    /// 1-based, as the prompt shows it.
    pub number: usize,
    pub role: SpeakerRole,
    pub start: f64,
    pub text: String,
    pub tokens: Vec<Token>,
}

impl Line {
    /// The transcript's own text of tokens `from..=to`.
    pub fn exact_text(&self, from: usize, to: usize) -> String {
        match (&self.tokens[from].raw, &self.tokens[to].raw) {
            (Raw::Span(start, _), Raw::Span(_, end)) => self.text[*start..*end].to_string(),
            _ => self.tokens[from..=to]
                .iter()
                .map(|t| match &t.raw {
                    Raw::Word(w) => w.as_str(),
                    Raw::Span(s, e) => &self.text[*s..*e],
                })
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

/// Words of the transcript found for a phrase or a quote.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    /// Exactly as the transcript has them.
    pub text: String,
    pub start: f64,
    pub end: f64,
    /// The line's number in the prompt.
    pub line: usize,
}

impl Found {
    pub(crate) fn new(line: &Line, from: usize, to: usize) -> Self {
        let text = line.exact_text(from, to);
        Self {
            text: text
                .trim_matches(|c: char| {
                    matches!(c, ',' | ';' | ':' | '-' | '—' | '–') || c.is_whitespace()
                })
                .to_string(),
            start: line.tokens[from].start,
            end: line.tokens[to].end,
            line: line.number,
        }
    }
}

/// Whose lines a phrase or quote must come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaker {
    /// The manager; every line when the call is mono (roles unknown).
    Manager,
    Anyone,
}

#[derive(Debug, Clone)]
pub(crate) struct Dialogue {
    pub lines: Vec<Line>,
    /// No line has a known role: speakers are not separated.
    pub mono: bool,
}

impl Dialogue {
    pub fn new(transcript: &Transcript) -> Self {
        let lines: Vec<Line> = transcript
            .segments
            .iter()
            .enumerate()
            .map(|(i, segment)| {
                let tokens = if segment.words.is_empty() {
                    text_tokens(&segment.text, segment.start, segment.end)
                } else {
                    segment
                        .words
                        .iter()
                        .filter_map(|w| {
                            let raw = w.text.trim();
                            token(raw, w.start, w.end, Raw::Word(raw.to_string()))
                        })
                        .collect()
                };
                Line {
                    number: i + 1,
                    role: segment.role,
                    start: segment.start,
                    text: segment.text.trim().to_string(),
                    tokens,
                }
            })
            .collect();
        let mono = lines.iter().all(|l| l.role == SpeakerRole::Unknown);
        Self { lines, mono }
    }

    pub fn admits(&self, line: &Line, speaker: Speaker) -> bool {
        match speaker {
            Speaker::Anyone => true,
            Speaker::Manager => self.mono || line.role == SpeakerRole::Manager,
        }
    }

    pub fn lines_of(&self, speaker: Speaker) -> impl Iterator<Item = &Line> {
        self.lines.iter().filter(move |l| self.admits(l, speaker))
    }

    /// The prompt's context: one numbered line per segment,
    /// `[12] Менеджер (00:05): текст`. Only the transcript, so every
    /// question about one call starts with the same text.
    pub fn render(&self) -> String {
        let mut out = String::from(
            "Расшифровка звонка. Каждая строка: [номер] говорящий (минуты:секунды): текст.\n",
        );
        if self.mono {
            out.push_str("Запись моно: говорящие не разделены.\n");
        }
        for line in &self.lines {
            out.push_str(&format!(
                "[{}] {} ({}): {}\n",
                line.number,
                line.role.title(),
                clock(line.start),
                line.text
            ));
        }
        out
    }
}

fn clock(secs: f64) -> String {
    let total = secs.max(0.0) as u64;
    let (h, m, s) = (total / 3600, total / 60 % 60, total % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m:02}:{s:02}")
    }
}

fn token(raw: &str, start: f64, end: f64, keep: Raw) -> Option<Token> {
    let norm = normalize_word(raw);
    if norm.is_empty() {
        return None;
    }
    Some(Token {
        stem: stem(&norm),
        norm,
        start,
        end,
        raw: keep,
    })
}

/// Words of a segment without word timings: each takes the segment's time.
fn text_tokens(text: &str, start: f64, end: f64) -> Vec<Token> {
    let text = text.trim();
    let mut tokens = Vec::new();
    let mut word_start = None;
    for (i, c) in text
        .char_indices()
        .chain(std::iter::once((text.len(), ' ')))
    {
        match (c.is_whitespace(), word_start) {
            (true, Some(s)) => {
                tokens.extend(token(&text[s..i], start, end, Raw::Span(s, i)));
                word_start = None;
            }
            (false, None) => word_start = Some(i),
            _ => {}
        }
    }
    tokens
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use chrono::Utc;
    use rop_domain::transcript::{ConversationMetrics, Segment, Word};

    /// A transcript from `(role, start, text)`; words get timings one
    /// second apart when `timed`.
    pub fn transcript(lines: &[(SpeakerRole, f64, &str)], timed: bool) -> Transcript {
        let segments = lines
            .iter()
            .map(|(role, start, text)| {
                let words: Vec<Word> = if timed {
                    text.split_whitespace()
                        .enumerate()
                        .map(|(i, w)| Word {
                            start: start + i as f64,
                            end: start + i as f64 + 0.8,
                            text: format!(" {w}"),
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                let n = text.split_whitespace().count() as f64;
                Segment {
                    role: *role,
                    channel: u8::from(*role == SpeakerRole::Client),
                    start: *start,
                    end: start + n,
                    text: format!(" {text}"),
                    words,
                }
            })
            .collect();
        Transcript {
            engine: "test".into(),
            model: "test".into(),
            language: "ru".into(),
            segments,
            metrics: ConversationMetrics::default(),
            real_time_factor: 0.1,
            created_at: Utc::now(),
        }
    }

    #[test]
    fn words_normalise_case_yo_and_punctuation() {
        assert_eq!(normalize_word("Ещё,"), "еще");
        assert_eq!(normalize_word("«Окна»!"), "окна");
        assert_eq!(
            normalized_words("Добрый  день — как-то"),
            ["добрый", "день", "както"]
        );
        assert_eq!(stem("здравствуйте"), stem("здравствуй"));
    }

    #[test]
    fn context_numbers_lines_with_speaker_and_time() {
        let t = transcript(
            &[
                (SpeakerRole::Manager, 5.0, "Добрый день!"),
                (SpeakerRole::Client, 65.0, "Здравствуйте."),
            ],
            false,
        );
        let d = Dialogue::new(&t);
        assert!(!d.mono);
        let text = d.render();
        assert!(text.contains("[1] Менеджер (00:05): Добрый день!\n"));
        assert!(text.contains("[2] Клиент (01:05): Здравствуйте.\n"));
    }

    #[test]
    fn exact_text_keeps_the_transcripts_punctuation() {
        let t = transcript(
            &[(SpeakerRole::Manager, 0.0, "Да — это так, верно!")],
            false,
        );
        let d = Dialogue::new(&t);
        let line = &d.lines[0];
        assert_eq!(line.tokens.len(), 4);
        assert_eq!(line.exact_text(0, 3), "Да — это так, верно!");
        let t = transcript(&[(SpeakerRole::Manager, 0.0, "Да, это так")], true);
        let d = Dialogue::new(&t);
        assert_eq!(d.lines[0].exact_text(1, 2), "это так");
    }
}
