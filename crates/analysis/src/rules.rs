//! Phrase rules: a stage is done when the manager says one of its example
//! phrases, in any word form, and none of its forbidden phrases. Instant
//! and free; the fallback without a model and extra evidence with one.

use rop_domain::analysis::{Checklist, Stage, StageResult};

use crate::dialogue::{normalized_words, stem, Dialogue, Found, Line, Speaker};
use crate::stage_result;

/// Words of the line allowed between two words of a phrase.
const MAX_GAP: usize = 2;

/// Which of a stage's phrases the manager said.
#[derive(Debug, Clone, Default)]
pub(crate) struct PhraseEvidence {
    /// The first example phrase found, and where.
    pub example: Option<(String, Found)>,
    /// The first forbidden phrase found, and where.
    pub forbidden: Option<(String, Found)>,
}

pub(crate) fn evidence(dialogue: &Dialogue, stage: &Stage) -> PhraseEvidence {
    let first = |phrases: &[String]| {
        phrases.iter().find_map(|phrase| {
            find_phrase(dialogue, phrase, Speaker::Manager).map(|found| (phrase.clone(), found))
        })
    };
    PhraseEvidence {
        example: first(&stage.example_phrases),
        forbidden: first(&stage.forbidden_phrases),
    }
}

/// The checklist judged by phrases alone.
pub(crate) fn checklist(dialogue: &Dialogue, checklist: &Checklist) -> Vec<StageResult> {
    checklist
        .stages
        .iter()
        .map(|stage| {
            let evidence = evidence(dialogue, stage);
            if let Some((phrase, found)) = evidence.forbidden {
                return stage_result(
                    stage,
                    false,
                    0,
                    format!("Прозвучала запрещённая фраза «{phrase}»"),
                    Some(found),
                );
            }
            if stage.example_phrases.is_empty() {
                return stage_result(
                    stage,
                    false,
                    0,
                    "Нет примеров фраз — этап проверяется только языковой моделью".into(),
                    None,
                );
            }
            match evidence.example {
                Some((phrase, found)) => stage_result(
                    stage,
                    true,
                    100,
                    format!("Менеджер сказал фразу из примеров: «{phrase}»"),
                    Some(found),
                ),
                None => stage_result(
                    stage,
                    false,
                    0,
                    "Менеджер не сказал ни одной фразы из примеров".into(),
                    None,
                ),
            }
        })
        .collect()
}

/// The first place the speaker says `phrase`: its words' stems in order
/// within one line, at most [`MAX_GAP`] other words between them.
pub(crate) fn find_phrase(dialogue: &Dialogue, phrase: &str, speaker: Speaker) -> Option<Found> {
    let stems: Vec<String> = normalized_words(phrase).iter().map(|w| stem(w)).collect();
    if stems.is_empty() {
        return None;
    }
    dialogue.lines_of(speaker).find_map(|line| {
        (0..line.tokens.len()).find_map(|from| {
            (line.tokens[from].stem == stems[0])
                .then(|| match_rest(line, &stems[1..], from + 1))
                .flatten()
                .map(|to| Found::new(line, from, to.unwrap_or(from)))
        })
    })
}

