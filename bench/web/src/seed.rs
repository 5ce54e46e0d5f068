//! Fills a fresh database with calls the way the pipeline would: each call
//! inserted as the CRM upload stores it, then its transcription and
//! analysis jobs claimed and finished with made-up output, all through the
//! `Store` trait, so every derived row (search terms, stage results,
//! completion percentages, history) is exactly what the server writes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use chrono::{DateTime, Datelike, Duration, TimeZone, Utc, Weekday};
use futures_util::{stream, StreamExt, TryStreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rop_domain::{
    AnalysisEngine, AudioSource, CallAnalysis, CallId, CallStatus, Checklist, ChecklistResult,
    ConversationMetrics, Direction, JobKind, JobOutcome, ManagerId, ManagerUpdate, NewCall,
    NewCallEvent, NewJob, OfficeId, OfficeUpdate, Segment, SpeakerRole, StageResult, StageStatus,
    StepOutput, Store, Table, TableResult, Transcript, Word,
};
use serde_json::json;

use crate::dialogue::{dialogue, Dialogue, STAGES};

pub const CHECKLIST_ID: &str = "sales_script";
pub const TABLE_ID: &str = "TBL_1735689600";
/// Words the search rows look for, in forms other than the stored ones:
/// about one call in ten asks for an instalment plan, about one in sixty
/// wants the frames to match the furniture.
pub const SEARCH_COMMON: &str = "рассрочка";
pub const SEARCH_RARE: &str = "мебель";

/// Offices: id, title, how many of the managers work there.
const OFFICES: [(&str, &str, usize); 3] = [
    ("msk", "Москва, Тверская", 8),
    ("kzn", "Казань", 6),
    ("nsk", "Новосибирск", 6),
];

/// Managers: name, surname, middle name (20, in office order).
const MANAGERS: [(&str, &str, &str); 20] = [
    ("Алексей", "Смирнов", "Игоревич"),
    ("Мария", "Кузнецова", "Андреевна"),
    ("Дмитрий", "Попов", "Сергеевич"),
    ("Екатерина", "Васильева", "Олеговна"),
    ("Иван", "Петров", "Николаевич"),
    ("Анастасия", "Соколова", "Павловна"),
    ("Сергей", "Михайлов", "Викторович"),
    ("Ольга", "Новикова", "Дмитриевна"),
    ("Андрей", "Фёдоров", "Алексеевич"),
    ("Юлия", "Морозова", "Сергеевна"),
    ("Артём", "Волков", "Евгеньевич"),
    ("Наталья", "Алексеева", "Ивановна"),
    ("Максим", "Лебедев", "Андреевич"),
    ("Ксения", "Семёнова", "Романовна"),
    ("Павел", "Егоров", "Владимирович"),
    ("Дарья", "Павлова", "Михайловна"),
    ("Роман", "Козлов", "Петрович"),
    ("Виктория", "Степанова", "Александровна"),
    ("Никита", "Николаев", "Олегович"),
    ("Елена", "Орлова", "Викторовна"),
];

pub struct Plan {
    calls: u64,
    seed: u64,
    /// Cumulative share of calls up to the end of each day of the year.
    day_cdf: Vec<f64>,
    first_day: DateTime<Utc>,
    /// Each manager's cumulative share of the calls, and skill (×).
    activity_cdf: Vec<f64>,
    skill: Vec<f64>,
    checklist: Checklist,
    table: Table,
}

/// What happens to a call.
#[derive(Clone, Copy, PartialEq)]
enum Fate {
    Done,
    /// Shorter than the minimum duration: stored, never processed.
    Skipped,
    /// The download or decoding failed.
    Failed,
}

struct PlannedCall {
    fate: Fate,
    manager: usize,
    started: DateTime<Utc>,
    duration_secs: u32,
    outgoing: bool,
    rng: StdRng,
}

pub fn call_id(n: u64) -> String {
    format!("bench-{n:06}")
}

fn index_of(call_id: &CallId) -> anyhow::Result<u64> {
    call_id
        .as_str()
        .strip_prefix("bench-")
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("not a seeded call: {}", call_id.as_str()))
}

pub fn manager_id(n: usize) -> String {
    format!("m{:02}", n + 1)
}

