//! Intake storage: vacancies, applications, their events and the notification outbox. Every
//! transition reads the application, checks it, updates it under an optimistic version guard,
//! writes its event and (when the candidate's status changes) its outbox row in one transaction.

use shlyuz_kit::calendar::WorkingCalendar;
use shlyuz_kit::clock::SharedClock;
use shlyuz_kit::db::Database;
use shlyuz_kit::paging;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::roles::{Caller, Role};
use crate::workflow::{self, Action, CandidateStatus, IllegalTransition, State};

/// Why a store operation failed; the gRPC edge (`grpc.rs`) turns it into the caller's error.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No application with this id.
    #[error("no such application")]
    ApplicationNotFound,
    /// No vacancy with this id.
    #[error("no such vacancy")]
    VacancyNotFound,
    /// No attachment with this id on the application.
    #[error("no such attachment")]
    AttachmentNotFound,
    /// The vacancy is closed to applications.
    #[error("the vacancy no longer accepts applications")]
    VacancyClosed,
    /// The candidate already has an active application for `vacancy_id`.
    #[error("the candidate already has an active application for vacancy {vacancy_id}")]
    ApplicationActive {
        /// The vacancy applied to.
        vacancy_id: String,
    },
    /// The application changed since it was read (its version moved on).
    #[error("the application changed meanwhile")]
    ConcurrentChange,
    /// The application's state does not allow the action.
    #[error(transparent)]
    IllegalTransition(#[from] IllegalTransition),
    /// An event row holds a state code no [`State`] has.
    #[error("unknown state {0} in an event")]
    UnknownEventState(i64),
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// Vacancy states, as stored.
pub const VACANCY_OPEN: i64 = 1;
/// Closed vacancy.
pub const VACANCY_CLOSED: i64 = 2;

/// A vacancy row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VacancyRow {
    /// UUID.
    pub vacancy_id: String,
    /// Position.
    pub position: String,
    /// Rank code (proto number).
    pub rank: i64,
    /// Branch of troops.
    pub branch: String,
    /// Unit.
    pub unit: String,
    /// KATO.
    pub region_kato: String,
    /// Places.
    pub places: i64,
    /// Requirements.
    pub requirements: String,
    /// [`VACANCY_OPEN`] or [`VACANCY_CLOSED`].
    pub state: i64,
    /// Epoch ms.
    pub create_time_ms: i64,
    /// Epoch ms; 0 while open.
    pub close_time_ms: i64,
}

const VACANCY_COLUMNS: &str = "vacancy_id, position, rank, branch, unit, region_kato, places, \
     requirements, state, create_time_ms, close_time_ms";

fn vacancy_from_row(row: &AnyRow) -> Result<VacancyRow, sqlx::Error> {
    Ok(VacancyRow {
        vacancy_id: row.try_get("vacancy_id")?,
        position: row.try_get("position")?,
        rank: row.try_get("rank")?,
        branch: row.try_get("branch")?,
        unit: row.try_get("unit")?,
        region_kato: row.try_get("region_kato")?,
        places: row.try_get("places")?,
        requirements: row.try_get("requirements")?,
        state: row.try_get("state")?,
        create_time_ms: row.try_get("create_time_ms")?,
        close_time_ms: row.try_get("close_time_ms")?,
    })
}

/// An application row (every column; views decide what each role sees).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplicationRow {
    /// UUID v7.
    pub application_id: String,
    /// Vacancy.
    pub vacancy_id: String,
    /// Candidate IIN.
    pub candidate_iin: String,
    /// Workflow state.
    pub state: State,
    /// Optimistic concurrency version.
    pub version: i64,
    /// Consent for MILITARY_RECRUITMENT.
    pub consent_id: String,
    /// SMS destination.
    pub phone_number: String,
    /// SMS language.
    pub language: String,
    /// `eds` or `otp`.
    pub signature_kind: String,
    /// Certificate serial (EDS) or OTP reference.
    pub signature_reference: String,
    /// Internal rejection reason.
    pub rejection_reason: String,
    /// Assigned MoD executor.
    pub assignee_user_id: String,
    /// Region of the registered address (ГБД ФЛ).
    pub registered_region_kato: String,
    /// The personal file, JSON.
    pub dossier_json: String,
    /// A registry did not answer.
    pub dossier_incomplete: bool,
    /// Sources that did not answer, comma-separated.
    pub dossier_missing: String,
    /// The minimal medical data set, JSON of [`crate::dossier::Dossier`] subset.
    pub medical_data_json: String,
    /// ДДО region.
    pub ddo_region_kato: String,
    /// Appointment address.
    pub appointment_address: String,
    /// Appointment time.
    pub appointment_time_ms: i64,
    /// Medical outcome (proto number).
    pub medical_outcome: i64,
    /// Scanned conclusion.
    pub medical_conclusion: Option<Vec<u8>>,
    /// Serial of the ДДО executor's certificate.
    pub medical_signer_serial: String,
    /// Agreement document.
    pub agreement_document: Option<Vec<u8>>,
    /// Serial of the candidate's certificate on the agreement.
    pub candidate_signer_serial: String,
    /// Serial of the head's certificate on the agreement.
    pub head_signer_serial: String,
    /// Order: unit.
    pub order_unit: String,
    /// Order: time.
    pub order_time_ms: i64,
    /// Order: place.
    pub order_place: String,
    /// Role owing the current step; empty when none.
    pub deadline_role: String,
    /// Deadline of the current step; 0 when none.
    pub deadline_ms: i64,
    /// The MoD executor's 4-month deadline, fixed at assignment.
    pub executor_deadline_ms: i64,
    /// Chair of the medical commission: appointment day + 1 working day.
    pub chair_deadline_ms: i64,
    /// Epoch ms.
    pub create_time_ms: i64,
    /// Epoch ms.
    pub update_time_ms: i64,
}

