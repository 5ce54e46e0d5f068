//! Full-text search over transcripts with Russian word forms: both the
//! stored text and the query are reduced to Snowball stems here, so the two
//! database backends only match whole terms and behave the same.

use rust_stemmers::{Algorithm, Stemmer};

use crate::transcript::Transcript;

/// The stems of `text`, lowercased, `ё` read as `е`, in order, repeats kept.
pub fn search_terms(text: &str) -> Vec<String> {
    let russian = Stemmer::create(Algorithm::Russian);
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(|word| {
            let word = word.to_lowercase().replace('ё', "е");
            // Latin words and numbers pass through the Russian stemmer as is.
            russian.stem(&word).into_owned()
        })
        .collect()
}

/// What the search index holds for a transcript: the stems of what was
/// said, space-separated. Speaker labels are left out, or every call would
/// match «менеджер».
pub fn transcript_terms(transcript: &Transcript) -> String {
    transcript
        .segments
        .iter()
        .flat_map(|segment| search_terms(&segment.text))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The distinct stems of a query, in order; empty when it has no words.
pub fn query_terms(text: &str) -> Vec<String> {
    let mut terms = search_terms(text);
    let mut seen = std::collections::HashSet::new();
    terms.retain(|term| seen.insert(term.clone()));
    terms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_forms_share_a_stem() {
        let stored = search_terms("Мы обсудили скидки и доставку.");
        for query in ["скидка", "скидку", "Доставка", "обсудим"] {
            let stem = &search_terms(query)[0];
            assert!(stored.contains(stem), "{query} → {stem} not in {stored:?}");
        }
    }

    #[test]
    fn yo_and_case_do_not_matter() {
        assert_eq!(search_terms("ЁЛКА"), search_terms("елка"));
    }

    #[test]
    fn a_query_keeps_each_stem_once() {
        assert_eq!(query_terms("Скидка, скидки и скидку"), vec!["скидк", "и"]);
        assert!(query_terms(" ,.; ").is_empty());
    }

    #[test]
    fn punctuation_and_numbers() {
        assert_eq!(
            search_terms("5 окон, 2024 года!"),
            vec!["5", "окон", "2024", "год"]
        );
        assert!(search_terms("  ,.; ").is_empty());
    }
}
