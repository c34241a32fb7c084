//! The housing target behind a real gateway, with the registry and notify targets and the
//! registry's fixture people: the seed-002 review runs its batch look-ups through the gateway
//! (mutual TLS, signed envelopes, purpose HOUSING_REGISTER_REVIEW), operations use the housing
//! services through the gateway, offer SMS and removal notices leave housing's outbox through
//! notify, and the citizens' 6521–6527 replies come back through notify and the async channel.

mod support;

use support::{PARTICIPANTS, signing_key};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shlyuz_gateway::Gateway;
use shlyuz_housing::Housing;
use shlyuz_housing::gateway_checks::GatewayRegistryChecks;
use shlyuz_housing::norm::AreaNorm;
use shlyuz_housing::review::ReviewSettings;
use shlyuz_kit::clock::AdjustableClock;
use shlyuz_kit::db::testing::TestDatabase;
use shlyuz_kit::envelope::EnvelopeBuilder;
use shlyuz_kit::error::summarize_status;
use shlyuz_kit::gateway_client::{GatewayClient, GatewayClientSettings};
use shlyuz_kit::pki::DevPki;
use shlyuz_kit::server::{GrpcServer, ServerSettings, TlsFiles, Transport};
use shlyuz_kit::shutdown::{ShutdownTrigger, shutdown_channel};
use shlyuz_kit::telemetry::MetricsRegistry;
use shlyuz_notify::provider::{LogProvider, LogSink};
use shlyuz_proto::housing::v1 as pb;
use shlyuz_proto::notify::v1 as notify_pb;
use shlyuz_registry::fixtures::rules;
use tonic::transport::Channel;

/// KATO of Astana, the fixture servicemen's garrison.
const ASTANA: &str = "711110000";

struct Stack {
    _data_dir: tempfile::TempDir,
    pki: DevPki,
    gateway_address: SocketAddr,
    gateway: Gateway,
    trigger: ShutdownTrigger,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    databases: Vec<TestDatabase>,
    housing: Arc<Housing>,
    /// Housing's clock: the wall clock until a test moves it forward.
    clock: AdjustableClock,
    /// The SMS notify handed to its (in-memory log) provider.
    sms: Arc<LogProvider>,
}

fn tls_files(pki: &DevPki, participant: &str) -> TlsFiles {
    pki.tls_files(participant).expect("participant files")
}

fn server_settings(name: &str, pki: &DevPki) -> ServerSettings {
    ServerSettings::loopback(name, Transport::MutualTls(tls_files(pki, name)))
}

fn gateway_client(pki: &DevPki, gateway: SocketAddr, participant: &str) -> GatewayClient {
    GatewayClient::connect_lazy(
        &GatewayClientSettings {
            address: gateway.to_string(),
            server_name: "gateway".to_string(),
            tls: Some(tls_files(pki, participant)),
            connect_timeout: Duration::from_secs(5),
        },
        participant,
        Arc::new(signing_key(pki, participant)),
    )
    .expect("gateway client")
}

async fn gateway_channel(pki: &DevPki, gateway: SocketAddr, participant: &str) -> Channel {
    support::gateway_channel(pki, gateway, participant).await
}