impl Plan {
    /// `calls` calls over the 365 days before today (UTC), fewer at weekends.
    pub fn new(calls: u64, seed: u64) -> Self {
        let today = Utc::now().date_naive();
        let first = today - chrono::Days::new(365);
        let weights: Vec<f64> = (0..365)
            .map(|d| match (first + chrono::Days::new(d)).weekday() {
                Weekday::Sat => 0.3,
                Weekday::Sun => 0.1,
                _ => 1.0,
            })
            .collect();
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        let day_cdf = weights
            .iter()
            .map(|w| {
                acc += w / total;
                acc
            })
            .collect();
        let mut rng = StdRng::seed_from_u64(seed);
        let activity: Vec<f64> = (0..MANAGERS.len())
            .map(|_| rng.gen_range(0.6..1.4))
            .collect();
        let total: f64 = activity.iter().sum();
        let mut acc = 0.0;
        let activity_cdf = activity
            .iter()
            .map(|a| {
                acc += a / total;
                acc
            })
            .collect();
        let skill = (0..MANAGERS.len())
            .map(|_| rng.gen_range(0.7..1.2))
            .collect();
        Self {
            calls,
            seed,
            day_cdf,
            first_day: Utc.from_utc_datetime(&first.and_hms_opt(0, 0, 0).expect("midnight")),
            activity_cdf,
            skill,
            checklist: checklist(),
            table: table(),
        }
    }