const APPLICATION_COLUMNS: &str = "application_id, vacancy_id, candidate_iin, state, version, \
     consent_id, phone_number, language, signature_kind, signature_reference, rejection_reason, \
     assignee_user_id, registered_region_kato, dossier_json, dossier_incomplete, dossier_missing, \
     medical_data_json, ddo_region_kato, appointment_address, appointment_time_ms, \
     medical_outcome, medical_conclusion, medical_signer_serial, agreement_document, \
     candidate_signer_serial, head_signer_serial, order_unit, order_time_ms, order_place, \
     deadline_role, deadline_ms, executor_deadline_ms, chair_deadline_ms, create_time_ms, \
     update_time_ms";

fn application_from_row(row: &AnyRow) -> Result<ApplicationRow, sqlx::Error> {
    let state_code: i64 = row.try_get("state")?;
    let state = State::from_code(state_code).ok_or_else(|| {
        sqlx::Error::Decode(format!("unknown application state {state_code}").into())
    })?;
    Ok(ApplicationRow {
        application_id: row.try_get("application_id")?,
        vacancy_id: row.try_get("vacancy_id")?,
        candidate_iin: row.try_get("candidate_iin")?,
        state,
        version: row.try_get("version")?,
        consent_id: row.try_get("consent_id")?,
        phone_number: row.try_get("phone_number")?,
        language: row.try_get("language")?,
        signature_kind: row.try_get("signature_kind")?,
        signature_reference: row.try_get("signature_reference")?,
        rejection_reason: row.try_get("rejection_reason")?,
        assignee_user_id: row.try_get("assignee_user_id")?,
        registered_region_kato: row.try_get("registered_region_kato")?,
        dossier_json: row.try_get("dossier_json")?,
        dossier_incomplete: row.try_get::<i64, _>("dossier_incomplete")? != 0,
        dossier_missing: row.try_get("dossier_missing")?,
        medical_data_json: row.try_get("medical_data_json")?,
        ddo_region_kato: row.try_get("ddo_region_kato")?,
        appointment_address: row.try_get("appointment_address")?,
        appointment_time_ms: row.try_get("appointment_time_ms")?,
        medical_outcome: row.try_get("medical_outcome")?,
        medical_conclusion: row.try_get("medical_conclusion")?,
        medical_signer_serial: row.try_get("medical_signer_serial")?,
        agreement_document: row.try_get("agreement_document")?,
        candidate_signer_serial: row.try_get("candidate_signer_serial")?,
        head_signer_serial: row.try_get("head_signer_serial")?,
        order_unit: row.try_get("order_unit")?,
        order_time_ms: row.try_get("order_time_ms")?,
        order_place: row.try_get("order_place")?,
        deadline_role: row.try_get("deadline_role")?,
        deadline_ms: row.try_get("deadline_ms")?,
        executor_deadline_ms: row.try_get("executor_deadline_ms")?,
        chair_deadline_ms: row.try_get("chair_deadline_ms")?,
        create_time_ms: row.try_get("create_time_ms")?,
        update_time_ms: row.try_get("update_time_ms")?,
    })
}

/// A new application, as the candidate filed it (already verified).
#[derive(Debug, Clone)]
pub struct NewApplication {
    /// Vacancy.
    pub vacancy_id: String,
    /// Candidate IIN.
    pub candidate_iin: String,
    /// Consent id.
    pub consent_id: String,
    /// SMS destination.
    pub phone_number: String,
    /// `ru` or `kk`.
    pub language: String,
    /// `eds` or `otp`.
    pub signature_kind: String,
    /// Certificate serial or OTP reference.
    pub signature_reference: String,
    /// PDF copies, in the order the signed form lists them.
    pub attachments: Vec<NewAttachment>,
}

/// A validated PDF attachment to store with a new application.
#[derive(Debug, Clone)]
pub struct NewAttachment {
    /// File name.
    pub file_name: String,
    /// `application/pdf`.
    pub content_type: String,
    /// What the document is.
    pub description: String,
    /// The PDF.
    pub content: Vec<u8>,
    /// Lowercase hex SHA-256 of the content.
    pub sha256: String,
}

/// A stored attachment; `content` is empty unless asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentRow {
    /// UUID.
    pub attachment_id: String,
    /// File name.
    pub file_name: String,
    /// `application/pdf`.
    pub content_type: String,
    /// What the document is.
    pub description: String,
    /// Size of the content.
    pub size_bytes: i64,
    /// Lowercase hex SHA-256.
    pub sha256: String,
    /// The PDF, when fetched.
    pub content: Vec<u8>,
}

/// A column value a transition sets.
#[derive(Debug, Clone)]
pub enum Value {
    /// TEXT.
    Text(String),
    /// BIGINT.
    Int(i64),
    /// BLOB / BYTEA.
    Bytes(Vec<u8>),
}

/// Extra columns a transition sets besides state, deadline and version.
pub type Updates = Vec<(&'static str, Value)>;

/// One workflow event row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    /// UUID.
    pub event_id: String,
    /// Application.
    pub application_id: String,
    /// Who.
    pub actor: String,
    /// When.
    pub event_time_ms: i64,
    /// From; `None` for the filing itself.
    pub from_state: Option<State>,
    /// To.
    pub to_state: State,
    /// Note.
    pub note: String,
    /// Role owing the step entered.
    pub due_role: String,
    /// Its deadline.
    pub due_time_ms: i64,
}

