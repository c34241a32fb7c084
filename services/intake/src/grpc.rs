//! The intake gRPC services: who may call what, input validation, signature checks before any
//! routing, and what each role gets to see of an application.

use std::sync::Arc;

use futures::future::BoxFuture;
use shlyuz_kit::application_form::application_document;
use shlyuz_kit::error::{ApiError, parse_iin_field};
use shlyuz_kit::iin::Iin;
use shlyuz_kit::paging;
use shlyuz_kit::signed_document::{
    DocumentError, DocumentVerifier, RevocationSource, RevocationStatus,
};
use shlyuz_proto::intake::v1 as pb;
use tonic::{Request, Response, Status};

use crate::dossier::{self, Dossier, LookupContext, RegistryLookups};
use crate::reasons;
use crate::roles::{Caller, Role, RolePolicy, validate_kato};
use crate::store::{
    self, ApplicationFilter, ApplicationRow, AttachmentRow, NewApplication, NewAttachment, Store,
    StoreError, Updates, VacancyRow, Value,
};
use crate::workflow::{self, Action, IllegalTransition, State};

/// Largest PDF accepted (scanned conclusion, agreement): 3 MiB, under the gateway's 4 MiB limit.
pub const MAX_PDF_BYTES: usize = 3 * 1024 * 1024;
/// Most attachments per application.
pub const MAX_ATTACHMENTS: usize = 5;
/// Largest attachment: 1 MiB.
pub const MAX_ATTACHMENT_BYTES: usize = 1024 * 1024;
/// Largest total of attachments in one application: 3 MiB, so the request with its form stays
/// under the gateway's 4 MiB limit.
pub const MAX_ATTACHMENTS_TOTAL: usize = 3 * 1024 * 1024;
/// Largest signed application form: 64 KiB.
pub const MAX_APPLICATION_BYTES: usize = 64 * 1024;
/// Longest free-text field.
pub const MAX_TEXT: usize = 2000;

pub use crate::reasons::{
    OTP_CODE_WRONG as REASON_OTP_WRONG, OTP_UNAVAILABLE as REASON_OTP_UNAVAILABLE,
};

/// The store's errors as the caller sees them: the one place their codes and reasons are chosen.
impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::ApplicationNotFound => {
                ApiError::not_found(reasons::APPLICATION_NOT_FOUND, "no such application")
            }
            StoreError::VacancyNotFound => {
                ApiError::not_found(reasons::VACANCY_NOT_FOUND, "no such vacancy")
            }
            StoreError::AttachmentNotFound => {
                ApiError::not_found(reasons::ATTACHMENT_NOT_FOUND, "no such attachment")
            }
            StoreError::VacancyClosed => ApiError::failed_precondition(
                reasons::VACANCY_CLOSED,
                "the vacancy no longer accepts applications",
            ),
            StoreError::ApplicationActive { vacancy_id } => ApiError::already_exists(
                reasons::APPLICATION_ALREADY_ACTIVE,
                "the candidate already has an active application for this vacancy",
            )
            .with_metadata("vacancy_id", vacancy_id),
            StoreError::ConcurrentChange => ApiError::new(
                tonic::Code::Aborted,
                reasons::CONCURRENT_CHANGE,
                "the application changed meanwhile; read it again",
            ),
            StoreError::IllegalTransition(illegal) => illegal.into(),
            StoreError::UnknownEventState(_) => ApiError::internal("unknown state in an event"),
            StoreError::Database(error) => error.into(),
        }
    }
}

impl From<StoreError> for Status {
    fn from(error: StoreError) -> Self {
        ApiError::from(error).into()
    }
}

/// `FAILED_PRECONDITION` / `ILLEGAL_TRANSITION`, naming the action and the state.
impl From<IllegalTransition> for ApiError {
    fn from(illegal: IllegalTransition) -> Self {
        let state = illegal.state.to_proto().as_str_name();
        ApiError::failed_precondition(reasons::ILLEGAL_TRANSITION, illegal.to_string())
            .with_metadata("action", illegal.action.name())
            .with_metadata("state", state)
    }
}

fn validate_attachments(attachments: &[pb::Attachment]) -> Result<Vec<NewAttachment>, ApiError> {
    if attachments.len() > MAX_ATTACHMENTS {
        return Err(ApiError::invalid_field(
            "attachments",
            "at most 5 attachments",
        ));
    }
    let total: usize = attachments
        .iter()
        .map(|attachment| attachment.content.len())
        .sum();
    if total > MAX_ATTACHMENTS_TOTAL {
        return Err(ApiError::invalid_field(
            "attachments",
            "are larger than 3 MiB together",
        ));
    }
    attachments
        .iter()
        .enumerate()
        .map(|(index, attachment)| {
            let field = |name: &str| format!("attachments[{index}].{name}");
            let file_name = attachment.file_name.trim();
            if file_name.is_empty()
                || file_name.chars().count() > 200
                || file_name.contains(['/', '\\'])
            {
                return Err(ApiError::invalid_field(
                    field("file_name"),
                    "must be 1 to 200 characters without path separators",
                ));
            }
            if attachment.content_type != "application/pdf" {
                return Err(ApiError::invalid_field(
                    field("content_type"),
                    "must be application/pdf",
                ));
            }
            if attachment.content.len() > MAX_ATTACHMENT_BYTES {
                return Err(ApiError::invalid_field(
                    field("content"),
                    "is larger than 1 MiB",
                ));
            }
            pdf_field(&field("content"), &attachment.content)?;
            Ok(NewAttachment {
                file_name: file_name.to_string(),
                content_type: attachment.content_type.clone(),
                description: text_field(&field("description"), &attachment.description, false)?,
                sha256: shlyuz_kit::envelope::sha256_hex(&attachment.content),
                content: attachment.content.clone(),
            })
        })
        .collect()
}

fn attachment_to_proto(attachment: AttachmentRow) -> pb::Attachment {
    pb::Attachment {
        attachment_id: attachment.attachment_id,
        file_name: attachment.file_name,
        content_type: attachment.content_type,
        content: attachment.content,
        description: attachment.description,
        size_bytes: attachment.size_bytes,
        sha256: attachment.sha256,
    }
}

/// The certification authority whose EDS intake accepts: its certificate and revocation status.
/// The registry's CA is a personal-data route, so every query names the signer as its subject.
pub trait CertificateAuthority: Send + Sync {
    /// The CA certificate, PEM.
    fn ca_certificate_pem<'a>(&'a self, subject: &'a Iin) -> BoxFuture<'a, Result<String, String>>;
    /// The status of the certificate with serial `serial_hex` held by `subject`.
    fn status<'a>(
        &'a self,
        serial_hex: &'a str,
        subject: &'a Iin,
    ) -> BoxFuture<'a, Result<RevocationStatus, String>>;
}

