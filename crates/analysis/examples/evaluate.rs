//! Accuracy of the analysis on a hand-labelled set of Russian sales
//! dialogues (bench/analysis.sh runs it): stage agreement, recall of "not
//! done", typed field accuracy, verbatim quotes, seconds per call; the
//! phrase-rules engine side by side as the baseline.
//!
//! `evaluate DIALOGUES.json ROP_LLM MODEL.gguf [THREADS]`

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::{NaiveDate, Utc};
use rop_analysis::Analyzer;
use rop_domain::{
    Checklist, ConversationMetrics, EngineChoice, Segment, SpeakerRole, StageStatus, Table,
    Transcript,
};
use rop_llm::{LanguageModel, LocalLlamaProcess, LocalLlamaProcessConfig};
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
struct Set {
    checklist: Checklist,
    table: Table,
    dialogues: Vec<Dialogue>,
}

#[derive(Deserialize)]
struct Dialogue {
    id: String,
    call_date: NaiveDate,
    lines: Vec<(String, String)>,
    stages: BTreeMap<String, bool>,
    fields: BTreeMap<String, Value>,
}

/// What one engine got right, summed over the set.
#[derive(Default)]
struct Tally {
    stages: usize,
    stages_right: usize,
    not_done: usize,
    not_done_found: usize,
    done: usize,
    done_found: usize,
    fields: usize,
    fields_right: usize,
    quotes: usize,
    quotes_verbatim: usize,
    seconds: f64,
    calls: usize,
    per_stage: BTreeMap<String, (usize, usize)>,
    per_field: BTreeMap<String, (usize, usize)>,
}

fn transcript(dialogue: &Dialogue) -> Transcript {
    // Four seconds per line: times only order the lines here.
    let segments = dialogue
        .lines
        .iter()
        .enumerate()
        .map(|(i, (who, text))| {
            let role = if who == "M" {
                SpeakerRole::Manager
            } else {
                SpeakerRole::Client
            };
            Segment {
                role,
                channel: u8::from(role == SpeakerRole::Client),
                start: i as f64 * 4.0,
                end: i as f64 * 4.0 + 3.5,
                text: text.clone(),
                words: Vec::new(),
            }
        })
        .collect();
    Transcript {
        engine: "labelled".into(),
        model: "text".into(),
        language: "ru".into(),
        segments,
        metrics: ConversationMetrics::default(),
        real_time_factor: 0.0,
        created_at: Utc::now(),
    }
}

/// Numbers compare as numbers, text without case and `ё`.
fn same(expected: &Value, got: &Value) -> bool {
    match (expected, got) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::String(a), Value::String(b)) => {
            let norm = |s: &str| s.trim().to_lowercase().replace('ё', "е");
            norm(a) == norm(b)
        }
        _ => expected == got,
    }
}