/// One SMS waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// UUID.
    pub outbox_id: String,
    /// Application.
    pub application_id: String,
    /// Notify template id.
    pub template_id: String,
    /// The candidate.
    pub recipient_iin: String,
    /// E.164.
    pub phone_number: String,
    /// `ru` or `kk`.
    pub language: String,
    /// Template parameters, JSON object.
    pub parameters_json: String,
    /// Delivery attempts so far.
    pub attempts: i64,
}

/// Filters of [`Store::list_applications`].
#[derive(Debug, Clone, Default)]
pub struct ApplicationFilter {
    /// Internal state.
    pub state: Option<State>,
    /// Vacancy.
    pub vacancy_id: String,
    /// Assignee.
    pub assignee_user_id: String,
    /// Region of the registered address.
    pub region_kato: String,
    /// Candidate.
    pub candidate_iin: String,
    /// Only applications whose step owed by the caller's role is overdue.
    pub overdue_only: bool,
    /// Only completed and rejected applications (the archive).
    pub archived_only: bool,
}

/// One group of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportRow {
    /// State.
    pub state: State,
    /// Vacancy region.
    pub region_kato: String,
    /// Vacancy branch.
    pub branch: String,
    /// Applications.
    pub count: i64,
}

/// Workload of one executor, for assignment suggestions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// Executor.
    pub user_id: String,
    /// Applications assigned and not terminal.
    pub open: i64,
    /// Applications handled for vacancies of the same branch.
    pub same_branch: i64,
    /// Applications handled for vacancies in the same region.
    pub same_region: i64,
}

fn new_id() -> String {
    uuid::Uuid::now_v7().hyphenated().to_string()
}

fn active_key(vacancy_id: &str, candidate_iin: &str) -> String {
    format!("{vacancy_id}/{candidate_iin}")
}

/// Intake's store.
#[derive(Clone)]
pub struct Store {
    database: Database,
    clock: SharedClock,
    calendar: std::sync::Arc<WorkingCalendar>,
}

impl Store {
    /// The store over `database`, with `clock` for times and `calendar` for deadlines.
    pub fn new(database: Database, clock: SharedClock, calendar: WorkingCalendar) -> Self {
        Self {
            database,
            clock,
            calendar: std::sync::Arc::new(calendar),
        }
    }