impl Stack {
    async fn start() -> Stack {
        shlyuz_kit::install_crypto_provider();
        let data_dir = tempfile::tempdir().expect("temp dir");
        let pki = DevPki::ensure(&data_dir.path().join("pki"), &PARTICIPANTS).expect("pki");
        let metrics = MetricsRegistry::default();
        let (trigger, signal) = shutdown_channel();

        let registry = support::start_registry(&pki, &metrics, 200, signal.clone()).await;
        let registry_address = registry.address;
        let registry_database = registry.database;
        let mut tasks = vec![registry.task];

        // The housing target: its own database; its review checks go through the gateway.
        let housing_database = TestDatabase::sqlite().await;
        housing_database
            .database()
            .migrate(&shlyuz_housing::MIGRATIONS)
            .await
            .expect("housing migrations");
        let clock = AdjustableClock::new();
        let housing = Housing::new(
            housing_database.database().clone(),
            clock.shared(),
            AreaNorm::default(),
        )
        .shared();
        let housing_server = GrpcServer::bind(server_settings("housing", &pki), &metrics)
            .await
            .expect("bind housing");
        let housing_address = housing_server.local_addr().expect("housing address");

        let notify_database = TestDatabase::sqlite().await;
        notify_database
            .database()
            .migrate(&shlyuz_notify::MIGRATIONS)
            .await
            .expect("notify migrations");
        let notify_server = GrpcServer::bind(server_settings("notify", &pki), &metrics)
            .await
            .expect("bind notify");
        let notify_address = notify_server.local_addr().expect("notify address");
        let gateway = support::bind_gateway(&pki, &metrics)
            .await
            .start(
                &pki,
                &metrics,
                data_dir.path(),
                &[
                    ("registry", registry_address.to_string()),
                    ("housing", housing_address.to_string()),
                    ("notify", notify_address.to_string()),
                ],
                signal.clone(),
            )
            .await;
        tasks.push(gateway.task);
        let gateway_address = gateway.address;
        let gateway_database = gateway.database;
        let gateway = gateway.gateway;

        // Notify looks phones up and routes replies through the gateway, as `notify`.
        let sms = Arc::new(LogProvider::new(LogSink::Memory, true));
        let notify = shlyuz_notify::start_with_provider(
            support::notify_parts(
                notify_database.database().clone(),
                gateway_client(&pki, gateway_address, "notify"),
                data_dir.path(),
                signal.clone(),
            ),
            sms.clone(),
        )
        .await
        .expect("start notify");
        tasks.push(tokio::spawn(
            notify_server.serve(notify.routes, signal.clone()),
        ));

        let checks = GatewayRegistryChecks::new(
            gateway_channel(&pki, gateway_address, "housing").await,
            Arc::new(signing_key(&pki, "housing")),
        );
        tasks.push(tokio::spawn(housing_server.serve(
            shlyuz_housing::grpc::routes(
                housing.clone(),
                Some(Arc::new(checks)),
                ReviewSettings {
                    persons_per_chunk: 4,
                    concurrency: 2,
                },
            ),
            signal,
        )));
        Stack {
            _data_dir: data_dir,
            pki,
            gateway_address,
            gateway,
            trigger,
            tasks,
            databases: vec![
                registry_database,
                housing_database,
                notify_database,
                gateway_database,
            ],
            housing,
            clock,
            sms,
        }
    }

    /// `message` signed by `participant` for `path` (housing services name no subject).
    fn signed<M: prost::Message>(
        &self,
        participant: &str,
        path: &str,
        message: M,
    ) -> tonic::Request<M> {
        EnvelopeBuilder::default().signed_request(
            &signing_key(&self.pki, participant),
            path,
            message,
        )
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

const ADD_REGISTRANT: &str = "/shlyuz.housing.v1.HousingRegisterService/AddRegistrant";
const START_REVIEW: &str = "/shlyuz.housing.v1.HousingReviewService/StartReview";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_through_the_gateway_removes_the_fixture_people_for_their_reasons() {
    let stack = Stack::start().await;
    let mut register = pb::housing_register_service_client::HousingRegisterServiceClient::new(
        gateway_channel(&stack.pki, stack.gateway_address, "ops").await,
    );
    let servicemen = [
        rules::SERVICEMAN_CLEAN,
        rules::SERVICEMAN_PRIVATISED,
        rules::SERVICEMAN_EQUITY,
        rules::SERVICEMAN_EARLIER_HOUSING,
        rules::SERVICEMAN_SPOUSE_STATE_HOUSING,
        rules::SERVICEMAN_SPOUSE_MISSING,
        rules::SERVICEMAN_FOREIGN_CITIZEN,
        rules::SERVICEMAN_RESIDENT_ABROAD,
        rules::SERVICEMAN_INCAPABLE,
        rules::SERVICEMAN_CHILD_IMPRISONED,
    ];
    for (minute, iin) in servicemen.iter().enumerate() {
        let request = pb::AddRegistrantRequest {
            iin: iin.to_string(),
            full_name: format!("Әскери қызметші {minute}"),
            phone: format!("+7701000{minute:04}"),
            reported_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000 + 60 * minute as i64,
                nanos: 0,
            }),
            locality_kato: ASTANA.to_string(),
            family_size: 1,
        };
        register
            .add_registrant(stack.signed("ops", ADD_REGISTRANT, request))
            .await
            .expect("ops adds to the register through the gateway");
    }