async fn evaluate(set: &Set, analyzer: &Analyzer, engine: EngineChoice) -> Tally {
    let mut tally = Tally::default();
    let mut checklist = set.checklist.clone();
    checklist.engine = engine;
    let mut table = set.table.clone();
    table.engine = engine;
    for dialogue in &set.dialogues {
        let transcript = transcript(dialogue);
        let started = Instant::now();
        let result = match analyzer
            .checklist(&checklist, &transcript, Utc::now())
            .await
        {
            Ok(result) => result,
            Err(error) => {
                eprintln!("{}: checklist failed: {error}", dialogue.id);
                continue;
            }
        };
        let filled = analyzer
            .table(&table, &transcript, Some(dialogue.call_date), Utc::now())
            .await;
        tally.seconds += started.elapsed().as_secs_f64();
        tally.calls += 1;
        let manager_text: String = dialogue
            .lines
            .iter()
            .filter(|(who, _)| who == "M")
            .map(|(_, text)| text.to_lowercase())
            .collect::<Vec<_>>()
            .join(" ");
        for stage in &result.stages {
            let Some(&expected) = dialogue.stages.get(&stage.stage_id) else {
                continue;
            };
            let got = stage.status == StageStatus::Completed;
            tally.stages += 1;
            let entry = tally.per_stage.entry(stage.stage_id.clone()).or_default();
            entry.1 += 1;
            if got == expected {
                tally.stages_right += 1;
                entry.0 += 1;
            } else {
                eprintln!(
                    "{} {}: expected {}, got {} — {} «{}»",
                    dialogue.id,
                    stage.stage_id,
                    if expected { "done" } else { "not done" },
                    if got { "done" } else { "not done" },
                    stage.comment,
                    stage.quote
                );
            }
            if expected {
                tally.done += 1;
                tally.done_found += usize::from(got);
            } else {
                tally.not_done += 1;
                tally.not_done_found += usize::from(!got);
            }
            if !stage.quote.is_empty() {
                tally.quotes += 1;
                tally.quotes_verbatim +=
                    usize::from(manager_text.contains(&stage.quote.to_lowercase()));
            }
        }
        let data = match filled {
            Ok(Some(result)) => result.extracted_data,
            Ok(None) => BTreeMap::new(),
            Err(error) => {
                eprintln!("{}: table failed: {error}", dialogue.id);
                BTreeMap::new()
            }
        };
        for (key, expected) in &dialogue.fields {
            let got = data.get(key).unwrap_or(&Value::Null);
            tally.fields += 1;
            let entry = tally.per_field.entry(key.clone()).or_default();
            entry.1 += 1;
            if same(expected, got) {
                tally.fields_right += 1;
                entry.0 += 1;
            } else if engine != EngineChoice::Rules {
                eprintln!("{} {key}: expected {expected}, got {got}", dialogue.id);
            }
        }
    }
    tally
}

fn percent(right: usize, all: usize) -> String {
    if all == 0 {
        "—".into()
    } else {
        format!("{:.0} %", 100.0 * right as f64 / all as f64)
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: evaluate DIALOGUES.json ROP_LLM MODEL.gguf [THREADS]");
        std::process::exit(2);
    }
    let set: Set = serde_json::from_slice(&std::fs::read(&args[1]).expect("dialogues file"))
        .expect("dialogues JSON");
    set.checklist.validate().expect("valid checklist");
    set.table.validate().expect("valid table");
    let mut config = LocalLlamaProcessConfig::new(&args[2], &args[3]);
    config.threads = args.get(4).map_or(0, |t| t.parse().expect("threads"));
    let process = LocalLlamaProcess::new(config).expect("rop-llm and the model");
    process.start().await.expect("the model loads");
    let llm: Arc<dyn LanguageModel> = Arc::new(process);
    let analyzer = Analyzer::new(Some(llm));

    let model = evaluate(&set, &analyzer, EngineChoice::Default).await;
    let rules = evaluate(&set, &analyzer, EngineChoice::Rules).await;

    println!(
        "{} диалогов, {} этапов, {} полей.\n",
        set.dialogues.len(),
        set.checklist.stages.len(),
        set.table.columns.len()
    );
    println!("| | языковая модель | правила фраз (база) |");
    println!("|---|---|---|");
    let row = |name: &str, f: &dyn Fn(&Tally) -> String| {
        println!("| {name} | {} | {} |", f(&model), f(&rules));
    };
    row(
        "совпадение этапов с разметкой",
        &|t| percent(t.stages_right, t.stages),
    );
    row(
        "«не выполнен» распознан (полнота)",
        &|t| percent(t.not_done_found, t.not_done),
    );
    row(
        "«выполнен» распознан (полнота)",
        &|t| percent(t.done_found, t.done),
    );
    row("поля таблицы верно", &|t| {
        percent(t.fields_right, t.fields)
    });
    row(
        "цитаты дословно из реплик менеджера",
        &|t| percent(t.quotes_verbatim, t.quotes),
    );
    row("секунд на звонок", &|t| {
        format!("{:.1}", t.seconds / t.calls.max(1) as f64)
    });
    println!("\nПо этапам (модель): {}", breakdown(&model.per_stage));
    println!("По полям (модель): {}", breakdown(&model.per_field));
}

fn breakdown(per: &BTreeMap<String, (usize, usize)>) -> String {
    per.iter()
        .map(|(key, (right, all))| format!("{key} {}", percent(*right, *all)))
        .collect::<Vec<_>>()
        .join(", ")
}