/// What notify answered about a candidate's one-time password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OtpCheck {
    /// The code matched and is now used up.
    Confirmed,
    /// The code did not match; `attempts_left` more tries.
    Wrong {
        /// Tries left on this OTP.
        attempts_left: i32,
    },
}

/// Checks a candidate's one-time password (notify's `OtpService` through the gateway).
pub trait OtpVerifier: Send + Sync {
    /// Verifies `code` of `otp_id`, which must have been issued for `candidate` with
    /// [`APPLICATION_OTP_PURPOSE`](shlyuz_kit::application_form::APPLICATION_OTP_PURPOSE). Refusals by notify come back as its `ApiError`.
    fn verify<'a>(
        &'a self,
        otp_id: &'a str,
        code: &'a str,
        candidate: &'a Iin,
    ) -> BoxFuture<'a, Result<OtpCheck, ApiError>>;
}

/// Without a gateway nothing can confirm an OTP.
struct NoOtp;

impl OtpVerifier for NoOtp {
    fn verify<'a>(
        &'a self,
        _otp_id: &'a str,
        _code: &'a str,
        _candidate: &'a Iin,
    ) -> BoxFuture<'a, Result<OtpCheck, ApiError>> {
        Box::pin(async {
            Err(ApiError::unavailable(
                REASON_OTP_UNAVAILABLE,
                "one-time passwords cannot be checked: intake has no gateway",
            ))
        })
    }
}

struct SubjectRevocation<'a> {
    authority: &'a dyn CertificateAuthority,
    subject: &'a Iin,
}

impl RevocationSource for SubjectRevocation<'_> {
    fn status<'a>(
        &'a self,
        serial_hex: &'a str,
    ) -> BoxFuture<'a, Result<RevocationStatus, String>> {
        self.authority.status(serial_hex, self.subject)
    }
}

/// EDS verification against one CA; the CA certificate is fetched once, on first use, so the
/// service starts even while the registry is down (decision 49).
#[derive(Clone)]
pub struct SignatureCheck {
    authority: Arc<dyn CertificateAuthority>,
    verifier: Arc<tokio::sync::OnceCell<DocumentVerifier>>,
    otp: Arc<dyn OtpVerifier>,
}

impl SignatureCheck {
    /// Trusts the CA `authority` names and asks it about revocation; no OTP confirmation until
    /// [`SignatureCheck::with_otp`].
    pub fn new(authority: Arc<dyn CertificateAuthority>) -> Self {
        Self {
            authority,
            verifier: Arc::new(tokio::sync::OnceCell::new()),
            otp: Arc::new(NoOtp),
        }
    }

    /// Confirms OTP-signed applications with `otp`.
    pub fn with_otp(self, otp: Arc<dyn OtpVerifier>) -> Self {
        Self { otp, ..self }
    }

    async fn verifier(&self, subject: &Iin) -> Result<&DocumentVerifier, ApiError> {
        self.verifier
            .get_or_try_init(|| async {
                let pem = self
                    .authority
                    .ca_certificate_pem(subject)
                    .await
                    .map_err(|error| {
                        tracing::warn!(error = %error, "ca certificate unavailable");
                        ApiError::unavailable(
                            reasons::CA_CERTIFICATE_UNAVAILABLE,
                            "the certification authority cannot be reached",
                        )
                    })?;
                DocumentVerifier::new(&pem).map_err(|error| {
                    tracing::error!(error = %error, "ca certificate unusable");
                    ApiError::internal("the certification authority's certificate is unusable")
                })
            })
            .await
    }
}

/// Everything the services need; cheap to clone.
#[derive(Clone)]
pub struct IntakeServices {
    store: Store,
    policy: RolePolicy,
    lookups: Arc<dyn RegistryLookups>,
    signatures: SignatureCheck,
    executors: Arc<Vec<String>>,
}

impl IntakeServices {
    /// The services over `store`, trusting roles per `policy`, building dossiers with `lookups`,
    /// checking EDS with `signatures`; `executors` are the MoD executors assignments go to.
    pub fn new(
        store: Store,
        policy: RolePolicy,
        lookups: Arc<dyn RegistryLookups>,
        signatures: SignatureCheck,
        executors: Vec<String>,
    ) -> Self {
        Self {
            store,
            policy,
            lookups,
            signatures,
            executors: Arc::new(executors),
        }
    }

    #[cfg(test)]
    /// The store (outbox senders, tests).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The three gRPC services as routes.
    pub fn routes(self) -> tonic::service::Routes {
        tonic::service::Routes::new(pb::vacancy_service_server::VacancyServiceServer::new(
            self.clone(),
        ))
        .add_service(pb::application_service_server::ApplicationServiceServer::new(self.clone()))
        .add_service(pb::report_service_server::ReportServiceServer::new(self))
    }

    fn caller<T>(&self, request: &Request<T>) -> Result<Caller, ApiError> {
        self.policy.caller(request.metadata())
    }

    /// The application if `caller` may see it; NOT_FOUND otherwise, so ids cannot be probed.
    async fn visible(
        &self,
        caller: &Caller,
        application_id: &str,
    ) -> Result<ApplicationRow, ApiError> {
        uuid::Uuid::parse_str(application_id)
            .map_err(|_| ApiError::invalid_field("application_id", "must be a UUID"))?;
        let application = self.store.application(application_id).await?;
        let visible = match caller.role {
            Role::Head => true,
            Role::Candidate => application.candidate_iin == caller.user_id,
            Role::ModExecutor => application.assignee_user_id == caller.user_id,
            Role::DdoExecutor => {
                !application.ddo_region_kato.is_empty()
                    && application.ddo_region_kato == caller.region_kato
            }
        };
        if visible {
            Ok(application)
        } else {
            Err(StoreError::ApplicationNotFound.into())
        }
    }

    /// Loads for `action`: role allowed, application visible, transition legal.
    async fn for_action(
        &self,
        caller: &Caller,
        application_id: &str,
        action: Action,
    ) -> Result<ApplicationRow, ApiError> {
        caller.require(action.roles())?;
        let application = self.visible(caller, application_id).await?;
        workflow::transition(application.state, action)?;
        Ok(application)
    }

