//! Whether a quote is really in the transcript, and where.
//!
//! A model copies imperfectly (case, punctuation, `ё`, a word form, an
//! extra or missing word) and the transcript has recognition slips of its
//! own, so the quote is aligned to each line word by word, tolerantly: a
//! word matches another when their normalised forms or stems are equal or
//! a couple of letters apart. A quote is found when at least
//! [`MIN_MATCHED`] of its words match, in order, within one line of the
//! right speaker; the result is the transcript's own words and their time.

use rop_domain::transcript::Transcript;

use crate::dialogue::{normalized_words, stem, Dialogue, Found, Line, Speaker};

/// Share of the quote's words that must be found.
const MIN_MATCHED: f64 = 0.8;
/// Longer quotes are cut: a quote is evidence, not a retelling.
const MAX_QUOTE_WORDS: usize = 60;

/// Finds `quote` in the lines of `speaker`; `None` when it is not there.
pub fn verify_quote(transcript: &Transcript, quote: &str, speaker: Speaker) -> Option<Found> {
    find(&Dialogue::new(transcript), quote, speaker, None)
}

/// As [`verify_quote`]; `hint` is the line the quote is said to be from,
/// preferred when several lines hold it equally well.
pub(crate) fn find(
    dialogue: &Dialogue,
    quote: &str,
    speaker: Speaker,
    hint: Option<usize>,
) -> Option<Found> {
    let words: Vec<(String, String)> = normalized_words(quote)
        .into_iter()
        .take(MAX_QUOTE_WORDS)
        .map(|w| {
            let s = stem(&w);
            (w, s)
        })
        .collect();
    if words.is_empty() {
        return None;
    }
    let needed = (MIN_MATCHED * words.len() as f64).ceil() as usize;
    let mut best: Option<(usize, bool, &Line, Alignment)> = None;
    for line in dialogue.lines_of(speaker) {
        let Some(found) = align(&words, line) else {
            continue;
        };
        if found.matched < needed {
            continue;
        }
        let hinted = hint == Some(line.number);
        let better = match &best {
            None => true,
            Some((matched, was_hinted, _, _)) => {
                found.matched > *matched || (found.matched == *matched && hinted && !was_hinted)
            }
        };
        if better {
            best = Some((found.matched, hinted, line, found));
        }
    }
    best.map(|(_, _, line, a)| Found::new(line, a.from, a.to))
}

/// The best local alignment of a quote within a line.
#[derive(Debug, Clone, Copy)]
struct Alignment {
    matched: usize,
    /// Token range of the line, both ends matched words.
    from: usize,
    to: usize,
}

#[derive(Debug, Clone, Copy, Default)]
struct Cell {
    score: i32,
    matched: usize,
    from: usize,
}

/// Smith–Waterman over words: +2 for a matching word, −1 for a word of
/// either side left unmatched, so stray words cost but do not break the
/// quote.
fn align(quote: &[(String, String)], line: &Line) -> Option<Alignment> {
    let n = line.tokens.len();
    let mut prev = vec![Cell::default(); n + 1];
    let mut best: Option<(i32, Alignment)> = None;
    for (norm, stem) in quote {
        let mut row = vec![Cell::default(); n + 1];
        for j in 1..=n {
            let token = &line.tokens[j - 1];
            let mut cell = Cell::default();
            if similar(norm, stem, &token.norm, &token.stem) {
                let diag = prev[j - 1];
                cell = if diag.score > 0 {
                    Cell {
                        score: diag.score + 2,
                        matched: diag.matched + 1,
                        from: diag.from,
                    }
                } else {
                    Cell {
                        score: 2,
                        matched: 1,
                        from: j - 1,
                    }
                };
                if best.is_none_or(|(score, _)| cell.score > score) {
                    best = Some((
                        cell.score,
                        Alignment {
                            matched: cell.matched,
                            from: cell.from,
                            to: j - 1,
                        },
                    ));
                }
            }
            for gap in [prev[j], row[j - 1]] {
                if gap.score - 1 > cell.score {
                    cell = Cell {
                        score: gap.score - 1,
                        ..gap
                    };
                }
            }
            row[j] = cell;
        }
        prev = row;
    }
    best.map(|(_, a)| a)
}

