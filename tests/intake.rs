//! The intake target behind a real gateway with mutual TLS and the shipped default directory:
//! the portal and the officials' workstation call intake with asserted roles; intake builds the
//! personal file from the registry and checks EDS against the registry's CA, both through the
//! gateway with its own signed envelope.

mod support;

use support::{PARTICIPANTS, signing_key};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shlyuz_gateway::Gateway;
use shlyuz_kit::application_form::{APPLICATION_OTP_PURPOSE, application_document};
use shlyuz_kit::client::{ClientSettings, connect_lazy};
use shlyuz_kit::db::testing::TestDatabase;
use shlyuz_kit::envelope::EnvelopeBuilder;
use shlyuz_kit::error::summarize_status;
use shlyuz_kit::gateway_client::{GatewayClient, GatewayClientSettings};
use shlyuz_kit::pki::DevPki;
use shlyuz_kit::server::{GrpcServer, ServerSettings, TlsFiles, Transport};
use shlyuz_kit::shutdown::{ShutdownTrigger, shutdown_channel};
use shlyuz_kit::signed_document::sign_document;
use shlyuz_kit::telemetry::MetricsRegistry;
use shlyuz_notify::provider::{LogProvider, LogSink};
use shlyuz_proto::intake::v1 as pb;
use shlyuz_proto::registry::v1 as registry;
use shlyuz_registry::fixtures::rules;
use tonic::Code;
use tonic::transport::Channel;

// Officials are persons of the fixture: the CA issues certificates to known persons only.
const HEAD: &str = rules::SERVICEMAN_CLEAN;
const DDO: &str = rules::SERVICEMAN_EQUITY;
const EXECUTOR: &str = "850505300011";
const AKMOLA: &str = "110000000";
const CONSENT: &str = "0190f5a2-7c1e-7000-8000-0000000000c1";
const PDF: &[u8] = b"%PDF-1.7\n% scanned conclusion\n";
const AGREEMENT: &[u8] = b"%PDF-1.7\n% agreement on concluding a contract\n";

struct Stack {
    _data_dir: tempfile::TempDir,
    pki: DevPki,
    gateway_address: SocketAddr,
    gateway: Gateway,
    trigger: ShutdownTrigger,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    databases: Vec<TestDatabase>,
    intake_database: shlyuz_kit::db::Database,
    /// Where the gateway routes notify: a socket bound (so no other program can take the port) but
    /// not listening until [`Stack::start_notify`], so calls to it are refused as in an outage.
    notify_socket: Option<tokio::net::TcpSocket>,
    metrics: MetricsRegistry,
    signal: shlyuz_kit::shutdown::ShutdownSignal,
}

fn tls_files(pki: &DevPki, participant: &str) -> TlsFiles {
    pki.tls_files(participant).expect("participant files")
}

fn server_settings(name: &str, transport: Transport) -> ServerSettings {
    ServerSettings::loopback(name, transport)
}

