//! Seed 000: Jauynger contract-service recruitment. The unit head publishes a vacancy, the
//! candidate consents (seed 001) and files an application signed with EDS, the officials take it
//! from the dossier through the special check, the medical commission and the agreement to the
//! order to report, and the candidate follows it by SMS; a second application is confirmed by SMS
//! code, a second candidate is rejected on registry findings, and the head's report counts them.

use anyhow::{Context, ensure};
use shlyuz_kit::application_form::{APPLICATION_OTP_PURPOSE, application_document};
use shlyuz_kit::envelope::EnvelopeBuilder;
use shlyuz_kit::fixture_people::{self as people, FixturePerson};
use shlyuz_kit::gateway_client::{GatewayClient, SignedChannel, with_envelope};
use shlyuz_proto::intake::v1 as intake_pb;
use shlyuz_proto::notify::v1 as notify_pb;
use shlyuz_proto::registry::v1 as registry_pb;

use super::{CANDIDATE, Demo, Described, Progress, client, phone, six_digit_code};

/// The candidate the registries' findings rule out (a conviction).
const REJECTED_CANDIDATE: FixturePerson = people::CONVICTED_CANDIDATE;
/// Officials: the unit head and the ДДО executor sign with EDS, so the CA must know them.
const HEAD: FixturePerson = people::SERVICEMAN_CLEAN;
const DDO_EXECUTOR: FixturePerson = people::SERVICEMAN_EQUITY;
const MOD_EXECUTOR: &str = "850505300011";
const AKMOLA: &str = "110000000";
const CONCLUSION: &[u8] = b"%PDF-1.7\n% medical commission conclusion (demo)\n";
const AGREEMENT: &[u8] = b"%PDF-1.7\n% agreement on concluding a contract (demo)\n";
/// Status changes of the clean path, each announced by SMS: filed, taken into work, special
/// check, medical, personal file to the unit, agreement to sign, signed by the candidate, order.
const CANDIDATE_STATUS_SMS: usize = 8;

/// The officials who act in the demo, at the officials' workstation (SDU).
#[derive(Clone, Copy)]
enum Official {
    /// The unit head.
    Head,
    /// The MoD executor the applications are assigned to.
    ModExecutor,
    /// The ДДО executor of Akmola region.
    DdoExecutor,
}

