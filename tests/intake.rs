//! The intake target started as `shlyuz up` starts it, with the gateway (mutual TLS, the shipped
//! default directory), the registry and, where a test needs SMS, notify: the portal and the
//! officials' workstation call intake with asserted roles; intake builds the personal file from
//! the registry and checks EDS against the registry's CA, both through the gateway with its own
//! signed envelope, and relays its status SMS to notify.

mod support;

use std::time::Duration;

use shlyuz::target::Target;
use shlyuz_kit::application_form::{APPLICATION_OTP_PURPOSE, application_document};
use shlyuz_kit::envelope::EnvelopeBuilder;
use shlyuz_kit::error::summarize_status;
use shlyuz_kit::fixture_people as people;
use shlyuz_kit::signed_document::sign_document;
use shlyuz_proto::intake::v1 as pb;
use shlyuz_proto::notify::v1 as notify_pb;
use shlyuz_proto::registry::v1 as registry;
use support::{TestSystem, signing_key};
use tonic::Code;
use tonic::transport::Channel;

// Officials are persons of the fixture: the CA issues certificates to known persons only.
const HEAD: &str = people::SERVICEMAN_CLEAN.iin;
const DDO: &str = people::SERVICEMAN_EQUITY.iin;
const EXECUTOR: &str = "850505300011";
const AKMOLA: &str = "110000000";
const CONSENT: &str = "0190f5a2-7c1e-7000-8000-0000000000c1";
const PDF: &[u8] = b"%PDF-1.7\n% scanned conclusion\n";
const AGREEMENT: &[u8] = b"%PDF-1.7\n% agreement on concluding a contract\n";
/// The phone the mobile citizens database holds for [`people::CLEAN_CANDIDATE`].
const CANDIDATE_PHONE: &str = "+77015550010";
/// How intake's SMS texts begin in Kazakh.
const KAZAKH_STATUS_SMS: &str = "Jauynger: өтінішіңіздің мәртебесі";

/// The gateway, the registry, intake (with two MoD executors) and, when `with_notify`, notify.
async fn start(with_notify: bool) -> Recruitment {
    let mut targets = vec![Target::Gateway, Target::Registry, Target::Intake];
    if with_notify {
        targets.push(Target::Notify);
    }
    start_with(&targets, |_| {}).await
}

/// `targets` with intake's executors, then `configure` applied.
async fn start_with(
    targets: &[Target],
    configure: impl FnOnce(&mut shlyuz::config::ShlyuzConfig),
) -> Recruitment {
    let system = support::spawn_system_with(targets, |config| {
        config.intake.executors = vec![EXECUTOR.to_string(), "860606300022".to_string()];
        configure(config);
    })
    .await;
    Recruitment { system }
}

/// The running targets and the calls the portal and the officials' workstation make.
struct Recruitment {
    system: TestSystem,
}

impl Recruitment {
    async fn channel(&self, participant: &str) -> Channel {
        self.system.channel(participant).await
    }

    async fn stop(self) {
        self.system.stop().await;
    }

    /// `message` from `participant` for `path`, signed, with the user and the role it asserts.
    fn call<M: prost::Message>(
        &self,
        participant: &str,
        path: &str,
        user: &str,
        role: &str,
        region: Option<&str>,
        message: M,
    ) -> tonic::Request<M> {
        let envelope = EnvelopeBuilder {
            user_id: user.to_string(),
            user_role: role.to_string(),
            user_region: region.unwrap_or_default().to_string(),
            ..EnvelopeBuilder::default()
        };
        envelope.signed_request(&signing_key(support::pki(), participant), path, message)
    }

    async fn applications(
        &self,
    ) -> pb::application_service_client::ApplicationServiceClient<Channel> {
        pb::application_service_client::ApplicationServiceClient::new(
            self.channel("jauynger-portal").await,
        )
    }

    /// A test certificate from the registry's CA, as the portal obtains it for a user.
    async fn certificate(&self, iin: &str, official: bool) -> registry::IssueCertificateResponse {
        let mut client =
            registry::certificate_authority_service_client::CertificateAuthorityServiceClient::new(
                self.channel("jauynger-portal").await,
            );
        let envelope = EnvelopeBuilder {
            purpose: "DIGITAL_SIGNATURE".to_string(),
            subject_iin: iin.to_string(),
            ..EnvelopeBuilder::default()
        };
        let request = envelope.signed_request(
            &signing_key(support::pki(), "jauynger-portal"),
            "/shlyuz.registry.v1.CertificateAuthorityService/IssueCertificate",
            registry::IssueCertificateRequest {
                iin: iin.to_string(),
                full_name: "Test Holder".to_string(),
                holder_kind: if official {
                    registry::HolderKind::Official as i32
                } else {
                    registry::HolderKind::Citizen as i32
                },
                organization: if official {
                    "Министерство обороны РК".to_string()
                } else {
                    String::new()
                },
                validity_days: 30,
            },
        );
        client
            .issue_certificate(request)
            .await
            .expect("issue certificate")
            .into_inner()
    }