impl Stack {
    async fn start() -> Stack {
        shlyuz_kit::install_crypto_provider();
        let data_dir = tempfile::tempdir().expect("temp dir");
        let pki = DevPki::ensure(&data_dir.path().join("pki"), &PARTICIPANTS).expect("pki");
        let metrics = MetricsRegistry::default();
        let (trigger, signal) = shutdown_channel();

        let registry = support::start_registry(&pki, &metrics, 0, signal.clone()).await;
        let registry_address = registry.address;
        let registry_database = registry.database;
        let mut tasks = vec![registry.task];

        // Intake listens first so the gateway can route to it; its channel to the gateway is lazy.
        let intake_server = GrpcServer::bind(
            server_settings("intake", Transport::MutualTls(tls_files(&pki, "intake"))),
            &metrics,
        )
        .await
        .expect("bind intake");
        let intake_address = intake_server.local_addr().expect("intake address");
        let notify_socket = tokio::net::TcpSocket::new_v4().expect("notify socket");
        notify_socket
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("bind notify's address");
        let notify_address = notify_socket.local_addr().expect("notify address");

        let gateway = support::bind_gateway(&pki, &metrics)
            .await
            .start(
                &pki,
                &metrics,
                data_dir.path(),
                &[
                    ("registry", registry_address.to_string()),
                    ("intake", intake_address.to_string()),
                    ("notify", notify_address.to_string()),
                ],
                signal.clone(),
            )
            .await;
        tasks.push(gateway.task);
        let gateway_address = gateway.address;
        let gateway_database = gateway.database;
        let gateway = gateway.gateway;

        let intake_database = TestDatabase::sqlite().await;
        intake_database
            .database()
            .migrate(&shlyuz_intake::MIGRATIONS)
            .await
            .expect("intake migrations");
        let to_gateway = connect_lazy(&ClientSettings {
            address: gateway_address.to_string(),
            tls: Some(tls_files(&pki, "intake")),
            server_name: "gateway".to_string(),
            connect_timeout: Duration::from_secs(5),
        })
        .expect("intake channel");
        let config = shlyuz_intake::config::IntakeConfig {
            executors: vec![EXECUTOR.to_string(), "860606300022".to_string()],
            ..Default::default()
        };
        let routes = shlyuz_intake::routes(
            intake_database.database().clone(),
            &config,
            Some(to_gateway),
            Arc::new(signing_key(&pki, "intake")),
        );
        tasks.push(tokio::spawn(intake_server.serve(routes, signal.clone())));

        Stack {
            _data_dir: data_dir,
            pki,
            gateway_address,
            gateway,
            trigger,
            tasks,
            intake_database: intake_database.database().clone(),
            databases: vec![registry_database, gateway_database, intake_database],
            notify_socket: Some(notify_socket),
            metrics,
            signal,
        }
    }

    /// Starts notify on its bound address, sending SMS with the log provider into `sms_log`
    /// and asking the registry (through the gateway, as notify) for phones.
    async fn start_notify(&mut self, sms_log: &std::path::Path) {
        let notify_database = TestDatabase::sqlite().await;
        let database = notify_database.database().clone();
        database
            .migrate(&shlyuz_notify::MIGRATIONS)
            .await
            .expect("notify migrations");
        let listener = self
            .notify_socket
            .take()
            .expect("notify is started once")
            .listen(1024)
            .expect("notify listens on its address");
        let server = GrpcServer::with_listener(
            server_settings(
                "notify",
                Transport::MutualTls(tls_files(&self.pki, "notify")),
            ),
            listener,
            &self.metrics,
        )
        .expect("bind notify");
        let gateway = GatewayClient::connect_lazy(
            &GatewayClientSettings {
                address: self.gateway_address.to_string(),
                server_name: "gateway".to_string(),
                tls: Some(tls_files(&self.pki, "notify")),
                connect_timeout: Duration::from_secs(5),
            },
            shlyuz_notify::PARTICIPANT_ID,
            Arc::new(signing_key(&self.pki, "notify")),
        )
        .expect("notify gateway client");
        let runtime = shlyuz_notify::start_with_provider(
            support::notify_parts(
                database,
                gateway,
                self._data_dir.path(),
                self.signal.clone(),
            ),
            Arc::new(LogProvider::new(
                LogSink::File(sms_log.to_path_buf()),
                false,
            )),
        )
        .await
        .expect("start notify");
        self.tasks.push(tokio::spawn(
            server.serve(runtime.routes, self.signal.clone()),
        ));
        self.databases.push(notify_database);
    }

    /// A gateway client signing as intake, as the intake target's delivery loop uses.
    fn intake_gateway_client(&self) -> GatewayClient {
        GatewayClient::connect_lazy(
            &GatewayClientSettings {
                address: self.gateway_address.to_string(),
                server_name: "gateway".to_string(),
                tls: Some(tls_files(&self.pki, "intake")),
                connect_timeout: Duration::from_secs(5),
            },
            shlyuz_intake::PARTICIPANT_ID,
            Arc::new(signing_key(&self.pki, "intake")),
        )
        .expect("intake gateway client")
    }