impl Demo {
    /// The recruitment scenario, from the vacancy to the head's report.
    pub(super) async fn jauynger(&self, progress: &mut Progress) -> anyhow::Result<()> {
        progress.section("Jauynger: contract-service recruitment (seed 000)");
        let vacancy_id = progress
            .step("the unit head publishes a vacancy (SDU)", async {
                let vacancy = self.publish_vacancy("стрелок").await?;
                let found = format!("vacancy {} in {}", vacancy.vacancy_id, vacancy.unit);
                Ok((vacancy.vacancy_id, found))
            })
            .await?;

        let consent_id = self.candidate_consents(progress).await?;

        let (application_id, certificate) = progress
            .step(
                "the candidate signs the application with EDS and files it (portal)",
                async {
                    let certificate = client::certificate(&self.portal, CANDIDATE, false).await?;
                    let application = self
                        .file_application(&vacancy_id, CANDIDATE, &certificate, &consent_id)
                        .await?;
                    let found = format!(
                        "{} applied: application {}, the candidate sees {:?}",
                        CANDIDATE.full_name,
                        application.application_id,
                        application.candidate_status()
                    );
                    Ok(((application.application_id, certificate), found))
                },
            )
            .await?;

        progress
            .step(
                "the head assigns it; the executor builds the dossier from five registries",
                async {
                    let application = self.assign_and_build(&application_id).await?;
                    ensure!(
                        application.state() == intake_pb::ApplicationState::Dossier,
                        "expected DOSSIER, got {:?} ({})",
                        application.state(),
                        application.rejection_reason
                    );
                    Ok((
                        (),
                        format!(
                            "dossier complete: {}, registered in region {}",
                            !application.dossier_incomplete, application.registered_region_kato
                        ),
                    ))
                },
            )
            .await?;

        let appointment_ms = shlyuz_kit::clock::system_clock().now_millis() + 7 * 86_400_000;
        progress
            .step(
                "special check, then the medical commission is booked",
                async {
                    let mut officials = self.applications(&self.sdu);
                    officials
                        .send_to_special_check(self.official(
                            Official::ModExecutor,
                            intake_pb::SendToSpecialCheckRequest {
                                application_id: application_id.clone(),
                            },
                        )?)
                        .await
                        .described()?;
                    let booked = officials
                        .send_to_medical(self.official(
                            Official::ModExecutor,
                            intake_pb::SendToMedicalRequest {
                                application_id: application_id.clone(),
                                appointment: Some(intake_pb::MedicalAppointment {
                                    ddo_region_kato: AKMOLA.into(),
                                    address: "Көкшетау, ДДО Акмолинской области".into(),
                                    appointment_time_ms: appointment_ms,
                                }),
                            },
                        )?)
                        .await
                        .described()?
                        .application
                        .context("no application in the response")?;
                    Ok(((), format!("state {:?}", booked.state())))
                },
            )
            .await?;

        progress
            .step(
                "the ДДО executor sees the minimal data set and records the result with EDS",
                async {
                    let mut officials = self.applications(&self.sdu);
                    let view = officials
                        .get_application(self.official(
                            Official::DdoExecutor,
                            intake_pb::GetApplicationRequest {
                                application_id: application_id.clone(),
                            },
                        )?)
                        .await
                        .described()?
                        .application
                        .context("no application in the response")?;
                    ensure!(
                        view.candidate_iin.is_empty() && view.dossier_json.is_empty(),
                        "the ДДО executor saw more than the minimal data set"
                    );
                    let minimal = view.medical_data.context("no minimal data set")?;
                    let signer = client::certificate(&self.portal, DDO_EXECUTOR, true).await?;
                    officials
                        .record_medical_result(self.official(
                            Official::DdoExecutor,
                            intake_pb::RecordMedicalResultRequest {
                                application_id: application_id.clone(),
                                outcome: intake_pb::MedicalOutcome::Pass as i32,
                                signed_conclusion: Some(client::signed_document(
                                    &signer, CONCLUSION,
                                )?),
                            },
                        )?)
                        .await
                        .described()?;
                    Ok((
                        (),
                        format!(
                            "saw {} (no IIN, no dossier); fit for service",
                            minimal.full_name
                        ),
                    ))
                },
            )
            .await?;

        progress
            .step(
                "the agreement is drafted and signed by the candidate and the head",
                async {
                    let mut officials = self.applications(&self.sdu);
                    officials
                        .draft_agreement(self.official(
                            Official::ModExecutor,
                            intake_pb::DraftAgreementRequest {
                                application_id: application_id.clone(),
                                agreement_document: AGREEMENT.to_vec(),
                            },
                        )?)
                        .await
                        .described()?;
                    self.applications(&self.portal)
                        .sign_agreement_by_candidate(self.candidate(
                            CANDIDATE,
                            intake_pb::SignAgreementByCandidateRequest {
                                application_id: application_id.clone(),
                                signed_agreement: Some(client::signed_document(
                                    &certificate,
                                    AGREEMENT,
                                )?),
                            },
                        )?)
                        .await
                        .described()?;
                    let head = client::certificate(&self.portal, HEAD, true).await?;
                    let signed = officials
                        .sign_agreement_by_head(self.official(
                            Official::Head,
                            intake_pb::SignAgreementByHeadRequest {
                                application_id: application_id.clone(),
                                signed_agreement: Some(client::signed_document(&head, AGREEMENT)?),
                            },
                        )?)
                        .await
                        .described()?
                        .application
                        .context("no application in the response")?;
                    Ok(((), format!("state {:?}", signed.state())))
                },
            )
            .await?;

        progress
            .step(
                "the order to report is issued and the candidate sees it",
                async {
                    let mut officials = self.applications(&self.sdu);
                    officials
                        .issue_order_to_report(self.official(
                            Official::ModExecutor,
                            intake_pb::IssueOrderToReportRequest {
                                application_id: application_id.clone(),
                                order: Some(intake_pb::OrderToReport {
                                    unit: "в/ч 12345".into(),
                                    report_time_ms: appointment_ms + 30 * 86_400_000,
                                    place: "Көкшетау, КПП в/ч 12345".into(),
                                }),
                            },
                        )?)
                        .await
                        .described()?;
                    officials
                        .complete_application(self.official(
                            Official::ModExecutor,
                            intake_pb::CompleteApplicationRequest {
                                application_id: application_id.clone(),
                            },
                        )?)
                        .await
                        .described()?;
                    let seen = self.candidate_view(CANDIDATE, &application_id).await?;
                    ensure!(
                        seen.candidate_status() == intake_pb::CandidateStatus::Completed,
                        "the candidate sees {:?}",
                        seen.candidate_status()
                    );
                    let status = seen.candidate_status();
                    let order = seen
                        .order_to_report
                        .context("the candidate sees no order")?;
                    Ok((
                        (),
                        format!(
                            "candidate status {status:?}: report to {} at {}",
                            order.unit, order.place
                        ),
                    ))
                },
            )
            .await?;

        progress
            .step(
                "the candidate got an SMS in Kazakh on every status change (notify)",
                async {
                    let candidate_phone = phone(CANDIDATE)?;
                    // The order to report and the last status ("personal file sent to the unit")
                    // are the last two of the run; then every earlier one has been sent too.
                    let last = self
                        .wait_for_sms(candidate_phone, |text| {
                            text.starts_with("Jauynger") && text.contains("в/ч 12345")
                        })
                        .await?;
                    self.wait_for_sms(candidate_phone, |text| {
                        text.starts_with("Jauynger") && text.contains("Личное дело")
                    })
                    .await?;
                    let texts = self
                        .wait_for_sms_count(candidate_phone, CANDIDATE_STATUS_SMS, |text| {
                            text.starts_with("Jauynger")
                        })
                        .await?;
                    Ok((
                        (),
                        format!(
                            "{} SMS to {candidate_phone}, the last: {}",
                            texts.len(),
                            last.chars().take(150).collect::<String>()
                        ),
                    ))
                },
            )
            .await?;

        progress
            .step(
                "the candidate applies to a second vacancy with an SMS code instead of EDS",
                async {
                    let vacancy = self.publish_vacancy("механик-водитель").await?;
                    let (application, code) = self
                        .apply_with_otp(&vacancy.vacancy_id, &consent_id)
                        .await?;
                    ensure!(
                        application.candidate_status() == intake_pb::CandidateStatus::Submitted,
                        "the candidate sees {:?}",
                        application.candidate_status()
                    );
                    Ok((
                        (),
                        format!(
                            "code {code} confirmed application {} for {} (checked by intake with \
                             notify)",
                            application.application_id, vacancy.position
                        ),
                    ))
                },
            )
            .await?;

        progress
            .step(
                "a second candidate is rejected on registry findings, without being told why",
                async {
                    let certificate =
                        client::certificate(&self.portal, REJECTED_CANDIDATE, false).await?;
                    let (consent_id, _) = self.consent_by_sms(REJECTED_CANDIDATE).await?;
                    let filed = self
                        .file_application(
                            &vacancy_id,
                            REJECTED_CANDIDATE,
                            &certificate,
                            &consent_id,
                        )
                        .await?;
                    let built = self.assign_and_build(&filed.application_id).await?;
                    ensure!(
                        built.state() == intake_pb::ApplicationState::Rejected,
                        "expected REJECTED, got {:?}",
                        built.state()
                    );
                    let seen = self
                        .candidate_view(REJECTED_CANDIDATE, &filed.application_id)
                        .await?;
                    ensure!(
                        seen.candidate_status() == intake_pb::CandidateStatus::Rejected
                            && seen.rejection_reason.is_empty(),
                        "the candidate sees {:?} / {:?}",
                        seen.candidate_status(),
                        seen.rejection_reason
                    );
                    Ok((
                        (),
                        format!(
                            "{}: REJECTED; officials read \"{}\"; the candidate sees only \
                             REJECTED",
                            REJECTED_CANDIDATE.full_name, built.rejection_reason
                        ),
                    ))
                },
            )
            .await?;

        progress
            .step("the head's report counts the applications", async {
                let report = intake_pb::report_service_client::ReportServiceClient::new(
                    self.sdu.signed_channel(),
                )
                .get_application_report(self.official(
                    Official::Head,
                    intake_pb::GetApplicationReportRequest {
                        region_kato: AKMOLA.into(),
                        ..Default::default()
                    },
                )?)
                .await
                .described()?;
                ensure!(report.total >= 2, "the report counts {}", report.total);
                let rows: Vec<String> = report
                    .rows
                    .iter()
                    .map(|row| {
                        format!(
                            "{:?}: {}",
                            intake_pb::ApplicationState::try_from(row.state)
                                .unwrap_or(intake_pb::ApplicationState::Unspecified),
                            row.count
                        )
                    })
                    .collect();
                Ok((
                    (),
                    format!("{} in Akmola: {}", report.total, rows.join(", ")),
                ))
            })
            .await
    }