    fn call(&self, n: u64) -> PlannedCall {
        let mut rng = StdRng::seed_from_u64(self.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        // Calls in order of time, so that newer calls have larger seqs as
        // they would in a real installation.
        let u = (n as f64 + 0.5) / self.calls as f64;
        let day = self.day_cdf.partition_point(|&c| c < u).min(364);
        let started = self.first_day
            + Duration::days(day as i64)
            + Duration::seconds(6 * 3600 + rng.gen_range(0..10 * 3600));
        let pick: f64 = rng.gen();
        let manager = self
            .activity_cdf
            .partition_point(|&c| c < pick)
            .min(MANAGERS.len() - 1);
        let fate = match rng.gen_range(0..100) {
            0..=5 => Fate::Skipped,
            6..=7 => Fate::Failed,
            _ => Fate::Done,
        };
        let duration_secs = if fate == Fate::Skipped {
            rng.gen_range(3..20)
        } else {
            rng.gen_range(60..600)
        };
        PlannedCall {
            fate,
            manager,
            started,
            duration_secs,
            outgoing: rng.gen_bool(0.6),
            rng,
        }
    }

    /// A call that is analysed, near the middle of the list.
    pub fn card_call(&self) -> String {
        (self.calls / 2..self.calls)
            .find(|&n| self.call(n).fate == Fate::Done)
            .map(call_id)
            .unwrap_or_else(|| call_id(0))
    }

    fn new_call(&self, n: u64) -> NewCall {
        let planned = self.call(n);
        let mut rng = planned.rng;
        let received = planned.started + Duration::seconds(i64::from(planned.duration_secs) + 20);
        let skipped = planned.fate == Fate::Skipped;
        let mut metadata = BTreeMap::new();
        metadata.insert("source".to_owned(), "webbench".to_owned());
        NewCall {
            call_id: CallId::parse(&call_id(n)).expect("valid id"),
            manager_id: ManagerId::parse(&manager_id(planned.manager)).expect("valid id"),
            deal_id: rng
                .gen_bool(0.7)
                .then(|| format!("{}", 100_000 + rng.gen_range(0..900_000))),
            deal_stage_id: Some(
                ["new", "qualified", "measurement", "contract"][rng.gen_range(0..4)].to_owned(),
            ),
            stage_id: None,
            direction: Some(if planned.outgoing {
                Direction::Outgoing
            } else {
                Direction::Incoming
            }),
            client_phone: Some(format!(
                "+79{:02}{:07}",
                rng.gen_range(0..100),
                rng.gen_range(0..10_000_000)
            )),
            client_name: None,
            call_started_at: Some(planned.started),
            declared_duration_secs: Some(f64::from(planned.duration_secs)),
            source: AudioSource::Url(
                format!("https://pbx.example.ru/records/{}.mp3", call_id(n))
                    .parse()
                    .expect("valid url"),
            ),
            manager_channel: None,
            metadata,
            status: if skipped {
                CallStatus::Skipped
            } else {
                CallStatus::Received
            },
            status_reason: skipped.then(|| "Звонок короче 20 с — не анализируется".to_owned()),
            received_at: received,
            events: vec![NewCallEvent::info(
                received,
                "received",
                "Звонок принят из CRM",
            )],
            first_job: (!skipped).then_some(NewJob {
                kind: JobKind::Transcribe,
                max_attempts: 3,
            }),
        }
    }

    /// The call's dialogue, the stages its manager did, and when it was
    /// transcribed and analysed.
    fn content(&self, n: u64) -> (PlannedCall, [bool; 8], Dialogue) {
        let mut planned = self.call(n);
        let skill = self.skill[planned.manager];
        let mut done = [false; 8];
        for (stage, done) in STAGES.iter().zip(done.iter_mut()) {
            *done = planned.rng.gen_bool((stage.3 * skill).clamp(0.02, 0.99));
        }
        let name = MANAGERS[planned.manager].0;
        let dialogue = dialogue(&mut planned.rng, name, planned.outgoing, done);
        (planned, done, dialogue)
    }

    fn transcript(&self, n: u64) -> (Transcript, DateTime<Utc>) {
        let (planned, _, dialogue) = self.content(n);
        let (segments, _) = segments(&dialogue, planned.duration_secs);
        let at = planned.started + Duration::seconds(i64::from(planned.duration_secs) + 90);
        let metrics = metrics(&segments, f64::from(planned.duration_secs));
        (
            Transcript {
                engine: "whisper.cpp".into(),
                model: "ggml-large-v3-turbo-q5_0.bin".into(),
                language: "ru".into(),
                segments,
                metrics,
                real_time_factor: 0.21,
                created_at: at,
            },
            at,
        )
    }

    fn analysis(&self, n: u64) -> (CallAnalysis, DateTime<Utc>) {
        let (planned, done, dialogue) = self.content(n);
        let (segments, _) = segments(&dialogue, planned.duration_secs);
        let at = planned.started + Duration::seconds(i64::from(planned.duration_secs) + 200);
        let stages = STAGES
            .iter()
            .enumerate()
            .map(|(k, &(stage_id, stage_name, weight, _))| {
                let proof = dialogue.proof[k].map(|line| &segments[line]);
                StageResult {
                    stage_id: stage_id.into(),
                    stage_name: stage_name.into(),
                    score: if done[k] { 1 } else { -1 },
                    percentage: if done[k] {
                        80 + (n % 21) as u8
                    } else {
                        (n % 30) as u8
                    },
                    status: if done[k] {
                        StageStatus::Completed
                    } else {
                        StageStatus::Failed
                    },
                    comment: if done[k] {
                        format!("Этап «{stage_name}» выполнен: менеджер сказал это явно.")
                    } else {
                        format!("Этап «{stage_name}» пропущен: в разговоре его нет.")
                    },
                    quote: proof.map(|s| s.text.clone()).unwrap_or_default(),
                    quote_start: proof.map(|s| s.start),
                    quote_end: proof.map(|s| s.end),
                    weight,
                }
            })
            .collect();
        let checklist = ChecklistResult::new(&self.checklist, stages, AnalysisEngine::Llm, at);
        let mut data = BTreeMap::new();
        data.insert("zamer_naznachen".to_owned(), json!(dialogue.booked));
        data.insert("kolichestvo_okon".to_owned(), json!(dialogue.windows));
        data.insert("obekt".to_owned(), json!(dialogue.object));
        data.insert("byudzhet".to_owned(), json!(dialogue.budget * 1000));
        let table = TableResult {
            table_id: self.table.table_id.clone(),
            table_name: self.table.name.clone(),
            extracted_data: data,
            engine: AnalysisEngine::Llm,
            analyzed_at: at,
        };
        (
            CallAnalysis {
                checklists: vec![checklist],
                tables: vec![table],
                deliveries: Vec::new(),
                crm_tasks: Vec::new(),
            },
            at,
        )
    }
}

/// The dialogue's lines as timed segments with word timings, spread over
/// the call; returns them and the words spoken.
fn segments(dialogue: &Dialogue, duration_secs: u32) -> (Vec<Segment>, usize) {
    let words: usize = dialogue
        .lines
        .iter()
        .map(|l| l.text.split_whitespace().count())
        .sum();
    // Speech at about 2.5 words a second; what is left of the call is pauses.
    let speech = words as f64 / 2.5;
    let pause = ((f64::from(duration_secs) - speech) / dialogue.lines.len() as f64).clamp(0.2, 8.0);
    let mut t = 0.5;
    let segments = dialogue
        .lines
        .iter()
        .map(|line| {
            let start = t;
            let words: Vec<Word> = line
                .text
                .split_whitespace()
                .map(|w| {
                    let word = Word {
                        start: round(t),
                        end: round(t + 0.36),
                        text: w.to_owned(),
                    };
                    t += 0.4;
                    word
                })
                .collect();
            let segment = Segment {
                role: if line.manager {
                    SpeakerRole::Manager
                } else {
                    SpeakerRole::Client
                },
                channel: if line.manager { 0 } else { 1 },
                start: round(start),
                end: round(t),
                text: line.text.clone(),
                words,
            };
            t += pause;
            segment
        })
        .collect();
    (segments, words)
}

fn round(t: f64) -> f64 {
    (t * 1000.0).round() / 1000.0
}

fn metrics(segments: &[Segment], duration: f64) -> ConversationMetrics {
    let talk = |role: SpeakerRole| -> f64 {
        segments
            .iter()
            .filter(|s| s.role == role)
            .map(|s| s.end - s.start)
            .sum()
    };
    let words = |role: SpeakerRole| -> f64 {
        segments
            .iter()
            .filter(|s| s.role == role)
            .map(|s| s.words.len() as f64)
            .sum()
    };
    let (manager, client) = (talk(SpeakerRole::Manager), talk(SpeakerRole::Client));
    let longest = segments
        .iter()
        .max_by(|a, b| (a.end - a.start).total_cmp(&(b.end - b.start)));
    ConversationMetrics {
        manager_talk_share: Some(manager / (manager + client).max(0.001)),
        longest_monologue_secs: longest.map(|s| s.end - s.start).unwrap_or(0.0),
        longest_monologue_role: longest.map(|s| s.role),
        interruptions: 0,
        manager_interruptions: 0,
        silence_share: (1.0 - (manager + client) / duration.max(1.0)).clamp(0.0, 1.0),
        speech_rate_wpm: 60.0 * (words(SpeakerRole::Manager) + words(SpeakerRole::Client))
            / (manager + client).max(1.0),
        manager_speech_rate_wpm: Some(60.0 * words(SpeakerRole::Manager) / manager.max(1.0)),
        client_speech_rate_wpm: Some(60.0 * words(SpeakerRole::Client) / client.max(1.0)),
    }
}

fn checklist() -> Checklist {
    let stages: Vec<_> = STAGES
        .iter()
        .map(|&(stage_id, name, weight, _)| {
            json!({"stage_id": stage_id, "name": name, "weight": weight,
                   "instruction": format!("Оцените, выполнил ли менеджер этап «{name}».")})
        })
        .collect();
    serde_json::from_value(json!({
        "checklist_id": CHECKLIST_ID,
        "name": "Скрипт продаж окон",
        "general_instruction": "Звонок менеджера компании «Окна Века» с клиентом.",
        "stages": stages,
    }))
    .expect("a valid checklist")
}

fn table() -> Table {
    serde_json::from_value(json!({
        "table_id": TABLE_ID,
        "name": "Сделка",
        "instruction": "Данные о заказе из разговора",
        "columns": [
            {"key": "zamer_naznachen", "title": "Замер назначен", "type": "boolean"},
            {"key": "kolichestvo_okon", "title": "Количество окон", "type": "integer"},
            {"key": "obekt", "title": "Объект", "type": "enum",
             "values": ["квартира", "дом", "дача", "офис"]},
            {"key": "byudzhet", "title": "Бюджет, ₽", "type": "integer"}
        ]
    }))
    .expect("a valid table")
}

/// Managers, offices, the checklist and the table.
async fn definitions(store: &dyn Store, plan: &Plan) -> anyhow::Result<()> {
    let now = Utc::now();
    let mut people: Vec<ManagerUpdate> = MANAGERS
        .iter()
        .enumerate()
        .map(|(n, (name, surname, middlename))| ManagerUpdate {
            manager_id: ManagerId::parse(&manager_id(n)).expect("valid id"),
            name: Some((*name).to_owned()),
            surname: Some((*surname).to_owned()),
            middlename: Some((*middlename).to_owned()),
        })
        .collect();
    for (office, leader) in OFFICES.iter().zip(["Виталий", "Рустам", "Григорий"])
    {
        people.push(ManagerUpdate {
            manager_id: ManagerId::parse(&format!("lead-{}", office.0)).expect("valid id"),
            name: Some(leader.to_owned()),
            surname: Some("Руководитель".to_owned()),
            middlename: None,
        });
    }
    store.upsert_managers(&people, now).await?;
    let mut first = 0;
    let offices: Vec<OfficeUpdate> = OFFICES
        .iter()
        .map(|&(id, title, size)| {
            let managers = (first..first + size)
                .map(|n| ManagerId::parse(&manager_id(n)).expect("valid id"))
                .collect();
            first += size;
            OfficeUpdate {
                office_id: OfficeId::parse(id).expect("valid id"),
                title: Some(title.to_owned()),
                leader_ids: Some(vec![
                    ManagerId::parse(&format!("lead-{id}")).expect("valid id")
                ]),
                manager_ids: Some(managers),
            }
        })
        .collect();
    store.upsert_offices(&offices, now).await?;
    store.insert_checklist(&plan.checklist, now).await?;
    store.insert_table(&plan.table, now).await?;
    Ok(())
}

/// Seeds `plan` into `store`: the definitions, the calls, then their jobs.
pub async fn seed(store: Arc<dyn Store>, plan: Arc<Plan>, workers: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    definitions(store.as_ref(), &plan).await?;

    // The uploads: many at once, as a busy CRM sends them (SQLite commits
    // concurrent inserts together).
    let inserted = AtomicU64::new(0);
    stream::iter(0..plan.calls)
        .map(|n| {
            let (store, plan, inserted) = (&store, &plan, &inserted);
            async move {
                store.insert_call(&plan.new_call(n)).await?;
                let done = inserted.fetch_add(1, Ordering::Relaxed) + 1;
                if done % 20_000 == 0 {
                    eprintln!(
                        "  {done} calls inserted ({:.0} s)",
                        started.elapsed().as_secs_f64()
                    );
                }
                anyhow::Ok(())
            }
        })
        .buffer_unordered(64)
        .try_collect::<()>()
        .await?;
    eprintln!(
        "  {} calls inserted ({:.0} s); processing",
        plan.calls,
        started.elapsed().as_secs_f64()
    );

    // The workers: claim a due job, finish it with the step's output.
    let finished = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let (store, plan, finished) = (store.clone(), plan.clone(), finished.clone());
            tokio::spawn(async move {
                let worker = format!("webbench-{w}");
                let kinds = [JobKind::Transcribe, JobKind::Analyze];
                loop {
                    let now = Utc::now();
                    let Some(job) = store
                        .claim_job(&worker, &kinds, now + Duration::minutes(10), now)
                        .await?
                    else {
                        return anyhow::Ok(());
                    };
                    let n = index_of(&job.call_id)?;
                    let (outcome, at) = match (job.kind, plan.call(n).fate) {
                        (JobKind::Transcribe, Fate::Failed) => {
                            let at = plan.call(n).started + Duration::minutes(3);
                            let outcome = JobOutcome::Failed {
                                reason: "not_audio".into(),
                                message: "По ссылке не аудиозапись, а страница HTML".into(),
                            };
                            (outcome, at)
                        }
                        (JobKind::Transcribe, _) => {
                            let (transcript, at) = plan.transcript(n);
                            let message = format!(
                                "Распознано: {} реплик, {:.0} с",
                                transcript.segments.len(),
                                transcript.segments.last().map(|s| s.end).unwrap_or(0.0)
                            );
                            let outcome = JobOutcome::Done {
                                next: Some(NewJob {
                                    kind: JobKind::Analyze,
                                    max_attempts: 3,
                                }),
                                event: NewCallEvent::info(at, "transcribe", message),
                                output: StepOutput::Transcript(Box::new(transcript)),
                            };
                            (outcome, at)
                        }
                        (JobKind::Analyze, _) => {
                            let (analysis, at) = plan.analysis(n);
                            let message = format!(
                                "Чек-лист «{}»: {} %",
                                analysis.checklists[0].checklist_name,
                                analysis.checklists[0].completion_percentage
                            );
                            let outcome = JobOutcome::Done {
                                next: None,
                                event: NewCallEvent::info(at, "analyze", message),
                                output: StepOutput::Analysis(Box::new(analysis)),
                            };
                            (outcome, at)
                        }
                        (kind, _) => bail!("unexpected job {kind:?}"),
                    };
                    if !store.finish_job(&job, &outcome, at).await? {
                        bail!("lost the lease of job {}", job.id);
                    }
                    let count = finished.fetch_add(1, Ordering::Relaxed) + 1;
                    if count % 40_000 == 0 {
                        eprintln!(
                            "  {count} jobs finished ({:.0} s)",
                            started.elapsed().as_secs_f64()
                        );
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    eprintln!(
        "  {} jobs finished ({:.0} s)",
        finished.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