    async fn verify(
        &self,
        field: &str,
        signed: Option<&pb::SignedDocument>,
        expected_document: Option<&[u8]>,
        signer_iin: &Iin,
    ) -> Result<String, ApiError> {
        let signed = signed.ok_or_else(|| ApiError::invalid_field(field, "is required"))?;
        if let Some(expected) = expected_document
            && signed.document.as_slice() != expected
        {
            return Err(ApiError::invalid_field(
                format!("{field}.document"),
                "is not the document to be signed",
            )
            .with_reason(reasons::SIGNED_DOCUMENT_MISMATCH));
        }
        let revocation = SubjectRevocation {
            authority: self.signatures.authority.as_ref(),
            subject: signer_iin,
        };
        let verified = self
            .signatures
            .verifier(signer_iin)
            .await?
            .verify(
                &signed.document,
                &signed.signature,
                &signed.signer_certificate_pem,
                signer_iin,
                self.store_now(),
                &revocation,
            )
            .await
            .map_err(|error| signature_error(field, &error))?;
        Ok(verified.serial_hex)
    }

    fn store_now(&self) -> time::OffsetDateTime {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.store.now_ms()) * 1_000_000)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
    }

    fn view(&self, caller: &Caller, application: &ApplicationRow) -> pb::Application {
        view(caller.role, application)
    }
}

fn signature_error(field: &str, error: &DocumentError) -> ApiError {
    match error {
        DocumentError::StatusUnavailable(_) => ApiError::unavailable(
            error.reason(),
            "the certificate's revocation status is unavailable",
        ),
        other => ApiError::invalid_field(field, other.to_string()).with_reason(other.reason()),
    }
}

/// What `role` sees of `application`: candidates their status and appointment, ДДО executors
/// the minimal medical data set, heads and MoD executors everything.
pub fn view(role: Role, application: &ApplicationRow) -> pb::Application {
    let candidate_status = application.state.candidate_status();
    let appointment = (!application.ddo_region_kato.is_empty()).then(|| pb::MedicalAppointment {
        ddo_region_kato: application.ddo_region_kato.clone(),
        address: application.appointment_address.clone(),
        appointment_time_ms: application.appointment_time_ms,
    });
    let order = (!application.order_unit.is_empty()).then(|| pb::OrderToReport {
        unit: application.order_unit.clone(),
        report_time_ms: application.order_time_ms,
        place: application.order_place.clone(),
    });
    let deadline = (!application.deadline_role.is_empty()).then(|| pb::StepDeadline {
        role: application.deadline_role.clone(),
        due_time_ms: application.deadline_ms,
    });
    let medical_data = || {
        serde_json::from_str::<Dossier>(&application.medical_data_json)
            .ok()
            .map(|dossier| dossier.medical_data())
    };
    match role {
        Role::Candidate => pb::Application {
            application_id: application.application_id.clone(),
            vacancy_id: application.vacancy_id.clone(),
            candidate_iin: application.candidate_iin.clone(),
            candidate_status: candidate_status.to_proto() as i32,
            candidate_status_text: candidate_status.text().to_string(),
            medical_appointment: appointment,
            order_to_report: order,
            create_time_ms: application.create_time_ms,
            update_time_ms: application.update_time_ms,
            ..Default::default()
        },
        Role::DdoExecutor => pb::Application {
            application_id: application.application_id.clone(),
            medical_appointment: appointment,
            medical_outcome: application.medical_outcome as i32,
            deadline: deadline.filter(|deadline| deadline.role == Role::DdoExecutor.name()),
            medical_data: medical_data(),
            create_time_ms: application.create_time_ms,
            update_time_ms: application.update_time_ms,
            ..Default::default()
        },
        Role::Head | Role::ModExecutor => pb::Application {
            application_id: application.application_id.clone(),
            vacancy_id: application.vacancy_id.clone(),
            candidate_iin: application.candidate_iin.clone(),
            candidate_status: candidate_status.to_proto() as i32,
            candidate_status_text: candidate_status.text().to_string(),
            state: application.state.to_proto() as i32,
            rejection_reason: application.rejection_reason.clone(),
            assignee_user_id: application.assignee_user_id.clone(),
            registered_region_kato: application.registered_region_kato.clone(),
            dossier_incomplete: application.dossier_incomplete,
            dossier_missing_sources: application
                .dossier_missing
                .split(',')
                .filter(|source| !source.is_empty())
                .map(str::to_string)
                .collect(),
            medical_appointment: appointment,
            medical_outcome: application.medical_outcome as i32,
            order_to_report: order,
            deadline,
            medical_data: medical_data(),
            create_time_ms: application.create_time_ms,
            update_time_ms: application.update_time_ms,
            dossier_json: application.dossier_json.clone(),
            attachments: Vec::new(),
            agreement_document: Vec::new(),
        },
    }
}

fn vacancy_to_proto(vacancy: VacancyRow) -> pb::Vacancy {
    pb::Vacancy {
        vacancy_id: vacancy.vacancy_id,
        position: vacancy.position,
        rank: vacancy.rank as i32,
        branch: vacancy.branch,
        unit: vacancy.unit,
        region_kato: vacancy.region_kato,
        places: i32::try_from(vacancy.places).unwrap_or(i32::MAX),
        requirements: vacancy.requirements,
        state: vacancy.state as i32,
        create_time_ms: vacancy.create_time_ms,
        close_time_ms: vacancy.close_time_ms,
    }
}

fn text_field(field: &str, value: &str, required: bool) -> Result<String, ApiError> {
    let value = value.trim();
    if required && value.is_empty() {
        return Err(ApiError::invalid_field(field, "is required"));
    }
    if value.chars().count() > MAX_TEXT {
        return Err(ApiError::invalid_field(
            field,
            "is longer than 2000 characters",
        ));
    }
    Ok(value.to_string())
}

fn uuid_field(field: &str, value: &str) -> Result<String, ApiError> {
    uuid::Uuid::parse_str(value)
        .map(|uuid| uuid.hyphenated().to_string())
        .map_err(|_| ApiError::invalid_field(field, "must be a UUID"))
}

fn pdf_field(field: &str, bytes: &[u8]) -> Result<(), ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::invalid_field(field, "is required"));
    }
    if bytes.len() > MAX_PDF_BYTES {
        return Err(ApiError::invalid_field(field, "is larger than 10 MiB"));
    }
    if !bytes.starts_with(b"%PDF-") {
        return Err(ApiError::invalid_field(field, "must be a PDF document"));
    }
    Ok(())
}

fn future_time(field: &str, value: i64, now: i64) -> Result<(), ApiError> {
    if value <= now {
        return Err(ApiError::invalid_field(field, "must be in the future"));
    }
    Ok(())
}