    async fn revoke(&self, iin: &str, serial: &str) {
        let mut client =
            registry::certificate_authority_service_client::CertificateAuthorityServiceClient::new(
                self.channel("jauynger-portal").await,
            );
        let envelope = EnvelopeBuilder {
            purpose: "DIGITAL_SIGNATURE".to_string(),
            subject_iin: iin.to_string(),
            ..EnvelopeBuilder::default()
        };
        client
            .revoke_certificate(envelope.signed_request(
                &signing_key(support::pki(), "jauynger-portal"),
                "/shlyuz.registry.v1.CertificateAuthorityService/RevokeCertificate",
                registry::RevokeCertificateRequest {
                    serial_number: serial.to_string(),
                    reason: "key compromise".to_string(),
                },
            ))
            .await
            .expect("revoke");
    }

    async fn vacancy(&self) -> String {
        let mut client =
            pb::vacancy_service_client::VacancyServiceClient::new(self.channel("sdu").await);
        client
            .create_vacancy(self.call(
                "sdu",
                "/shlyuz.intake.v1.VacancyService/CreateVacancy",
                HEAD,
                "head",
                None,
                pb::CreateVacancyRequest {
                    vacancy: Some(pb::Vacancy {
                        position: "стрелок".into(),
                        rank: pb::Rank::Private as i32,
                        branch: "Сухопутные войска".into(),
                        unit: "в/ч 12345".into(),
                        region_kato: AKMOLA.into(),
                        places: 3,
                        requirements: String::new(),
                        ..Default::default()
                    }),
                },
            ))
            .await
            .expect("create vacancy")
            .into_inner()
            .vacancy
            .expect("vacancy")
            .vacancy_id
    }

    async fn apply(
        &self,
        vacancy_id: &str,
        candidate: &str,
        certificate: &registry::IssueCertificateResponse,
    ) -> Result<pb::Application, tonic::Status> {
        let document = application_document(vacancy_id, candidate, CONSENT, &[]);
        let signature = sign_document(&certificate.private_key_pem, &document).expect("sign");
        self.applications()
            .await
            .create_application(self.call(
                "jauynger-portal",
                "/shlyuz.intake.v1.ApplicationService/CreateApplication",
                candidate,
                "candidate",
                None,
                pb::CreateApplicationRequest {
                    vacancy_id: vacancy_id.into(),
                    consent_id: CONSENT.into(),
                    signed_application: Some(pb::SignedDocument {
                        document,
                        signature,
                        signer_certificate_pem: certificate.certificate_pem.clone(),
                    }),
                    otp_reference: String::new(),
                    otp_code: String::new(),
                    phone_number: "+77011234567".into(),
                    language: "kk".into(),
                    attachments: Vec::new(),
                },
            ))
            .await
            .map(|response| response.into_inner().application.expect("application"))
    }

    /// Head assigns to EXECUTOR, who builds the dossier.
    async fn assign_and_build(&self, application_id: &str) -> pb::Application {
        let mut client = self.applications().await;
        client
            .assign_application(self.call(
                "sdu",
                "/shlyuz.intake.v1.ApplicationService/AssignApplication",
                HEAD,
                "head",
                None,
                pb::AssignApplicationRequest {
                    application_id: application_id.into(),
                    assignee_user_id: EXECUTOR.into(),
                },
            ))
            .await
            .expect_err("sdu's envelope on the portal's connection");
        let mut client = pb::application_service_client::ApplicationServiceClient::new(
            self.channel("sdu").await,
        );
        client
            .assign_application(self.call(
                "sdu",
                "/shlyuz.intake.v1.ApplicationService/AssignApplication",
                HEAD,
                "head",
                None,
                pb::AssignApplicationRequest {
                    application_id: application_id.into(),
                    assignee_user_id: EXECUTOR.into(),
                },
            ))
            .await
            .expect("assign");
        client
            .build_dossier(self.call(
                "sdu",
                "/shlyuz.intake.v1.ApplicationService/BuildDossier",
                EXECUTOR,
                "mod_executor",
                None,
                pb::BuildDossierRequest {
                    application_id: application_id.into(),
                },
            ))
            .await
            .expect("build dossier")
            .into_inner()
            .application
            .expect("application")
    }

    async fn officials(&self) -> pb::application_service_client::ApplicationServiceClient<Channel> {
        pb::application_service_client::ApplicationServiceClient::new(self.channel("sdu").await)
    }
}

fn code_and_reason(status: &tonic::Status) -> (Code, String) {
    let summary = summarize_status(status);
    (summary.code, summary.reason)
}

