//! Channels → one conversation, and the measures of how it went.

use rop_domain::{ConversationMetrics, Segment, SpeakerRole};

use crate::RecognizedSegment;

/// One channel's recognised speech and whose it is.
pub struct ChannelSpeech {
    pub channel: u8,
    pub role: SpeakerRole,
    pub segments: Vec<RecognizedSegment>,
}

/// Interleaves the channels by start time into one dialogue.
pub fn merge(channels: Vec<ChannelSpeech>) -> Vec<Segment> {
    let mut dialogue: Vec<Segment> = channels
        .into_iter()
        .flat_map(|speech| {
            let (channel, role) = (speech.channel, speech.role);
            speech.segments.into_iter().map(move |segment| Segment {
                role,
                channel,
                start: round_ms(segment.start),
                end: round_ms(segment.end.max(segment.start)),
                text: segment.text,
                words: segment
                    .words
                    .into_iter()
                    .map(|mut word| {
                        word.start = round_ms(word.start);
                        word.end = round_ms(word.end.max(word.start));
                        word
                    })
                    .collect(),
            })
        })
        .collect();
    dialogue.sort_by(|a, b| {
        a.start
            .total_cmp(&b.start)
            .then(a.channel.cmp(&b.channel))
            .then(a.end.total_cmp(&b.end))
    });
    dialogue
}

fn round_ms(seconds: f64) -> f64 {
    if seconds.is_finite() {
        (seconds.max(0.0) * 1000.0).round() / 1000.0
    } else {
        0.0
    }
}

/// A speaker starting less than this before the other stops is a normal
/// turn change (timestamps are not that precise), not an interruption.
const OVERLAP_TOLERANCE: f64 = 0.3;

/// Metrics of a dialogue from [`merge`] over a call of `duration` seconds.
pub fn metrics(dialogue: &[Segment], duration: f64) -> ConversationMetrics {
    let roles_known = dialogue.iter().any(|s| s.role != SpeakerRole::Unknown);
    let talk = |role: Option<SpeakerRole>| {
        covered(
            dialogue
                .iter()
                .filter(|s| role.is_none_or(|role| s.role == role))
                .map(|s| (s.start, s.end)),
        )
    };
    let manager_talk = talk(Some(SpeakerRole::Manager));
    let client_talk = talk(Some(SpeakerRole::Client));
    let all_talk = talk(None);
    let manager_talk_share = (roles_known && manager_talk + client_talk > 0.0)
        .then(|| round(manager_talk / (manager_talk + client_talk)));

    // Turns: consecutive segments of one speaker, pauses included.
    let mut longest = (0.0f64, None);
    let mut turn: Option<(SpeakerRole, f64, f64)> = None;
    for segment in dialogue {
        turn = match turn {
            Some((role, start, end)) if role == segment.role => {
                Some((role, start, end.max(segment.end)))
            }
            previous => {
                if let Some((role, start, end)) = previous {
                    if end - start > longest.0 {
                        longest = (end - start, Some(role));
                    }
                }
                Some((segment.role, segment.start, segment.end))
            }
        };
    }
    if let Some((role, start, end)) = turn {
        if end - start > longest.0 {
            longest = (end - start, Some(role));
        }
    }

    // Someone starts while the other is still speaking.
    let (mut interruptions, mut manager_interruptions) = (0, 0);
    if roles_known {
        for (i, segment) in dialogue.iter().enumerate() {
            let cuts_in = dialogue[..i].iter().any(|earlier| {
                earlier.role != segment.role
                    && earlier.start < segment.start
                    && segment.start < earlier.end - OVERLAP_TOLERANCE
            });
            if cuts_in {
                interruptions += 1;
                if segment.role == SpeakerRole::Manager {
                    manager_interruptions += 1;
                }
            }
        }
    }

    let words = |role: Option<SpeakerRole>| {
        dialogue
            .iter()
            .filter(|s| role.is_none_or(|role| s.role == role))
            .map(|s| s.text.split_whitespace().count())
            .sum::<usize>() as f64
    };
    let rate = |words: f64, seconds: f64| {
        if seconds > 0.0 {
            round(words / (seconds / 60.0))
        } else {
            0.0
        }
    };
    let duration = duration.max(all_talk);
    ConversationMetrics {
        manager_talk_share,
        longest_monologue_secs: round(longest.0),
        longest_monologue_role: longest.1,
        interruptions,
        manager_interruptions,
        silence_share: if duration > 0.0 {
            round(1.0 - all_talk / duration)
        } else {
            0.0
        },
        speech_rate_wpm: rate(words(None), all_talk),
        manager_speech_rate_wpm: roles_known
            .then(|| rate(words(Some(SpeakerRole::Manager)), manager_talk)),
        client_speech_rate_wpm: roles_known
            .then(|| rate(words(Some(SpeakerRole::Client)), client_talk)),
    }
}