fn official_iin(caller: &Caller) -> Result<Iin, ApiError> {
    // Officials sign with their own EDS; their user id is their IIN (checked in roles.rs).
    parse_iin_field(shlyuz_kit::envelope::USER_ID, &caller.user_id)
}

fn vacancy_state(value: i32) -> Option<i64> {
    match pb::VacancyState::try_from(value) {
        Ok(pb::VacancyState::Open) => Some(store::VACANCY_OPEN),
        Ok(pb::VacancyState::Closed) => Some(store::VACANCY_CLOSED),
        _ => None,
    }
}

#[tonic::async_trait]
impl pb::vacancy_service_server::VacancyService for IntakeServices {
    async fn create_vacancy(
        &self,
        request: Request<pb::CreateVacancyRequest>,
    ) -> Result<Response<pb::CreateVacancyResponse>, Status> {
        let caller = self.caller(&request)?;
        caller.require(&[Role::Head])?;
        let vacancy = request
            .into_inner()
            .vacancy
            .ok_or_else(|| ApiError::invalid_field("vacancy", "is required"))?;
        let rank = match pb::Rank::try_from(vacancy.rank) {
            Ok(pb::Rank::Private | pb::Rank::Sergeant) => i64::from(vacancy.rank),
            _ => {
                return Err(
                    ApiError::invalid_field("vacancy.rank", "must be private or sergeant").into(),
                );
            }
        };
        validate_kato("vacancy.region_kato", &vacancy.region_kato)?;
        if !(1..=10_000).contains(&vacancy.places) {
            return Err(ApiError::invalid_field("vacancy.places", "must be 1 to 10000").into());
        }
        let row = VacancyRow {
            vacancy_id: String::new(),
            position: text_field("vacancy.position", &vacancy.position, true)?,
            rank,
            branch: text_field("vacancy.branch", &vacancy.branch, true)?,
            unit: text_field("vacancy.unit", &vacancy.unit, true)?,
            region_kato: vacancy.region_kato,
            places: i64::from(vacancy.places),
            requirements: text_field("vacancy.requirements", &vacancy.requirements, false)?,
            state: store::VACANCY_OPEN,
            create_time_ms: 0,
            close_time_ms: 0,
        };
        let created = self.store.create_vacancy(row).await?;
        Ok(Response::new(pb::CreateVacancyResponse {
            vacancy: Some(vacancy_to_proto(created)),
        }))
    }

    async fn list_vacancies(
        &self,
        request: Request<pb::ListVacanciesRequest>,
    ) -> Result<Response<pb::ListVacanciesResponse>, Status> {
        self.caller(&request)?;
        let request = request.into_inner();
        let page_size = paging::page_size(request.page_size)?;
        if !request.region_kato.is_empty() {
            validate_kato("region_kato", &request.region_kato)?;
        }
        let (state, branch) = (vacancy_state(request.state), request.branch.trim());
        let scope = store::vacancies_scope(state, &request.region_kato, branch);
        let after = paging::decode_page_token(&request.page_token, &scope)?;
        let (vacancies, next) = self
            .store
            .list_vacancies(
                state,
                &request.region_kato,
                branch,
                page_size,
                after.as_deref(),
            )
            .await?;
        Ok(Response::new(pb::ListVacanciesResponse {
            vacancies: vacancies.into_iter().map(vacancy_to_proto).collect(),
            next_page_token: store::next_token(&scope, next),
        }))
    }

    async fn close_vacancy(
        &self,
        request: Request<pb::CloseVacancyRequest>,
    ) -> Result<Response<pb::CloseVacancyResponse>, Status> {
        let caller = self.caller(&request)?;
        caller.require(&[Role::Head])?;
        let vacancy_id = uuid_field("vacancy_id", &request.get_ref().vacancy_id)?;
        let vacancy = self.store.close_vacancy(&vacancy_id).await?;
        Ok(Response::new(pb::CloseVacancyResponse {
            vacancy: Some(vacancy_to_proto(vacancy)),
        }))
    }
}

/// An answer carrying the application: the gateway logs its candidate as accessed.
macro_rules! respond {
    ($response:ident, $self:ident, $caller:ident, $row:expr) => {
        Ok(about_candidates(
            Response::new(pb::$response {
                application: Some($self.view(&$caller, &$row)),
            }),
            [$row.candidate_iin.as_str()],
        ))
    };
}

/// Every answer of the application service is about its candidates (dossiers carry medical and
/// criminal data): name them to the gateway, which writes their subject-access rows.
fn about_candidates<'a, T>(
    response: Response<T>,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Response<T> {
    shlyuz_kit::subject::declare_response_subjects(response, candidates)
}

#[tonic::async_trait]
impl pb::application_service_server::ApplicationService for IntakeServices {
    async fn create_application(
        &self,
        request: Request<pb::CreateApplicationRequest>,
    ) -> Result<Response<pb::CreateApplicationResponse>, Status> {
        let caller = self.caller(&request)?;
        caller.require(&[Role::Candidate])?;
        let candidate = parse_iin_field(shlyuz_kit::envelope::USER_ID, &caller.user_id)?;
        let request = request.into_inner();
        let vacancy_id = uuid_field("vacancy_id", &request.vacancy_id)?;
        let consent_id = uuid_field("consent_id", &request.consent_id)?;
        let phone = request.phone_number.trim();
        if !(phone.starts_with('+')
            && (11..=16).contains(&phone.len())
            && phone[1..].bytes().all(|byte| byte.is_ascii_digit()))
        {
            return Err(ApiError::invalid_field(
                "phone_number",
                "must be E.164, e.g. +77011234567",
            )
            .into());
        }
        let language = match request.language.as_str() {
            "" | "ru" => "ru",
            "kk" => "kk",
            _ => return Err(ApiError::invalid_field("language", "must be ru or kk").into()),
        };
        let attachments = validate_attachments(&request.attachments)?;
        let hashes: Vec<String> = attachments
            .iter()
            .map(|attachment| attachment.sha256.clone())
            .collect();
        let (signature_kind, signature_reference) = match (
            request.signed_application.as_ref(),
            request.otp_reference.trim(),
        ) {
            (Some(signed), "") => {
                if signed.document.len() > MAX_APPLICATION_BYTES {
                    return Err(ApiError::invalid_field(
                        "signed_application.document",
                        "is larger than 64 KiB",
                    )
                    .into());
                }
                let expected =
                    application_document(&vacancy_id, candidate.as_str(), &consent_id, &hashes);
                let serial = self
                    .verify(
                        "signed_application",
                        Some(signed),
                        Some(&expected),
                        &candidate,
                    )
                    .await?;
                ("eds", serial)
            }
            (None, otp_id) if !otp_id.is_empty() => {
                let code = request.otp_code.trim();
                if code.is_empty() {
                    return Err(ApiError::invalid_field(
                        "otp_code",
                        "is required with otp_reference",
                    )
                    .into());
                }
                match self.signatures.otp.verify(otp_id, code, &candidate).await? {
                    OtpCheck::Confirmed => ("otp", otp_id.to_string()),
                    OtpCheck::Wrong { attempts_left } => {
                        return Err(ApiError::invalid_field("otp_code", "does not match")
                            .with_reason(REASON_OTP_WRONG)
                            .with_metadata("attempts_left", attempts_left.to_string())
                            .into());
                    }
                }
            }
            _ => {
                return Err(ApiError::invalid_field(
                    "signed_application",
                    "exactly one of signed_application or otp_reference is required",
                )
                .into());
            }
        };
        let row = self
            .store
            .create_application(
                NewApplication {
                    vacancy_id,
                    candidate_iin: candidate.as_str().to_string(),
                    consent_id,
                    phone_number: phone.to_string(),
                    language: language.to_string(),
                    signature_kind: signature_kind.to_string(),
                    signature_reference,
                    attachments,
                },
                &caller.actor(),
            )
            .await?;
        respond!(CreateApplicationResponse, self, caller, row)
    }

