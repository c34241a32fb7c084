//! The intake services end to end in-process, on SQLite and PostgreSQL: the workflow to
//! completion, every rejection branch, role leakage, signature failures, incomplete dossiers,
//! deadlines and reports. (Through a real gateway with mTLS: the root crate's tests/intake.rs.)

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::dossier::{LookupContext, RegistryAnswers, RegistryLookups};
use crate::grpc::{CertificateAuthority, IntakeServices, SignatureCheck};
use crate::outbox::{DeliveryReport, deliver_pending};
use crate::roles::{Role, RolePolicy, USER_REGION, USER_ROLE};
use crate::store::{OutboxRow, Store};
use futures::future::BoxFuture;
use shlyuz_kit::application_form::application_document;
use shlyuz_kit::calendar::WorkingCalendar;
use shlyuz_kit::clock::ManualClock;
use shlyuz_kit::db::Database;
use shlyuz_kit::error::summarize_status;
use shlyuz_kit::iin::Iin;
use shlyuz_kit::outbox::{DeliveryFailure, OutboxSink};
use shlyuz_kit::signed_document::{NationalCa, RevocationStatus, sign_document};
use shlyuz_proto::intake::v1 as pb;
use shlyuz_proto::intake::v1::application_service_server::ApplicationService as _;
use shlyuz_proto::intake::v1::report_service_server::ReportService as _;
use shlyuz_proto::intake::v1::vacancy_service_server::VacancyService as _;
use shlyuz_proto::registry::v1 as registry;
use time::OffsetDateTime;
use time::macros::datetime;

const PORTAL: &str = "jauynger-portal";
const CLEAN: &str = "980512391010";
const NARCOLOGICAL: &str = "990203391021";
const CONVICTED: &str = "971120391035";
const HEAD: &str = "750101300014";
const EXECUTOR: &str = "850505300011";
const OTHER_EXECUTOR: &str = "860606300022";
const DDO: &str = "800202400021";
const AKMOLA: &str = "110000000";
const ASTANA: &str = "710000000";
const PDF: &[u8] = b"%PDF-1.7\n% conclusion\n";
const AGREEMENT: &[u8] = b"%PDF-1.7\n% agreement\n";

/// Filed Friday 20 March 2026, 10:00 Astana, just before Nauryz.
const START: OffsetDateTime = datetime!(2026-03-20 10:00 +5);

/// The CA as a table: its certificate and the status of every serial it issued.
struct TableAuthority {
    ca_pem: String,
    statuses: Mutex<HashMap<String, RevocationStatus>>,
}

impl CertificateAuthority for TableAuthority {
    fn ca_certificate_pem<'a>(
        &'a self,
        _subject: &'a Iin,
    ) -> BoxFuture<'a, Result<String, String>> {
        let pem = self.ca_pem.clone();
        Box::pin(async move { Ok(pem) })
    }

    fn status<'a>(
        &'a self,
        serial_hex: &'a str,
        _subject: &'a Iin,
    ) -> BoxFuture<'a, Result<RevocationStatus, String>> {
        let status = self
            .statuses
            .lock()
            .map(|table| {
                table
                    .get(serial_hex)
                    .copied()
                    .unwrap_or(RevocationStatus::Unknown)
            })
            .map_err(|_| "poisoned".to_string());
        Box::pin(async move { status })
    }
}

fn person(iin: &str, birth_date: &str, region_kato: &str) -> registry::Person {
    registry::Person {
        iin: iin.into(),
        last_name: "Қасымов".into(),
        first_name: "Ерлан".into(),
        patronymic: "Серікұлы".into(),
        birth_date: birth_date.into(),
        citizenship: "KZ".into(),
        life_status: registry::LifeStatus::Alive as i32,
        legal_capacity: registry::LegalCapacity::Full as i32,
        registered_address: Some(registry::Address {
            region_kato: region_kato.into(),
            region_name: "Ақмола облысы".into(),
            locality_kato: "111010000".into(),
            locality_name: "Көкшетау".into(),
            street_address: "Абай көшесі, 21-үй, 7-пәтер".into(),
        }),
        identity_document_number: "051239101".into(),
        ..Default::default()
    }
}

/// The registry as the rules fixture describes it (services/registry/fixtures/rules.toml).
struct FixtureLookups {
    fail_criminal: AtomicBool,
}