    /// The unit head publishes a vacancy for `position` in Akmola region.
    async fn publish_vacancy(&self, position: &str) -> anyhow::Result<intake_pb::Vacancy> {
        intake_pb::vacancy_service_client::VacancyServiceClient::new(self.sdu.signed_channel())
            .create_vacancy(self.official(
                Official::Head,
                intake_pb::CreateVacancyRequest {
                    vacancy: Some(intake_pb::Vacancy {
                        position: position.into(),
                        rank: intake_pb::Rank::Private as i32,
                        branch: "Сухопутные войска".into(),
                        unit: "в/ч 12345".into(),
                        region_kato: AKMOLA.into(),
                        places: 3,
                        ..Default::default()
                    }),
                },
            )?)
            .await
            .described()?
            .vacancy
            .context("no vacancy in the response")
    }

    /// The candidate applies to `vacancy_id` confirming with a one-time password instead of EDS:
    /// the portal has notify send the code, the candidate types it, intake checks it with notify.
    async fn apply_with_otp(
        &self,
        vacancy_id: &str,
        consent_id: &str,
    ) -> anyhow::Result<(intake_pb::Application, String)> {
        let envelope = EnvelopeBuilder {
            purpose: "DIGITAL_SIGNATURE".to_string(),
            subject_iin: CANDIDATE.iin.to_string(),
            ..EnvelopeBuilder::default()
        };
        let otp_id =
            notify_pb::otp_service_client::OtpServiceClient::new(self.portal.signed_channel())
                .issue_otp(with_envelope(
                    envelope,
                    notify_pb::IssueOtpRequest {
                        phone: String::new(),
                        iin: CANDIDATE.iin.to_string(),
                        purpose: APPLICATION_OTP_PURPOSE.to_string(),
                        language: notify_pb::Language::Kk as i32,
                        ..Default::default()
                    },
                ))
                .await
                .described()?
                .otp_id;
        // notify's own OTP text ends with the warning not to share it.
        let text = self
            .wait_for_sms(phone(CANDIDATE)?, |text| text.contains("ешкімге"))
            .await?;
        let code = six_digit_code(&text)?;
        let application = self
            .applications(&self.portal)
            .create_application(self.candidate(
                CANDIDATE,
                intake_pb::CreateApplicationRequest {
                    vacancy_id: vacancy_id.to_string(),
                    consent_id: consent_id.to_string(),
                    signed_application: None,
                    otp_reference: otp_id,
                    otp_code: code.clone(),
                    phone_number: phone(CANDIDATE)?.to_string(),
                    language: "kk".into(),
                    attachments: Vec::new(),
                },
            )?)
            .await
            .described()?
            .application
            .context("no application in the response")?;
        Ok((application, code))
    }