/// Total length of the union of intervals.
fn covered(intervals: impl Iterator<Item = (f64, f64)>) -> f64 {
    let mut intervals: Vec<(f64, f64)> = intervals.filter(|(s, e)| e > s).collect();
    intervals.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut total = 0.0;
    let mut current: Option<(f64, f64)> = None;
    for (start, end) in intervals {
        current = match current {
            Some((s, e)) if start <= e => Some((s, e.max(end))),
            Some((s, e)) => {
                total += e - s;
                Some((start, end))
            }
            None => Some((start, end)),
        };
    }
    if let Some((s, e)) = current {
        total += e - s;
    }
    total
}

fn round(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn said(start: f64, end: f64, text: &str) -> RecognizedSegment {
        RecognizedSegment {
            start,
            end,
            text: text.into(),
            words: Vec::new(),
        }
    }

    fn call() -> Vec<Segment> {
        merge(vec![
            ChannelSpeech {
                channel: 0,
                role: SpeakerRole::Manager,
                segments: vec![
                    said(0.0, 4.0, "Здравствуйте меня зовут Иван компания Ромашка"),
                    said(4.5, 6.0, "удобно говорить"),
                    // Cuts in 1 s before the client finishes.
                    said(11.0, 14.0, "отлично тогда давайте"),
                ],
            },
            ChannelSpeech {
                channel: 1,
                role: SpeakerRole::Client,
                segments: vec![
                    // Starts 0.1 s before the manager stops: a turn change.
                    said(5.9, 12.0, "да слушаю вас внимательно что у вас"),
                ],
            },
        ])
    }

    #[test]
    fn channels_are_interleaved_by_time_with_roles() {
        let dialogue = call();
        let order: Vec<(SpeakerRole, f64)> = dialogue.iter().map(|s| (s.role, s.start)).collect();
        assert_eq!(
            order,
            vec![
                (SpeakerRole::Manager, 0.0),
                (SpeakerRole::Manager, 4.5),
                (SpeakerRole::Client, 5.9),
                (SpeakerRole::Manager, 11.0),
            ]
        );
    }

    #[test]
    fn metrics_of_a_short_call() {
        let m = metrics(&call(), 20.0);
        // Manager 4 + 1.5 + 3 = 8.5 s, client 6.1 s.
        assert_eq!(m.manager_talk_share, Some(round(8.5 / 14.6)));
        assert_eq!(m.longest_monologue_secs, 6.1);
        assert_eq!(m.longest_monologue_role, Some(SpeakerRole::Client));
        assert_eq!((m.interruptions, m.manager_interruptions), (1, 1));
        // Speech covers 0–4, 4.5–14: 13.5 s of 20.
        assert_eq!(m.silence_share, round(1.0 - 13.5 / 20.0));
        // 6 + 2 + 3 manager words in 8.5 s.
        assert_eq!(m.manager_speech_rate_wpm, Some(round(11.0 / (8.5 / 60.0))));
        assert_eq!(m.client_speech_rate_wpm, Some(round(7.0 / (6.1 / 60.0))));
    }

    #[test]
    fn mono_has_no_roles_to_compare() {
        let dialogue = merge(vec![ChannelSpeech {
            channel: 0,
            role: SpeakerRole::Unknown,
            segments: vec![said(1.0, 3.0, "алло"), said(2.0, 5.0, "да")],
        }]);
        let m = metrics(&dialogue, 10.0);
        assert_eq!(m.manager_talk_share, None);
        assert_eq!(m.interruptions, 0);
        assert_eq!(m.manager_speech_rate_wpm, None);
        assert_eq!(m.silence_share, 0.6);
    }

    #[test]
    fn nothing_said_is_all_silence() {
        let m = metrics(&[], 30.0);
        assert_eq!(m.silence_share, 1.0);
        assert_eq!(m.speech_rate_wpm, 0.0);
        assert_eq!(m.longest_monologue_role, None);
    }
}