impl RegistryLookups for FixtureLookups {
    fn collect<'a>(&'a self, context: &'a LookupContext) -> BoxFuture<'a, RegistryAnswers> {
        let iin = context.candidate_iin.as_str();
        let region = if iin == CLEAN { AKMOLA } else { ASTANA };
        let mut answers = RegistryAnswers {
            person: Ok(Some(person(iin, "1998-05-12", region))),
            family: Ok(None),
            dispensaries: Ok(vec![registry::DispensaryRecord {
                record_id: "tb-1".into(),
                iin: iin.into(),
                dispensary: registry::Dispensary::Tuberculosis as i32,
                region_kato: region.into(),
                diagnosis_code: "A15.0".into(),
                registered_on: "2015-01-01".into(),
                deregistered_on: "2016-01-01".into(),
            }]),
            criminal: Ok(None),
            military: Ok(None),
        };
        if iin == NARCOLOGICAL
            && let Ok(records) = answers.dispensaries.as_mut()
        {
            records.push(registry::DispensaryRecord {
                record_id: "n-1".into(),
                iin: iin.into(),
                dispensary: registry::Dispensary::Narcological as i32,
                region_kato: ASTANA.into(),
                diagnosis_code: "F12.1".into(),
                registered_on: "2021-04-19".into(),
                deregistered_on: String::new(),
            });
        }
        if iin == CONVICTED {
            answers.criminal = Ok(Some(registry::CriminalRecord {
                iin: iin.into(),
                convictions: vec![registry::Conviction {
                    conviction_id: "c-1".into(),
                    article: "188 ч.2".into(),
                    convicted_on: "2022-11-03".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }));
        }
        if self.fail_criminal.swap(false, Ordering::SeqCst) {
            answers.criminal = Err("criminal records: unavailable".into());
        }
        Box::pin(async move { answers })
    }
}

struct Signer {
    certificate_pem: String,
    key_pem: String,
    serial_hex: String,
}

struct Harness {
    services: IntakeServices,
    clock: ManualClock,
    ca: NationalCa,
    revocations: Arc<TableAuthority>,
    lookups: Arc<FixtureLookups>,
}

impl Harness {
    async fn new(database: Database) -> Harness {
        database.migrate(&crate::MIGRATIONS).await.expect("migrate");
        let clock = ManualClock::new(START);
        let ca = NationalCa::generate(START - time::Duration::days(400)).expect("ca");
        let revocations = Arc::new(TableAuthority {
            ca_pem: ca.certificate_pem().to_string(),
            statuses: Mutex::new(HashMap::new()),
        });
        let lookups = Arc::new(FixtureLookups {
            fail_criminal: AtomicBool::new(false),
        });
        let services = IntakeServices::new(
            Store::new(database, clock.shared(), WorkingCalendar::kazakhstan()),
            RolePolicy::new([PORTAL.to_string(), "sdu".to_string()]),
            lookups.clone(),
            SignatureCheck::new(revocations.clone()),
            vec![EXECUTOR.to_string(), OTHER_EXECUTOR.to_string()],
        );
        Harness {
            services,
            clock,
            ca,
            revocations,
            lookups,
        }
    }

    fn signer_valid(
        &self,
        iin: &str,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Signer {
        let iin = Iin::parse(iin).expect("iin");
        let issued = self
            .ca
            .issue(&iin, "Test Holder", None, not_before, not_after)
            .expect("issue");
        self.revocations
            .statuses
            .lock()
            .expect("lock")
            .insert(issued.serial_hex.clone(), RevocationStatus::Good);
        Signer {
            certificate_pem: issued.certificate_pem,
            key_pem: issued.private_key_pem,
            serial_hex: issued.serial_hex,
        }
    }

    fn signer(&self, iin: &str) -> Signer {
        self.signer_valid(
            iin,
            START - time::Duration::days(30),
            START + time::Duration::days(365),
        )
    }

    fn revoke(&self, signer: &Signer) {
        self.revocations
            .statuses
            .lock()
            .expect("lock")
            .insert(signer.serial_hex.clone(), RevocationStatus::Revoked);
    }

    fn now_ms(&self) -> i64 {
        self.services.store().now_ms()
    }

    async fn vacancy(&self) -> String {
        let response = self
            .services
            .create_vacancy(request(
                Role::Head,
                HEAD,
                pb::CreateVacancyRequest {
                    vacancy: Some(pb::Vacancy {
                        position: "стрелок".into(),
                        rank: pb::Rank::Private as i32,
                        branch: "Сухопутные войска".into(),
                        unit: "в/ч 12345".into(),
                        region_kato: AKMOLA.into(),
                        places: 2,
                        requirements: "среднее образование".into(),
                        ..Default::default()
                    }),
                },
            ))
            .await
            .expect("create vacancy");
        response.into_inner().vacancy.expect("vacancy").vacancy_id
    }

    async fn apply(
        &self,
        vacancy_id: &str,
        candidate: &str,
        signer: &Signer,
    ) -> Result<pb::Application, tonic::Status> {
        self.apply_with(vacancy_id, candidate, signer, Vec::new(), Vec::new())
            .await
    }

    /// Files with `attachments`, the signed form listing `signed_hashes`.
    async fn apply_with(
        &self,
        vacancy_id: &str,
        candidate: &str,
        signer: &Signer,
        attachments: Vec<pb::Attachment>,
        signed_hashes: Vec<String>,
    ) -> Result<pb::Application, tonic::Status> {
        let consent_id = "0190f5a2-7c1e-7000-8000-000000000001";
        let document = application_document(vacancy_id, candidate, consent_id, &signed_hashes);
        let signature = sign_document(&signer.key_pem, &document).expect("sign");
        self.services
            .create_application(request(
                Role::Candidate,
                candidate,
                pb::CreateApplicationRequest {
                    vacancy_id: vacancy_id.into(),
                    consent_id: consent_id.into(),
                    signed_application: Some(pb::SignedDocument {
                        document,
                        signature,
                        signer_certificate_pem: signer.certificate_pem.clone(),
                    }),
                    otp_reference: String::new(),
                    otp_code: String::new(),
                    phone_number: "+77011234567".into(),
                    language: "ru".into(),
                    attachments,
                },
            ))
            .await
            .map(|response| response.into_inner().application.expect("application"))
    }

    /// Files for `candidate`, assigns to EXECUTOR and builds the dossier.
    async fn up_to_dossier(&self, vacancy_id: &str, candidate: &str) -> pb::Application {
        let signer = self.signer(candidate);
        let filed = self
            .apply(vacancy_id, candidate, &signer)
            .await
            .expect("apply");
        self.assign(&filed.application_id).await;
        self.services
            .build_dossier(request(
                Role::ModExecutor,
                EXECUTOR,
                pb::BuildDossierRequest {
                    application_id: filed.application_id,
                },
            ))
            .await
            .expect("dossier")
            .into_inner()
            .application
            .expect("application")
    }

    async fn assign(&self, application_id: &str) {
        self.services
            .assign_application(request(
                Role::Head,
                HEAD,
                pb::AssignApplicationRequest {
                    application_id: application_id.into(),
                    assignee_user_id: EXECUTOR.into(),
                },
            ))
            .await
            .expect("assign");
    }

    async fn special_check(&self, application_id: &str) {
        self.services
            .send_to_special_check(request(
                Role::ModExecutor,
                EXECUTOR,
                pb::SendToSpecialCheckRequest {
                    application_id: application_id.into(),
                },
            ))
            .await
            .expect("special check");
    }

    async fn send_to_medical(
        &self,
        application_id: &str,
        region: &str,
    ) -> Result<pb::Application, tonic::Status> {
        self.services
            .send_to_medical(request(
                Role::ModExecutor,
                EXECUTOR,
                pb::SendToMedicalRequest {
                    application_id: application_id.into(),
                    appointment: Some(pb::MedicalAppointment {
                        ddo_region_kato: region.into(),
                        address: "Көкшетау, Ауельбекова 120, ДДО".into(),
                        // Wednesday 1 April 2026, 09:30 Astana.
                        appointment_time_ms: datetime!(2026-04-01 09:30 +5).unix_timestamp() * 1000,
                    }),
                },
            ))
            .await
            .map(|response| response.into_inner().application.expect("application"))
    }

    async fn medical_result(
        &self,
        application_id: &str,
        outcome: pb::MedicalOutcome,
    ) -> Result<pb::Application, tonic::Status> {
        let signer = self.signer(DDO);
        let signature = sign_document(&signer.key_pem, PDF).expect("sign");
        self.services
            .record_medical_result(ddo_request(
                AKMOLA,
                pb::RecordMedicalResultRequest {
                    application_id: application_id.into(),
                    outcome: outcome as i32,
                    signed_conclusion: Some(pb::SignedDocument {
                        document: PDF.to_vec(),
                        signature,
                        signer_certificate_pem: signer.certificate_pem,
                    }),
                },
            ))
            .await
            .map(|response| response.into_inner().application.expect("application"))
    }

    async fn get(
        &self,
        role: Role,
        user: &str,
        application_id: &str,
    ) -> Result<pb::Application, tonic::Status> {
        self.services
            .get_application(request(
                role,
                user,
                pb::GetApplicationRequest {
                    application_id: application_id.into(),
                },
            ))
            .await
            .map(|response| response.into_inner().application.expect("application"))
    }
}

fn request<T>(role: Role, user: &str, message: T) -> tonic::Request<T> {
    request_from(PORTAL, role, user, message)
}

fn request_from<T>(participant: &str, role: Role, user: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let metadata = request.metadata_mut();
    metadata.insert("x-shlyuz-sender", participant.parse().expect("ascii"));
    metadata.insert("x-shlyuz-user-id", user.parse().expect("ascii"));
    metadata.insert(USER_ROLE, role.name().parse().expect("ascii"));
    request
}

fn ddo_request<T>(region: &str, message: T) -> tonic::Request<T> {
    let mut request = request_from("sdu", Role::DdoExecutor, DDO, message);
    request
        .metadata_mut()
        .insert(USER_REGION, region.parse().expect("ascii"));
    request
}

fn reason<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> (tonic::Code, String) {
    let status = result.expect_err("must fail");
    let summary = summarize_status(&status);
    (summary.code, summary.reason)
}

shlyuz_kit::storage_test!(happy_path_to_completion, |database: Database| async move {
    let harness = Harness::new(database).await;
    let vacancy_id = harness.vacancy().await;
    let candidate = harness.signer(CLEAN);
    let filed = harness
        .apply(&vacancy_id, CLEAN, &candidate)
        .await
        .expect("apply");
    assert_eq!(
        filed.candidate_status,
        pb::CandidateStatus::Submitted as i32
    );
    // One active application per candidate per vacancy.
    assert_eq!(
        reason(harness.apply(&vacancy_id, CLEAN, &candidate).await),
        (
            tonic::Code::AlreadyExists,
            "APPLICATION_ALREADY_ACTIVE".into()
        )
    );
    let id = filed.application_id.clone();

    let suggestions = harness
        .services
        .suggest_assignees(request(
            Role::Head,
            HEAD,
            pb::SuggestAssigneesRequest {
                application_id: id.clone(),
            },
        ))
        .await
        .expect("suggest")
        .into_inner()
        .suggestions;
    assert_eq!(suggestions.len(), 2);

    harness.assign(&id).await;
    let seen = harness.get(Role::Candidate, CLEAN, &id).await.expect("get");
    assert_eq!(seen.candidate_status_text, "Принято в работу");

    let dossier = harness
        .services
        .build_dossier(request(
            Role::ModExecutor,
            EXECUTOR,
            pb::BuildDossierRequest {
                application_id: id.clone(),
            },
        ))
        .await
        .expect("dossier")
        .into_inner()
        .application
        .expect("application");
    assert_eq!(dossier.state, pb::ApplicationState::Dossier as i32);
    assert_eq!(dossier.registered_region_kato, AKMOLA);

    // The special check cannot be skipped.
    assert_eq!(
        reason(harness.send_to_medical(&id, AKMOLA).await),
        (tonic::Code::FailedPrecondition, "ILLEGAL_TRANSITION".into())
    );
    harness.special_check(&id).await;
    // Routed to the ДДО of the registered region (Akmola), not elsewhere.
    assert_eq!(
        reason(harness.send_to_medical(&id, ASTANA).await),
        (
            tonic::Code::FailedPrecondition,
            "DDO_REGION_MISMATCH".into()
        )
    );
    let medical = harness.send_to_medical(&id, AKMOLA).await.expect("medical");
    assert_eq!(medical.state, pb::ApplicationState::Medical as i32);
    let ddo_deadline = medical.deadline.expect("deadline");
    assert_eq!(ddo_deadline.role, "ddo_executor");

    harness
        .medical_result(&id, pb::MedicalOutcome::Pass)
        .await
        .expect("medical pass");
    harness
        .services
        .draft_agreement(request(
            Role::ModExecutor,
            EXECUTOR,
            pb::DraftAgreementRequest {
                application_id: id.clone(),
                agreement_document: AGREEMENT.to_vec(),
            },
        ))
        .await
        .expect("draft");
    let signature = sign_document(&candidate.key_pem, AGREEMENT).expect("sign");
    harness
        .services
        .sign_agreement_by_candidate(request(
            Role::Candidate,
            CLEAN,
            pb::SignAgreementByCandidateRequest {
                application_id: id.clone(),
                signed_agreement: Some(pb::SignedDocument {
                    document: AGREEMENT.to_vec(),
                    signature,
                    signer_certificate_pem: candidate.certificate_pem.clone(),
                }),
            },
        ))
        .await
        .expect("candidate signs");
    let head = harness.signer(HEAD);
    let signature = sign_document(&head.key_pem, AGREEMENT).expect("sign");
    harness
        .services
        .sign_agreement_by_head(request(
            Role::Head,
            HEAD,
            pb::SignAgreementByHeadRequest {
                application_id: id.clone(),
                signed_agreement: Some(pb::SignedDocument {
                    document: AGREEMENT.to_vec(),
                    signature,
                    signer_certificate_pem: head.certificate_pem,
                }),
            },
        ))
        .await
        .expect("head signs");
    harness
        .services
        .issue_order_to_report(request(
            Role::ModExecutor,
            EXECUTOR,
            pb::IssueOrderToReportRequest {
                application_id: id.clone(),
                order: Some(pb::OrderToReport {
                    unit: "в/ч 12345".into(),
                    report_time_ms: harness.now_ms() + 30 * 86_400_000,
                    place: "Көкшетау, КПП".into(),
                }),
            },
        ))
        .await
        .expect("order");
    let completed = harness
        .services
        .complete_application(request(
            Role::ModExecutor,
            EXECUTOR,
            pb::CompleteApplicationRequest {
                application_id: id.clone(),
            },
        ))
        .await
        .expect("complete")
        .into_inner()
        .application
        .expect("application");
    assert_eq!(completed.state, pb::ApplicationState::Completed as i32);

    let events = harness
        .services
        .list_application_events(request(
            Role::Head,
            HEAD,
            pb::ListApplicationEventsRequest {
                application_id: id.clone(),
            },
        ))
        .await
        .expect("events")
        .into_inner()
        .events;
    let path: Vec<i32> = events.iter().map(|event| event.to_state).collect();
    use pb::ApplicationState as S;
    assert_eq!(
        path,
        [
            S::Submitted,
            S::Assigned,
            S::Dossier,
            S::SpecialCheck,
            S::Medical,
            S::MedicalPassed,
            S::AgreementDrafted,
            S::SignedByCandidate,
            S::SignedByHead,
            S::OrderToReport,
            S::Completed
        ]
        .map(|state| state as i32)
    );
    assert!(events.iter().all(|event| !event.actor.is_empty()));

    // One SMS per candidate-visible status change, with the seed's texts.
    let outbox = harness
        .services
        .store()
        .outbox_of(&id)
        .await
        .expect("outbox");
    let templates: Vec<&str> = outbox.iter().map(|row| row.template_id.as_str()).collect();
    assert_eq!(
        templates,
        [
            "intake.status.submitted",
            "intake.status.accepted",
            "intake.status.special_check",
            "intake.status.medical",
            "intake.status.agreement_to_sign",
            "intake.status.agreement_signed",
            "intake.status.order_to_report",
            "intake.status.completed"
        ]
    );
    let medical_sms: serde_json::Value =
        serde_json::from_str(&outbox[3].parameters_json).expect("json");
    assert_eq!(
        medical_sms["status_text"],
        "направлен на медицинское обследование и психологическое тестирование"
    );
    assert_eq!(
        medical_sms["appointment_address"],
        "Көкшетау, Ауельбекова 120, ДДО"
    );
    assert_eq!(medical_sms["appointment_time"], "01.04.2026 09:30");
    assert!(
        outbox[2]
            .parameters_json
            .contains("направлено на специальную проверку")
    );

    // A completed application frees the slot: the candidate may apply again.
    harness
        .apply(&vacancy_id, CLEAN, &candidate)
        .await
        .expect("apply again");
});

shlyuz_kit::storage_test!(rejection_branches, |database: Database| async move {
    let harness = Harness::new(database).await;
    let vacancy_id = harness.vacancy().await;

    // Narcological registration and a conviction reject at the dossier, reason internal.
    for (candidate, fragment) in [(NARCOLOGICAL, "наркологическом"), (CONVICTED, "188 ч.2")]
    {
        let rejected = harness.up_to_dossier(&vacancy_id, candidate).await;
        assert_eq!(rejected.state, pb::ApplicationState::Rejected as i32);
        assert!(
            rejected.rejection_reason.contains(fragment),
            "{}",
            rejected.rejection_reason
        );
        let seen = harness
            .get(Role::Candidate, candidate, &rejected.application_id)
            .await
            .expect("candidate view");
        assert_eq!(seen.candidate_status, pb::CandidateStatus::Rejected as i32);
        assert_eq!(seen.rejection_reason, "");
        assert_eq!(seen.state, 0);
        let outbox = harness
            .services
            .store()
            .outbox_of(&rejected.application_id)
            .await
            .expect("outbox");
        let last = outbox.last().expect("sms");
        assert_eq!(last.template_id, "intake.status.rejected");
        assert!(!last.parameters_json.contains(fragment));
    }

    // After the special check (Art. 38 p.2/p.4).
    let harness_clean = harness.up_to_dossier(&vacancy_id, CLEAN).await;
    let id = harness_clean.application_id;
    harness.special_check(&id).await;
    let rejected = harness
        .services
        .reject_application(request(
            Role::ModExecutor,
            EXECUTOR,
            pb::RejectApplicationRequest {
                application_id: id.clone(),
                internal_reason: "ст. 38 п. 2: сведения спецпроверки".into(),
            },
        ))
        .await
        .expect("reject")
        .into_inner()
        .application
        .expect("application");
    assert_eq!(rejected.state, pb::ApplicationState::Rejected as i32);
    // Rejected is terminal.
    assert_eq!(
        reason(harness.send_to_medical(&id, AKMOLA).await),
        (tonic::Code::FailedPrecondition, "ILLEGAL_TRANSITION".into())
    );

    // The medical commission says unfit.
    let second = harness.up_to_dossier(&vacancy_id, CLEAN).await;
    harness.special_check(&second.application_id).await;
    harness
        .send_to_medical(&second.application_id, AKMOLA)
        .await
        .expect("medical");
    let failed = harness
        .medical_result(&second.application_id, pb::MedicalOutcome::Fail)
        .await
        .expect("fail");
    assert_eq!(failed.medical_outcome, pb::MedicalOutcome::Fail as i32);
    let head_view = harness
        .get(Role::Head, HEAD, &second.application_id)
        .await
        .expect("head");
    assert_eq!(head_view.state, pb::ApplicationState::Rejected as i32);
    assert!(head_view.rejection_reason.contains("не годен"));

    // Counts by state for the head's report.
    let report = harness
        .services
        .get_application_report(request(
            Role::Head,
            HEAD,
            pb::GetApplicationReportRequest::default(),
        ))
        .await
        .expect("report")
        .into_inner();
    assert_eq!(report.total, 4);
    assert_eq!(report.rows.len(), 1);
    assert_eq!(report.rows[0].state, pb::ApplicationState::Rejected as i32);
    assert_eq!(report.rows[0].count, 4);
});

shlyuz_kit::storage_test!(role_leakage, |database: Database| async move {
    let harness = Harness::new(database).await;
    let vacancy_id = harness.vacancy().await;
    let mine = harness.up_to_dossier(&vacancy_id, CLEAN).await;
    let theirs = harness.up_to_dossier(&vacancy_id, NARCOLOGICAL).await;
    let id = mine.application_id.clone();

    // A candidate cannot read another's application, nor list it.
    assert_eq!(
        reason(
            harness
                .get(Role::Candidate, CLEAN, &theirs.application_id)
                .await
        )
        .0,
        tonic::Code::NotFound
    );
    let listed = harness
        .services
        .list_applications(request(
            Role::Candidate,
            CLEAN,
            pb::ListApplicationsRequest::default(),
        ))
        .await
        .expect("list");
    // The gateway logs the persons an answer is about from this header.
    assert_eq!(
        listed
            .metadata()
            .get(shlyuz_kit::envelope::RESPONSE_SUBJECTS)
            .and_then(|value| value.to_str().ok()),
        Some(CLEAN)
    );
    let listed = listed.into_inner().applications;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].application_id, id);
    assert_eq!(listed[0].dossier_json, "");
    assert_eq!(listed[0].state, 0);
    // Nor filter on internal states.
    assert_eq!(
        reason(
            harness
                .services
                .list_applications(request(
                    Role::Candidate,
                    CLEAN,
                    pb::ListApplicationsRequest {
                        state: pb::ApplicationState::Rejected as i32,
                        ..Default::default()
                    },
                ))
                .await
        )
        .1,
        "ROLE_NOT_ALLOWED"
    );

    // Another executor does not see an application not assigned to them.
    assert_eq!(
        reason(harness.get(Role::ModExecutor, OTHER_EXECUTOR, &id).await).0,
        tonic::Code::NotFound
    );

    // The ДДО sees nothing before the application is sent to it.
    assert_eq!(
        reason(
            harness
                .services
                .get_application(ddo_request(
                    AKMOLA,
                    pb::GetApplicationRequest {
                        application_id: id.clone()
                    }
                ))
                .await
        )
        .0,
        tonic::Code::NotFound
    );
    harness.special_check(&id).await;
    harness.send_to_medical(&id, AKMOLA).await.expect("medical");
    let ddo_view = harness
        .services
        .get_application(ddo_request(
            AKMOLA,
            pb::GetApplicationRequest {
                application_id: id.clone(),
            },
        ))
        .await
        .expect("ddo view")
        .into_inner()
        .application
        .expect("application");
    let medical = ddo_view.medical_data.clone().expect("minimal set");
    assert_eq!(medical.identity_document_number, "051239101");
    assert_eq!(medical.tuberculosis.len(), 1);
    assert_eq!(ddo_view.dossier_json, "");
    assert_eq!(ddo_view.candidate_iin, "");
    assert_eq!(ddo_view.state, 0);
    assert_eq!(ddo_view.rejection_reason, "");
    // Another region's ДДО sees nothing.
    assert_eq!(
        reason(
            harness
                .services
                .get_application(ddo_request(
                    ASTANA,
                    pb::GetApplicationRequest {
                        application_id: id.clone()
                    }
                ))
                .await
        )
        .0,
        tonic::Code::NotFound
    );
    // The ДДО cannot take the executor's actions.
    assert_eq!(
        reason(
            harness
                .services
                .complete_application(ddo_request(
                    AKMOLA,
                    pb::CompleteApplicationRequest {
                        application_id: id.clone()
                    }
                ))
                .await
        ),
        (tonic::Code::PermissionDenied, "ROLE_NOT_ALLOWED".into())
    );

    // Roles asserted by a participant not configured to assert them are refused.
    assert_eq!(
        reason(
            harness
                .services
                .get_application(request_from(
                    "housing",
                    Role::Head,
                    HEAD,
                    pb::GetApplicationRequest {
                        application_id: id.clone()
                    }
                ))
                .await
        ),
        (tonic::Code::PermissionDenied, "ROLE_NOT_TRUSTED".into())
    );
    // A candidate cannot assign themselves.
    assert_eq!(
        reason(
            harness
                .services
                .assign_application(request(
                    Role::Candidate,
                    CLEAN,
                    pb::AssignApplicationRequest {
                        application_id: id.clone(),
                        assignee_user_id: EXECUTOR.into(),
                    },
                ))
                .await
        )
        .1,
        "ROLE_NOT_ALLOWED"
    );
});

shlyuz_kit::storage_test!(signature_failures, |database: Database| async move {
    let harness = Harness::new(database).await;
    let vacancy_id = harness.vacancy().await;

    // A certificate of someone else.
    let stranger = harness.signer(CONVICTED);
    assert_eq!(
        reason(harness.apply(&vacancy_id, CLEAN, &stranger).await),
        (tonic::Code::InvalidArgument, "SIGNER_IIN_MISMATCH".into())
    );
    // Revoked.
    let revoked = harness.signer(CLEAN);
    harness.revoke(&revoked);
    assert_eq!(
        reason(harness.apply(&vacancy_id, CLEAN, &revoked).await),
        (tonic::Code::InvalidArgument, "CERTIFICATE_REVOKED".into())
    );
    // Expired before the application.
    let expired = harness.signer_valid(
        CLEAN,
        START - time::Duration::days(400),
        START - time::Duration::days(1),
    );
    assert_eq!(
        reason(harness.apply(&vacancy_id, CLEAN, &expired).await),
        (tonic::Code::InvalidArgument, "CERTIFICATE_EXPIRED".into())
    );
    // A signature over another vacancy's form cannot be replayed.
    let valid = harness.signer(CLEAN);
    let other_vacancy = harness.vacancy().await;
    let consent_id = "0190f5a2-7c1e-7000-8000-000000000001";
    let document = application_document(&other_vacancy, CLEAN, consent_id, &[]);
    let signature = sign_document(&valid.key_pem, &document).expect("sign");
    let replayed = harness
        .services
        .create_application(request(
            Role::Candidate,
            CLEAN,
            pb::CreateApplicationRequest {
                vacancy_id: vacancy_id.clone(),
                consent_id: consent_id.into(),
                signed_application: Some(pb::SignedDocument {
                    document,
                    signature,
                    signer_certificate_pem: valid.certificate_pem.clone(),
                }),
                otp_reference: String::new(),
                otp_code: String::new(),
                phone_number: "+77011234567".into(),
                language: "ru".into(),
                attachments: Vec::new(),
            },
        ))
        .await;
    assert_eq!(
        reason(replayed),
        (
            tonic::Code::InvalidArgument,
            "SIGNED_DOCUMENT_MISMATCH".into()
        )
    );
    // Nothing was stored by any failed attempt.
    let listed = harness
        .services
        .list_applications(request(
            Role::Head,
            HEAD,
            pb::ListApplicationsRequest::default(),
        ))
        .await
        .expect("list")
        .into_inner()
        .applications;
    assert!(listed.is_empty());
    harness
        .apply(&vacancy_id, CLEAN, &valid)
        .await
        .expect("valid signature");
});

shlyuz_kit::storage_test!(
    incomplete_dossier_is_retried,
    |database: Database| async move {
        let harness = Harness::new(database).await;
        let vacancy_id = harness.vacancy().await;
        harness.lookups.fail_criminal.store(true, Ordering::SeqCst);
        let incomplete = harness.up_to_dossier(&vacancy_id, CLEAN).await;
        assert_eq!(incomplete.state, pb::ApplicationState::Assigned as i32);
        assert!(incomplete.dossier_incomplete);
        assert_eq!(
            incomplete.dossier_missing_sources,
            vec!["criminal".to_string()]
        );
        // Cannot move on with an incomplete file.
        assert_eq!(
            reason(
                harness
                    .services
                    .send_to_special_check(request(
                        Role::ModExecutor,
                        EXECUTOR,
                        pb::SendToSpecialCheckRequest {
                            application_id: incomplete.application_id.clone()
                        }
                    ))
                    .await
            )
            .1,
            "ILLEGAL_TRANSITION"
        );
        let rebuilt = harness
            .services
            .build_dossier(request(
                Role::ModExecutor,
                EXECUTOR,
                pb::BuildDossierRequest {
                    application_id: incomplete.application_id.clone(),
                },
            ))
            .await
            .expect("rebuild")
            .into_inner()
            .application
            .expect("application");
        assert_eq!(rebuilt.state, pb::ApplicationState::Dossier as i32);
        assert!(!rebuilt.dossier_incomplete);
    }
);

shlyuz_kit::storage_test!(overdue_across_nauryz, |database: Database| async move {
    let harness = Harness::new(database).await;
    let vacancy_id = harness.vacancy().await;
    let signer = harness.signer(CLEAN);
    let filed = harness
        .apply(&vacancy_id, CLEAN, &signer)
        .await
        .expect("apply");
    let head_view = harness
        .get(Role::Head, HEAD, &filed.application_id)
        .await
        .expect("head");
    // Filed Friday 20 March: Nauryz 21–25 March; 3 working days end on Monday 30 March.
    assert_eq!(
        head_view
            .deadline
            .as_ref()
            .map(|deadline| deadline.due_time_ms),
        Some(datetime!(2026-03-31 00:00 +5).unix_timestamp() * 1000)
    );
    let overdue = |role: Role, user: &'static str| {
        let services = harness.services.clone();
        async move {
            services
                .list_applications(request(
                    role,
                    user,
                    pb::ListApplicationsRequest {
                        overdue_only: true,
                        ..Default::default()
                    },
                ))
                .await
                .expect("list")
                .into_inner()
                .applications
                .len()
        }
    };
    harness.clock.set(datetime!(2026-03-30 23:59 +5));
    assert_eq!(overdue(Role::Head, HEAD).await, 0);
    harness.clock.set(datetime!(2026-03-31 00:00 +5));
    assert_eq!(overdue(Role::Head, HEAD).await, 1);
    assert_eq!(overdue(Role::ModExecutor, EXECUTOR).await, 0);
});

