//! `shlyuz demo`: the seeds' scenarios, step by step, against a running `shlyuz up --test-clock`.
//! Every call goes through the gateway with mTLS and a signed envelope, as the participant that
//! would make it in the ministry (the Jauynger portal, the officials' workstation SDU, operations);
//! only the test clock is reached on housing's own address. Each step checks what it expects and
//! the demo stops with a non-zero exit at the first surprise.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use shlyuz_intake::grpc::application_document;
use shlyuz_kit::client::{ClientSettings, connect};
use shlyuz_kit::envelope::EnvelopeBuilder;
use shlyuz_kit::error::summarize_status;
use shlyuz_kit::gateway_client::{DEFAULT_GATEWAY_SERVER_NAME, GatewayClient};
use shlyuz_kit::pki::SigningKey;
use shlyuz_kit::signed_document::sign_document;
use shlyuz_proto::gateway::v1 as gateway_pb;
use shlyuz_proto::housing::v1 as housing_pb;
use shlyuz_proto::intake::v1 as intake_pb;
use shlyuz_proto::notify::v1 as notify_pb;
use shlyuz_proto::registry::v1 as registry_pb;
use shlyuz_proto::testing::v1 as testing_pb;
use shlyuz_registry::fixtures::rules;
use tonic::transport::Channel;

use crate::up::Endpoints;

/// The cast: people of the rules fixture, which `shlyuz up` loads with the synthetic population.
const CANDIDATE: &str = rules::CLEAN_CANDIDATE;
const REJECTED_CANDIDATE: &str = rules::CONVICTED_CANDIDATE;
/// Officials: the unit head and the ДДО executor sign with EDS, so the CA must know them.
const HEAD: &str = rules::SERVICEMAN_CLEAN;
const DDO_EXECUTOR: &str = rules::SERVICEMAN_EQUITY;
const MOD_EXECUTOR: &str = "850505300011";
const AKMOLA: &str = "110000000";
const ASTANA: &str = "711110000";
const KOKSHETAU: &str = "111010000";
const CONCLUSION: &[u8] = b"%PDF-1.7\n% medical commission conclusion (demo)\n";
const AGREEMENT: &[u8] = b"%PDF-1.7\n% agreement on concluding a contract (demo)\n";
/// Status changes of the clean path, each announced by SMS: filed, taken into work, special
/// check, medical, personal file to the unit, agreement to sign, signed by the candidate, order.
const CANDIDATE_STATUS_SMS: usize = 8;

/// Housing round: who accepts, who refuses (and with which code), who does not answer.
const ACCEPTS: &str = rules::SERVICEMAN_CLEAN;
const REFUSES: &str = rules::SERVICEMAN_EQUITY;
const REFUSAL_CODE: i32 = 6522;
const SILENT: &str = rules::SERVICEMAN_EARLIER_HOUSING;
/// Added for the review, with the reason each is expected to be removed for.
const REVIEWED: [(&str, housing_pb::RemovalReason); 9] = [
    (
        rules::SERVICEMAN_PRIVATISED,
        housing_pb::RemovalReason::PrivatisationContract,
    ),
    (REFUSES, housing_pb::RemovalReason::EquityContract),
    (SILENT, housing_pb::RemovalReason::EarlierServiceHousing),
    (
        rules::SERVICEMAN_SPOUSE_STATE_HOUSING,
        housing_pb::RemovalReason::PermanentUseInLocality,
    ),
    (
        rules::SERVICEMAN_SPOUSE_MISSING,
        housing_pb::RemovalReason::MissingOrDead,
    ),
    (
        rules::SERVICEMAN_FOREIGN_CITIZEN,
        housing_pb::RemovalReason::NotACitizen,
    ),
    (
        rules::SERVICEMAN_RESIDENT_ABROAD,
        housing_pb::RemovalReason::ResidenceAbroad,
    ),
    (
        rules::SERVICEMAN_INCAPABLE,
        housing_pb::RemovalReason::Incapable,
    ),
    (
        rules::SERVICEMAN_CHILD_IMPRISONED,
        housing_pb::RemovalReason::Imprisoned,
    ),
];

/// How long to wait for what happens in the background (SMS relays, inbox pulls).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

const STEPS: usize = 23;