/// Matches `stems` from token `at` on; the last matched token, `None`
/// inside `Some` when there was nothing left to match.
fn match_rest(line: &Line, stems: &[String], at: usize) -> Option<Option<usize>> {
    let Some((first, rest)) = stems.split_first() else {
        return Some(None);
    };
    let last = (at + MAX_GAP).min(line.tokens.len().saturating_sub(1));
    (at..=last)
        .filter(|&i| i < line.tokens.len() && line.tokens[i].stem == *first)
        .find_map(|i| match_rest(line, rest, i + 1).map(|end| Some(end.unwrap_or(i))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialogue::tests::transcript;
    use rop_domain::analysis::StageStatus;
    use rop_domain::transcript::SpeakerRole::{Client, Manager, Unknown};

    fn dialogue(lines: &[(rop_domain::transcript::SpeakerRole, f64, &str)]) -> Dialogue {
        Dialogue::new(&transcript(lines, true))
    }

    fn stage(examples: &[&str], forbidden: &[&str]) -> Stage {
        Stage {
            stage_id: "s".into(),
            name: "Этап".into(),
            instruction: String::new(),
            weight: 2,
            example_phrases: examples.iter().map(|s| s.to_string()).collect(),
            forbidden_phrases: forbidden.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn judge(d: &Dialogue, stage: Stage) -> StageResult {
        let list = Checklist {
            checklist_id: "c".into(),
            name: "Скрипт".into(),
            description: String::new(),
            active: true,
            general_instruction: String::new(),
            stages: vec![stage],
            filters: Default::default(),
            webhook: None,
            engine: Default::default(),
        };
        checklist(d, &list).remove(0)
    }

    #[test]
    fn phrases_match_in_any_case_and_punctuation() {
        let d = dialogue(&[(Manager, 3.0, "Добрый день! Меня зовут Анна.")]);
        let found = find_phrase(&d, "добрый день", Speaker::Manager).unwrap();
        assert_eq!(found.text, "Добрый день!");
        assert_eq!((found.start, found.end), (3.0, 4.8));
    }

    #[test]
    fn phrases_match_other_word_forms() {
        let d = dialogue(&[(Manager, 0.0, "Здравствуй, Иван! Благодарим за звонок")]);
        assert!(find_phrase(&d, "Здравствуйте", Speaker::Manager).is_some());
        assert!(find_phrase(&d, "благодарю за звонок", Speaker::Manager).is_some());
        assert!(find_phrase(&d, "до свидания", Speaker::Manager).is_none());
    }

    #[test]
    fn small_gaps_are_allowed_and_order_matters() {
        let d = dialogue(&[(Manager, 0.0, "Какой у вас бюджет на ремонт?")]);
        assert!(find_phrase(&d, "какой бюджет", Speaker::Manager).is_some());
        assert!(find_phrase(&d, "бюджет какой", Speaker::Manager).is_none());
        let d = dialogue(&[(Manager, 0.0, "Какой у вас сейчас примерно бюджет?")]);
        assert!(find_phrase(&d, "какой бюджет", Speaker::Manager).is_none());
    }

    #[test]
    fn a_phrase_matches_within_one_line_only() {
        let d = dialogue(&[(Manager, 0.0, "Добрый"), (Manager, 1.0, "день")]);
        assert!(find_phrase(&d, "добрый день", Speaker::Manager).is_none());
    }

    #[test]
    fn the_client_saying_it_does_not_count() {
        let d = dialogue(&[
            (Manager, 0.0, "Алло"),
            (Client, 1.0, "Добрый день, я по поводу окон"),
        ]);
        let result = judge(&d, stage(&["добрый день"], &[]));
        assert_eq!(result.status, StageStatus::Failed);
        assert_eq!(result.score, -1);
        assert_eq!(result.quote, "");
    }

    #[test]
    fn on_mono_calls_any_line_counts() {
        let d = dialogue(&[(Unknown, 0.0, "Алло"), (Unknown, 1.0, "Добрый день")]);
        let result = judge(&d, stage(&["добрый день"], &[]));
        assert_eq!(result.status, StageStatus::Completed);
        assert_eq!((result.score, result.percentage), (1, 100));
        assert_eq!(result.quote, "Добрый день");
        assert_eq!(result.quote_start, Some(1.0));
        assert_eq!(result.weight, 2);
    }

    #[test]
    fn a_forbidden_phrase_fails_the_stage() {
        let d = dialogue(&[(Manager, 0.0, "Добрый день. Ну я не знаю, честно говоря")]);
        let result = judge(&d, stage(&["добрый день"], &["не знаю"]));
        assert_eq!(result.status, StageStatus::Failed);
        assert_eq!(result.quote, "не знаю");
        assert!(result.comment.contains("запрещённая фраза «не знаю»"));
    }

    #[test]
    fn stages_without_examples_need_the_model() {
        let d = dialogue(&[(Manager, 0.0, "Добрый день")]);
        let result = judge(&d, stage(&[], &[]));
        assert_eq!(result.status, StageStatus::Failed);
        assert_eq!(
            result.comment,
            "Нет примеров фраз — этап проверяется только языковой моделью"
        );
    }
}