    async fn get_application(
        &self,
        request: Request<pb::GetApplicationRequest>,
    ) -> Result<Response<pb::GetApplicationResponse>, Status> {
        let caller = self.caller(&request)?;
        let row = self
            .visible(&caller, &request.get_ref().application_id)
            .await?;
        let mut application = self.view(&caller, &row);
        if caller.role != Role::DdoExecutor {
            // The candidate signs exactly these bytes, and keeps the agreement signed by both.
            application.agreement_document = row.agreement_document.clone().unwrap_or_default();
        }
        if matches!(caller.role, Role::Head | Role::ModExecutor) {
            application.attachments = self
                .store
                .attachments(&row.application_id)
                .await?
                .into_iter()
                .map(attachment_to_proto)
                .collect();
        }
        Ok(about_candidates(
            Response::new(pb::GetApplicationResponse {
                application: Some(application),
            }),
            [row.candidate_iin.as_str()],
        ))
    }

    async fn get_application_attachment(
        &self,
        request: Request<pb::GetApplicationAttachmentRequest>,
    ) -> Result<Response<pb::GetApplicationAttachmentResponse>, Status> {
        let caller = self.caller(&request)?;
        caller.require(&[Role::Head, Role::ModExecutor])?;
        let request = request.into_inner();
        let attachment_id = uuid_field("attachment_id", &request.attachment_id)?;
        let row = self.visible(&caller, &request.application_id).await?;
        let attachment = self
            .store
            .attachment(&row.application_id, &attachment_id)
            .await?;
        Ok(about_candidates(
            Response::new(pb::GetApplicationAttachmentResponse {
                attachment: Some(attachment_to_proto(attachment)),
            }),
            [row.candidate_iin.as_str()],
        ))
    }

    async fn list_applications(
        &self,
        request: Request<pb::ListApplicationsRequest>,
    ) -> Result<Response<pb::ListApplicationsResponse>, Status> {
        let caller = self.caller(&request)?;
        let request = request.into_inner();
        let page_size = paging::page_size(request.page_size)?;
        let state = match pb::ApplicationState::try_from(request.state) {
            Ok(pb::ApplicationState::Unspecified) => None,
            Ok(state) => State::from_code(i64::from(state as i32)),
            Err(_) => return Err(ApiError::invalid_field("state", "unknown state").into()),
        };
        // Candidates and ДДО executors cannot filter on what they cannot see.
        if matches!(caller.role, Role::Candidate | Role::DdoExecutor)
            && (state.is_some() || !request.assignee_user_id.is_empty())
        {
            return Err(ApiError::permission_denied(
                reasons::ROLE_NOT_ALLOWED,
                "this role cannot filter on internal fields",
            )
            .into());
        }
        if !request.region_kato.is_empty() {
            validate_kato("region_kato", &request.region_kato)?;
        }
        if !request.candidate_iin.is_empty() {
            parse_iin_field("candidate_iin", &request.candidate_iin)?;
        }
        let filter = ApplicationFilter {
            state,
            vacancy_id: request.vacancy_id,
            assignee_user_id: request.assignee_user_id,
            region_kato: request.region_kato,
            candidate_iin: request.candidate_iin,
            overdue_only: request.overdue_only,
            archived_only: request.archived_only,
        };
        let scope = store::applications_scope(&filter);
        let after = paging::decode_page_token(&request.page_token, &scope)?;
        let (rows, next) = self
            .store
            .list_applications(&caller, &filter, page_size, after.as_deref())
            .await?;
        let response = Response::new(pb::ListApplicationsResponse {
            applications: rows.iter().map(|row| self.view(&caller, row)).collect(),
            next_page_token: store::next_token(&scope, next),
        });
        Ok(about_candidates(
            response,
            rows.iter().map(|row| row.candidate_iin.as_str()),
        ))
    }

    async fn list_application_events(
        &self,
        request: Request<pb::ListApplicationEventsRequest>,
    ) -> Result<Response<pb::ListApplicationEventsResponse>, Status> {
        let caller = self.caller(&request)?;
        caller.require(&[Role::Head, Role::ModExecutor])?;
        let row = self
            .visible(&caller, &request.get_ref().application_id)
            .await?;
        let events = self.store.events(&row.application_id).await?;
        let response = Response::new(pb::ListApplicationEventsResponse {
            events: events
                .into_iter()
                .map(|event| pb::ApplicationEvent {
                    event_id: event.event_id,
                    application_id: event.application_id,
                    actor: event.actor,
                    event_time_ms: event.event_time_ms,
                    from_state: event.from_state.map_or(0, |state| state.to_proto() as i32),
                    to_state: event.to_state.to_proto() as i32,
                    note: event.note,
                })
                .collect(),
        });
        Ok(about_candidates(response, [row.candidate_iin.as_str()]))
    }