    /// The current time, epoch ms.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_millis()
    }

    /// The working-day calendar.
    pub fn calendar(&self) -> &WorkingCalendar {
        &self.calendar
    }

    /// Inserts an open vacancy (id and times assigned here).
    pub async fn create_vacancy(&self, mut vacancy: VacancyRow) -> Result<VacancyRow, StoreError> {
        vacancy.vacancy_id = new_id();
        vacancy.state = VACANCY_OPEN;
        vacancy.create_time_ms = self.now_ms();
        vacancy.close_time_ms = 0;
        sqlx::query(&format!(
            "INSERT INTO vacancies ({VACANCY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        ))
        .bind(&vacancy.vacancy_id)
        .bind(&vacancy.position)
        .bind(vacancy.rank)
        .bind(&vacancy.branch)
        .bind(&vacancy.unit)
        .bind(&vacancy.region_kato)
        .bind(vacancy.places)
        .bind(&vacancy.requirements)
        .bind(vacancy.state)
        .bind(vacancy.create_time_ms)
        .bind(vacancy.close_time_ms)
        .execute(self.database.pool())
        .await?;
        Ok(vacancy)
    }

    /// One vacancy.
    pub async fn vacancy(&self, vacancy_id: &str) -> Result<VacancyRow, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {VACANCY_COLUMNS} FROM vacancies WHERE vacancy_id = $1"
        ))
        .bind(vacancy_id)
        .fetch_optional(self.database.pool())
        .await?;
        match row {
            Some(row) => Ok(vacancy_from_row(&row)?),
            None => Err(StoreError::VacancyNotFound),
        }
    }

    /// Closes an open vacancy; closing a closed one is a no-op.
    pub async fn close_vacancy(&self, vacancy_id: &str) -> Result<VacancyRow, StoreError> {
        sqlx::query(
            "UPDATE vacancies SET state = $1, close_time_ms = $2 WHERE vacancy_id = $3 AND state = $4",
        )
        .bind(VACANCY_CLOSED)
        .bind(self.now_ms())
        .bind(vacancy_id)
        .bind(VACANCY_OPEN)
        .execute(self.database.pool())
        .await?;
        self.vacancy(vacancy_id).await
    }

    /// Vacancies newest first (UUID v7 order), one page.
    pub async fn list_vacancies(
        &self,
        state: Option<i64>,
        region_kato: &str,
        branch: &str,
        page_size: usize,
        after: Option<&str>,
    ) -> Result<(Vec<VacancyRow>, Option<String>), StoreError> {
        let mut conditions = Vec::new();
        let mut binds: Vec<Value> = Vec::new();
        if let Some(state) = state {
            binds.push(Value::Int(state));
            conditions.push(format!("state = ${}", binds.len()));
        }
        for (column, value) in [("region_kato", region_kato), ("branch", branch)] {
            if !value.is_empty() {
                binds.push(Value::Text(value.to_string()));
                conditions.push(format!("{column} = ${}", binds.len()));
            }
        }
        if let Some(after) = after {
            binds.push(Value::Text(after.to_string()));
            conditions.push(format!("vacancy_id < ${}", binds.len()));
        }
        let sql = format!(
            "SELECT {VACANCY_COLUMNS} FROM vacancies {} ORDER BY vacancy_id DESC LIMIT {}",
            where_clause(&conditions),
            page_size + 1
        );
        let mut query = sqlx::query(&sql);
        for value in binds {
            query = bind_value(query, value);
        }
        let rows = query.fetch_all(self.database.pool()).await?;
        let mut vacancies = rows
            .iter()
            .map(vacancy_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next = page_rest(&mut vacancies, page_size, |vacancy| {
            vacancy.vacancy_id.clone()
        });
        Ok((vacancies, next))
    }

    /// Files an application in state SUBMITTED, with its event and the "submitted" SMS.
    pub async fn create_application(
        &self,
        new: NewApplication,
        actor: &str,
    ) -> Result<ApplicationRow, StoreError> {
        let vacancy = self.vacancy(&new.vacancy_id).await?;
        if vacancy.state != VACANCY_OPEN {
            return Err(StoreError::VacancyClosed);
        }
        let now = self.now_ms();
        let application_id = new_id();
        let (deadline_role, deadline_ms) =
            workflow::step_deadline(&self.calendar, State::Submitted, now, 0)
                .map_or((String::new(), 0), |(role, due)| {
                    (role.name().to_string(), due)
                });
        let mut transaction = self.database.pool().begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO applications (application_id, vacancy_id, candidate_iin, active_key, \
             state, candidate_status, version, consent_id, phone_number, language, signature_kind, \
             signature_reference, rejection_reason, assignee_user_id, registered_region_kato, \
             dossier_json, dossier_incomplete, dossier_missing, medical_data_json, \
             ddo_region_kato, appointment_address, appointment_time_ms, medical_outcome, \
             medical_signer_serial, candidate_signer_serial, head_signer_serial, order_unit, \
             order_time_ms, order_place, deadline_role, deadline_ms, executor_deadline_ms, \
             chair_deadline_ms, create_time_ms, update_time_ms) VALUES ($1, $2, $3, $4, $5, $6, \
             1, $7, $8, $9, $10, $11, '', '', '', '', 0, '', '', '', '', 0, 0, '', '', '', '', 0, \
             '', $12, $13, 0, 0, $14, $14)",
        )
        .bind(&application_id)
        .bind(&new.vacancy_id)
        .bind(&new.candidate_iin)
        .bind(active_key(&new.vacancy_id, &new.candidate_iin))
        .bind(State::Submitted.code())
        .bind(CandidateStatus::Submitted.code())
        .bind(&new.consent_id)
        .bind(&new.phone_number)
        .bind(&new.language)
        .bind(&new.signature_kind)
        .bind(&new.signature_reference)
        .bind(&deadline_role)
        .bind(deadline_ms)
        .bind(now)
        .execute(&mut *transaction)
        .await;
        match inserted {
            Ok(_) => {}
            Err(sqlx::Error::Database(error)) if error.is_unique_violation() => {
                return Err(StoreError::ApplicationActive {
                    vacancy_id: new.vacancy_id,
                });
            }
            Err(error) => return Err(error.into()),
        }
        for (position, attachment) in new.attachments.iter().enumerate() {
            sqlx::query(
                "INSERT INTO application_attachments (attachment_id, application_id, position, \
                 file_name, content_type, description, size_bytes, sha256, content, create_time_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(new_id())
            .bind(&application_id)
            .bind(i64::try_from(position).unwrap_or(i64::MAX))
            .bind(&attachment.file_name)
            .bind(&attachment.content_type)
            .bind(&attachment.description)
            .bind(i64::try_from(attachment.content.len()).unwrap_or(i64::MAX))
            .bind(&attachment.sha256)
            .bind(attachment.content.clone())
            .bind(now)
            .execute(&mut *transaction)
            .await?;
        }
        insert_event(
            &mut transaction,
            &application_id,
            actor,
            now,
            None,
            State::Submitted,
            "application filed",
            &deadline_role,
            deadline_ms,
        )
        .await?;
        let row = fetch_application(&mut transaction, &application_id)
            .await?
            .ok_or(StoreError::ApplicationNotFound)?;
        insert_outbox(&mut transaction, &row, CandidateStatus::Submitted, now).await?;
        transaction.commit().await?;
        Ok(row)
    }

    /// One application, whoever asks (callers apply role visibility).
    pub async fn application(&self, application_id: &str) -> Result<ApplicationRow, StoreError> {
        let mut connection = self.database.pool().acquire().await?;
        fetch_application(&mut connection, application_id)
            .await?
            .ok_or(StoreError::ApplicationNotFound)
    }

    /// Updates columns that do not change the state (e.g. an incomplete dossier), guarded by
    /// the version the caller read.
    pub async fn update_in_place(
        &self,
        application: &ApplicationRow,
        updates: Updates,
    ) -> Result<ApplicationRow, StoreError> {
        let mut transaction = self.database.pool().begin().await?;
        let now = self.now_ms();
        update_guarded(&mut transaction, application, None, updates, now).await?;
        let row = fetch_application(&mut transaction, &application.application_id)
            .await?
            .ok_or(StoreError::ApplicationNotFound)?;
        transaction.commit().await?;
        Ok(row)
    }

    /// Moves `application` by `action`: checks the transition, sets `updates`, the deadline of
    /// the step entered, writes the event and, when the candidate's status changes, the SMS.
    pub async fn transition(
        &self,
        application: &ApplicationRow,
        action: Action,
        caller: &Caller,
        note: &str,
        mut updates: Updates,
    ) -> Result<ApplicationRow, StoreError> {
        let to = workflow::transition(application.state, action)?;
        let now = self.now_ms();
        let executor_deadline_ms = if action == Action::Assign {
            let due = workflow::month_deadline(now, workflow::MOD_EXECUTOR_MONTHS);
            updates.push(("executor_deadline_ms", Value::Int(due)));
            due
        } else {
            application.executor_deadline_ms
        };
        let (due_role, due_ms) =
            workflow::step_deadline(&self.calendar, to, now, executor_deadline_ms)
                .map_or((String::new(), 0), |(role, due)| {
                    (role.name().to_string(), due)
                });
        updates.push(("deadline_role", Value::Text(due_role.clone())));
        updates.push(("deadline_ms", Value::Int(due_ms)));
        updates.push(("candidate_status", Value::Int(to.candidate_status().code())));
        if to.is_terminal() {
            // Frees the one-active-application slot: the candidate may apply again.
            updates.push(("active_key", Value::Text(String::new())));
        }
        let mut transaction = self.database.pool().begin().await?;
        update_guarded(&mut transaction, application, Some(to), updates, now).await?;
        insert_event(
            &mut transaction,
            &application.application_id,
            &caller.actor(),
            now,
            Some(application.state),
            to,
            note,
            &due_role,
            due_ms,
        )
        .await?;
        let row = fetch_application(&mut transaction, &application.application_id)
            .await?
            .ok_or(StoreError::ApplicationNotFound)?;
        if to.candidate_status() != application.state.candidate_status() {
            insert_outbox(&mut transaction, &row, to.candidate_status(), now).await?;
        }
        transaction.commit().await?;
        tracing::info!(
            application_id = %row.application_id,
            from = application.state.to_proto().as_str_name(),
            to = to.to_proto().as_str_name(),
            actor = %caller.actor(),
            "application transition"
        );
        Ok(row)
    }

    /// Applications matching `filter` within what `caller` may see, newest first, one page.
    pub async fn list_applications(
        &self,
        caller: &Caller,
        filter: &ApplicationFilter,
        page_size: usize,
        after: Option<&str>,
    ) -> Result<(Vec<ApplicationRow>, Option<String>), StoreError> {
        let mut conditions = Vec::new();
        let mut binds: Vec<Value> = Vec::new();
        // Each `?` of a condition takes the next value, numbered as `$n`.
        let mut push_many = |condition: &str, values: Vec<Value>, conditions: &mut Vec<String>| {
            let mut text = String::new();
            let mut values = values.into_iter();
            for (index, part) in condition.split('?').enumerate() {
                if index > 0
                    && let Some(value) = values.next()
                {
                    binds.push(value);
                    text.push_str(&format!("${}", binds.len()));
                }
                text.push_str(part);
            }
            conditions.push(text);
        };

        match caller.role {
            Role::Candidate => push_many(
                "candidate_iin = ?",
                vec![Value::Text(caller.user_id.clone())],
                &mut conditions,
            ),
            Role::ModExecutor => push_many(
                "assignee_user_id = ?",
                vec![Value::Text(caller.user_id.clone())],
                &mut conditions,
            ),
            Role::DdoExecutor => push_many(
                "ddo_region_kato = ?",
                vec![Value::Text(caller.region_kato.clone())],
                &mut conditions,
            ),
            Role::Head => {}
        }
        if let Some(state) = filter.state {
            push_many("state = ?", vec![Value::Int(state.code())], &mut conditions);
        }
        for (column, value) in [
            ("vacancy_id", &filter.vacancy_id),
            ("assignee_user_id", &filter.assignee_user_id),
            ("registered_region_kato", &filter.region_kato),
            ("candidate_iin", &filter.candidate_iin),
        ] {
            if !value.is_empty() {
                push_many(
                    &format!("{column} = ?"),
                    vec![Value::Text(value.clone())],
                    &mut conditions,
                );
            }
        }
        if filter.overdue_only {
            push_many(
                "deadline_role = ?",
                vec![Value::Text(caller.role.name().to_string())],
                &mut conditions,
            );
            push_many(
                "deadline_ms > 0 AND deadline_ms <= ?",
                vec![Value::Int(self.now_ms())],
                &mut conditions,
            );
        }
        if filter.archived_only {
            push_many(
                "state IN (?, ?)",
                vec![
                    Value::Int(State::Completed.code()),
                    Value::Int(State::Rejected.code()),
                ],
                &mut conditions,
            );
        }
        if let Some(after) = after {
            push_many(
                "application_id < ?",
                vec![Value::Text(after.to_string())],
                &mut conditions,
            );
        }
        let sql = format!(
            "SELECT {APPLICATION_COLUMNS} FROM applications {} ORDER BY application_id DESC LIMIT {}",
            where_clause(&conditions),
            page_size + 1
        );
        let mut query = sqlx::query(&sql);
        for value in binds {
            query = bind_value(query, value);
        }
        let rows = query.fetch_all(self.database.pool()).await?;
        let mut applications = rows
            .iter()
            .map(application_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next = page_rest(&mut applications, page_size, |application| {
            application.application_id.clone()
        });
        Ok((applications, next))
    }

    /// The attachments of an application, without content, in filing order.
    pub async fn attachments(
        &self,
        application_id: &str,
    ) -> Result<Vec<AttachmentRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT attachment_id, file_name, content_type, description, size_bytes, sha256 \
             FROM application_attachments WHERE application_id = $1 ORDER BY position",
        )
        .bind(application_id)
        .fetch_all(self.database.pool())
        .await?;
        let mut attachments = Vec::with_capacity(rows.len());
        for row in rows {
            attachments.push(AttachmentRow {
                attachment_id: row.try_get("attachment_id")?,
                file_name: row.try_get("file_name")?,
                content_type: row.try_get("content_type")?,
                description: row.try_get("description")?,
                size_bytes: row.try_get("size_bytes")?,
                sha256: row.try_get("sha256")?,
                content: Vec::new(),
            });
        }
        Ok(attachments)
    }

    /// One attachment with its content.
    pub async fn attachment(
        &self,
        application_id: &str,
        attachment_id: &str,
    ) -> Result<AttachmentRow, StoreError> {
        let row = sqlx::query(
            "SELECT attachment_id, file_name, content_type, description, size_bytes, sha256, \
             content FROM application_attachments WHERE application_id = $1 AND attachment_id = $2",
        )
        .bind(application_id)
        .bind(attachment_id)
        .fetch_optional(self.database.pool())
        .await?
        .ok_or(StoreError::AttachmentNotFound)?;
        Ok(AttachmentRow {
            attachment_id: row.try_get("attachment_id")?,
            file_name: row.try_get("file_name")?,
            content_type: row.try_get("content_type")?,
            description: row.try_get("description")?,
            size_bytes: row.try_get("size_bytes")?,
            sha256: row.try_get("sha256")?,
            content: row.try_get("content")?,
        })
    }

    /// Every event of an application, oldest first.
    pub async fn events(&self, application_id: &str) -> Result<Vec<EventRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT event_id, application_id, actor, event_time_ms, from_state, to_state, note, \
             due_role, due_time_ms FROM application_events WHERE application_id = $1 \
             ORDER BY sequence",
        )
        .bind(application_id)
        .fetch_all(self.database.pool())
        .await?;
        let mut events = Vec::with_capacity(rows.len());
        for row in rows {
            let to_code: i64 = row.try_get("to_state")?;
            events.push(EventRow {
                event_id: row.try_get("event_id")?,
                application_id: row.try_get("application_id")?,
                actor: row.try_get("actor")?,
                event_time_ms: row.try_get("event_time_ms")?,
                from_state: State::from_code(row.try_get("from_state")?),
                to_state: State::from_code(to_code)
                    .ok_or(StoreError::UnknownEventState(to_code))?,
                note: row.try_get("note")?,
                due_role: row.try_get("due_role")?,
                due_time_ms: row.try_get("due_time_ms")?,
            });
        }
        Ok(events)
    }

    /// Unsent outbox rows due now, oldest first.
    pub async fn pending_outbox(&self, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT outbox_id, application_id, template_id, recipient_iin, phone_number, \
             language, parameters_json, attempts FROM notification_outbox \
             WHERE sent_time_ms = 0 AND next_attempt_time_ms <= $1 \
             ORDER BY create_time_ms, outbox_id LIMIT {limit}"
        ))
        .bind(self.now_ms())
        .fetch_all(self.database.pool())
        .await?;
        let mut outbox = Vec::with_capacity(rows.len());
        for row in rows {
            outbox.push(OutboxRow {
                outbox_id: row.try_get("outbox_id")?,
                application_id: row.try_get("application_id")?,
                template_id: row.try_get("template_id")?,
                recipient_iin: row.try_get("recipient_iin")?,
                phone_number: row.try_get("phone_number")?,
                language: row.try_get("language")?,
                parameters_json: row.try_get("parameters_json")?,
                attempts: row.try_get("attempts")?,
            });
        }
        Ok(outbox)
    }

    #[cfg(test)]
    /// Every outbox row of one application, oldest first (tests, support).
    pub async fn outbox_of(&self, application_id: &str) -> Result<Vec<OutboxRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT outbox_id, application_id, template_id, recipient_iin, phone_number, \
             language, parameters_json, attempts FROM notification_outbox \
             WHERE application_id = $1 ORDER BY create_time_ms, outbox_id",
        )
        .bind(application_id)
        .fetch_all(self.database.pool())
        .await?;
        let mut outbox = Vec::with_capacity(rows.len());
        for row in rows {
            outbox.push(OutboxRow {
                outbox_id: row.try_get("outbox_id")?,
                application_id: row.try_get("application_id")?,
                template_id: row.try_get("template_id")?,
                recipient_iin: row.try_get("recipient_iin")?,
                phone_number: row.try_get("phone_number")?,
                language: row.try_get("language")?,
                parameters_json: row.try_get("parameters_json")?,
                attempts: row.try_get("attempts")?,
            });
        }
        Ok(outbox)
    }

    /// Marks an outbox row delivered.
    pub async fn mark_sent(&self, outbox_id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE notification_outbox SET sent_time_ms = $1 WHERE outbox_id = $2")
            .bind(self.now_ms())
            .bind(outbox_id)
            .execute(self.database.pool())
            .await?;
        Ok(())
    }

    /// Records a failed delivery and when to try again.
    pub async fn mark_failed(
        &self,
        outbox_id: &str,
        error: &str,
        retry_at_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE notification_outbox SET attempts = attempts + 1, last_error = $1, \
             next_attempt_time_ms = $2 WHERE outbox_id = $3",
        )
        .bind(error)
        .bind(retry_at_ms)
        .bind(outbox_id)
        .execute(self.database.pool())
        .await?;
        Ok(())
    }

    /// Open workload and experience of `executors` for a vacancy of `branch` in `region_kato`,
    /// best first: fewest open applications, then most same-branch, then most same-region.
    pub async fn workloads(
        &self,
        executors: &[String],
        branch: &str,
        region_kato: &str,
    ) -> Result<Vec<Workload>, StoreError> {
        let rows = sqlx::query(
            "SELECT a.assignee_user_id AS user_id, a.state AS state, v.branch AS branch, \
             v.region_kato AS region_kato FROM applications a \
             JOIN vacancies v ON v.vacancy_id = a.vacancy_id WHERE a.assignee_user_id <> ''",
        )
        .fetch_all(self.database.pool())
        .await?;
        let mut workloads: Vec<Workload> = executors
            .iter()
            .map(|user_id| Workload {
                user_id: user_id.clone(),
                open: 0,
                same_branch: 0,
                same_region: 0,
            })
            .collect();
        for row in rows {
            let user_id: String = row.try_get("user_id")?;
            let state = State::from_code(row.try_get("state")?);
            let Some(workload) = workloads.iter_mut().find(|w| w.user_id == user_id) else {
                continue;
            };
            if state.is_some_and(|state| !state.is_terminal()) {
                workload.open += 1;
            }
            if row.try_get::<String, _>("branch")? == branch {
                workload.same_branch += 1;
            }
            if row.try_get::<String, _>("region_kato")? == region_kato {
                workload.same_region += 1;
            }
        }
        workloads.sort_by(|a, b| {
            a.open
                .cmp(&b.open)
                .then(b.same_branch.cmp(&a.same_branch))
                .then(b.same_region.cmp(&a.same_region))
                .then(a.user_id.cmp(&b.user_id))
        });
        Ok(workloads)
    }

    /// Counts by state, vacancy region and branch of applications filed in `[start, end)`.
    pub async fn report(
        &self,
        start_ms: i64,
        end_ms: i64,
        region_kato: &str,
        branch: &str,
    ) -> Result<Vec<ReportRow>, StoreError> {
        let mut conditions = vec![
            "a.create_time_ms >= $1".to_string(),
            "a.create_time_ms < $2".to_string(),
        ];
        let mut binds = vec![
            Value::Int(start_ms),
            Value::Int(if end_ms == 0 { i64::MAX } else { end_ms }),
        ];
        for (column, value) in [("v.region_kato", region_kato), ("v.branch", branch)] {
            if !value.is_empty() {
                binds.push(Value::Text(value.to_string()));
                conditions.push(format!("{column} = ${}", binds.len()));
            }
        }
        let sql = format!(
            "SELECT a.state AS state, v.region_kato AS region_kato, v.branch AS branch, \
             COUNT(*) AS count FROM applications a JOIN vacancies v ON v.vacancy_id = a.vacancy_id \
             {} GROUP BY a.state, v.region_kato, v.branch ORDER BY a.state, v.region_kato, v.branch",
            where_clause(&conditions)
        );
        let mut query = sqlx::query(&sql);
        for value in binds {
            query = bind_value(query, value);
        }
        let rows = query.fetch_all(self.database.pool()).await?;
        let mut report = Vec::with_capacity(rows.len());
        for row in rows {
            let Some(state) = State::from_code(row.try_get("state")?) else {
                continue;
            };
            report.push(ReportRow {
                state,
                region_kato: row.try_get("region_kato")?,
                branch: row.try_get("branch")?,
                count: row.try_get("count")?,
            });
        }
        Ok(report)
    }
}