/// Two words are the same word, possibly in another form or misheard by a
/// letter or two. Short words must agree exactly: «не» is not «но».
pub(crate) fn similar(a_norm: &str, a_stem: &str, b_norm: &str, b_stem: &str) -> bool {
    if a_norm == b_norm || (a_stem == b_stem && a_stem.chars().count() >= 3) {
        return true;
    }
    let len = a_norm.chars().count().max(b_norm.chars().count());
    let allowed = match len {
        0..=3 => 0,
        4..=6 => 1,
        _ => 2,
    };
    allowed > 0 && edit_distance(a_norm, b_norm, allowed) <= allowed
}

/// Levenshtein distance, giving up (returning more than `limit`) early.
fn edit_distance(a: &str, b: &str, limit: usize) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.len().abs_diff(b.len()) > limit {
        return limit + 1;
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut row = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            row[j + 1] = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(row[j] + 1);
        }
        if row.iter().min().copied().unwrap_or(0) > limit {
            return limit + 1;
        }
        prev = row;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialogue::tests::transcript;
    use rop_domain::transcript::SpeakerRole::{Client, Manager, Unknown};

    fn call(timed: bool) -> Transcript {
        transcript(
            &[
                (
                    Manager,
                    0.0,
                    "Добрый день! Компания «Окна Плюс», меня зовут Анна.",
                ),
                (
                    Client,
                    6.0,
                    "Здравствуйте, я хотел узнать про пластиковые окна.",
                ),
                (
                    Manager,
                    12.0,
                    "Подскажите, пожалуйста, какой у вас бюджет на остекление?",
                ),
                (Client, 20.0, "Где-то двести тысяч рублей."),
            ],
            timed,
        )
    }

    #[test]
    fn an_exact_quote_is_found_with_its_time() {
        let found = verify_quote(&call(true), "меня зовут Анна", Speaker::Manager).unwrap();
        assert_eq!(found.text, "меня зовут Анна.");
        assert_eq!((found.start, found.end), (5.0, 7.8));
        assert_eq!(found.line, 1);
    }

    #[test]
    fn case_punctuation_and_yo_do_not_matter() {
        let found = verify_quote(
            &call(false),
            "подскажите пожалуйста какой у вас бюджет",
            Speaker::Manager,
        )
        .unwrap();
        assert_eq!(found.text, "Подскажите, пожалуйста, какой у вас бюджет");
        // No word timings: the segment's time.
        assert_eq!((found.start, found.end), (12.0, 20.0));
    }

    #[test]
    fn one_misheard_word_is_tolerated() {
        let found = verify_quote(
            &call(true),
            "Подскажите пожалуйста какой у вас буджет на остекление",
            Speaker::Manager,
        )
        .unwrap();
        assert_eq!(
            found.text,
            "Подскажите, пожалуйста, какой у вас бюджет на остекление?"
        );
        // A word form the model changed is tolerated too.
        assert!(verify_quote(&call(true), "компании Окна Плюс", Speaker::Manager).is_some());
    }

    #[test]
    fn a_quote_that_is_not_there_is_rejected() {
        assert_eq!(
            verify_quote(
                &call(true),
                "Давайте назначим встречу на среду",
                Speaker::Manager
            ),
            None
        );
        assert_eq!(
            verify_quote(
                &call(true),
                "какой у вас бюджет на ремонт крыши дома",
                Speaker::Manager
            ),
            None
        );
        assert_eq!(verify_quote(&call(true), " ... ", Speaker::Manager), None);
    }

    #[test]
    fn a_quote_of_the_other_speaker_is_not_the_managers() {
        let quote = "хотел узнать про пластиковые окна";
        assert_eq!(verify_quote(&call(true), quote, Speaker::Manager), None);
        assert_eq!(
            verify_quote(&call(true), quote, Speaker::Anyone)
                .unwrap()
                .line,
            2
        );
    }

    #[test]
    fn on_mono_calls_every_line_is_the_managers() {
        let mono = transcript(
            &[(Unknown, 0.0, "Здравствуйте, хотел узнать про окна")],
            true,
        );
        assert!(verify_quote(&mono, "хотел узнать про окна", Speaker::Manager).is_some());
    }

    #[test]
    fn short_words_must_agree_exactly() {
        assert!(!similar("не", "не", "но", "но"));
        assert!(similar("буджет", "буджет", "бюджет", "бюджет"));
        assert!(!similar("среду", "сред", "сроку", "срок"));
    }
}
