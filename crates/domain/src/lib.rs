//! Domain types of Цифровой РОП and the storage trait that every database
//! backend implements.
//!
//! Values that arrive from the outside (CRM ids, URLs, durations) are parsed
//! into newtypes here once, so the rest of the system never re-checks them.

pub mod analysis;
pub mod audit;
pub mod call;
pub mod delivery;
pub mod id;
pub mod integrations;
pub mod jobs;
pub mod keys;
pub mod people;
pub mod search;
pub mod settings;
pub mod stats;
pub mod store;
pub mod tables;
pub mod transcript;
pub mod users;

pub use analysis::{
    AnalysisEngine, CallAnalysis, Checklist, ChecklistResult, Column, ColumnType, EngineChoice,
    Filters, InvalidDefinition, Stage, StageResult, StageStatus, Table, TableResult, Webhook,
};
pub use audit::{AuditEntry, NewAuditEntry, API_ACTOR};
pub use call::{
    AudioSource, Call, CallDetails, CallEvent, CallFilter, CallPage, CallStatus, DeletedCall,
    Direction, EventLevel, NewCall, NewCallEvent,
};
pub use delivery::{
    ClaimedDelivery, DeliveryAttempt, DeliveryEvent, DeliveryOutcome, DeliveryRecord,
    DeliveryState, NewDelivery,
};
pub use id::{CallId, InvalidId, ManagerId, OfficeId, TableId, MAX_ID_CHARS};
pub use integrations::{
    normalize_phone, ClaimedTask, Client, ClientUpdate, NewTask, TaskOutcome, TaskRecord,
    TaskState, TelephonyCall, TelephonyFilter, TelephonyUpdate,
};
pub use jobs::{ClaimedJob, JobKind, JobOutcome, JobRecord, JobState, NewJob, StepOutput};
pub use keys::{ApiKey, ApiSecret};
pub use people::{Manager, ManagerUpdate, Office, OfficeUpdate, UpsertCounts};
pub use settings::ConnectionSettings;
pub use stats::{
    Dashboard, DayStats, ManagerStats, OfficeStats, StageFailures, StatsQuery, Totals,
};
pub use store::{Store, StoreError};
pub use tables::TableReadiness;
pub use transcript::{AudioFacts, ConversationMetrics, Segment, SpeakerRole, Transcript, Word};
pub use users::{NewSession, NewUser, Role, Session, User, UserCredentials, UserUpdate};