    async fn channel(&self, participant: &str) -> Channel {
        support::gateway_channel(&self.pki, self.gateway_address, participant).await
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
        envelope.signed_request(&signing_key(&self.pki, participant), path, message)
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
            &signing_key(&self.pki, "jauynger-portal"),
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
                &signing_key(&self.pki, "jauynger-portal"),
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

    async fn stop(mut self) {
        self.trigger.trigger();
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
        self.gateway.shutdown().await;
        for database in self.databases.drain(..) {
            database.cleanup().await;
        }
    }
}

fn code_and_reason(status: &tonic::Status) -> (Code, String) {
    let summary = summarize_status(status);
    (summary.code, summary.reason)
}

const APP: &str = "/shlyuz.intake.v1.ApplicationService/";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_candidate_reaches_the_order_to_report() {
    let stack = Stack::start().await;
    let vacancy_id = stack.vacancy().await;
    let candidate = rules::CLEAN_CANDIDATE;
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

    // Eight SMS in the outbox, in Kazakh as the candidate asked, all for their phone.
    let store = shlyuz_intake::store::Store::new(
        stack.intake_database.clone(),
        shlyuz_kit::clock::system_clock(),
        shlyuz_kit::calendar::WorkingCalendar::kazakhstan(),
    );
    let outbox = store.outbox_of(&id).await.expect("outbox");
    assert_eq!(outbox.len(), 8);
    assert!(
        outbox
            .iter()
            .all(|row| row.language == "kk" && row.phone_number == "+77011234567")
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_findings_reject_without_telling_the_candidate_why() {
    let stack = Stack::start().await;
    let vacancy_id = stack.vacancy().await;
    for (candidate, fragment) in [
        (rules::NARCOLOGICAL_CANDIDATE, "наркологическом"),
        (rules::CONVICTED_CANDIDATE, "188 ч.2"),
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
                rules::CLEAN_CANDIDATE,
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
    let stack = Stack::start().await;
    let vacancy_id = stack.vacancy().await;
    let candidate = rules::CLEAN_CANDIDATE;

    let someone_else = stack.certificate(rules::CONVICTED_CANDIDATE, false).await;
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

    // A certificate of the same CA whose validity ended a month ago.
    let registry_database = stack.databases[0].database().clone();
    let ca = shlyuz_registry::certificate_authority::CertificateAuthorityServiceImpl::new(
        registry_database.clone(),
        Arc::new(shlyuz_registry::embedded::EmbeddedRegistry::new(
            registry_database,
        )),
        shlyuz_kit::clock::system_clock(),
    )
    .national_ca()
    .await
    .expect("the registry's CA");
    let now = time::OffsetDateTime::now_utc();
    let lapsed = ca
        .issue(
            &shlyuz_kit::iin::Iin::parse(candidate).expect("iin"),
            "Қасымов Ерлан Серікұлы",
            None,
            now - time::Duration::days(60),
            now - time::Duration::days(30),
        )
        .expect("issue");
    let status = stack
        .apply(
            &vacancy_id,
            candidate,
            &registry::IssueCertificateResponse {
                serial_number: lapsed.serial_hex,
                certificate_pem: lapsed.certificate_pem,
                private_key_pem: lapsed.private_key_pem,
            },
        )
        .await
        .expect_err("expired");
    assert_eq!(
        code_and_reason(&status),
        (Code::InvalidArgument, "CERTIFICATE_EXPIRED".to_string())
    );

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

/// The eligibility rules against the registry's fixture people, with the personal file collected
/// through the gateway by the production look-ups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eligibility_rules_against_the_fixture_people() {
    use shlyuz_intake::dossier::{Dossier, LookupContext, RegistryLookups, ineligibility};
    let stack = Stack::start().await;
    let lookups = shlyuz_intake::gateway::GatewayRegistryLookups::new(
        stack.channel("intake").await,
        Arc::new(signing_key(&stack.pki, "intake")),
    );
    // 25 November 2026, noon in Astana.
    let today = shlyuz_intake::workflow::local_date(1_795_590_000_000);
    for (iin, expected) in [
        (rules::CLEAN_CANDIDATE, None),
        (rules::SERVICEMAN_CLEAN, None),
        (rules::NARCOLOGICAL_CANDIDATE, Some("наркологическом")),
        (rules::CONVICTED_CANDIDATE, Some("судимость")),
        (rules::SERVICEMAN_CHILD_IMPRISONED_CHILD, Some("судимость")),
        (rules::SERVICEMAN_CLEAN_CHILD, Some("менее 18")),
        (rules::SERVICEMAN_FOREIGN_CITIZEN, Some("не гражданин")),
        (rules::SERVICEMAN_INCAPABLE, Some("дееспособность")),
        (rules::DEAD_PERSON, Some("живым")),
        ("850101399906", Some("не найдено")),
    ] {
        let context = LookupContext {
            candidate_iin: iin.to_string(),
            consent_id: CONSENT.to_string(),
            user_id: EXECUTOR.to_string(),
        };
        let dossier = Dossier::from_answers(lookups.collect(&context).await);
        assert!(
            dossier.is_complete(),
            "{iin}: {:?}",
            dossier.missing_sources
        );
        let verdict = ineligibility(&dossier, today);
        match expected {
            None => assert_eq!(verdict, None, "{iin}"),
            Some(fragment) => assert!(
                verdict
                    .as_deref()
                    .is_some_and(|reason| reason.contains(fragment)),
                "{iin}: {verdict:?}"
            ),
        }
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn special_check_and_medical_refusals_through_the_gateway() {
    let stack = Stack::start().await;
    let vacancy_id = stack.vacancy().await;
    let candidate = rules::CLEAN_CANDIDATE;
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

/// The SMS lines the log provider wrote so far.
fn sms_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).expect("sms log line"))
        .collect()
}

/// Polls the SMS log until it holds `count` lines (notify's worker sends every 20 ms).
async fn wait_for_sms(path: &std::path::Path, count: usize) -> Vec<serde_json::Value> {
    for _ in 0..500 {
        let lines = sms_lines(path);
        if lines.len() >= count {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("expected {count} SMS in {}", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_sms_reach_the_candidate_through_notify_once() {
    use shlyuz_intake::outbox::{
        DeliveryReport, NotificationSender, NotifySender, deliver_pending,
    };

    let mut stack = Stack::start().await;
    let vacancy_id = stack.vacancy().await;
    let candidate = rules::CLEAN_CANDIDATE;
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

    // The delivery loop's store, on a clock the test moves past the retry delay.
    let clock = shlyuz_kit::clock::ManualClock::new(time::OffsetDateTime::now_utc());
    clock.advance(time::Duration::minutes(1));
    let store = shlyuz_intake::store::Store::new(
        stack.intake_database.clone(),
        clock.shared(),
        shlyuz_kit::calendar::WorkingCalendar::kazakhstan(),
    );
    let sender = NotifySender::new(stack.intake_gateway_client());
    let templates: Vec<String> = store
        .outbox_of(&id)
        .await
        .expect("outbox")
        .into_iter()
        .map(|row| row.template_id)
        .collect();
    assert_eq!(
        templates,
        [
            "intake.status.submitted",
            "intake.status.accepted",
            "intake.status.special_check",
            "intake.status.medical"
        ]
    );

    // Notify is down: every row fails and stays in the outbox, due again after the back-off.
    let report = deliver_pending(&store, &sender, 50).await.expect("deliver");
    assert_eq!(report, DeliveryReport { sent: 0, failed: 4 });
    let rows = store.outbox_of(&id).await.expect("outbox");
    assert!(rows.iter().all(|row| row.attempts == 1), "{rows:?}");
    let sms_log = stack._data_dir.path().join("sms.log");
    stack.start_notify(&sms_log).await;
    let report = deliver_pending(&store, &sender, 50).await.expect("deliver");
    assert_eq!(
        report,
        DeliveryReport::default(),
        "not due before the back-off"
    );

    // Notify is back: the rows go once the gateway's breaker for notify lets calls through
    // again (it opened during the outage); each round runs after the rows' back-off.
    let mut sent = 0;
    for _ in 0..200 {
        clock.advance(time::Duration::hours(1));
        sent += deliver_pending(&store, &sender, 50)
            .await
            .expect("deliver")
            .sent;
        if sent == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(sent, 4, "every row sent after notify returned");
    let report = deliver_pending(&store, &sender, 50).await.expect("deliver");
    assert_eq!(
        report,
        DeliveryReport::default(),
        "sent rows are not sent again"
    );

    let lines = wait_for_sms(&sms_log, 4).await;
    // To the phone the mobile citizens database holds for the candidate, not the one typed in
    // the application; in Kazakh as the candidate asked, with the seed's status texts.
    assert!(
        lines.iter().all(|line| line["to"] == "+77015550010"),
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

    // A crash between sending and marking resends a row: notify knows its key and queues
    // nothing new.
    let medical_row = store
        .outbox_of(&id)
        .await
        .expect("outbox")
        .pop()
        .expect("medical row");
    sender.send(&medical_row).await.expect("resend accepted");
    let mut notify =
        shlyuz_proto::notify::v1::notification_service_client::NotificationServiceClient::new(
            stack.channel("intake").await,
        );
    let envelope = EnvelopeBuilder {
        purpose: "CITIZEN_NOTIFICATION".to_string(),
        subject_iin: candidate.to_string(),
        ..EnvelopeBuilder::default()
    };
    let again = notify
        .send_notification(envelope.signed_request(
            &signing_key(&stack.pki, "intake"),
            shlyuz_intake::outbox::SEND_NOTIFICATION_PATH,
            shlyuz_intake::outbox::send_request(&medical_row).expect("request"),
        ))
        .await
        .expect("resend")
        .into_inner();
    assert!(again.duplicate);
    assert_eq!(
        again.notification.expect("notification").recipient_iin,
        candidate
    );
    assert_eq!(sms_lines(&sms_log).len(), 4, "one SMS per row");

    // The loop the intake target runs: the next status change goes by itself, and the loop
    // ends on shutdown.
    let delivery = shlyuz_intake::spawn_sms_delivery(
        stack.intake_database.clone(),
        stack.intake_gateway_client(),
        Duration::from_millis(50),
        stack.signal.clone(),
    );
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
    let lines = wait_for_sms(&sms_log, 5).await;
    assert_eq!(
        lines[4]["text"],
        "Jauynger: өтінішіңіздің мәртебесі \"Отказано в дальнейшем рассмотрении\" болып өзгертілді."
    );
    assert_eq!(lines[4]["to"], "+77015550010");
    stack.trigger.trigger();
    delivery.await.expect("delivery loop ends on shutdown");

    stack.stop().await;
}

/// The portal has notify send the candidate a one-time password for the application; returns
/// the OTP id.
async fn issue_application_otp(stack: &Stack, iin: &str) -> String {
    let mut otp = shlyuz_proto::notify::v1::otp_service_client::OtpServiceClient::new(
        stack.channel("jauynger-portal").await,
    );
    let envelope = EnvelopeBuilder {
        purpose: "DIGITAL_SIGNATURE".to_string(),
        subject_iin: iin.to_string(),
        ..EnvelopeBuilder::default()
    };
    otp.issue_otp(envelope.signed_request(
        &signing_key(&stack.pki, "jauynger-portal"),
        "/shlyuz.notify.v1.OtpService/IssueOtp",
        shlyuz_proto::notify::v1::IssueOtpRequest {
            phone: String::new(),
            iin: iin.to_string(),
            purpose: APPLICATION_OTP_PURPOSE.to_string(),
            language: shlyuz_proto::notify::v1::Language::Kk as i32,
            ..Default::default()
        },
    ))
    .await
    .expect("the portal issues an OTP through the gateway")
    .into_inner()
    .otp_id
}

/// The six digits of the last SMS to `phone`.
fn last_code_to(path: &std::path::Path, phone: &str) -> String {
    sms_lines(path)
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
    let mut stack = Stack::start().await;
    let sms_log = stack._data_dir.path().join("otp-sms.jsonl");
    stack.start_notify(&sms_log).await;
    let vacancy_id = stack.vacancy().await;
    let candidate = rules::CLEAN_CANDIDATE;
    let candidate_phone = "+77015550010";
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
    let someone_elses = issue_application_otp(&stack, rules::NARCOLOGICAL_CANDIDATE).await;
    wait_for_sms(&sms_log, 1).await;
    let code = last_code_to(&sms_log, "+77015550021");
    let refused = file(someone_elses, code)
        .await
        .expect_err("another person's code");
    assert_eq!(
        code_and_reason(&refused),
        (Code::FailedPrecondition, "OTP_SUBJECT_MISMATCH".to_string())
    );

    // The candidate's own code, mistyped, then right; then it is used up.
    let otp_id = issue_application_otp(&stack, candidate).await;
    wait_for_sms(&sms_log, 2).await;
    let code = last_code_to(&sms_log, candidate_phone);
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