fn where_clause(conditions: &[String]) -> String {
    if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    }
}

fn bind_value<'q>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    value: Value,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    match value {
        Value::Text(text) => query.bind(text),
        Value::Int(number) => query.bind(number),
        Value::Bytes(bytes) => query.bind(bytes),
    }
}

/// Keeps `page_size` items and returns the next page token when more exist.
fn page_rest<T>(
    items: &mut Vec<T>,
    page_size: usize,
    key: impl Fn(&T) -> String,
) -> Option<String> {
    if items.len() <= page_size {
        return None;
    }
    items.truncate(page_size);
    items.last().map(key)
}

/// The page-token scope of the application list with `filter`: a token only resumes the list,
/// with the filters, it came from.
pub fn applications_scope(filter: &ApplicationFilter) -> String {
    filtered_scope("intake/applications", filter)
}

/// The page-token scope of the vacancy list with these filters (as [`Store::list_vacancies`]
/// takes them).
pub fn vacancies_scope(state: Option<i64>, region_kato: &str, branch: &str) -> String {
    filtered_scope("intake/vacancies", &(state, region_kato, branch))
}

/// `list` plus a digest of `filters`, so filter values never need escaping in a token.
fn filtered_scope(list: &str, filters: &impl std::fmt::Debug) -> String {
    let digest = shlyuz_kit::envelope::sha256_hex(format!("{filters:?}").as_bytes());
    format!("{list}/{}", &digest[..24])
}