struct FlakySender {
    fail: AtomicBool,
    sent: Mutex<Vec<String>>,
}

impl OutboxSink<OutboxRow> for FlakySender {
    async fn deliver(&self, message: &OutboxRow) -> Result<(), DeliveryFailure> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(DeliveryFailure::Transient("notify unavailable".to_string()));
        }
        self.sent
            .lock()
            .map(|mut sent| sent.push(message.template_id.clone()))
            .map_err(|_| DeliveryFailure::Transient("poisoned".to_string()))
    }
}

shlyuz_kit::storage_test!(
    outbox_survives_a_notify_outage,
    |database: Database| async move {
        let harness = Harness::new(database).await;
        let vacancy_id = harness.vacancy().await;
        let signer = harness.signer(CLEAN);
        let filed = harness
            .apply(&vacancy_id, CLEAN, &signer)
            .await
            .expect("apply");
        harness.assign(&filed.application_id).await;
        let sender = FlakySender {
            fail: AtomicBool::new(true),
            sent: Mutex::new(Vec::new()),
        };
        let store = harness.services.store();
        let report = deliver_pending(store, &sender, 10).await.expect("deliver");
        assert_eq!(report, DeliveryReport { sent: 0, failed: 2 });
        // Not due again until the retry delay has passed.
        sender.fail.store(false, Ordering::SeqCst);
        let report = deliver_pending(store, &sender, 10).await.expect("deliver");
        assert_eq!(report, DeliveryReport::default());
        harness.clock.advance(time::Duration::seconds(6));
        let report = deliver_pending(store, &sender, 10).await.expect("deliver");
        assert_eq!(report, DeliveryReport { sent: 2, failed: 0 });
        assert_eq!(
            *sender.sent.lock().expect("lock"),
            vec!["intake.status.submitted", "intake.status.accepted"]
        );
        assert!(store.pending_outbox(10).await.expect("pending").is_empty());
    }
);