    /// `candidate` signs the application form for `vacancy_id` with EDS and files it (portal).
    async fn file_application(
        &self,
        vacancy_id: &str,
        candidate: FixturePerson,
        certificate: &registry_pb::IssueCertificateResponse,
        consent_id: &str,
    ) -> anyhow::Result<intake_pb::Application> {
        let document = application_document(vacancy_id, candidate.iin, consent_id, &[]);
        let signed = client::signed_document(certificate, &document)?;
        self.applications(&self.portal)
            .create_application(self.candidate(
                candidate,
                intake_pb::CreateApplicationRequest {
                    vacancy_id: vacancy_id.to_string(),
                    consent_id: consent_id.to_string(),
                    signed_application: Some(signed),
                    otp_reference: String::new(),
                    otp_code: String::new(),
                    phone_number: phone(candidate)?.to_string(),
                    language: "kk".into(),
                    attachments: Vec::new(),
                },
            )?)
            .await
            .described()?
            .application
            .context("no application in the response")
    }

    /// The head assigns the application to the MoD executor, who builds the dossier.
    async fn assign_and_build(
        &self,
        application_id: &str,
    ) -> anyhow::Result<intake_pb::Application> {
        let mut officials = self.applications(&self.sdu);
        officials
            .assign_application(self.official(
                Official::Head,
                intake_pb::AssignApplicationRequest {
                    application_id: application_id.to_string(),
                    assignee_user_id: MOD_EXECUTOR.to_string(),
                },
            )?)
            .await
            .described()?;
        officials
            .build_dossier(self.official(
                Official::ModExecutor,
                intake_pb::BuildDossierRequest {
                    application_id: application_id.to_string(),
                },
            )?)
            .await
            .described()?
            .application
            .context("no application in the response")
    }