/// Encodes the next page token of a list.
pub fn next_token(scope: &str, last_key: Option<String>) -> String {
    last_key
        .map(|key| paging::encode_page_token(scope, &key))
        .unwrap_or_default()
}

async fn fetch_application(
    connection: &mut sqlx::AnyConnection,
    application_id: &str,
) -> Result<Option<ApplicationRow>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {APPLICATION_COLUMNS} FROM applications WHERE application_id = $1"
    ))
    .bind(application_id)
    .fetch_optional(&mut *connection)
    .await?;
    Ok(row.as_ref().map(application_from_row).transpose()?)
}

async fn update_guarded(
    connection: &mut sqlx::AnyConnection,
    application: &ApplicationRow,
    to: Option<State>,
    mut updates: Updates,
    now: i64,
) -> Result<(), StoreError> {
    if let Some(to) = to {
        updates.push(("state", Value::Int(to.code())));
    }
    updates.push(("update_time_ms", Value::Int(now)));
    // `active_key` is only ever cleared: NULL frees the unique slot, so it takes no parameter.
    let clear_active_key = updates.iter().any(|(column, _)| *column == "active_key");
    updates.retain(|(column, _)| *column != "active_key");
    let mut assignments: Vec<String> = updates
        .iter()
        .enumerate()
        .map(|(index, (column, _))| format!("{column} = ${}", index + 1))
        .collect();
    if clear_active_key {
        assignments.push("active_key = NULL".to_string());
    }
    let count = updates.len();
    let sql = format!(
        "UPDATE applications SET {}, version = version + 1 WHERE application_id = ${} AND version = ${}",
        assignments.join(", "),
        count + 1,
        count + 2
    );
    let mut query = sqlx::query(&sql);
    for (_, value) in updates {
        query = bind_value(query, value);
    }
    let result = query
        .bind(&application.application_id)
        .bind(application.version)
        .execute(&mut *connection)
        .await?;
    if result.rows_affected() == 0 {
        return Err(StoreError::ConcurrentChange);
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn insert_event(
    connection: &mut sqlx::AnyConnection,
    application_id: &str,
    actor: &str,
    now: i64,
    from: Option<State>,
    to: State,
    note: &str,
    due_role: &str,
    due_time_ms: i64,
) -> Result<(), StoreError> {
    let sequence: i64 = sqlx::query(
        "SELECT COALESCE(MAX(sequence), 0) + 1 AS next FROM application_events WHERE application_id = $1",
    )
    .bind(application_id)
    .fetch_one(&mut *connection)
    .await?
    .try_get("next")?;
    sqlx::query(
        "INSERT INTO application_events (event_id, application_id, sequence, actor, \
         event_time_ms, from_state, to_state, note, due_role, due_time_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(new_id())
    .bind(application_id)
    .bind(sequence)
    .bind(actor)
    .bind(now)
    .bind(from.map_or(0, State::code))
    .bind(to.code())
    .bind(note)
    .bind(due_role)
    .bind(due_time_ms)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// The SMS parameters of a status: the text, and for the medical examination the address and
/// time to appear.
pub fn sms_parameters(application: &ApplicationRow, status: CandidateStatus) -> serde_json::Value {
    // Exactly the parameters of notify's `intake.status.*` templates (notify refuses unknown
    // ones); the application is named by the row itself.
    let mut parameters = serde_json::json!({
        "status_text": status.text(),
    });
    if status == CandidateStatus::Medical {
        parameters["appointment_address"] = application.appointment_address.clone().into();
        parameters["appointment_time"] = format_local_time(application.appointment_time_ms).into();
    }
    if status == CandidateStatus::OrderToReport {
        parameters["unit"] = application.order_unit.clone().into();
        parameters["report_place"] = application.order_place.clone().into();
        parameters["report_time"] = format_local_time(application.order_time_ms).into();
    }
    parameters
}

/// `DD.MM.YYYY HH:MM` in Kazakhstan time, as the SMS shows it.
pub fn format_local_time(epoch_ms: i64) -> String {
    let instant = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(epoch_ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let offset = time::UtcOffset::from_hms(workflow::KAZAKHSTAN_OFFSET_HOURS, 0, 0)
        .unwrap_or(time::UtcOffset::UTC);
    let local = instant.to_offset(offset);
    format!(
        "{:02}.{:02}.{:04} {:02}:{:02}",
        local.day(),
        u8::from(local.month()),
        local.year(),
        local.hour(),
        local.minute()
    )
}

async fn insert_outbox(
    connection: &mut sqlx::AnyConnection,
    application: &ApplicationRow,
    status: CandidateStatus,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO notification_outbox (outbox_id, application_id, template_id, recipient_iin, \
         phone_number, language, parameters_json, create_time_ms, attempts, \
         next_attempt_time_ms, sent_time_ms, last_error) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $8, 0, '')",
    )
    .bind(new_id())
    .bind(&application.application_id)
    .bind(status.template_id())
    .bind(&application.candidate_iin)
    .bind(&application.phone_number)
    .bind(&application.language)
    .bind(sms_parameters(application, status).to_string())
    .bind(now)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A store over `database` (migrated here) on `clock`, with one open vacancy; its id.
    pub(crate) async fn store_with_vacancy(
        database: Database,
        clock: SharedClock,
    ) -> (Store, String) {
        database
            .migrate(&crate::MIGRATIONS)
            .await
            .expect("intake migrations");
        let store = Store::new(database, clock, WorkingCalendar::kazakhstan());
        let vacancy = store
            .create_vacancy(VacancyRow {
                vacancy_id: String::new(),
                position: "стрелок".into(),
                rank: 1,
                branch: "Сухопутные войска".into(),
                unit: "в/ч 12345".into(),
                region_kato: "110000000".into(),
                places: 3,
                requirements: String::new(),
                state: VACANCY_OPEN,
                create_time_ms: 0,
                close_time_ms: 0,
            })
            .await
            .expect("vacancy");
        (store, vacancy.vacancy_id)
    }

    /// `candidate` files an application to `vacancy_id` with `phone` and `language`.
    pub(crate) async fn file(
        store: &Store,
        vacancy_id: &str,
        candidate: &str,
        phone: &str,
        language: &str,
    ) -> ApplicationRow {
        store
            .create_application(
                NewApplication {
                    vacancy_id: vacancy_id.to_string(),
                    candidate_iin: candidate.to_string(),
                    consent_id: "0190f5a2-7c1e-7000-8000-0000000000c1".into(),
                    phone_number: phone.to_string(),
                    language: language.to_string(),
                    signature_kind: "eds".into(),
                    signature_reference: "0a1b".into(),
                    attachments: Vec::new(),
                },
                candidate,
            )
            .await
            .expect("file an application")
    }

    shlyuz_kit::storage_test!(
        outbox_rows_carry_the_application_language_and_phone,
        |database: Database| async move {
            let (store, vacancy_id) =
                store_with_vacancy(database, shlyuz_kit::clock::system_clock()).await;
            let kazakh = file(&store, &vacancy_id, "980512391010", "+77011234567", "kk").await;
            let russian = file(&store, &vacancy_id, "971120391035", "+77017654321", "ru").await;
            for (application, phone, language) in [
                (&kazakh, "+77011234567", "kk"),
                (&russian, "+77017654321", "ru"),
            ] {
                let outbox = store
                    .outbox_of(&application.application_id)
                    .await
                    .expect("outbox");
                assert_eq!(outbox.len(), 1, "{outbox:?}");
                let row = &outbox[0];
                assert_eq!(row.template_id, "intake.status.submitted");
                assert_eq!(row.recipient_iin, application.candidate_iin);
                assert_eq!(
                    (row.language.as_str(), row.phone_number.as_str()),
                    (language, phone)
                );
            }
        }
    );
}