shlyuz_kit::storage_test!(
    all_requests_page_and_filter,
    |database: Database| async move {
        let harness = Harness::new(database).await;
        let vacancy_id = harness.vacancy().await;
        let other_vacancy = harness.vacancy().await;
        for (vacancy, candidate) in [
            (&vacancy_id, CLEAN),
            (&vacancy_id, NARCOLOGICAL),
            (&other_vacancy, CLEAN),
        ] {
            let signer = harness.signer(candidate);
            harness
                .apply(vacancy, candidate, &signer)
                .await
                .expect("apply");
        }
        let list = |page_token: String, vacancy: String| {
            let services = harness.services.clone();
            async move {
                services
                    .list_applications(request(
                        Role::Head,
                        HEAD,
                        pb::ListApplicationsRequest {
                            page_size: 2,
                            page_token,
                            vacancy_id: vacancy,
                            ..Default::default()
                        },
                    ))
                    .await
                    .map(tonic::Response::into_inner)
            }
        };
        let first = list(String::new(), String::new())
            .await
            .expect("first page");
        assert_eq!(first.applications.len(), 2);
        assert!(!first.next_page_token.is_empty());
        let second = list(first.next_page_token.clone(), String::new())
            .await
            .expect("second page");
        assert_eq!(second.applications.len(), 1);
        assert_eq!(second.next_page_token, "");
        let mut seen: Vec<String> = first
            .applications
            .iter()
            .chain(&second.applications)
            .map(|application| application.application_id.clone())
            .collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 3);
        let filtered = list(String::new(), other_vacancy.clone())
            .await
            .expect("filtered");
        assert_eq!(filtered.applications.len(), 1);
        assert_eq!(filtered.applications[0].vacancy_id, other_vacancy);
        // A token resumes only the listing, with the filters, it came from.
        let status = list(first.next_page_token.clone(), vacancy_id.clone())
            .await
            .expect_err("token of another filter set");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            summarize_status(&status).fields,
            vec!["page_token".to_string()]
        );
        // A token is not a free-form cursor.
        let status = list("garbage".into(), String::new())
            .await
            .expect_err("bad token");
        assert_eq!(
            summarize_status(&status).fields,
            vec!["page_token".to_string()]
        );

        let vacancies = harness
            .services
            .list_vacancies(request(
                Role::Candidate,
                CLEAN,
                pb::ListVacanciesRequest {
                    state: pb::VacancyState::Open as i32,
                    ..Default::default()
                },
            ))
            .await
            .expect("vacancies")
            .into_inner()
            .vacancies;
        assert_eq!(vacancies.len(), 2);
        let list_vacancies = |state: pb::VacancyState, page_token: String| {
            let services = harness.services.clone();
            async move {
                services
                    .list_vacancies(request(
                        Role::Candidate,
                        CLEAN,
                        pb::ListVacanciesRequest {
                            state: state as i32,
                            page_size: 1,
                            page_token,
                            ..Default::default()
                        },
                    ))
                    .await
                    .map(tonic::Response::into_inner)
            }
        };
        let open_page = list_vacancies(pb::VacancyState::Open, String::new())
            .await
            .expect("first vacancy page");
        assert!(!open_page.next_page_token.is_empty());
        list_vacancies(pb::VacancyState::Open, open_page.next_page_token.clone())
            .await
            .expect("the same filters resume");
        let status = list_vacancies(pb::VacancyState::Closed, open_page.next_page_token)
            .await
            .expect_err("token of another vacancy filter");
        assert_eq!(
            summarize_status(&status).fields,
            vec!["page_token".to_string()]
        );
        harness
            .services
            .close_vacancy(request(
                Role::Head,
                HEAD,
                pb::CloseVacancyRequest {
                    vacancy_id: other_vacancy.clone(),
                },
            ))
            .await
            .expect("close");
        let signer = harness.signer(NARCOLOGICAL);
        assert_eq!(
            reason(harness.apply(&other_vacancy, NARCOLOGICAL, &signer).await),
            (tonic::Code::FailedPrecondition, "VACANCY_CLOSED".into())
        );
    }
);