/// Runs the demo against the `shlyuz up` that wrote `endpoints_path`.
pub async fn run(endpoints_path: &Path) -> anyhow::Result<()> {
    shlyuz_kit::install_crypto_provider();
    let started = Instant::now();
    let endpoints = Endpoints::read_file(endpoints_path)?;
    let demo = Demo::connect(endpoints).await?;
    let mut progress = Progress::default();
    println!(
        "Shlyuz demo against the gateway at {} ({STEPS} steps)",
        demo.endpoints.gateway
    );
    demo.preflight(&mut progress).await?;
    demo.jauynger(&mut progress).await?;
    demo.housing_round(&mut progress).await?;
    demo.review(&mut progress).await?;
    demo.audit(&mut progress).await?;
    println!(
        "\nDemo finished: {} steps in {:.1} s.",
        progress.done,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Prints `[ n/N] title`, runs the step, and prints what it found or why it failed.
#[derive(Default)]
struct Progress {
    done: usize,
    section: &'static str,
}

impl Progress {
    fn section(&mut self, title: &'static str) {
        if self.section != title {
            println!("\n{title}");
            self.section = title;
        }
    }

    async fn step<T>(
        &mut self,
        title: &str,
        work: impl Future<Output = anyhow::Result<(T, String)>>,
    ) -> anyhow::Result<T> {
        let number = self.done + 1;
        let started = Instant::now();
        match work.await {
            Ok((value, found)) => {
                self.done = number;
                println!(
                    "  [{number:>2}/{STEPS}] {title} … ok ({} ms)",
                    started.elapsed().as_millis()
                );
                for line in found.lines().filter(|line| !line.is_empty()) {
                    println!("          {line}");
                }
                Ok(value)
            }
            Err(error) => {
                println!("  [{number:>2}/{STEPS}] {title} … FAILED");
                Err(error.context(format!("step {number} ({title})")))
            }
        }
    }
}

/// A gRPC error as the demo reports it: code, reason and message.
fn describe(status: &tonic::Status) -> anyhow::Error {
    let summary = summarize_status(status);
    anyhow::anyhow!(
        "{:?} {}: {}",
        summary.code,
        summary.reason,
        status.message()
    )
}

/// The message of a gRPC response, or the error as [`describe`] words it.
trait Described<T> {
    fn described(self) -> anyhow::Result<T>;
}

impl<T> Described<T> for Result<tonic::Response<T>, tonic::Status> {
    fn described(self) -> anyhow::Result<T> {
        self.map(tonic::Response::into_inner)
            .map_err(|status| describe(&status))
    }
}

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

/// Calls through the gateway: each participant's channel and signing key.
struct Demo {
    endpoints: Endpoints,
    portal: GatewayClient,
    sdu: GatewayClient,
    ops: GatewayClient,
    test_clock: Channel,
    sms_log: PathBuf,
    /// SMS already in the log when the demo started: earlier ones are not this run's.
    sms_before: usize,
    fixture: shlyuz_registry::records::Population,
}

impl Demo {
    async fn connect(endpoints: Endpoints) -> anyhow::Result<Demo> {
        let test_clock_address = endpoints.test_clock.clone().context(
            "shlyuz up was started without --test-clock; the demo moves housing's clock through \
             the 48-hour answer window: restart it as `shlyuz up --test-clock`",
        )?;
        let sms_log = endpoints.sms_log.clone().context(
            "notify does not write SMS to a log file (notify.sms.provider is not `log`); the demo \
             reads the offer SMS from it",
        )?;
        let participant = |id: &str| -> anyhow::Result<(Channel, Arc<SigningKey>)> {
            let files = endpoints
                .participants
                .get(id)
                .with_context(|| format!("no participant {id:?} in endpoints.json"))?;
            let key = SigningKey::from_pem_file(&files.signing_key)
                .with_context(|| format!("{id}: signing key"))?;
            let channel = shlyuz_kit::client::connect_lazy(&ClientSettings {
                address: endpoints.gateway.clone(),
                tls: Some(endpoints.tls_files(id)?),
                server_name: DEFAULT_GATEWAY_SERVER_NAME.to_string(),
                connect_timeout: Duration::from_secs(5),
            })?;
            Ok((channel, Arc::new(key)))
        };
        let client = |id: &str| -> anyhow::Result<GatewayClient> {
            let (channel, key) = participant(id)?;
            Ok(GatewayClient::from_channel(channel, id, key))
        };
        // The test clock is housing's own listener; only `ops` may move it.
        let test_clock = connect(&ClientSettings {
            address: test_clock_address.clone(),
            tls: Some(endpoints.tls_files("ops")?),
            server_name: "localhost".to_string(),
            connect_timeout: Duration::from_secs(5),
        })
        .await
        .with_context(|| format!("test clock at {test_clock_address}"))?;
        Ok(Demo {
            portal: client("jauynger-portal")?,
            sdu: client("sdu")?,
            ops: client("ops")?,
            test_clock,
            sms_before: std::fs::read_to_string(&sms_log)
                .map(|log| log.lines().count())
                .unwrap_or(0),
            sms_log,
            fixture: shlyuz_registry::fixtures::parse(shlyuz_registry::fixtures::RULES_FIXTURE)?,
            endpoints,
        })
    }

    /// A request from SDU on behalf of `official`, signed.
    fn official<M: prost::Message>(
        &self,
        official: Official,
        path: &str,
        message: M,
    ) -> anyhow::Result<tonic::Request<M>> {
        let (user, role, region) = match official {
            Official::Head => (HEAD, "head", None),
            Official::ModExecutor => (MOD_EXECUTOR, "mod_executor", None),
            Official::DdoExecutor => (DDO_EXECUTOR, "ddo_executor", Some(AKMOLA)),
        };
        Self::as_user(&self.sdu, path, user, role, region, message)
    }

    /// A request from the portal on behalf of the candidate `iin`, signed.
    fn candidate<M: prost::Message>(
        &self,
        iin: &str,
        path: &str,
        message: M,
    ) -> anyhow::Result<tonic::Request<M>> {
        Self::as_user(&self.portal, path, iin, "candidate", None, message)
    }

    /// A request from `client` with `user` acting in `role` (intake trusts the portal's and SDU's
    /// role assertions), signed.
    fn as_user<M: prost::Message>(
        client: &GatewayClient,
        path: &str,
        user: &str,
        role: &str,
        region: Option<&str>,
        message: M,
    ) -> anyhow::Result<tonic::Request<M>> {
        // The role and region are part of the signed envelope (v2): intake acts on them.
        let envelope = EnvelopeBuilder {
            user_id: user.to_string(),
            user_role: role.to_string(),
            user_region: region.unwrap_or_default().to_string(),
            ..EnvelopeBuilder::default()
        };
        Ok(client.signed_request(&envelope, path, message))
    }

    fn signed<M: prost::Message>(
        client: &GatewayClient,
        path: &str,
        message: M,
    ) -> tonic::Request<M> {
        client.signed_request(&EnvelopeBuilder::default(), path, message)
    }

    fn full_name(&self, iin: &str) -> String {
        self.fixture
            .persons
            .iter()
            .find(|person| person.iin == iin)
            .map(|person| {
                format!(
                    "{} {} {}",
                    person.last_name, person.first_name, person.patronymic
                )
                .trim()
                .to_string()
            })
            .unwrap_or_else(|| iin.to_string())
    }

    fn phone(&self, iin: &str) -> anyhow::Result<String> {
        self.fixture
            .phones
            .iter()
            .find(|phone| phone.iin == iin)
            .map(|phone| phone.phone_number.clone())
            .with_context(|| format!("the rules fixture has no phone for {iin}"))
    }

    fn applications(
        &self,
        client: &GatewayClient,
    ) -> intake_pb::application_service_client::ApplicationServiceClient<Channel> {
        intake_pb::application_service_client::ApplicationServiceClient::new(client.channel())
    }

    fn register(
        &self,
    ) -> housing_pb::housing_register_service_client::HousingRegisterServiceClient<Channel> {
        housing_pb::housing_register_service_client::HousingRegisterServiceClient::new(
            self.ops.channel(),
        )
    }

    fn allocation(
        &self,
    ) -> housing_pb::housing_allocation_service_client::HousingAllocationServiceClient<Channel>
    {
        housing_pb::housing_allocation_service_client::HousingAllocationServiceClient::new(
            self.ops.channel(),
        )
    }

    // ---------------------------------------------------------------------------------------
    // Preflight

    async fn preflight(&self, progress: &mut Progress) -> anyhow::Result<()> {
        progress.section("Preflight");
        progress
            .step(
                "the gateway answers and housing's register is fresh",
                async {
                    let response = self
                        .register()
                        .get_registrant(Self::signed(
                            &self.ops,
                            "/shlyuz.housing.v1.HousingRegisterService/GetRegistrant",
                            housing_pb::GetRegistrantRequest {
                                iin: ACCEPTS.to_string(),
                            },
                        ))
                        .await;
                    match response {
                        Err(status) if status.code() == tonic::Code::NotFound => {}
                        Ok(_) => bail!(
                            "{} is already on the housing register: the demo ran against this data \
                         directory before; start `shlyuz up --test-clock` with a fresh --data-dir",
                            self.full_name(ACCEPTS)
                        ),
                        Err(status) => return Err(describe(&status)),
                    }
                    let clock = testing_pb::test_clock_service_client::TestClockServiceClient::new(
                        self.test_clock.clone(),
                    )
                    .get_test_clock(testing_pb::GetTestClockRequest {})
                    .await
                    .described()?;
                    Ok((
                        (),
                        format!(
                            "housing's test clock is {} s ahead of the wall clock",
                            clock.offset_seconds
                        ),
                    ))
                },
            )
            .await
    }

    // ---------------------------------------------------------------------------------------
    // Seed 000: Jauynger contract-service recruitment

    async fn jauynger(&self, progress: &mut Progress) -> anyhow::Result<()> {
        progress.section("Jauynger: contract-service recruitment (seed 000)");
        let vacancy_id = progress
            .step("the unit head publishes a vacancy (SDU)", async {
                let vacancy = self.publish_vacancy("стрелок").await?;
                let found = format!("vacancy {} in {}", vacancy.vacancy_id, vacancy.unit);
                Ok((vacancy.vacancy_id, found))
            })
            .await?;

        let consent_id = progress
            .step(
                "the candidate consents by SMS code to intake reading their data (seed 001)",
                async {
                    let (consent_id, code) = self.consent_by_sms(CANDIDATE).await?;
                    Ok((
                        consent_id.clone(),
                        format!(
                            "code {code} from the SMS confirmed consent {consent_id}: ACTIVE for \
                             intake, MILITARY_RECRUITMENT"
                        ),
                    ))
                },
            )
            .await?;

        let (application_id, certificate) = progress
            .step(
                "the candidate signs the application with EDS and files it (portal)",
                async {
                    let certificate = self.certificate(CANDIDATE, false).await?;
                    let application = self
                        .file_application(&vacancy_id, CANDIDATE, &certificate, &consent_id)
                        .await?;
                    let found = format!(
                        "{} applied: application {}, the candidate sees {:?}",
                        self.full_name(CANDIDATE),
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
                            "/shlyuz.intake.v1.ApplicationService/SendToSpecialCheck",
                            intake_pb::SendToSpecialCheckRequest {
                                application_id: application_id.clone(),
                            },
                        )?)
                        .await
                        .described()?;
                    let booked = officials
                        .send_to_medical(self.official(
                            Official::ModExecutor,
                            "/shlyuz.intake.v1.ApplicationService/SendToMedical",
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
                            "/shlyuz.intake.v1.ApplicationService/GetApplication",
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
                    let signer = self.certificate(DDO_EXECUTOR, true).await?;
                    officials
                        .record_medical_result(self.official(
                            Official::DdoExecutor,
                            "/shlyuz.intake.v1.ApplicationService/RecordMedicalResult",
                            intake_pb::RecordMedicalResultRequest {
                                application_id: application_id.clone(),
                                outcome: intake_pb::MedicalOutcome::Pass as i32,
                                signed_conclusion: Some(Self::signed_document(
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
                            "/shlyuz.intake.v1.ApplicationService/DraftAgreement",
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
                            "/shlyuz.intake.v1.ApplicationService/SignAgreementByCandidate",
                            intake_pb::SignAgreementByCandidateRequest {
                                application_id: application_id.clone(),
                                signed_agreement: Some(Self::signed_document(
                                    &certificate,
                                    AGREEMENT,
                                )?),
                            },
                        )?)
                        .await
                        .described()?;
                    let head = self.certificate(HEAD, true).await?;
                    let signed = officials
                        .sign_agreement_by_head(self.official(
                            Official::Head,
                            "/shlyuz.intake.v1.ApplicationService/SignAgreementByHead",
                            intake_pb::SignAgreementByHeadRequest {
                                application_id: application_id.clone(),
                                signed_agreement: Some(Self::signed_document(&head, AGREEMENT)?),
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
                            "/shlyuz.intake.v1.ApplicationService/IssueOrderToReport",
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
                            "/shlyuz.intake.v1.ApplicationService/CompleteApplication",
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
                    let phone = self.phone(CANDIDATE)?;
                    // The order to report and the last status ("personal file sent to the unit")
                    // are the last two of the run; then every earlier one has been sent too.
                    let last = self
                        .wait_for_sms(&phone, |text| {
                            text.starts_with("Jauynger") && text.contains("в/ч 12345")
                        })
                        .await?;
                    self.wait_for_sms(&phone, |text| {
                        text.starts_with("Jauynger") && text.contains("Личное дело")
                    })
                    .await?;
                    let texts = self
                        .wait_for_sms_count(&phone, CANDIDATE_STATUS_SMS, |text| {
                            text.starts_with("Jauynger")
                        })
                        .await?;
                    Ok((
                        (),
                        format!(
                            "{} SMS to {phone}, the last: {}",
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
                    let certificate = self.certificate(REJECTED_CANDIDATE, false).await?;
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
                            self.full_name(REJECTED_CANDIDATE),
                            built.rejection_reason
                        ),
                    ))
                },
            )
            .await?;

        progress
            .step("the head's report counts the applications", async {
                let report =
                    intake_pb::report_service_client::ReportServiceClient::new(self.sdu.channel())
                        .get_application_report(self.official(
                            Official::Head,
                            "/shlyuz.intake.v1.ReportService/GetApplicationReport",
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
        intake_pb::vacancy_service_client::VacancyServiceClient::new(self.sdu.channel())
            .create_vacancy(self.official(
                Official::Head,
                "/shlyuz.intake.v1.VacancyService/CreateVacancy",
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
            subject_iin: CANDIDATE.to_string(),
            ..EnvelopeBuilder::default()
        };
        let otp_id = notify_pb::otp_service_client::OtpServiceClient::new(self.portal.channel())
            .issue_otp(self.portal.signed_request(
                &envelope,
                "/shlyuz.notify.v1.OtpService/IssueOtp",
                notify_pb::IssueOtpRequest {
                    phone: String::new(),
                    iin: CANDIDATE.to_string(),
                    purpose: shlyuz_intake::grpc::APPLICATION_OTP_PURPOSE.to_string(),
                    language: notify_pb::Language::Kk as i32,
                    ..Default::default()
                },
            ))
            .await
            .described()?
            .otp_id;
        // notify's own OTP text ends with the warning not to share it.
        let text = self
            .wait_for_sms(&self.phone(CANDIDATE)?, |text| text.contains("ешкімге"))
            .await?;
        let code = six_digit_code(&text)?;
        let application = self
            .applications(&self.portal)
            .create_application(self.candidate(
                CANDIDATE,
                "/shlyuz.intake.v1.ApplicationService/CreateApplication",
                intake_pb::CreateApplicationRequest {
                    vacancy_id: vacancy_id.to_string(),
                    consent_id: consent_id.to_string(),
                    signed_application: None,
                    otp_reference: otp_id,
                    otp_code: code.clone(),
                    phone_number: self.phone(CANDIDATE)?,
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

    /// A test EDS certificate from the registry's CA (НУЦ mimic), as the portal obtains it.
    async fn certificate(
        &self,
        iin: &str,
        official: bool,
    ) -> anyhow::Result<registry_pb::IssueCertificateResponse> {
        let envelope = EnvelopeBuilder {
            purpose: "DIGITAL_SIGNATURE".to_string(),
            subject_iin: iin.to_string(),
            ..EnvelopeBuilder::default()
        };
        let request = self.portal.signed_request(
            &envelope,
            "/shlyuz.registry.v1.CertificateAuthorityService/IssueCertificate",
            registry_pb::IssueCertificateRequest {
                iin: iin.to_string(),
                full_name: self.full_name(iin),
                holder_kind: if official {
                    registry_pb::HolderKind::Official as i32
                } else {
                    registry_pb::HolderKind::Citizen as i32
                },
                organization: if official {
                    "Министерство обороны РК".to_string()
                } else {
                    String::new()
                },
                validity_days: 30,
            },
        );
        registry_pb::certificate_authority_service_client::CertificateAuthorityServiceClient::new(
            self.portal.channel(),
        )
        .issue_certificate(request)
        .await
        .described()
    }

    /// The portal asks the registry for the subject's consent to intake processing their data for
    /// recruitment; the code reaches the citizen's phone through notify; the citizen types it and
    /// the portal confirms. Returns the consent id and the code.
    async fn consent_by_sms(&self, iin: &str) -> anyhow::Result<(String, String)> {
        // A fresh envelope (message id) per call: the gateway refuses a replayed one.
        let envelope = || EnvelopeBuilder {
            purpose: "PERSONAL_DATA_CONSENT".to_string(),
            subject_iin: iin.to_string(),
            ..EnvelopeBuilder::default()
        };
        let mut consents =
            registry_pb::consent_service_client::ConsentServiceClient::new(self.portal.channel());
        let now_ms = shlyuz_kit::clock::system_clock().now_millis();
        let pending = consents
            .request_consent(self.portal.signed_request(
                &envelope(),
                "/shlyuz.registry.v1.ConsentService/RequestConsent",
                registry_pb::RequestConsentRequest {
                    subject_iin: iin.to_string(),
                    participant: "intake".to_string(),
                    purpose: "MILITARY_RECRUITMENT".to_string(),
                    scopes: vec![
                        "shlyuz.registry.v1.PersonRegistryService".to_string(),
                        "shlyuz.registry.v1.CriminalRecordsService".to_string(),
                        "shlyuz.registry.v1.MedicalRegistryService".to_string(),
                    ],
                    expire_time_ms: now_ms + 30 * 86_400_000,
                },
            ))
            .await
            .described()?
            .consent
            .context("no consent in the response")?;
        let text = self
            .wait_for_sms(&self.phone(iin)?, |text| {
                text.contains(&pending.participant) && text.contains("Код подтверждения")
            })
            .await?;
        let code = six_digit_code(&text)?;
        let active = consents
            .confirm_consent(self.portal.signed_request(
                &envelope(),
                "/shlyuz.registry.v1.ConsentService/ConfirmConsent",
                registry_pb::ConfirmConsentRequest {
                    consent_id: pending.consent_id.clone(),
                    otp: code.clone(),
                },
            ))
            .await
            .described()?
            .consent
            .context("no consent in the response")?;
        ensure!(
            active.state() == registry_pb::ConsentState::Active,
            "the consent is {:?}",
            active.state()
        );
        Ok((pending.consent_id, code))
    }

    fn signed_document(
        certificate: &registry_pb::IssueCertificateResponse,
        document: &[u8],
    ) -> anyhow::Result<intake_pb::SignedDocument> {
        Ok(intake_pb::SignedDocument {
            document: document.to_vec(),
            signature: sign_document(&certificate.private_key_pem, document)?,
            signer_certificate_pem: certificate.certificate_pem.clone(),
        })
    }

    async fn file_application(
        &self,
        vacancy_id: &str,
        candidate: &str,
        certificate: &registry_pb::IssueCertificateResponse,
        consent_id: &str,
    ) -> anyhow::Result<intake_pb::Application> {
        let document = application_document(vacancy_id, candidate, consent_id, &[]);
        let signed = intake_pb::SignedDocument {
            signature: sign_document(&certificate.private_key_pem, &document)?,
            document,
            signer_certificate_pem: certificate.certificate_pem.clone(),
        };
        self.applications(&self.portal)
            .create_application(self.candidate(
                candidate,
                "/shlyuz.intake.v1.ApplicationService/CreateApplication",
                intake_pb::CreateApplicationRequest {
                    vacancy_id: vacancy_id.to_string(),
                    consent_id: consent_id.to_string(),
                    signed_application: Some(signed),
                    otp_reference: String::new(),
                    otp_code: String::new(),
                    phone_number: self.phone(candidate)?,
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
                "/shlyuz.intake.v1.ApplicationService/AssignApplication",
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
                "/shlyuz.intake.v1.ApplicationService/BuildDossier",
                intake_pb::BuildDossierRequest {
                    application_id: application_id.to_string(),
                },
            )?)
            .await
            .described()?
            .application
            .context("no application in the response")
    }

    async fn candidate_view(
        &self,
        candidate: &str,
        application_id: &str,
    ) -> anyhow::Result<intake_pb::Application> {
        self.applications(&self.portal)
            .get_application(self.candidate(
                candidate,
                "/shlyuz.intake.v1.ApplicationService/GetApplication",
                intake_pb::GetApplicationRequest {
                    application_id: application_id.to_string(),
                },
            )?)
            .await
            .described()?
            .application
            .context("no application in the response")
    }

    // ---------------------------------------------------------------------------------------
    // Seed 003: allocation with the 48-hour window

    async fn housing_round(&self, progress: &mut Progress) -> anyhow::Result<()> {
        progress.section("Service housing: automatic allocation with a 48-hour window (seed 003)");
        progress
            .step(
                "three servicemen join the Astana queue; three flats are free",
                async {
                    for (minute, (iin, family_size)) in [(ACCEPTS, 3), (REFUSES, 1), (SILENT, 1)]
                        .into_iter()
                        .enumerate()
                    {
                        self.add_registrant(iin, ASTANA, family_size, minute as i64)
                            .await?;
                    }
                    let mut stock =
                        housing_pb::housing_stock_service_client::HousingStockServiceClient::new(
                            self.ops.channel(),
                        );
                    for (address, rooms, area) in [
                        ("Астана, Тұран даңғылы, 37-12", 3, 52.0),
                        ("Астана, Қабанбай батыр даңғылы, 11-40", 1, 17.5),
                        ("Астана, Сарайшық көшесі, 5-3", 1, 16.0),
                    ] {
                        stock
                            .add_dwelling(Self::signed(
                                &self.ops,
                                "/shlyuz.housing.v1.HousingStockService/AddDwelling",
                                housing_pb::AddDwellingRequest {
                                    address: address.into(),
                                    locality_kato: ASTANA.into(),
                                    rooms,
                                    total_area_m2: area,
                                },
                            ))
                            .await
                            .described()?;
                    }
                    Ok((
                        (),
                        format!(
                            "queue: {}, {}, {}",
                            self.full_name(ACCEPTS),
                            self.full_name(REFUSES),
                            self.full_name(SILENT)
                        ),
                    ))
                },
            )
            .await?;

        progress
            .step(
                "an allocation round offers each of them a flat; the offer SMS go out through notify",
                async {
                    self.run_round().await?;
                    let mut lines = Vec::new();
                    for iin in [ACCEPTS, REFUSES, SILENT] {
                        let offer = self
                            .wait_for_offer(iin, housing_pb::OfferStatus::Open)
                            .await?;
                        let phone = self.phone(iin)?;
                        let text = self.wait_for_sms(&phone, |text| text.contains("6521")).await?;
                        lines.push(format!(
                            "SMS to {phone}: {}…",
                            text.chars().take(70).collect::<String>().replace('\n', " ")
                        ));
                        lines.push(format!("  offer {} answer by {}", offer.id, timestamp_text(offer.deadline)));
                    }
                    Ok(((), lines.join("\n")))
                },
            )
            .await?;

        progress
            .step(
                "one accepts (6521) and one refuses (6522) by SMS reply",
                async {
                    self.citizen_replies(ACCEPTS, "6521").await?;
                    self.citizen_replies(REFUSES, &REFUSAL_CODE.to_string())
                        .await?;
                    let accepted = self
                        .wait_for_offer(ACCEPTS, housing_pb::OfferStatus::Accepted)
                        .await?;
                    let refused = self
                        .wait_for_offer(REFUSES, housing_pb::OfferStatus::Refused)
                        .await?;
                    ensure!(
                        refused.reply_code == REFUSAL_CODE,
                        "refusal recorded with code {}",
                        refused.reply_code
                    );
                    let housed = self.registrant(ACCEPTS).await?;
                    ensure!(
                        housed.status() == housing_pb::RegistrantStatus::Housed,
                        "{} is {:?}",
                        self.full_name(ACCEPTS),
                        housed.status()
                    );
                    Ok((
                        (),
                        format!(
                            "{}: lease concluded for dwelling {} (HOUSED)\n{}: refused with {} — \
                         the area does not meet the norm",
                            self.full_name(ACCEPTS),
                            accepted.dwelling_id,
                            self.full_name(REFUSES),
                            refused.reply_code
                        ),
                    ))
                },
            )
            .await?;

        progress
            .step(
                "nobody answers the third offer: the test clock moves 49 hours forward",
                async {
                    let moved = testing_pb::test_clock_service_client::TestClockServiceClient::new(
                        self.test_clock.clone(),
                    )
                    .advance_test_clock(testing_pb::AdvanceTestClockRequest {
                        // Past the 48-hour window and the reply grace (15 minutes by default).
                        seconds: 49 * 3_600,
                    })
                    .await
                    .described()?;
                    Ok((
                        (),
                        format!("housing's time is now {}", timestamp_text(moved.now)),
                    ))
                },
            )
            .await?;

        progress
            .step("the next round records the silence as a refusal (timed out)", async {
                self.run_round().await?;
                let refusals = self
                    .allocation()
                    .list_refusals(Self::signed(
                        &self.ops,
                        "/shlyuz.housing.v1.HousingAllocationService/ListRefusals",
                        housing_pb::ListRefusalsRequest {
                            reply_code: -1,
                            ..Default::default()
                        },
                    ))
                    .await
                    .described()?
                    .refusals;
                let timed_out = refusals
                    .iter()
                    .find(|refusal| refusal.iin == SILENT && refusal.timed_out)
                    .with_context(|| {
                        format!("no timed-out refusal for {}", self.full_name(SILENT))
                    })?;
                Ok((
                    (),
                    format!(
                        "{}: offer {} EXPIRED, deemed refused (6526); the flat goes to the next \
                         in the queue",
                        self.full_name(SILENT),
                        timed_out.offer_id
                    ),
                ))
            })
            .await
    }

    async fn add_registrant(
        &self,
        iin: &str,
        locality: &str,
        family_size: i32,
        minute: i64,
    ) -> anyhow::Result<housing_pb::Registrant> {
        self.register()
            .add_registrant(Self::signed(
                &self.ops,
                "/shlyuz.housing.v1.HousingRegisterService/AddRegistrant",
                housing_pb::AddRegistrantRequest {
                    iin: iin.to_string(),
                    full_name: self.full_name(iin),
                    phone: self.phone(iin)?,
                    // Reported on 2024-01-10 at 09:00 + `minute`: the queue order.
                    reported_at: Some(prost_types::Timestamp {
                        seconds: 1_704_877_200 + 60 * minute,
                        nanos: 0,
                    }),
                    locality_kato: locality.to_string(),
                    family_size,
                },
            ))
            .await
            .described()?
            .registrant
            .context("no registrant in the response")
    }

    async fn registrant(&self, iin: &str) -> anyhow::Result<housing_pb::Registrant> {
        self.register()
            .get_registrant(Self::signed(
                &self.ops,
                "/shlyuz.housing.v1.HousingRegisterService/GetRegistrant",
                housing_pb::GetRegistrantRequest {
                    iin: iin.to_string(),
                },
            ))
            .await
            .described()?
            .registrant
            .context("no registrant in the response")
    }

    /// Runs a round now. Housing also runs rounds on its own schedule, so the demo checks the
    /// offers afterwards rather than what this round reports.
    async fn run_round(&self) -> anyhow::Result<()> {
        self.allocation()
            .run_allocation_round(Self::signed(
                &self.ops,
                "/shlyuz.housing.v1.HousingAllocationService/RunAllocationRound",
                housing_pb::RunAllocationRoundRequest {},
            ))
            .await
            .described()?;
        Ok(())
    }

    /// Waits until `iin`'s latest offer has `status` (replies reach housing asynchronously).
    async fn wait_for_offer(
        &self,
        iin: &str,
        status: housing_pb::OfferStatus,
    ) -> anyhow::Result<housing_pb::Offer> {
        settle(
            || async {
                let offers = self
                    .allocation()
                    .list_offers(Self::signed(
                        &self.ops,
                        "/shlyuz.housing.v1.HousingAllocationService/ListOffers",
                        housing_pb::ListOffersRequest {
                            status: status as i32,
                            page_size: 1000,
                            ..Default::default()
                        },
                    ))
                    .await
                    .described()?
                    .offers;
                Ok(offers.into_iter().rev().find(|offer| offer.iin == iin))
            },
            || format!("no {status:?} offer for {}", self.full_name(iin)),
        )
        .await
    }

    /// Waits until the SMS log holds `count` SMS to `phone` whose text `matches`; returns them.
    async fn wait_for_sms_count(
        &self,
        phone: &str,
        count: usize,
        matches: impl Fn(&str) -> bool,
    ) -> anyhow::Result<Vec<String>> {
        settle(
            || async {
                let texts: Vec<String> = self
                    .sms_to(phone)
                    .into_iter()
                    .filter(|text| matches(text))
                    .collect();
                Ok((texts.len() >= count).then_some(texts))
            },
            || {
                format!(
                    "fewer than {count} SMS to {phone} in {}",
                    self.sms_log.display()
                )
            },
        )
        .await
    }

    /// The texts of the SMS the log provider sent to `phone` since the demo started, in sending
    /// order.
    fn sms_to(&self, phone: &str) -> Vec<String> {
        std::fs::read_to_string(&self.sms_log)
            .unwrap_or_default()
            .lines()
            .skip(self.sms_before)
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|sms| sms["to"] == phone)
            .filter_map(|sms| sms["text"].as_str().map(str::to_string))
            .collect()
    }

    /// Waits until the SMS log holds an SMS to `phone` whose text `matches`.
    async fn wait_for_sms(
        &self,
        phone: &str,
        matches: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        settle(
            || async { Ok(self.sms_to(phone).into_iter().find(|text| matches(text))) },
            || format!("no such SMS to {phone} in {}", self.sms_log.display()),
        )
        .await
    }

    /// The citizen's SMS reaches notify (operations plays the SMS operator's webhook).
    async fn citizen_replies(&self, iin: &str, text: &str) -> anyhow::Result<()> {
        let response =
            notify_pb::inbound_sms_service_client::InboundSmsServiceClient::new(self.ops.channel())
                .receive_sms(Self::signed(
                    &self.ops,
                    "/shlyuz.notify.v1.InboundSmsService/ReceiveSms",
                    notify_pb::ReceiveSmsRequest {
                        from_phone: self.phone(iin)?,
                        text: text.to_string(),
                        provider_message_id: uuid::Uuid::now_v7().to_string(),
                    },
                ))
                .await
                .described()?;
        ensure!(
            response.outcome() == notify_pb::ReplyOutcome::Routed,
            "notify did not route {text:?} from {}: {:?}",
            self.full_name(iin),
            response.outcome()
        );
        Ok(())
    }

    // ---------------------------------------------------------------------------------------
    // Seed 002: proactive review

    async fn review(&self, progress: &mut Progress) -> anyhow::Result<()> {
        progress.section("Service housing: proactive review of the register (seed 002)");
        progress
            .step(
                "seven more servicemen and a civilian join the register",
                async {
                    let mut minute = 10;
                    for (iin, _) in REVIEWED
                        .iter()
                        .filter(|(iin, _)| ![REFUSES, SILENT].contains(iin))
                    {
                        self.add_registrant(iin, ASTANA, 1, minute).await?;
                        minute += 1;
                    }
                    self.add_registrant(CANDIDATE, KOKSHETAU, 1, minute).await?;
                    let active = self
                        .register()
                        .list_registrants(Self::signed(
                            &self.ops,
                            "/shlyuz.housing.v1.HousingRegisterService/ListRegistrants",
                            housing_pb::ListRegistrantsRequest {
                                status: housing_pb::RegistrantStatus::Active as i32,
                                page_size: 1000,
                                ..Default::default()
                            },
                        ))
                        .await
                        .described()?
                        .registrants;
                    Ok(((), format!("{} persons waiting (ACTIVE)", active.len())))
                },
            )
            .await?;

        let report = progress
            .step(
                "SDU starts the review: housing asks eight registries through the gateway",
                async {
                    let review =
                        housing_pb::housing_review_service_client::HousingReviewServiceClient::new(
                            self.sdu.channel(),
                        )
                        .start_review(Self::signed(
                            &self.sdu,
                            "/shlyuz.housing.v1.HousingReviewService/StartReview",
                            housing_pb::StartReviewRequest {},
                        ))
                        .await
                        .described()?
                        .review
                        .context("no review in the response")?;
                    ensure!(
                        review.persons_not_checked == 0,
                        "{} persons could not be checked",
                        review.persons_not_checked
                    );
                    let found = format!(
                        "checked {}, removed {}",
                        review.persons_checked, review.persons_removed
                    );
                    Ok((review, found))
                },
            )
            .await?;

        progress
            .step(
                "each removal has the seed's reason; the clean ones stay",
                async {
                    let mut lines = Vec::new();
                    for (iin, reason) in REVIEWED {
                        let registrant = self.registrant(iin).await?;
                        ensure!(
                            registrant.status() == housing_pb::RegistrantStatus::Removed
                                && registrant.removal_reason() == reason,
                            "{} is {:?} / {:?}, expected REMOVED / {reason:?}",
                            self.full_name(iin),
                            registrant.status(),
                            registrant.removal_reason()
                        );
                        lines.push(format!("removed {}: {reason:?}", self.full_name(iin)));
                    }
                    for iin in [ACCEPTS, CANDIDATE] {
                        let registrant = self.registrant(iin).await?;
                        ensure!(
                            registrant.status() != housing_pb::RegistrantStatus::Removed,
                            "{} was removed ({:?})",
                            self.full_name(iin),
                            registrant.removal_reason()
                        );
                        lines.push(format!(
                            "kept {}: {:?}",
                            self.full_name(iin),
                            registrant.status()
                        ));
                    }
                    ensure!(
                        report.persons_removed >= REVIEWED.len() as i64,
                        "the report counts {} removals",
                        report.persons_removed
                    );
                    Ok(((), lines.join("\n")))
                },
            )
            .await
    }

    // ---------------------------------------------------------------------------------------
    // Audit: the message log and the subject access log

    async fn audit(&self, progress: &mut Progress) -> anyhow::Result<()> {
        progress.section("Audit");
        progress
            .step("the candidate can see who looked at their data", async {
                let envelope = EnvelopeBuilder {
                    purpose: "SUBJECT_ACCESS_REPORT".to_string(),
                    subject_iin: CANDIDATE.to_string(),
                    ..EnvelopeBuilder::default()
                };
                let accesses = gateway_pb::access_log_service_client::AccessLogServiceClient::new(
                    self.portal.channel(),
                )
                .list_subject_access(self.portal.signed_request(
                    &envelope,
                    "/shlyuz.gateway.v1.AccessLogService/ListSubjectAccess",
                    gateway_pb::ListSubjectAccessRequest {
                        subject_iin: CANDIDATE.to_string(),
                        ..Default::default()
                    },
                ))
                .await
                .described()?
                .accesses;
                ensure!(
                    accesses
                        .iter()
                        .any(|access| access.participant_id == "intake"),
                    "intake's look-ups of {} are not in the access log",
                    self.full_name(CANDIDATE)
                );
                let mut seen: Vec<String> = accesses
                    .iter()
                    .map(|access| {
                        format!(
                            "{} ({}) {}",
                            access.participant_id, access.purpose, access.service
                        )
                    })
                    .collect();
                seen.sort();
                seen.dedup();
                Ok(((), seen.join("\n")))
            })
            .await?;

        progress
            .step("operations verifies the hash-chained message log", async {
                let verification =
                    gateway_pb::message_log_service_client::MessageLogServiceClient::new(
                        self.ops.channel(),
                    )
                    .verify_chain(Self::signed(
                        &self.ops,
                        "/shlyuz.gateway.v1.MessageLogService/VerifyChain",
                        gateway_pb::VerifyChainRequest::default(),
                    ))
                    .await
                    .described()?;
                ensure!(
                    verification.intact,
                    "the message log is broken: {verification:?}"
                );
                let entries: i64 = verification.chains.iter().map(|chain| chain.entries).sum();
                let checkpoints: i64 = verification
                    .chains
                    .iter()
                    .map(|chain| chain.checkpoints)
                    .sum();
                Ok((
                    (),
                    format!(
                        "{entries} entries and {checkpoints} signed checkpoints in {} chain(s): \
                         intact{}",
                        verification.chains.len(),
                        if checkpoints == 0 {
                            " (the gateway signs a checkpoint every minute while entries arrive, \
                             and at shutdown)"
                        } else {
                            ""
                        }
                    ),
                ))
            })
            .await
    }
}

/// Polls `look` every 200 ms until it finds something, for at most [`SETTLE_TIMEOUT`] (replies,
/// SMS and offers settle in the background); `missing` words what never came.
async fn settle<T, Look, Found>(
    mut look: Look,
    missing: impl FnOnce() -> String,
) -> anyhow::Result<T>
where
    Look: FnMut() -> Found,
    Found: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        if let Some(found) = look().await? {
            return Ok(found);
        }
        if Instant::now() > deadline {
            bail!("{} after {} s", missing(), SETTLE_TIMEOUT.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The six-digit code of a one-time-password SMS.
fn six_digit_code(text: &str) -> anyhow::Result<String> {
    text.split(|character: char| !character.is_ascii_digit())
        .find(|part| part.len() == 6)
        .map(str::to_string)
        .with_context(|| format!("no six-digit code in the SMS {text:?}"))
}

fn timestamp_text(timestamp: Option<prost_types::Timestamp>) -> String {
    timestamp
        .and_then(|stamp| time::OffsetDateTime::from_unix_timestamp(stamp.seconds).ok())
        .map(shlyuz_kit::envelope::format_timestamp)
        .unwrap_or_else(|| "—".to_string())
}