    async fn assign_application(
        &self,
        request: Request<pb::AssignApplicationRequest>,
    ) -> Result<Response<pb::AssignApplicationResponse>, Status> {
        let caller = self.caller(&request)?;
        let request = request.into_inner();
        let application = self
            .for_action(&caller, &request.application_id, Action::Assign)
            .await?;
        let assignee = text_field("assignee_user_id", &request.assignee_user_id, true)?;
        if !self.executors.is_empty() && !self.executors.contains(&assignee) {
            return Err(ApiError::invalid_field(
                "assignee_user_id",
                "is not an MoD executor of this department",
            )
            .into());
        }
        let row = self
            .store
            .transition(
                &application,
                Action::Assign,
                &caller,
                &format!("assigned to {assignee}"),
                vec![("assignee_user_id", Value::Text(assignee))],
            )
            .await?;
        respond!(AssignApplicationResponse, self, caller, row)
    }

    async fn suggest_assignees(
        &self,
        request: Request<pb::SuggestAssigneesRequest>,
    ) -> Result<Response<pb::SuggestAssigneesResponse>, Status> {
        let caller = self.caller(&request)?;
        caller.require(&[Role::Head])?;
        let application = self
            .visible(&caller, &request.get_ref().application_id)
            .await?;
        let vacancy = self.store.vacancy(&application.vacancy_id).await?;
        let workloads = self
            .store
            .workloads(&self.executors, &vacancy.branch, &vacancy.region_kato)
            .await?;
        let clamp = |value: i64| i32::try_from(value).unwrap_or(i32::MAX);
        Ok(Response::new(pb::SuggestAssigneesResponse {
            suggestions: workloads
                .into_iter()
                .map(|workload| pb::AssigneeSuggestion {
                    user_id: workload.user_id,
                    open_applications: clamp(workload.open),
                    same_branch_handled: clamp(workload.same_branch),
                    same_region_handled: clamp(workload.same_region),
                })
                .collect(),
        }))
    }

    async fn build_dossier(
        &self,
        request: Request<pb::BuildDossierRequest>,
    ) -> Result<Response<pb::BuildDossierResponse>, Status> {
        let caller = self.caller(&request)?;
        let application = self
            .for_action(
                &caller,
                &request.get_ref().application_id,
                Action::DossierAccepted,
            )
            .await?;
        let context = LookupContext {
            candidate_iin: application.candidate_iin.clone(),
            consent_id: application.consent_id.clone(),
            user_id: caller.user_id.clone(),
        };
        let dossier = Dossier::from_answers(self.lookups.collect(&context).await);
        let dossier_json = serde_json::to_string(&dossier)
            .map_err(|_| ApiError::internal("cannot encode the dossier"))?;
        let mut updates: Updates = vec![
            ("dossier_json", Value::Text(dossier_json)),
            (
                "dossier_missing",
                Value::Text(dossier.missing_sources.join(",")),
            ),
            (
                "dossier_incomplete",
                Value::Int(i64::from(!dossier.is_complete())),
            ),
            (
                "registered_region_kato",
                Value::Text(dossier.region_kato().to_string()),
            ),
        ];
        if !dossier.is_complete() {
            // Never passed silently: the application stays where it is, flagged, until a
            // rebuild gets an answer from every registry.
            let row = self.store.update_in_place(&application, updates).await?;
            return respond!(BuildDossierResponse, self, caller, row);
        }
        let today = workflow::local_date(self.store.now_ms());
        let row = match dossier::ineligibility(&dossier, today) {
            Some(reason) => {
                updates.push(("rejection_reason", Value::Text(reason.clone())));
                self.store
                    .transition(&application, Action::Reject, &caller, &reason, updates)
                    .await?
            }
            None => {
                self.store
                    .transition(
                        &application,
                        Action::DossierAccepted,
                        &caller,
                        "dossier complete, eligible",
                        updates,
                    )
                    .await?
            }
        };
        respond!(BuildDossierResponse, self, caller, row)
    }

    async fn send_to_special_check(
        &self,
        request: Request<pb::SendToSpecialCheckRequest>,
    ) -> Result<Response<pb::SendToSpecialCheckResponse>, Status> {
        let caller = self.caller(&request)?;
        let application = self
            .for_action(
                &caller,
                &request.get_ref().application_id,
                Action::SendToSpecialCheck,
            )
            .await?;
        let row = self
            .store
            .transition(
                &application,
                Action::SendToSpecialCheck,
                &caller,
                "",
                Vec::new(),
            )
            .await?;
        respond!(SendToSpecialCheckResponse, self, caller, row)
    }

    async fn reject_application(
        &self,
        request: Request<pb::RejectApplicationRequest>,
    ) -> Result<Response<pb::RejectApplicationResponse>, Status> {
        let caller = self.caller(&request)?;
        let request = request.into_inner();
        let reason = text_field("internal_reason", &request.internal_reason, true)?;
        let application = self
            .for_action(&caller, &request.application_id, Action::Reject)
            .await?;
        let row = self
            .store
            .transition(
                &application,
                Action::Reject,
                &caller,
                &reason,
                vec![("rejection_reason", Value::Text(reason.clone()))],
            )
            .await?;
        respond!(RejectApplicationResponse, self, caller, row)
    }

    async fn send_to_medical(
        &self,
        request: Request<pb::SendToMedicalRequest>,
    ) -> Result<Response<pb::SendToMedicalResponse>, Status> {
        let caller = self.caller(&request)?;
        let request = request.into_inner();
        let appointment = request
            .appointment
            .ok_or_else(|| ApiError::invalid_field("appointment", "is required"))?;
        validate_kato("appointment.ddo_region_kato", &appointment.ddo_region_kato)?;
        let address = text_field("appointment.address", &appointment.address, true)?;
        let now = self.store.now_ms();
        future_time(
            "appointment.appointment_time_ms",
            appointment.appointment_time_ms,
            now,
        )?;
        let application = self
            .for_action(&caller, &request.application_id, Action::SendToMedical)
            .await?;
        if appointment.ddo_region_kato != application.registered_region_kato {
            return Err(ApiError::failed_precondition(
                reasons::DDO_REGION_MISMATCH,
                "the ДДО must be the one of the candidate's registered region",
            )
            .with_metadata("registered_region_kato", application.registered_region_kato)
            .into());
        }
        // The ДДО gets a copy of only the minimal data set, never the whole file.
        let dossier: Dossier = serde_json::from_str(&application.dossier_json)
            .map_err(|_| ApiError::internal("stored dossier is unreadable"))?;
        let minimal = Dossier {
            person: dossier.person.clone(),
            dispensaries: dossier.dispensaries.clone(),
            ..Default::default()
        };
        let medical_json = serde_json::to_string(&minimal)
            .map_err(|_| ApiError::internal("cannot encode the medical data set"))?;
        let chair_due = workflow::working_day_deadline(
            self.store.calendar(),
            appointment.appointment_time_ms,
            workflow::MEDICAL_CHAIR_WORKING_DAYS,
        );
        let row = self
            .store
            .transition(
                &application,
                Action::SendToMedical,
                &caller,
                "",
                vec![
                    ("ddo_region_kato", Value::Text(appointment.ddo_region_kato)),
                    ("appointment_address", Value::Text(address)),
                    (
                        "appointment_time_ms",
                        Value::Int(appointment.appointment_time_ms),
                    ),
                    ("medical_data_json", Value::Text(medical_json)),
                    ("chair_deadline_ms", Value::Int(chair_due)),
                ],
            )
            .await?;
        respond!(SendToMedicalResponse, self, caller, row)
    }