    /// The application as `candidate` sees it in the portal.
    async fn candidate_view(
        &self,
        candidate: FixturePerson,
        application_id: &str,
    ) -> anyhow::Result<intake_pb::Application> {
        self.applications(&self.portal)
            .get_application(self.candidate(
                candidate,
                intake_pb::GetApplicationRequest {
                    application_id: application_id.to_string(),
                },
            )?)
            .await
            .described()?
            .application
            .context("no application in the response")
    }

    /// A request from SDU on behalf of `official`, signed.
    fn official<M>(&self, official: Official, message: M) -> anyhow::Result<tonic::Request<M>> {
        let (user, role, region) = match official {
            Official::Head => (HEAD.iin, "head", None),
            Official::ModExecutor => (MOD_EXECUTOR, "mod_executor", None),
            Official::DdoExecutor => (DDO_EXECUTOR.iin, "ddo_executor", Some(AKMOLA)),
        };
        client::as_user(user, role, region, message)
    }

    /// A request from the portal on behalf of `candidate`, signed.
    fn candidate<M>(
        &self,
        candidate: FixturePerson,
        message: M,
    ) -> anyhow::Result<tonic::Request<M>> {
        client::as_user(candidate.iin, "candidate", None, message)
    }

    fn applications(
        &self,
        participant: &GatewayClient,
    ) -> intake_pb::application_service_client::ApplicationServiceClient<SignedChannel> {
        intake_pb::application_service_client::ApplicationServiceClient::new(
            participant.signed_channel(),
        )
    }
}