fn pdf_attachment(name: &str, content: &[u8]) -> pb::Attachment {
    pb::Attachment {
        file_name: name.into(),
        content_type: "application/pdf".into(),
        content: content.to_vec(),
        description: "диплом о среднем образовании".into(),
        ..Default::default()
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    shlyuz_kit::envelope::sha256_hex(bytes)
}

shlyuz_kit::storage_test!(
    pdf_attachments_and_the_archive,
    |database: Database| async move {
        let harness = Harness::new(database).await;
        let vacancy_id = harness.vacancy().await;
        let signer = harness.signer(CLEAN);
        let diploma = b"%PDF-1.4\n% diploma\n".to_vec();

        // Only PDFs.
        let mut not_pdf = pdf_attachment("diploma.docx", b"PK\x03\x04");
        not_pdf.content_type = "application/vnd.openxmlformats".into();
        let status = harness
            .apply_with(&vacancy_id, CLEAN, &signer, vec![not_pdf], Vec::new())
            .await
            .expect_err("not a pdf");
        assert_eq!(
            summarize_status(&status).fields,
            vec!["attachments[0].content_type".to_string()]
        );
        // Too large.
        let mut large = b"%PDF-1.4\n".to_vec();
        large.resize(1024 * 1024 + 1, b' ');
        let status = harness
            .apply_with(
                &vacancy_id,
                CLEAN,
                &signer,
                vec![pdf_attachment("big.pdf", &large)],
                vec![sha256_hex(&large)],
            )
            .await
            .expect_err("too large");
        assert_eq!(
            summarize_status(&status).fields,
            vec!["attachments[0].content".to_string()]
        );
        // The signature covers the attachments: another file than the one signed is refused.
        let status = harness
            .apply_with(
                &vacancy_id,
                CLEAN,
                &signer,
                vec![pdf_attachment("diploma.pdf", &diploma)],
                vec![sha256_hex(b"%PDF-1.4\n% another\n")],
            )
            .await
            .expect_err("swapped attachment");
        assert_eq!(summarize_status(&status).reason, "SIGNED_DOCUMENT_MISMATCH");

        let filed = harness
            .apply_with(
                &vacancy_id,
                CLEAN,
                &signer,
                vec![pdf_attachment("diploma.pdf", &diploma)],
                vec![sha256_hex(&diploma)],
            )
            .await
            .expect("apply with attachment");
        let id = filed.application_id.clone();
        assert!(
            filed.attachments.is_empty(),
            "candidates get no attachment list back"
        );
        let head_view = harness.get(Role::Head, HEAD, &id).await.expect("head view");
        assert_eq!(head_view.attachments.len(), 1);
        assert_eq!(head_view.attachments[0].sha256, sha256_hex(&diploma));
        assert!(head_view.attachments[0].content.is_empty());
        let attachment_id = head_view.attachments[0].attachment_id.clone();
        let fetch = |role: Role, user: &'static str| {
            let services = harness.services.clone();
            let id = id.clone();
            let attachment_id = attachment_id.clone();
            async move {
                services
                    .get_application_attachment(request(
                        role,
                        user,
                        pb::GetApplicationAttachmentRequest {
                            application_id: id,
                            attachment_id,
                        },
                    ))
                    .await
                    .map(|response| response.into_inner().attachment.expect("attachment"))
            }
        };
        assert_eq!(
            fetch(Role::Head, HEAD).await.expect("head").content,
            diploma
        );
        assert_eq!(
            reason(fetch(Role::Candidate, CLEAN).await).1,
            "ROLE_NOT_ALLOWED"
        );

        // The archive holds completed and rejected applications only.
        harness.assign(&id).await;
        harness
            .services
            .reject_application(request(
                Role::Head,
                HEAD,
                pb::RejectApplicationRequest {
                    application_id: id.clone(),
                    internal_reason: "неполный комплект документов".into(),
                },
            ))
            .await
            .expect("reject");
        let narcological = harness.signer(NARCOLOGICAL);
        harness
            .apply(&vacancy_id, NARCOLOGICAL, &narcological)
            .await
            .expect("apply");
        let archive = harness
            .services
            .list_applications(request(
                Role::Head,
                HEAD,
                pb::ListApplicationsRequest {
                    archived_only: true,
                    ..Default::default()
                },
            ))
            .await
            .expect("archive")
            .into_inner()
            .applications;
        assert_eq!(archive.len(), 1);
        assert_eq!(archive[0].application_id, id);
    }
);