    async fn record_medical_result(
        &self,
        request: Request<pb::RecordMedicalResultRequest>,
    ) -> Result<Response<pb::RecordMedicalResultResponse>, Status> {
        let caller = self.caller(&request)?;
        let request = request.into_inner();
        let action = match pb::MedicalOutcome::try_from(request.outcome) {
            Ok(pb::MedicalOutcome::Pass) => Action::MedicalPass,
            Ok(pb::MedicalOutcome::Fail) => Action::MedicalFail,
            _ => return Err(ApiError::invalid_field("outcome", "must be pass or fail").into()),
        };
        let signed = request
            .signed_conclusion
            .as_ref()
            .ok_or_else(|| ApiError::invalid_field("signed_conclusion", "is required"))?;
        pdf_field("signed_conclusion.document", &signed.document)?;
        let signer = official_iin(&caller)?;
        let application = self
            .for_action(&caller, &request.application_id, action)
            .await?;
        let serial = self
            .verify("signed_conclusion", Some(signed), None, &signer)
            .await?;
        let mut updates: Updates = vec![
            ("medical_outcome", Value::Int(i64::from(request.outcome))),
            ("medical_conclusion", Value::Bytes(signed.document.clone())),
            ("medical_signer_serial", Value::Text(serial)),
        ];
        let note = if action == Action::MedicalFail {
            let reason = "медицинская комиссия: не годен".to_string();
            updates.push(("rejection_reason", Value::Text(reason.clone())));
            reason
        } else {
            "медицинская комиссия: годен".to_string()
        };
        let row = self
            .store
            .transition(&application, action, &caller, &note, updates)
            .await?;
        respond!(RecordMedicalResultResponse, self, caller, row)
    }

    async fn draft_agreement(
        &self,
        request: Request<pb::DraftAgreementRequest>,
    ) -> Result<Response<pb::DraftAgreementResponse>, Status> {
        let caller = self.caller(&request)?;
        let request = request.into_inner();
        pdf_field("agreement_document", &request.agreement_document)?;
        let application = self
            .for_action(&caller, &request.application_id, Action::DraftAgreement)
            .await?;
        let row = self
            .store
            .transition(
                &application,
                Action::DraftAgreement,
                &caller,
                "",
                vec![(
                    "agreement_document",
                    Value::Bytes(request.agreement_document),
                )],
            )
            .await?;
        respond!(DraftAgreementResponse, self, caller, row)
    }

    async fn sign_agreement_by_candidate(
        &self,
        request: Request<pb::SignAgreementByCandidateRequest>,
    ) -> Result<Response<pb::SignAgreementByCandidateResponse>, Status> {
        let caller = self.caller(&request)?;
        let request = request.into_inner();
        let application = self
            .for_action(&caller, &request.application_id, Action::SignByCandidate)
            .await?;
        let candidate = parse_iin_field("candidate_iin", &application.candidate_iin)?;
        let serial = self
            .verify(
                "signed_agreement",
                request.signed_agreement.as_ref(),
                application.agreement_document.as_deref(),
                &candidate,
            )
            .await?;
        let row = self
            .store
            .transition(
                &application,
                Action::SignByCandidate,
                &caller,
                "",
                vec![("candidate_signer_serial", Value::Text(serial))],
            )
            .await?;
        respond!(SignAgreementByCandidateResponse, self, caller, row)
    }

    async fn sign_agreement_by_head(
        &self,
        request: Request<pb::SignAgreementByHeadRequest>,
    ) -> Result<Response<pb::SignAgreementByHeadResponse>, Status> {
        let caller = self.caller(&request)?;
        let request = request.into_inner();
        let head = official_iin(&caller)?;
        let application = self
            .for_action(&caller, &request.application_id, Action::SignByHead)
            .await?;
        let serial = self
            .verify(
                "signed_agreement",
                request.signed_agreement.as_ref(),
                application.agreement_document.as_deref(),
                &head,
            )
            .await?;
        let row = self
            .store
            .transition(
                &application,
                Action::SignByHead,
                &caller,
                "",
                vec![("head_signer_serial", Value::Text(serial))],
            )
            .await?;
        respond!(SignAgreementByHeadResponse, self, caller, row)
    }

    async fn issue_order_to_report(
        &self,
        request: Request<pb::IssueOrderToReportRequest>,
    ) -> Result<Response<pb::IssueOrderToReportResponse>, Status> {
        let caller = self.caller(&request)?;
        let request = request.into_inner();
        let order = request
            .order
            .ok_or_else(|| ApiError::invalid_field("order", "is required"))?;
        let unit = text_field("order.unit", &order.unit, true)?;
        let place = text_field("order.place", &order.place, true)?;
        future_time(
            "order.report_time_ms",
            order.report_time_ms,
            self.store.now_ms(),
        )?;
        let application = self
            .for_action(&caller, &request.application_id, Action::IssueOrder)
            .await?;
        let row = self
            .store
            .transition(
                &application,
                Action::IssueOrder,
                &caller,
                "",
                vec![
                    ("order_unit", Value::Text(unit)),
                    ("order_time_ms", Value::Int(order.report_time_ms)),
                    ("order_place", Value::Text(place)),
                ],
            )
            .await?;
        respond!(IssueOrderToReportResponse, self, caller, row)
    }

    async fn complete_application(
        &self,
        request: Request<pb::CompleteApplicationRequest>,
    ) -> Result<Response<pb::CompleteApplicationResponse>, Status> {
        let caller = self.caller(&request)?;
        let application = self
            .for_action(&caller, &request.get_ref().application_id, Action::Complete)
            .await?;
        let row = self
            .store
            .transition(
                &application,
                Action::Complete,
                &caller,
                "personal file sent to the unit",
                Vec::new(),
            )
            .await?;
        respond!(CompleteApplicationResponse, self, caller, row)
    }
}