const APP: &str = "/shlyuz.intake.v1.ApplicationService/";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_candidate_reaches_the_order_to_report() {
    let stack = start(true).await;
    let vacancy_id = stack.vacancy().await;
    let candidate = people::CLEAN_CANDIDATE.iin;
    let certificate = stack.certificate(candidate, false).await;
    let filed = stack
        .apply(&vacancy_id, candidate, &certificate)
        .await
        .expect("apply");
    let id = filed.application_id.clone();
    let built = stack.assign_and_build(&id).await;
    assert_eq!(
        built.state,
        pb::ApplicationState::Dossier as i32,
        "{built:?}"
    );
    assert_eq!(built.registered_region_kato, AKMOLA, "from ГБД ФЛ");
    assert!(!built.dossier_incomplete);

    let mut officials = stack.officials().await;
    officials
        .send_to_special_check(stack.call(
            "sdu",
            &format!("{APP}SendToSpecialCheck"),
            EXECUTOR,
            "mod_executor",
            None,
            pb::SendToSpecialCheckRequest {
                application_id: id.clone(),
            },
        ))
        .await
        .expect("special check");
    let appointment_ms = shlyuz_kit::clock::system_clock().now_millis() + 7 * 86_400_000;
    officials
        .send_to_medical(stack.call(
            "sdu",
            &format!("{APP}SendToMedical"),
            EXECUTOR,
            "mod_executor",
            None,
            pb::SendToMedicalRequest {
                application_id: id.clone(),
                appointment: Some(pb::MedicalAppointment {
                    ddo_region_kato: AKMOLA.into(),
                    address: "Көкшетау, ДДО Акмолинской области".into(),
                    appointment_time_ms: appointment_ms,
                }),
            },
        ))
        .await
        .expect("send to medical");

    // The ДДО executor of Akmola sees the minimal set only, and records the result with EDS.
    let ddo_view = officials
        .get_application(stack.call(
            "sdu",
            &format!("{APP}GetApplication"),
            DDO,
            "ddo_executor",
            Some(AKMOLA),
            pb::GetApplicationRequest {
                application_id: id.clone(),
            },
        ))
        .await
        .expect("ddo view")
        .into_inner()
        .application
        .expect("application");
    let medical = ddo_view.medical_data.expect("minimal set");
    assert_eq!(medical.full_name, "Қасымов Ерлан Серікұлы");
    assert_eq!(ddo_view.dossier_json, "");
    assert_eq!(ddo_view.candidate_iin, "");
    let ddo_certificate = stack.certificate(DDO, true).await;
    officials
        .record_medical_result(stack.call(
            "sdu",
            &format!("{APP}RecordMedicalResult"),
            DDO,
            "ddo_executor",
            Some(AKMOLA),
            pb::RecordMedicalResultRequest {
                application_id: id.clone(),
                outcome: pb::MedicalOutcome::Pass as i32,
                signed_conclusion: Some(pb::SignedDocument {
                    document: PDF.to_vec(),
                    signature: sign_document(&ddo_certificate.private_key_pem, PDF).expect("sign"),
                    signer_certificate_pem: ddo_certificate.certificate_pem,
                }),
            },
        ))
        .await
        .expect("medical result");
    officials
        .draft_agreement(stack.call(
            "sdu",
            &format!("{APP}DraftAgreement"),
            EXECUTOR,
            "mod_executor",
            None,
            pb::DraftAgreementRequest {
                application_id: id.clone(),
                agreement_document: AGREEMENT.to_vec(),
            },
        ))
        .await
        .expect("draft");
    // The candidate reads the drafted agreement in the cabinet and signs exactly those bytes.
    let to_sign = stack
        .applications()
        .await
        .get_application(stack.call(
            "jauynger-portal",
            &format!("{APP}GetApplication"),
            candidate,
            "candidate",
            None,
            pb::GetApplicationRequest {
                application_id: id.clone(),
            },
        ))
        .await
        .expect("candidate view")
        .into_inner()
        .application
        .expect("application");
    assert_eq!(
        to_sign.candidate_status,
        pb::CandidateStatus::AgreementToSign as i32
    );
    assert_eq!(to_sign.agreement_document, AGREEMENT);
    stack
        .applications()
        .await
        .sign_agreement_by_candidate(stack.call(
            "jauynger-portal",
            &format!("{APP}SignAgreementByCandidate"),
            candidate,
            "candidate",
            None,
            pb::SignAgreementByCandidateRequest {
                application_id: id.clone(),
                signed_agreement: Some(pb::SignedDocument {
                    document: AGREEMENT.to_vec(),
                    signature:
                        sign_document(&certificate.private_key_pem, AGREEMENT).expect("sign"),
                    signer_certificate_pem: certificate.certificate_pem.clone(),
                }),
            },
        ))
        .await
        .expect("candidate signs");
    let head_certificate = stack.certificate(HEAD, true).await;
    officials
        .sign_agreement_by_head(stack.call(
            "sdu",
            &format!("{APP}SignAgreementByHead"),
            HEAD,
            "head",
            None,
            pb::SignAgreementByHeadRequest {
                application_id: id.clone(),
                signed_agreement: Some(pb::SignedDocument {
                    document: AGREEMENT.to_vec(),
                    signature:
                        sign_document(&head_certificate.private_key_pem, AGREEMENT).expect("sign"),
                    signer_certificate_pem: head_certificate.certificate_pem,
                }),
            },
        ))
        .await
        .expect("head signs");
    officials
        .issue_order_to_report(stack.call(
            "sdu",
            &format!("{APP}IssueOrderToReport"),
            EXECUTOR,
            "mod_executor",
            None,
            pb::IssueOrderToReportRequest {
                application_id: id.clone(),
                order: Some(pb::OrderToReport {
                    unit: "в/ч 12345".into(),
                    report_time_ms: appointment_ms + 30 * 86_400_000,
                    place: "Көкшетау, КПП в/ч 12345".into(),
                }),
            },
        ))
        .await
        .expect("order");
    officials
        .complete_application(stack.call(
            "sdu",
            &format!("{APP}CompleteApplication"),
            EXECUTOR,
            "mod_executor",
            None,
            pb::CompleteApplicationRequest {
                application_id: id.clone(),
            },
        ))
        .await
        .expect("complete");

    let seen = stack
        .applications()
        .await
        .get_application(stack.call(
            "jauynger-portal",
            &format!("{APP}GetApplication"),
            candidate,
            "candidate",
            None,
            pb::GetApplicationRequest {
                application_id: id.clone(),
            },
        ))
        .await
        .expect("candidate view")
        .into_inner()
        .application
        .expect("application");
    assert_eq!(seen.candidate_status, pb::CandidateStatus::Completed as i32);
    assert_eq!(
        seen.order_to_report.map(|order| order.unit),
        Some("в/ч 12345".to_string())
    );

    // Eight SMS reach the candidate through notify, one per status change, in Kazakh as the
    // candidate asked, all to the phone the mobile citizens database holds for them.
    let sms = stack.system.wait_for_sms(8).await;
    assert_eq!(sms.len(), 8, "{sms:?}");
    assert!(
        sms.iter().all(|line| line["to"] == CANDIDATE_PHONE
            && line["text"]
                .as_str()
                .is_some_and(|text| text.starts_with(KAZAKH_STATUS_SMS))),
        "{sms:?}"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_findings_reject_without_telling_the_candidate_why() {
    let stack = start(false).await;
    let vacancy_id = stack.vacancy().await;
    for (candidate, fragment) in [
        (people::NARCOLOGICAL_CANDIDATE.iin, "наркологическом"),
        (people::CONVICTED_CANDIDATE.iin, "188 ч.2"),
    ] {
        let certificate = stack.certificate(candidate, false).await;
        let filed = stack
            .apply(&vacancy_id, candidate, &certificate)
            .await
            .expect("apply");
        let built = stack.assign_and_build(&filed.application_id).await;
        assert_eq!(built.state, pb::ApplicationState::Rejected as i32);
        assert!(
            built.rejection_reason.contains(fragment),
            "{}",
            built.rejection_reason
        );
        let seen = stack
            .applications()
            .await
            .get_application(stack.call(
                "jauynger-portal",
                &format!("{APP}GetApplication"),
                candidate,
                "candidate",
                None,
                pb::GetApplicationRequest {
                    application_id: filed.application_id.clone(),
                },
            ))
            .await
            .expect("candidate view")
            .into_inner()
            .application
            .expect("application");
        assert_eq!(seen.candidate_status, pb::CandidateStatus::Rejected as i32);
        assert_eq!(seen.rejection_reason, "");
        // Another candidate cannot read it at all.
        let status = stack
            .applications()
            .await
            .get_application(stack.call(
                "jauynger-portal",
                &format!("{APP}GetApplication"),
                people::CLEAN_CANDIDATE.iin,
                "candidate",
                None,
                pb::GetApplicationRequest {
                    application_id: filed.application_id,
                },
            ))
            .await
            .expect_err("someone else's application");
        assert_eq!(status.code(), Code::NotFound);
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_are_checked_against_the_registry_ca() {
    let stack = start(false).await;
    let vacancy_id = stack.vacancy().await;
    let candidate = people::CLEAN_CANDIDATE.iin;

    let someone_else = stack
        .certificate(people::CONVICTED_CANDIDATE.iin, false)
        .await;
    let status = stack
        .apply(&vacancy_id, candidate, &someone_else)
        .await
        .expect_err("wrong iin");
    assert_eq!(
        code_and_reason(&status),
        (Code::InvalidArgument, "SIGNER_IIN_MISMATCH".to_string())
    );

    let revoked = stack.certificate(candidate, false).await;
    stack.revoke(candidate, &revoked.serial_number).await;
    let status = stack
        .apply(&vacancy_id, candidate, &revoked)
        .await
        .expect_err("revoked");
    assert_eq!(
        code_and_reason(&status),
        (Code::InvalidArgument, "CERTIFICATE_REVOKED".to_string())
    );

    // The registry's API issues no certificate that has already lapsed: intake's own unit tests
    // (grpc.rs) refuse an expired one of the same CA with CERTIFICATE_EXPIRED.

    // A participant the directory does not let call intake is stopped at the gateway.
    let mut housing = pb::application_service_client::ApplicationServiceClient::new(
        stack.channel("housing").await,
    );
    let status = housing
        .list_applications(stack.call(
            "housing",
            &format!("{APP}ListApplications"),
            HEAD,
            "head",
            None,
            pb::ListApplicationsRequest::default(),
        ))
        .await
        .expect_err("no rule");
    assert_eq!(status.code(), Code::PermissionDenied);

    let valid = stack.certificate(candidate, false).await;
    stack
        .apply(&vacancy_id, candidate, &valid)
        .await
        .expect("valid certificate");
    stack.stop().await;
}

/// The eligibility rules against the registry's fixture people: the executor builds each
/// person's file, which intake collects through the gateway by the production look-ups, and
/// the verdict decides the application. (A person the registry does not know cannot obtain a
/// certificate to apply with; dossier.rs's unit tests cover "лицо не найдено".)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eligibility_rules_against_the_fixture_people() {
    let stack = start(false).await;
    let vacancy_id = stack.vacancy().await;
    for (person, expected) in [
        (people::CLEAN_CANDIDATE, None),
        (people::SERVICEMAN_CLEAN, None),
        (people::NARCOLOGICAL_CANDIDATE, Some("наркологическом")),
        (people::CONVICTED_CANDIDATE, Some("судимость")),
        (people::SERVICEMAN_CHILD_IMPRISONED_CHILD, Some("судимость")),
        (people::SERVICEMAN_CLEAN_CHILD, Some("менее 18")),
        (people::SERVICEMAN_FOREIGN_CITIZEN, Some("не гражданин")),
        (people::SERVICEMAN_INCAPABLE, Some("дееспособность")),
        (people::DEAD_PERSON, Some("живым")),
    ] {
        let iin = person.iin;
        let certificate = stack.certificate(iin, false).await;
        let filed = stack
            .apply(&vacancy_id, iin, &certificate)
            .await
            .unwrap_or_else(|status| panic!("{iin} applies: {status:?}"));
        let built = stack.assign_and_build(&filed.application_id).await;
        assert!(
            !built.dossier_incomplete,
            "{iin}: {:?}",
            built.dossier_missing_sources
        );
        match expected {
            None => assert_eq!(
                (built.state, built.rejection_reason.as_str()),
                (pb::ApplicationState::Dossier as i32, ""),
                "{iin}"
            ),
            Some(fragment) => {
                assert_eq!(built.state, pb::ApplicationState::Rejected as i32, "{iin}");
                assert!(
                    built.rejection_reason.contains(fragment),
                    "{iin}: {}",
                    built.rejection_reason
                );
            }
        }
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn special_check_and_medical_refusals_through_the_gateway() {
    let stack = start(false).await;
    let vacancy_id = stack.vacancy().await;
    let candidate = people::CLEAN_CANDIDATE.iin;
    let certificate = stack.certificate(candidate, false).await;
    let mut officials = stack.officials().await;
    let ddo_certificate = stack.certificate(DDO, true).await;

    for refusal in ["special check", "medical"] {
        let filed = stack
            .apply(&vacancy_id, candidate, &certificate)
            .await
            .expect("apply");
        let id = filed.application_id;
        stack.assign_and_build(&id).await;
        officials
            .send_to_special_check(stack.call(
                "sdu",
                &format!("{APP}SendToSpecialCheck"),
                EXECUTOR,
                "mod_executor",
                None,
                pb::SendToSpecialCheckRequest {
                    application_id: id.clone(),
                },
            ))
            .await
            .expect("special check");
        let rejected = if refusal == "special check" {
            officials
                .reject_application(stack.call(
                    "sdu",
                    &format!("{APP}RejectApplication"),
                    EXECUTOR,
                    "mod_executor",
                    None,
                    pb::RejectApplicationRequest {
                        application_id: id.clone(),
                        internal_reason: "ст. 38 п. 4: сведения специальной проверки".into(),
                    },
                ))
                .await
                .expect("reject")
                .into_inner()
                .application
                .expect("application")
        } else {
            officials
                .send_to_medical(stack.call(
                    "sdu",
                    &format!("{APP}SendToMedical"),
                    EXECUTOR,
                    "mod_executor",
                    None,
                    pb::SendToMedicalRequest {
                        application_id: id.clone(),
                        appointment: Some(pb::MedicalAppointment {
                            ddo_region_kato: AKMOLA.into(),
                            address: "Көкшетау, ДДО".into(),
                            appointment_time_ms: shlyuz_kit::clock::system_clock().now_millis()
                                + 86_400_000,
                        }),
                    },
                ))
                .await
                .expect("medical");
            // A ДДО executor of another region cannot record the result.
            let status = officials
                .record_medical_result(stack.call(
                    "sdu",
                    &format!("{APP}RecordMedicalResult"),
                    DDO,
                    "ddo_executor",
                    Some("710000000"),
                    pb::RecordMedicalResultRequest {
                        application_id: id.clone(),
                        outcome: pb::MedicalOutcome::Fail as i32,
                        signed_conclusion: Some(pb::SignedDocument {
                            document: PDF.to_vec(),
                            signature:
                                sign_document(&ddo_certificate.private_key_pem, PDF).expect("sign"),
                            signer_certificate_pem: ddo_certificate.certificate_pem.clone(),
                        }),
                    },
                ))
                .await
                .expect_err("other region");
            assert_eq!(status.code(), Code::NotFound);
            officials
                .record_medical_result(stack.call(
                    "sdu",
                    &format!("{APP}RecordMedicalResult"),
                    DDO,
                    "ddo_executor",
                    Some(AKMOLA),
                    pb::RecordMedicalResultRequest {
                        application_id: id.clone(),
                        outcome: pb::MedicalOutcome::Fail as i32,
                        signed_conclusion: Some(pb::SignedDocument {
                            document: PDF.to_vec(),
                            signature:
                                sign_document(&ddo_certificate.private_key_pem, PDF).expect("sign"),
                            signer_certificate_pem: ddo_certificate.certificate_pem.clone(),
                        }),
                    },
                ))
                .await
                .expect("medical fail");
            officials
                .get_application(stack.call(
                    "sdu",
                    &format!("{APP}GetApplication"),
                    HEAD,
                    "head",
                    None,
                    pb::GetApplicationRequest {
                        application_id: id.clone(),
                    },
                ))
                .await
                .expect("head view")
                .into_inner()
                .application
                .expect("application")
        };
        assert_eq!(
            rejected.state,
            pb::ApplicationState::Rejected as i32,
            "{refusal}"
        );
        assert!(!rejected.rejection_reason.is_empty(), "{refusal}");
    }
    stack.stop().await;
}

/// Polls `system`'s SMS log until it holds `count` lines or `limit` has passed.
async fn sms_within(system: &TestSystem, count: usize, limit: Duration) -> Vec<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let lines = system.sms();
        if lines.len() >= count || tokio::time::Instant::now() >= deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A loopback socket bound (so no other program takes its port) but not listening, so calls to
/// it are refused as in an outage; a target later listens on it.
fn reserved_loopback_port() -> (tokio::net::TcpSocket, std::net::SocketAddr) {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("bind a loopback port");
    let address = socket.local_addr().expect("its address");
    (socket, address)
}

/// A `SendNotification` as intake signs it, about the candidate.
fn intake_notification(
    stack: &Recruitment,
    subject: &str,
    message: notify_pb::SendNotificationRequest,
) -> tonic::Request<notify_pb::SendNotificationRequest> {
    stack.system.signed(
        "intake",
        "/shlyuz.notify.v1.NotificationService/SendNotification",
        "CITIZEN_NOTIFICATION",
        subject,
        message,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_sms_reach_the_candidate_through_notify_once() {
    // Notify is down: the gateway routes it to an address where nothing listens yet.
    let (notify_socket, notify_address) = reserved_loopback_port();
    let stack = start_with(
        &[Target::Gateway, Target::Registry, Target::Intake],
        |config| {
            config
                .gateway
                .targets
                .insert("notify".to_string(), notify_address.to_string());
        },
    )
    .await;
    let vacancy_id = stack.vacancy().await;
    let candidate = people::CLEAN_CANDIDATE.iin;
    let certificate = stack.certificate(candidate, false).await;
    let id = stack
        .apply(&vacancy_id, candidate, &certificate)
        .await
        .expect("apply")
        .application_id;
    stack.assign_and_build(&id).await;
    let mut officials = stack.officials().await;
    officials
        .send_to_special_check(stack.call(
            "sdu",
            &format!("{APP}SendToSpecialCheck"),
            EXECUTOR,
            "mod_executor",
            None,
            pb::SendToSpecialCheckRequest {
                application_id: id.clone(),
            },
        ))
        .await
        .expect("special check");
    // 1 April 2027 09:30 in Kazakhstan (UTC+5).
    let appointment_ms = 1_806_553_800_000;
    officials
        .send_to_medical(stack.call(
            "sdu",
            &format!("{APP}SendToMedical"),
            EXECUTOR,
            "mod_executor",
            None,
            pb::SendToMedicalRequest {
                application_id: id.clone(),
                appointment: Some(pb::MedicalAppointment {
                    ddo_region_kato: AKMOLA.into(),
                    address: "Көкшетау, Ауельбекова 120, ДДО".into(),
                    appointment_time_ms: appointment_ms,
                }),
            },
        ))
        .await
        .expect("send to medical");
    // At least one round of intake's SMS relay (every 2 s) finds notify down.
    tokio::time::sleep(Duration::from_millis(2_500)).await;

    // Notify comes up on the address the gateway routes to; the rows kept in intake's outbox go
    // once their back-off has passed and the gateway's breaker for notify lets calls through.
    let notify_listener = notify_socket
        .listen(1024)
        .expect("listen on notify's address");
    let notify = support::spawn_system_on(
        &[Target::Notify],
        vec![(Target::Notify, notify_listener)],
        |config| {
            config.notify.gateway_address = stack.system.gateway_address().to_string();
        },
    )
    .await;
    let lines = sms_within(&notify, 4, Duration::from_secs(40)).await;
    assert_eq!(lines.len(), 4, "every status SMS after notify returned");
    // To the phone the mobile citizens database holds for the candidate, not the one typed in
    // the application; in Kazakh as the candidate asked, with the seed's status texts.
    assert!(
        lines.iter().all(|line| line["to"] == CANDIDATE_PHONE),
        "{lines:?}"
    );
    let texts: Vec<&str> = lines
        .iter()
        .map(|line| line["text"].as_str().expect("text"))
        .collect();
    assert!(
        texts.contains(&"Jauynger: өтінішіңіздің мәртебесі \"Принято в работу\" болып өзгертілді."),
        "{texts:?}"
    );
    assert!(
        texts.contains(
            &"Jauynger: өтінішіңіздің мәртебесі \"направлено на специальную проверку\" болып өзгертілді."
        ),
        "{texts:?}"
    );
    assert!(
        texts.contains(
            &"Jauynger: өтінішіңіздің мәртебесі \"направлен на медицинское обследование и психологическое тестирование\" болып өзгертілді. Медициналық тексеруден және психологиялық тестілеуден өту үшін Көкшетау, Ауельбекова 120, ДДО мекенжайына 01.04.2027 09:30 келуіңіз қажет."
        ),
        "{texts:?}"
    );
    // Notify holds them as intake's notices of these four status changes.
    let mut notifications = notify_pb::notification_service_client::NotificationServiceClient::new(
        stack.channel("intake").await,
    );
    let mut templates = Vec::new();
    for line in &lines {
        let notification = notifications
            .get_notification(
                stack.system.signed(
                    "intake",
                    "/shlyuz.notify.v1.NotificationService/GetNotification",
                    "CITIZEN_NOTIFICATION",
                    candidate,
                    notify_pb::GetNotificationRequest {
                        id: line["notification_id"]
                            .as_str()
                            .expect("notification id")
                            .to_string(),
                    },
                ),
            )
            .await
            .expect("intake reads its notice")
            .into_inner()
            .notification
            .expect("notification");
        assert_eq!(notification.recipient_iin, candidate);
        templates.push(notification.template_id);
    }
    templates.sort();
    assert_eq!(
        templates,
        [
            "intake.status.accepted",
            "intake.status.medical",
            "intake.status.special_check",
            "intake.status.submitted",
        ]
    );

    // The relay keeps running: the next status change goes by itself.
    let ddo_certificate = stack.certificate(DDO, true).await;
    officials
        .record_medical_result(stack.call(
            "sdu",
            &format!("{APP}RecordMedicalResult"),
            DDO,
            "ddo_executor",
            Some(AKMOLA),
            pb::RecordMedicalResultRequest {
                application_id: id.clone(),
                outcome: pb::MedicalOutcome::Fail as i32,
                signed_conclusion: Some(pb::SignedDocument {
                    document: PDF.to_vec(),
                    signature: sign_document(&ddo_certificate.private_key_pem, PDF).expect("sign"),
                    signer_certificate_pem: ddo_certificate.certificate_pem,
                }),
            },
        ))
        .await
        .expect("medical fail");
    let lines = sms_within(&notify, 5, Duration::from_secs(10)).await;
    assert_eq!(lines.len(), 5, "one SMS per status change: {lines:?}");
    assert_eq!(
        lines[4]["text"],
        "Jauynger: өтінішіңіздің мәртебесі \"Отказано в дальнейшем рассмотрении\" болып өзгертілді."
    );
    assert_eq!(lines[4]["to"], CANDIDATE_PHONE);

    // A crash between sending and marking makes intake resend a row with the same idempotency
    // key: notify knows the key and queues nothing new.
    let resent_row = || notify_pb::SendNotificationRequest {
        recipient_iin: candidate.to_string(),
        channels: vec![notify_pb::Channel::Sms as i32],
        template_id: "intake.status.accepted".to_string(),
        parameters: [("status_text".to_string(), "Принято в работу".to_string())].into(),
        language: notify_pb::Language::Kk as i32,
        idempotency_key: "0190f5a2-7c1e-7000-8000-00000000a0ff".to_string(),
        ..Default::default()
    };
    let first = notifications
        .send_notification(intake_notification(&stack, candidate, resent_row()))
        .await
        .expect("send")
        .into_inner();
    assert!(!first.duplicate);
    sms_within(&notify, 6, Duration::from_secs(10)).await;
    let again = notifications
        .send_notification(intake_notification(&stack, candidate, resent_row()))
        .await
        .expect("resend")
        .into_inner();
    assert!(again.duplicate);
    assert_eq!(
        again.notification.expect("notification").recipient_iin,
        candidate
    );
    // Notify's worker polls every 20 ms: a second SMS would be out well within half a second.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(notify.sms().len(), 6, "one SMS per key");

    // The relay ends on shutdown: the targets stop before their tasks' drain limit (5 s) ends.
    tokio::time::timeout(Duration::from_secs(4), stack.stop())
        .await
        .expect("intake's relay ends on shutdown");
    notify.stop().await;
}

/// The portal has notify send the candidate a one-time password for the application; returns
/// the OTP id.
async fn issue_application_otp(stack: &Recruitment, iin: &str) -> String {
    let mut otp = notify_pb::otp_service_client::OtpServiceClient::new(
        stack.channel("jauynger-portal").await,
    );
    let envelope = EnvelopeBuilder {
        purpose: "DIGITAL_SIGNATURE".to_string(),
        subject_iin: iin.to_string(),
        ..EnvelopeBuilder::default()
    };
    otp.issue_otp(envelope.signed_request(
        &signing_key(support::pki(), "jauynger-portal"),
        "/shlyuz.notify.v1.OtpService/IssueOtp",
        notify_pb::IssueOtpRequest {
            phone: String::new(),
            iin: iin.to_string(),
            purpose: APPLICATION_OTP_PURPOSE.to_string(),
            language: notify_pb::Language::Kk as i32,
            ..Default::default()
        },
    ))
    .await
    .expect("the portal issues an OTP through the gateway")
    .into_inner()
    .otp_id
}

/// The six digits of the last SMS to `phone`.
fn last_code_to(stack: &Recruitment, phone: &str) -> String {
    stack
        .system
        .sms()
        .iter()
        .rev()
        .filter(|sms| sms["to"] == phone)
        .filter_map(|sms| sms["text"].as_str())
        .find_map(|text| {
            text.split(|character: char| !character.is_ascii_digit())
                .find(|part| part.len() == 6)
                .map(str::to_string)
        })
        .expect("a code in an SMS to the phone")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_confirmed_by_otp_is_checked_with_notify() {
    let stack = start(true).await;
    let vacancy_id = stack.vacancy().await;
    let candidate = people::CLEAN_CANDIDATE.iin;
    let candidate_phone = CANDIDATE_PHONE;
    let file = |otp_id: String, code: String| {
        let request = stack.call(
            "jauynger-portal",
            "/shlyuz.intake.v1.ApplicationService/CreateApplication",
            candidate,
            "candidate",
            None,
            pb::CreateApplicationRequest {
                vacancy_id: vacancy_id.clone(),
                consent_id: CONSENT.into(),
                signed_application: None,
                otp_reference: otp_id,
                otp_code: code,
                phone_number: "+77011234567".into(),
                language: "kk".into(),
                attachments: Vec::new(),
            },
        );
        async {
            stack
                .applications()
                .await
                .create_application(request)
                .await
                .map(|response| response.into_inner().application.expect("application"))
        }
    };

    // A code issued for someone else does not sign this candidate's application.
    let someone_elses = issue_application_otp(&stack, people::NARCOLOGICAL_CANDIDATE.iin).await;
    stack.system.wait_for_sms(1).await;
    let code = last_code_to(&stack, "+77015550021");
    let refused = file(someone_elses, code)
        .await
        .expect_err("another person's code");
    assert_eq!(
        code_and_reason(&refused),
        (Code::FailedPrecondition, "OTP_SUBJECT_MISMATCH".to_string())
    );

    // The candidate's own code, mistyped, then right; then it is used up.
    let otp_id = issue_application_otp(&stack, candidate).await;
    stack.system.wait_for_sms(2).await;
    let code = last_code_to(&stack, candidate_phone);
    let wrong = format!(
        "{:06}",
        (code.parse::<u32>().expect("digits") + 1) % 1_000_000
    );
    let mistyped = file(otp_id.clone(), wrong).await.expect_err("wrong code");
    let summary = summarize_status(&mistyped);
    assert_eq!(
        (
            summary.code,
            summary.reason.as_str(),
            summary.fields.as_slice()
        ),
        (
            Code::InvalidArgument,
            "OTP_CODE_WRONG",
            ["otp_code".to_string()].as_slice()
        )
    );
    let filed = file(otp_id.clone(), code.clone())
        .await
        .expect("confirmed by OTP");
    assert_eq!(
        filed.candidate_status,
        pb::CandidateStatus::Submitted as i32
    );
    let again = file(otp_id, code).await.expect_err("a used code");
    assert_eq!(
        code_and_reason(&again),
        (Code::FailedPrecondition, "OTP_USED".to_string())
    );
    let missing = file(
        "0190f5a2-7c1e-7000-8000-0000000000ff".to_string(),
        "123456".to_string(),
    )
    .await
    .expect_err("an unknown OTP");
    assert_eq!(code_and_reason(&missing).0, Code::InvalidArgument);
    stack.stop().await;
}