    // SDU starts the review; the checks go from housing to the registry through the gateway.
    let mut review = pb::housing_review_service_client::HousingReviewServiceClient::new(
        gateway_channel(&stack.pki, stack.gateway_address, "sdu").await,
    );
    let report = review
        .start_review(stack.signed("sdu", START_REVIEW, pb::StartReviewRequest {}))
        .await
        .expect("review")
        .into_inner()
        .review
        .expect("report");
    assert_eq!(report.persons_not_checked, 0, "{report:?}");
    assert_eq!(report.persons_checked, 10);
    assert_eq!(report.persons_removed, 9);

    use pb::RemovalReason as R;
    let expected = [
        (rules::SERVICEMAN_PRIVATISED, R::PrivatisationContract),
        (rules::SERVICEMAN_EQUITY, R::EquityContract),
        (rules::SERVICEMAN_EARLIER_HOUSING, R::EarlierServiceHousing),
        (
            rules::SERVICEMAN_SPOUSE_STATE_HOUSING,
            R::PermanentUseInLocality,
        ),
        (rules::SERVICEMAN_SPOUSE_MISSING, R::MissingOrDead),
        (rules::SERVICEMAN_FOREIGN_CITIZEN, R::NotACitizen),
        (rules::SERVICEMAN_RESIDENT_ABROAD, R::ResidenceAbroad),
        (rules::SERVICEMAN_INCAPABLE, R::Incapable),
        (rules::SERVICEMAN_CHILD_IMPRISONED, R::Imprisoned),
    ];
    for (iin, reason) in expected {
        let registrant = stack.housing.get_registrant(iin).await.expect("registrant");
        assert_eq!(registrant.status(), pb::RegistrantStatus::Removed, "{iin}");
        assert_eq!(registrant.removal_reason(), reason, "{iin}");
    }
    // The clean serviceman stays, with the family the civil registry knows: spouse and child.
    let clean = stack
        .housing
        .get_registrant(rules::SERVICEMAN_CLEAN)
        .await
        .expect("clean");
    assert_eq!(clean.status(), pb::RegistrantStatus::Active);
    assert_eq!(clean.family_size, 3);
    assert_eq!(clean.queue_position, 1);