#[tonic::async_trait]
impl pb::report_service_server::ReportService for IntakeServices {
    async fn get_application_report(
        &self,
        request: Request<pb::GetApplicationReportRequest>,
    ) -> Result<Response<pb::GetApplicationReportResponse>, Status> {
        let caller = self.caller(&request)?;
        caller.require(&[Role::Head])?;
        let request = request.into_inner();
        if request.start_time_ms < 0 || request.end_time_ms < 0 {
            return Err(ApiError::invalid_field("start_time_ms", "must not be negative").into());
        }
        if !request.region_kato.is_empty() {
            validate_kato("region_kato", &request.region_kato)?;
        }
        let rows = self
            .store
            .report(
                request.start_time_ms,
                request.end_time_ms,
                &request.region_kato,
                request.branch.trim(),
            )
            .await?;
        let total = rows.iter().map(|row| row.count).sum();
        Ok(Response::new(pb::GetApplicationReportResponse {
            rows: rows
                .into_iter()
                .map(|row| pb::ReportRow {
                    state: row.state.to_proto() as i32,
                    region_kato: row.region_kato,
                    branch: row.branch,
                    count: row.count,
                })
                .collect(),
            total,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CA answering "good" for every certificate it is asked about.
    struct GoodAuthority {
        ca_pem: String,
    }

    impl CertificateAuthority for GoodAuthority {
        fn ca_certificate_pem<'a>(
            &'a self,
            _subject: &'a Iin,
        ) -> BoxFuture<'a, Result<String, String>> {
            let pem = self.ca_pem.clone();
            Box::pin(async move { Ok(pem) })
        }

        fn status<'a>(
            &'a self,
            _serial_hex: &'a str,
            _subject: &'a Iin,
        ) -> BoxFuture<'a, Result<RevocationStatus, String>> {
            Box::pin(async { Ok(RevocationStatus::Good) })
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_certificate_of_the_ca_that_lapsed_is_refused_as_expired() {
        let now = time::OffsetDateTime::now_utc();
        let ca = shlyuz_kit::signed_document::NationalCa::generate(now - time::Duration::days(90))
            .expect("ca");
        let test_database = shlyuz_kit::db::testing::TestDatabase::sqlite().await;
        let services = IntakeServices::new(
            Store::new(
                test_database.database().clone(),
                shlyuz_kit::clock::system_clock(),
                shlyuz_kit::calendar::WorkingCalendar::kazakhstan(),
            ),
            RolePolicy::new(["jauynger-portal".to_string()]),
            Arc::new(crate::gateway::NoGateway),
            SignatureCheck::new(Arc::new(GoodAuthority {
                ca_pem: ca.certificate_pem().to_string(),
            })),
            Vec::new(),
        );
        let candidate = Iin::parse("980512391010").expect("iin");
        let document = b"%PDF-1.7\n% application\n".to_vec();
        let signed_by = |not_before, not_after| {
            let issued = ca
                .issue(
                    &candidate,
                    "Қасымов Ерлан Серікұлы",
                    None,
                    not_before,
                    not_after,
                )
                .expect("issue");
            pb::SignedDocument {
                signature: shlyuz_kit::signed_document::sign_document(
                    &issued.private_key_pem,
                    &document,
                )
                .expect("sign"),
                document: document.clone(),
                signer_certificate_pem: issued.certificate_pem,
            }
        };

        // Valid until a month ago.
        let lapsed = signed_by(
            now - time::Duration::days(60),
            now - time::Duration::days(30),
        );
        let refused = services
            .verify("signed_application", Some(&lapsed), None, &candidate)
            .await
            .expect_err("expired");
        assert_eq!(
            (refused.code(), refused.reason()),
            (tonic::Code::InvalidArgument, "CERTIFICATE_EXPIRED")
        );
        // The same CA's current certificate passes.
        let current = signed_by(
            now - time::Duration::days(1),
            now + time::Duration::days(30),
        );
        services
            .verify("signed_application", Some(&current), None, &candidate)
            .await
            .expect("a current certificate");
        test_database.cleanup().await;
    }

    fn wire(error: impl Into<ApiError>) -> Status {
        error.into().into()
    }

    #[test]
    fn a_lost_race_is_aborted_with_concurrent_change() {
        let status = wire(StoreError::ConcurrentChange);
        let summary = shlyuz_kit::error::summarize_status(&status);
        assert_eq!(summary.code, tonic::Code::Aborted);
        assert_eq!(summary.reason, reasons::CONCURRENT_CHANGE);
        assert_eq!(
            status.message(),
            "the application changed meanwhile; read it again"
        );
    }

    #[test]
    fn a_second_active_application_names_its_vacancy() {
        let error = ApiError::from(StoreError::ApplicationActive {
            vacancy_id: "vacancy-1".to_string(),
        });
        assert_eq!(error.code(), tonic::Code::AlreadyExists);
        assert_eq!(error.reason(), reasons::APPLICATION_ALREADY_ACTIVE);
        assert_eq!(
            error.metadata().get("vacancy_id").map(String::as_str),
            Some("vacancy-1")
        );
    }

    #[test]
    fn an_illegal_transition_names_the_action_and_the_state() {
        let error = ApiError::from(StoreError::from(IllegalTransition {
            action: Action::SendToMedical,
            state: State::Dossier,
        }));
        assert_eq!(error.code(), tonic::Code::FailedPrecondition);
        assert_eq!(error.reason(), reasons::ILLEGAL_TRANSITION);
        assert_eq!(
            error.message(),
            "action send_to_medical is not allowed in state APPLICATION_STATE_DOSSIER"
        );
        let metadata = error.metadata();
        assert_eq!(
            metadata.get("action").map(String::as_str),
            Some("send_to_medical")
        );
        assert_eq!(
            metadata.get("state").map(String::as_str),
            Some("APPLICATION_STATE_DOSSIER")
        );
    }

    #[test]
    fn unknown_attachments_and_corrupt_events_keep_their_answers() {
        let missing = shlyuz_kit::error::summarize_status(&wire(StoreError::AttachmentNotFound));
        assert_eq!(
            (missing.code, missing.reason.as_str()),
            (tonic::Code::NotFound, reasons::ATTACHMENT_NOT_FOUND)
        );
        let corrupt = wire(StoreError::UnknownEventState(99));
        assert_eq!(corrupt.code(), tonic::Code::Internal);
        assert_eq!(corrupt.message(), "unknown state in an event");
    }
}