    // The nine removal notices leave the outbox for the personal cabinets through notify; the
    // portal shows the seed-002 Kazakh text.
    assert_eq!(stack.relay().await, 9);
    let mut inbox = notify_pb::notification_service_client::NotificationServiceClient::new(
        gateway_channel(&stack.pki, stack.gateway_address, "jauynger-portal").await,
    );
    let envelope = EnvelopeBuilder {
        purpose: "CITIZEN_NOTIFICATION".to_string(),
        subject_iin: rules::SERVICEMAN_EQUITY.to_string(),
        ..EnvelopeBuilder::default()
    };
    let mut items = Vec::new();
    for _ in 0..250 {
        items = inbox
            .list_inbox(envelope.signed_request(
                &signing_key(&stack.pki, "jauynger-portal"),
                "/shlyuz.notify.v1.NotificationService/ListInbox",
                notify_pb::ListInboxRequest {
                    iin: rules::SERVICEMAN_EQUITY.to_string(),
                    ..notify_pb::ListInboxRequest::default()
                },
            ))
            .await
            .expect("list the cabinet inbox")
            .into_inner()
            .items;
        if !items.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(items.len(), 1, "one removal notice in the cabinet");
    assert_eq!(
        items[0].text,
        shlyuz_housing::texts::removal_notice(shlyuz_housing::model::RemovalReason::EquityContract)
    );

    stack.stop().await;
}

const SEND_MESSAGE: &str = "/shlyuz.gateway.v1.AsyncChannelService/SendMessage";

/// notify puts `payload` of `payload_type` into housing's inbox through the async channel.
async fn notify_sends(stack: &Stack, payload_type: &str, payload: Vec<u8>) {
    let mut async_channel =
        shlyuz_proto::gateway::v1::async_channel_service_client::AsyncChannelServiceClient::new(
            gateway_channel(&stack.pki, stack.gateway_address, "notify").await,
        );
    let request = shlyuz_proto::gateway::v1::SendMessageRequest {
        target: Some(
            shlyuz_proto::gateway::v1::send_message_request::Target::Recipient(
                "housing".to_string(),
            ),
        ),
        payload,
        payload_type: payload_type.to_string(),
        expires_at_ms: 0,
        reply_to: String::new(),
    };
    async_channel
        .send_message(stack.signed("notify", SEND_MESSAGE, request))
        .await
        .expect("notify sends to housing's inbox");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sms_replies_from_notify_arrive_through_the_async_channel() {
    let stack = Stack::start().await;
    stack
        .housing
        .add_registrant(shlyuz_housing::register::NewRegistrant {
            iin: rules::SERVICEMAN_CLEAN.to_string(),
            full_name: "Тоқаев Ғалым Бауыржанұлы".to_string(),
            phone: "+77015550101".to_string(),
            reported_at_ms: 1_700_000_000_000,
            locality_kato: ASTANA.to_string(),
            family_size: 3,
        })
        .await
        .expect("register");
    let flat = stack
        .housing
        .add_dwelling(shlyuz_housing::register::NewDwelling {
            address: "Астана, Тұран даңғылы, 37-12".to_string(),
            locality_kato: ASTANA.to_string(),
            rooms: 2,
            total_area_m2: 52.0,
        })
        .await
        .expect("dwelling");
    let offer = stack
        .housing
        .run_allocation_round()
        .await
        .expect("round")
        .offers_made
        .remove(0);

    let reply = notify_pb::SmsReply {
        reply_id: "0190a4c2-7e1f-7000-8000-0000000000aa".to_string(),
        conversation_id: "0190a4c2-7e1f-7000-8000-0000000000bb".to_string(),
        correlation_id: offer.id.clone(),
        notification_id: "0190a4c2-7e1f-7000-8000-0000000000cc".to_string(),
        from_phone: "+77015550113".to_string(),
        recipient_iin: rules::SERVICEMAN_CLEAN.to_string(),
        code: "6521".to_string(),
        text: "6521".to_string(),
        received_at_ms: 0,
    };
    use prost::Message as _;
    notify_sends(
        &stack,
        shlyuz_housing::inbox::REPLY_PAYLOAD_TYPE,
        reply.encode_to_vec(),
    )
    .await;
    // The same reply delivered twice (notify retried) and an item housing cannot read.
    notify_sends(
        &stack,
        shlyuz_housing::inbox::REPLY_PAYLOAD_TYPE,
        reply.encode_to_vec(),
    )
    .await;
    notify_sends(&stack, "shlyuz.notify.v1.Unknown", vec![1, 2, 3]).await;

    let consumer = shlyuz_housing::inbox::InboxConsumer::new(
        stack.housing.clone(),
        gateway_channel(&stack.pki, stack.gateway_address, "housing").await,
        Arc::new(signing_key(&stack.pki, "housing")),
    );
    let pass = consumer.pull_once().await.expect("pull");
    assert_eq!(pass.recorded, 2);
    assert_eq!(pass.unreadable, 1);
    assert_eq!(pass.deferred, 0);
    // Everything settled was acknowledged: the next pass finds nothing.
    assert_eq!(
        consumer.pull_once().await.expect("pull again"),
        shlyuz_housing::inbox::InboxPass::default()
    );

    assert_eq!(
        stack
            .housing
            .get_dwelling(&flat.id)
            .await
            .expect("dwelling")
            .status(),
        pb::DwellingStatus::Leased
    );
    let registrant = stack
        .housing
        .get_registrant(rules::SERVICEMAN_CLEAN)
        .await
        .expect("registrant");
    assert_eq!(registrant.status(), pb::RegistrantStatus::Housed);
    let kept: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM inbox_unreadable")
        .fetch_one(stack.housing.database().pool())
        .await
        .expect("unreadable");
    assert_eq!(kept, 1);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_allowed_participants_reach_the_housing_services() {
    let stack = Stack::start().await;
    let mut review = pb::housing_review_service_client::HousingReviewServiceClient::new(
        gateway_channel(&stack.pki, stack.gateway_address, "jauynger-portal").await,
    );
    let refused = review
        .start_review(stack.signed("jauynger-portal", START_REVIEW, pb::StartReviewRequest {}))
        .await
        .unwrap_err();
    let summary = summarize_status(&refused);
    assert_eq!(summary.code, tonic::Code::PermissionDenied);
    assert_eq!(summary.reason, "ACCESS_DENIED");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_through_the_gateway_name_the_field_or_the_reason() {
    let stack = Stack::start().await;
    let channel = gateway_channel(&stack.pki, stack.gateway_address, "ops").await;
    let mut register =
        pb::housing_register_service_client::HousingRegisterServiceClient::new(channel.clone());
    let bad = pb::AddRegistrantRequest {
        iin: "12345".to_string(),
        full_name: "Аманов Нұрсұлтан".to_string(),
        phone: "+77015550199".to_string(),
        reported_at: None,
        locality_kato: ASTANA.to_string(),
        family_size: 2,
    };
    let refused = register
        .add_registrant(stack.signed("ops", ADD_REGISTRANT, bad))
        .await
        .unwrap_err();
    let summary = summarize_status(&refused);
    assert_eq!(summary.code, tonic::Code::InvalidArgument);
    assert_eq!(summary.fields, ["reported_at"]);

    let mut allocation =
        pb::housing_allocation_service_client::HousingAllocationServiceClient::new(channel);
    let unknown = allocation
        .record_reply(stack.signed(
            "ops",
            "/shlyuz.housing.v1.HousingAllocationService/RecordReply",
            pb::RecordReplyRequest {
                offer_id: "0190a4c2-7e1f-7000-8000-000000000001".to_string(),
                reply_code: 6521,
                phone: "+77015550199".to_string(),
                received_at: None,
            },
        ))
        .await
        .unwrap_err();
    let summary = summarize_status(&unknown);
    assert_eq!(summary.code, tonic::Code::NotFound);
    assert_eq!(summary.reason, "OFFER_NOT_FOUND");
    let bad_code = allocation
        .record_reply(stack.signed(
            "ops",
            "/shlyuz.housing.v1.HousingAllocationService/RecordReply",
            pb::RecordReplyRequest {
                offer_id: "0190a4c2-7e1f-7000-8000-000000000001".to_string(),
                reply_code: 1234,
                phone: "+77015550199".to_string(),
                received_at: None,
            },
        ))
        .await
        .unwrap_err();
    let summary = summarize_status(&bad_code);
    assert_eq!(summary.code, tonic::Code::InvalidArgument);
    assert_eq!(summary.fields, ["reply_code"]);
    stack.stop().await;
}

const RECEIVE_SMS: &str = "/shlyuz.notify.v1.InboundSmsService/ReceiveSms";

impl Stack {
    /// Relays housing's outbox to notify through the gateway, as the housing target does.
    async fn relay(&self) -> usize {
        let sink = shlyuz_housing::notify_sink::NotifySink::new(gateway_client(
            &self.pki,
            self.gateway_address,
            "housing",
        ));
        self.housing
            .relay_outbox(&sink, 100)
            .await
            .expect("relay the outbox to notify")
    }

    /// The SMS notify sent to `phone`, waiting for its delivery worker (it polls every 20 ms).
    async fn sms_to(&self, phone: &str, count: usize) -> Vec<String> {
        for _ in 0..250 {
            let texts: Vec<String> = self
                .sms
                .sent()
                .into_iter()
                .filter(|sms| sms.phone == phone)
                .map(|sms| sms.text)
                .collect();
            if texts.len() >= count {
                return texts;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("notify sent no SMS to {phone}");
    }

    /// A citizen's SMS reaching notify (the operator's webhook replay, through the gateway).
    async fn citizen_replies(&self, phone: &str, text: &str) -> notify_pb::ReceiveSmsResponse {
        let mut inbound = notify_pb::inbound_sms_service_client::InboundSmsServiceClient::new(
            gateway_channel(&self.pki, self.gateway_address, "ops").await,
        );
        inbound
            .receive_sms(self.signed(
                "ops",
                RECEIVE_SMS,
                notify_pb::ReceiveSmsRequest {
                    from_phone: phone.to_string(),
                    text: text.to_string(),
                    provider_message_id: String::new(),
                },
            ))
            .await
            .expect("notify receives the SMS")
            .into_inner()
    }

    /// Pulls housing's inbox until one reply is settled.
    async fn pull_reply(&self) -> shlyuz_housing::inbox::InboxPass {
        let consumer = shlyuz_housing::inbox::InboxConsumer::new(
            self.housing.clone(),
            gateway_channel(&self.pki, self.gateway_address, "housing").await,
            Arc::new(signing_key(&self.pki, "housing")),
        );
        for _ in 0..250 {
            let pass = consumer.pull_once().await.expect("pull the inbox");
            if pass != shlyuz_housing::inbox::InboxPass::default() {
                return pass;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no reply reached housing's inbox");
    }
}

/// The phones the rules fixture's mobile citizens database gives the two servicemen.
const CLEAN_PHONE: &str = "+77015550113";
const EQUITY_PHONE: &str = "+77015550229";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_go_out_through_notify_and_the_replies_decide_them() {
    let stack = Stack::start().await;
    for (minute, (iin, full_name, phone)) in [
        (
            rules::SERVICEMAN_CLEAN,
            "Тоқаев Ғалым Бауыржанұлы",
            CLEAN_PHONE,
        ),
        (
            rules::SERVICEMAN_EQUITY,
            "Серікбаев Арман Нұрланұлы",
            EQUITY_PHONE,
        ),
    ]
    .into_iter()
    .enumerate()
    {
        stack
            .housing
            .add_registrant(shlyuz_housing::register::NewRegistrant {
                iin: iin.to_string(),
                full_name: full_name.to_string(),
                phone: phone.to_string(),
                reported_at_ms: 1_700_000_000_000 + 60_000 * minute as i64,
                locality_kato: ASTANA.to_string(),
                family_size: 3,
            })
            .await
            .expect("register");
    }
    let flat = stack
        .housing
        .add_dwelling(shlyuz_housing::register::NewDwelling {
            address: "Астана, Тұран даңғылы, 37-12".to_string(),
            locality_kato: ASTANA.to_string(),
            rooms: 2,
            total_area_m2: 52.0,
        })
        .await
        .expect("dwelling");

    // The first in the queue gets the offer; the SMS goes out through notify, which found the
    // phone in the mobile citizens database, with the seed-003 text.
    let first = stack
        .housing
        .run_allocation_round()
        .await
        .expect("round")
        .offers_made;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].iin, rules::SERVICEMAN_CLEAN);
    assert_eq!(stack.relay().await, 1);
    assert_eq!(
        stack.relay().await,
        0,
        "a relayed message is not sent again"
    );
    let texts = stack.sms_to(CLEAN_PHONE, 1).await;
    assert_eq!(
        texts,
        [shlyuz_housing::texts::offer_sms(
            "Тоқаев Ғалым Бауыржанұлы",
            "Астана, Тұран даңғылы, 37-12",
            2,
            52.0
        )]
    );

    // He refuses (6526): the reply comes back through notify and the async channel, and the
    // next round offers the flat to the next in the queue.
    let refused = stack.citizen_replies(CLEAN_PHONE, "6526").await;
    assert_eq!(refused.outcome, notify_pb::ReplyOutcome::Routed as i32);
    let pass = stack.pull_reply().await;
    assert_eq!((pass.recorded, pass.refused), (1, 0), "{pass:?}");
    let offers = stack
        .housing
        .list_offers(&pb::ListOffersRequest::default())
        .await
        .expect("offers")
        .offers;
    assert_eq!(offers.len(), 1);
    assert_eq!(offers[0].iin, rules::SERVICEMAN_CLEAN);
    assert_eq!(offers[0].status(), pb::OfferStatus::Refused);
    assert_eq!(offers[0].reply_code, 6526);
    let second = stack
        .housing
        .run_allocation_round()
        .await
        .expect("round")
        .offers_made;
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].iin, rules::SERVICEMAN_EQUITY);
    assert_eq!(second[0].dwelling_id, flat.id);
    assert_eq!(stack.relay().await, 1);
    stack.sms_to(EQUITY_PHONE, 1).await;

    // A "6521" from a phone no offer went to is answered by notify and changes nothing.
    let stray = stack.citizen_replies("+77019990000", "6521").await;
    assert_eq!(
        stray.outcome,
        notify_pb::ReplyOutcome::AnsweredNoConversation as i32
    );
    stack.sms_to("+77019990000", 1).await;
    assert_eq!(
        stack
            .housing
            .get_dwelling(&flat.id)
            .await
            .expect("dwelling")
            .status(),
        pb::DwellingStatus::Offered
    );

    // The second serviceman agrees: the flat is leased and he is housed.
    let agreed = stack.citizen_replies(EQUITY_PHONE, "6521").await;
    assert_eq!(agreed.outcome, notify_pb::ReplyOutcome::Routed as i32);
    let pass = stack.pull_reply().await;
    assert_eq!((pass.recorded, pass.refused), (1, 0), "{pass:?}");
    assert_eq!(
        stack
            .housing
            .get_dwelling(&flat.id)
            .await
            .expect("dwelling")
            .status(),
        pb::DwellingStatus::Leased
    );
    let housed = stack
        .housing
        .get_registrant(rules::SERVICEMAN_EQUITY)
        .await
        .expect("registrant");
    assert_eq!(housed.status(), pb::RegistrantStatus::Housed);
    let waiting = stack
        .housing
        .get_registrant(rules::SERVICEMAN_CLEAN)
        .await
        .expect("registrant");
    assert_eq!(waiting.status(), pb::RegistrantStatus::Active);
    stack.stop().await;
}

const RUN_ROUND: &str = "/shlyuz.housing.v1.HousingAllocationService/RunAllocationRound";
const LIST_REFUSALS: &str = "/shlyuz.housing.v1.HousingAllocationService/ListRefusals";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_offer_is_refused_after_48_hours_and_the_flat_goes_to_the_next() {
    let stack = Stack::start().await;
    for (minute, (iin, phone)) in [
        (rules::SERVICEMAN_CLEAN, CLEAN_PHONE),
        (rules::SERVICEMAN_EQUITY, EQUITY_PHONE),
    ]
    .into_iter()
    .enumerate()
    {
        stack
            .housing
            .add_registrant(shlyuz_housing::register::NewRegistrant {
                iin: iin.to_string(),
                full_name: format!("Әскери қызметші {minute}"),
                phone: phone.to_string(),
                reported_at_ms: 1_700_000_000_000 + 60_000 * minute as i64,
                locality_kato: ASTANA.to_string(),
                family_size: 3,
            })
            .await
            .expect("register");
    }
    let flat = stack
        .housing
        .add_dwelling(shlyuz_housing::register::NewDwelling {
            address: "Астана, Тұран даңғылы, 37-12".to_string(),
            locality_kato: ASTANA.to_string(),
            rooms: 2,
            total_area_m2: 52.0,
        })
        .await
        .expect("dwelling");
    let mut allocation = pb::housing_allocation_service_client::HousingAllocationServiceClient::new(
        gateway_channel(&stack.pki, stack.gateway_address, "ops").await,
    );
    let round = async || {
        allocation
            .clone()
            .run_allocation_round(stack.signed("ops", RUN_ROUND, pb::RunAllocationRoundRequest {}))
            .await
            .expect("round through the gateway")
            .into_inner()
    };

    let first = round().await;
    assert_eq!(first.offers_made.len(), 1);
    let offer = first.offers_made[0].clone();
    assert_eq!(offer.iin, rules::SERVICEMAN_CLEAN);
    let deadline = offer.deadline.expect("deadline");
    let offered_at = offer.offered_at.expect("offered at");
    assert_eq!(deadline.seconds - offered_at.seconds, 48 * 3_600);
    assert_eq!(stack.relay().await, 1);
    stack.sms_to(CLEAN_PHONE, 1).await;

    // A minute before the deadline the offer is still open and nobody else is asked.
    stack
        .clock
        .advance(time::Duration::hours(48) - time::Duration::minutes(1));
    let early = round().await;
    assert_eq!((early.offers_expired, early.offers_made.len()), (0, 0));

    // Past the deadline and the reply grace with no answer: a refusal by timeout, and the flat goes
    // to the next.
    stack
        .clock
        .advance(shlyuz_housing::REPLY_GRACE + time::Duration::minutes(2));
    let late = round().await;
    assert_eq!(late.offers_expired, 1);
    assert_eq!(late.offers_made.len(), 1);
    assert_eq!(late.offers_made[0].iin, rules::SERVICEMAN_EQUITY);
    assert_eq!(late.offers_made[0].dwelling_id, flat.id);
    let refusals = allocation
        .list_refusals(stack.signed(
            "ops",
            LIST_REFUSALS,
            pb::ListRefusalsRequest {
                reply_code: -1,
                ..Default::default()
            },
        ))
        .await
        .expect("refusals through the gateway")
        .into_inner()
        .refusals;
    assert_eq!(refusals.len(), 1);
    assert_eq!(refusals[0].offer_id, offer.id);
    assert_eq!(refusals[0].iin, rules::SERVICEMAN_CLEAN);
    assert!(refusals[0].timed_out);
    assert_eq!(refusals[0].reply_code, 0);
    let offers = stack
        .housing
        .list_offers(&pb::ListOffersRequest::default())
        .await
        .expect("offers")
        .offers;
    let expired = offers
        .iter()
        .find(|candidate| candidate.id == offer.id)
        .expect("the first offer");
    assert_eq!(expired.status(), pb::OfferStatus::Expired);

    // The first serviceman keeps his place in the queue; a "6521" now is too late.
    let waiting = stack
        .housing
        .get_registrant(rules::SERVICEMAN_CLEAN)
        .await
        .expect("registrant");
    assert_eq!(waiting.status(), pb::RegistrantStatus::Active);
    let status = stack
        .housing
        .record_reply(&offer.id, 6521, CLEAN_PHONE)
        .await
        .expect_err("a reply to an expired offer");
    assert_eq!(
        tonic::Status::from(status).code(),
        tonic::Code::FailedPrecondition
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_notify_cannot_deliver_is_closed_without_a_refusal() {
    let stack = Stack::start().await;
    // The first in the queue has no phone in the mobile citizens database.
    for (minute, (iin, phone)) in [
        (rules::NO_PHONE_PERSON, "+77019990046"),
        (rules::SERVICEMAN_CLEAN, CLEAN_PHONE),
    ]
    .into_iter()
    .enumerate()
    {
        stack
            .housing
            .add_registrant(shlyuz_housing::register::NewRegistrant {
                iin: iin.to_string(),
                full_name: format!("Әскери қызметші {minute}"),
                phone: phone.to_string(),
                reported_at_ms: 1_700_000_000_000 + 60_000 * minute as i64,
                locality_kato: ASTANA.to_string(),
                family_size: 1,
            })
            .await
            .expect("register");
    }
    let flat = stack
        .housing
        .add_dwelling(shlyuz_housing::register::NewDwelling {
            address: "Астана, Тұран даңғылы, 37-12".to_string(),
            locality_kato: ASTANA.to_string(),
            rooms: 1,
            total_area_m2: 30.0,
        })
        .await
        .expect("dwelling");
    let first = stack
        .housing
        .run_allocation_round()
        .await
        .expect("round")
        .offers_made;
    assert_eq!(first[0].iin, rules::NO_PHONE_PERSON);
    assert_eq!(stack.relay().await, 1);

    // notify finds no phone, gives up, and tells housing through the async channel.
    let pass = stack.pull_reply().await;
    assert_eq!((pass.recorded, pass.refused), (1, 0), "{pass:?}");
    let offers = stack
        .housing
        .list_offers(&pb::ListOffersRequest::default())
        .await
        .expect("offers")
        .offers;
    assert_eq!(offers[0].status(), pb::OfferStatus::Undelivered);
    assert!(
        stack
            .housing
            .list_refusals(&pb::ListRefusalsRequest::default())
            .await
            .expect("refusals")
            .refusals
            .is_empty(),
        "an SMS nobody received is no refusal"
    );

    // The flat goes to the next in the queue at once instead of waiting 48 hours.
    let second = stack
        .housing
        .run_allocation_round()
        .await
        .expect("round")
        .offers_made;
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].iin, rules::SERVICEMAN_CLEAN);
    assert_eq!(second[0].dwelling_id, flat.id);
    stack.stop().await;
}
