//! The housing target started as `shlyuz up` starts it, behind the real gateway, with the
//! registry and notify targets and the registry's fixture people: the seed-002 review runs its
//! batch look-ups through the gateway (mutual TLS, signed envelopes, purpose
//! HOUSING_REGISTER_REVIEW), operations use the housing services through the gateway, offer SMS
//! and removal notices leave housing's outbox through notify, and the citizens' 6521–6527 replies
//! come back through notify and the async channel. Housing's own loops (allocation rounds, the
//! outbox relay every second, the inbox pull every two seconds) run for real; the tests wait for
//! what they do.

mod support;

use std::future::Future;
use std::time::Duration;

use shlyuz::config::ShlyuzConfig;
use shlyuz::target::Target;
use shlyuz_kit::clock::AdjustableClock;
use shlyuz_kit::error::summarize_status;
use shlyuz_kit::fixture_people::{self as people, FixturePerson};
use shlyuz_proto::gateway::v1 as gateway_pb;
use shlyuz_proto::housing::v1 as pb;
use shlyuz_proto::notify::v1 as notify_pb;
use support::TestSystem;

/// KATO of Astana, the fixture servicemen's garrison.
const ASTANA: &str = "711110000";
/// Every target housing works with.
const TARGETS: [Target; 4] = [
    Target::Gateway,
    Target::Registry,
    Target::Notify,
    Target::Housing,
];

const ADD_REGISTRANT: &str = "/shlyuz.housing.v1.HousingRegisterService/AddRegistrant";
const GET_REGISTRANT: &str = "/shlyuz.housing.v1.HousingRegisterService/GetRegistrant";
const ADD_DWELLING: &str = "/shlyuz.housing.v1.HousingStockService/AddDwelling";
const GET_DWELLING: &str = "/shlyuz.housing.v1.HousingStockService/GetDwelling";
const RUN_ROUND: &str = "/shlyuz.housing.v1.HousingAllocationService/RunAllocationRound";
const LIST_OFFERS: &str = "/shlyuz.housing.v1.HousingAllocationService/ListOffers";
const RECORD_REPLY: &str = "/shlyuz.housing.v1.HousingAllocationService/RecordReply";
const LIST_REFUSALS: &str = "/shlyuz.housing.v1.HousingAllocationService/ListRefusals";
const START_REVIEW: &str = "/shlyuz.housing.v1.HousingReviewService/StartReview";
const RECEIVE_SMS: &str = "/shlyuz.notify.v1.InboundSmsService/ReceiveSms";
const LIST_INBOX: &str = "/shlyuz.notify.v1.NotificationService/ListInbox";
const SEND_MESSAGE: &str = "/shlyuz.gateway.v1.AsyncChannelService/SendMessage";
const GET_MESSAGE_STATUS: &str = "/shlyuz.gateway.v1.AsyncChannelService/GetMessageStatus";
/// The payload type notify sends a citizen's reply to housing as.
const SMS_REPLY_PAYLOAD_TYPE: &str = "shlyuz.notify.v1.SmsReply";

/// The flat every allocation test offers.
const FLAT_ADDRESS: &str = "Астана, Тұран даңғылы, 37-12";

/// Every target, allocation rounds every `allocation_interval_secs`.
async fn start(allocation_interval_secs: u64) -> TestSystem {
    support::spawn_system_with(&TARGETS, |config| {
        config.housing.allocation_interval_secs = allocation_interval_secs;
    })
    .await
}

/// Allocation rounds only when ops asks for one: the loop's first round runs at start, over an
/// empty register, and the next not within the test.
const ROUNDS_ON_REQUEST: u64 = 3_600;
/// Allocation rounds every second, as a test waiting for the loop wants them.
const ROUNDS_EVERY_SECOND: u64 = 1;

/// Polls `probe` every 50 ms until it answers, for at most 20 seconds (housing's loops run every
/// one or two seconds, notify's worker every 20 ms).
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    for _ in 0..400 {
        if let Some(found) = probe().await {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("waited 20 s for {what}");
}

fn register_client(
    channel: tonic::transport::Channel,
) -> pb::housing_register_service_client::HousingRegisterServiceClient<tonic::transport::Channel> {
    pb::housing_register_service_client::HousingRegisterServiceClient::new(channel)
}

/// `message` for housing's `path`, signed by `participant` (housing services name no subject).
fn signed<M: prost::Message>(
    stack: &TestSystem,
    participant: &str,
    path: &str,
    message: M,
) -> tonic::Request<M> {
    stack.signed(participant, path, "", "", message)
}

/// Ops puts `person` on the register through the gateway, reported `minute` minutes after the
/// first.
async fn add_registrant(
    stack: &TestSystem,
    person: FixturePerson,
    phone: &str,
    minute: i64,
    family_size: i32,
) {
    register_client(stack.channel("ops").await)
        .add_registrant(signed(
            stack,
            "ops",
            ADD_REGISTRANT,
            pb::AddRegistrantRequest {
                iin: person.iin.to_string(),
                full_name: person.full_name.to_string(),
                phone: phone.to_string(),
                reported_at: Some(prost_types::Timestamp {
                    seconds: 1_700_000_000 + 60 * minute,
                    nanos: 0,
                }),
                locality_kato: ASTANA.to_string(),
                family_size,
            },
        ))
        .await
        .expect("ops adds to the register through the gateway");
}

/// The register's entry for `iin`, as ops reads it through the gateway.
async fn registrant(stack: &TestSystem, iin: &str) -> pb::Registrant {
    register_client(stack.channel("ops").await)
        .get_registrant(signed(
            stack,
            "ops",
            GET_REGISTRANT,
            pb::GetRegistrantRequest {
                iin: iin.to_string(),
            },
        ))
        .await
        .expect("get the registrant")
        .into_inner()
        .registrant
        .expect("a registrant")
}

fn stock_client(
    channel: tonic::transport::Channel,
) -> pb::housing_stock_service_client::HousingStockServiceClient<tonic::transport::Channel> {
    pb::housing_stock_service_client::HousingStockServiceClient::new(channel)
}

/// Ops adds the flat in Astana to the stock.
async fn add_flat(stack: &TestSystem, rooms: i32, total_area_m2: f64) -> pb::Dwelling {
    stock_client(stack.channel("ops").await)
        .add_dwelling(signed(
            stack,
            "ops",
            ADD_DWELLING,
            pb::AddDwellingRequest {
                address: FLAT_ADDRESS.to_string(),
                locality_kato: ASTANA.to_string(),
                rooms,
                total_area_m2,
            },
        ))
        .await
        .expect("ops adds a dwelling")
        .into_inner()
        .dwelling
        .expect("a dwelling")
}

async fn dwelling_status(stack: &TestSystem, id: &str) -> pb::DwellingStatus {
    stock_client(stack.channel("ops").await)
        .get_dwelling(signed(
            stack,
            "ops",
            GET_DWELLING,
            pb::GetDwellingRequest { id: id.to_string() },
        ))
        .await
        .expect("get the dwelling")
        .into_inner()
        .dwelling
        .expect("a dwelling")
        .status()
}

fn allocation_client(
    channel: tonic::transport::Channel,
) -> pb::housing_allocation_service_client::HousingAllocationServiceClient<tonic::transport::Channel>
{
    pb::housing_allocation_service_client::HousingAllocationServiceClient::new(channel)
}

/// Every offer, as ops lists them through the gateway.
async fn offers(stack: &TestSystem) -> Vec<pb::Offer> {
    allocation_client(stack.channel("ops").await)
        .list_offers(signed(
            stack,
            "ops",
            LIST_OFFERS,
            pb::ListOffersRequest::default(),
        ))
        .await
        .expect("list offers")
        .into_inner()
        .offers
}

/// Waits until an offer of `iin` satisfies `wanted`.
async fn offer_of(
    stack: &TestSystem,
    iin: &str,
    what: &str,
    wanted: impl Fn(&pb::Offer) -> bool,
) -> pb::Offer {
    eventually(what, || async {
        offers(stack)
            .await
            .into_iter()
            .find(|offer| offer.iin == iin && wanted(offer))
    })
    .await
}

async fn refusals(stack: &TestSystem, request: pb::ListRefusalsRequest) -> Vec<pb::Refusal> {
    allocation_client(stack.channel("ops").await)
        .list_refusals(signed(stack, "ops", LIST_REFUSALS, request))
        .await
        .expect("refusals through the gateway")
        .into_inner()
        .refusals
}

/// The texts of the SMS notify sent to `phone` so far.
fn sms_texts_to(stack: &TestSystem, phone: &str) -> Vec<String> {
    stack
        .sms()
        .into_iter()
        .filter(|sms| sms["to"] == phone)
        .filter_map(|sms| sms["text"].as_str().map(str::to_string))
        .collect()
}

/// Waits until notify has sent `count` SMS to `phone`; their texts.
async fn sms_to(stack: &TestSystem, phone: &str, count: usize) -> Vec<String> {
    eventually(&format!("{count} SMS to {phone}"), || async {
        let texts = sms_texts_to(stack, phone);
        (texts.len() >= count).then_some(texts)
    })
    .await
}

/// A citizen's SMS reaching notify (the operator's webhook replay, through the gateway as `ops`).
async fn citizen_replies(
    stack: &TestSystem,
    phone: &str,
    text: &str,
) -> notify_pb::ReceiveSmsResponse {
    notify_pb::inbound_sms_service_client::InboundSmsServiceClient::new(stack.channel("ops").await)
        .receive_sms(signed(
            stack,
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

fn phone_of(person: FixturePerson) -> &'static str {
    person.phone.expect("the fixture gives a phone")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_through_the_gateway_removes_the_fixture_people_for_their_reasons() {
    let stack = start(ROUNDS_ON_REQUEST).await;
    let servicemen = [
        people::SERVICEMAN_CLEAN,
        people::SERVICEMAN_PRIVATISED,
        people::SERVICEMAN_EQUITY,
        people::SERVICEMAN_EARLIER_HOUSING,
        people::SERVICEMAN_SPOUSE_STATE_HOUSING,
        people::SERVICEMAN_SPOUSE_MISSING,
        people::SERVICEMAN_FOREIGN_CITIZEN,
        people::SERVICEMAN_RESIDENT_ABROAD,
        people::SERVICEMAN_INCAPABLE,
        people::SERVICEMAN_CHILD_IMPRISONED,
    ];
    for (minute, person) in (0_i64..).zip(servicemen) {
        add_registrant(&stack, person, &format!("+7701000{minute:04}"), minute, 1).await;
    }

    // SDU starts the review; the checks go from housing to the registry through the gateway.
    let mut review = pb::housing_review_service_client::HousingReviewServiceClient::new(
        stack.channel("sdu").await,
    );
    let report = review
        .start_review(signed(
            &stack,
            "sdu",
            START_REVIEW,
            pb::StartReviewRequest {},
        ))
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
        (people::SERVICEMAN_PRIVATISED, R::PrivatisationContract),
        (people::SERVICEMAN_EQUITY, R::EquityContract),
        (people::SERVICEMAN_EARLIER_HOUSING, R::EarlierServiceHousing),
        (
            people::SERVICEMAN_SPOUSE_STATE_HOUSING,
            R::PermanentUseInLocality,
        ),
        (people::SERVICEMAN_SPOUSE_MISSING, R::MissingOrDead),
        (people::SERVICEMAN_FOREIGN_CITIZEN, R::NotACitizen),
        (people::SERVICEMAN_RESIDENT_ABROAD, R::ResidenceAbroad),
        (people::SERVICEMAN_INCAPABLE, R::Incapable),
        (people::SERVICEMAN_CHILD_IMPRISONED, R::Imprisoned),
    ];
    for (person, reason) in expected {
        let removed = registrant(&stack, person.iin).await;
        assert_eq!(
            removed.status(),
            pb::RegistrantStatus::Removed,
            "{person:?}"
        );
        assert_eq!(removed.removal_reason(), reason, "{person:?}");
    }
    // The clean serviceman stays, with the family the civil registry knows: spouse and child.
    let clean = registrant(&stack, people::SERVICEMAN_CLEAN.iin).await;
    assert_eq!(clean.status(), pb::RegistrantStatus::Active);
    assert_eq!(clean.family_size, 3);
    assert_eq!(clean.queue_position, 1);

    // Housing's outbox relay takes the nine removal notices to notify, which puts each in its
    // person's cabinet; the portal shows the seed-002 Kazakh text.
    let inbox = notify_pb::notification_service_client::NotificationServiceClient::new(
        stack.channel("jauynger-portal").await,
    );
    let cabinet = |iin: &'static str| {
        let mut inbox = inbox.clone();
        let request = stack.signed(
            "jauynger-portal",
            LIST_INBOX,
            "CITIZEN_NOTIFICATION",
            iin,
            notify_pb::ListInboxRequest {
                iin: iin.to_string(),
                ..notify_pb::ListInboxRequest::default()
            },
        );
        async move {
            inbox
                .list_inbox(request)
                .await
                .expect("list the cabinet inbox")
                .into_inner()
                .items
        }
    };
    for (person, _) in expected {
        let items = eventually(&format!("the removal notice of {}", person.iin), || async {
            let items = cabinet(person.iin).await;
            (!items.is_empty()).then_some(items)
        })
        .await;
        assert_eq!(items.len(), 1, "one removal notice in {person:?}'s cabinet");
    }
    assert!(
        cabinet(people::SERVICEMAN_CLEAN.iin).await.is_empty(),
        "no notice for the serviceman who stays"
    );
    let equity_notice = &cabinet(people::SERVICEMAN_EQUITY.iin).await[0].text;
    for part in [
        "Құрметті көрсетілетін қызметті алушы!",
        "Сізден тұрғын үй салуға үлестік қатысу туралы шарт анықталды.",
        "(тұрғын үй салуға үлестік қатысу туралы шарттың болуы) есебінен шығарылдыңыз.",
    ] {
        assert!(equity_notice.contains(part), "{equity_notice}");
    }

    stack.stop().await;
}
/// notify puts `payload` of `payload_type` into housing's inbox through the async channel; the
/// message's id.
async fn notify_sends(stack: &TestSystem, payload_type: &str, payload: Vec<u8>) -> String {
    let mut async_channel =
        gateway_pb::async_channel_service_client::AsyncChannelServiceClient::new(
            stack.channel("notify").await,
        );
    let request = gateway_pb::SendMessageRequest {
        target: Some(gateway_pb::send_message_request::Target::Recipient(
            "housing".to_string(),
        )),
        payload,
        payload_type: payload_type.to_string(),
        expires_at_ms: 0,
        reply_to: String::new(),
    };
    async_channel
        .send_message(signed(stack, "notify", SEND_MESSAGE, request))
        .await
        .expect("notify sends to housing's inbox")
        .into_inner()
        .receipt
        .expect("a receipt")
        .message_id
}

/// The delivery state of notify's message `message_id`, as notify asks the gateway.
async fn delivery_state(stack: &TestSystem, message_id: &str) -> gateway_pb::DeliveryState {
    gateway_pb::async_channel_service_client::AsyncChannelServiceClient::new(
        stack.channel("notify").await,
    )
    .get_message_status(signed(
        stack,
        "notify",
        GET_MESSAGE_STATUS,
        gateway_pb::GetMessageStatusRequest {
            message_id: message_id.to_string(),
        },
    ))
    .await
    .expect("message status")
    .into_inner()
    .status
    .expect("a status")
    .state()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sms_replies_from_notify_arrive_through_the_async_channel() {
    use prost::Message as _;

    let stack = start(ROUNDS_EVERY_SECOND).await;
    let serviceman = people::SERVICEMAN_CLEAN;
    add_registrant(&stack, serviceman, phone_of(serviceman), 0, 3).await;
    let flat = add_flat(&stack, 2, 52.0).await;
    let offer = offer_of(&stack, serviceman.iin, "the round's offer", |_| true).await;
    assert_eq!(offer.dwelling_id, flat.id);

    let reply = notify_pb::SmsReply {
        reply_id: "0190a4c2-7e1f-7000-8000-0000000000aa".to_string(),
        conversation_id: "0190a4c2-7e1f-7000-8000-0000000000bb".to_string(),
        correlation_id: offer.id.clone(),
        notification_id: "0190a4c2-7e1f-7000-8000-0000000000cc".to_string(),
        from_phone: phone_of(serviceman).to_string(),
        recipient_iin: serviceman.iin.to_string(),
        code: "6521".to_string(),
        text: "6521".to_string(),
        received_at_ms: 0,
    };
    // The reply, the same reply delivered twice (notify retried) and an item housing cannot read.
    let messages = [
        notify_sends(&stack, SMS_REPLY_PAYLOAD_TYPE, reply.encode_to_vec()).await,
        notify_sends(&stack, SMS_REPLY_PAYLOAD_TYPE, reply.encode_to_vec()).await,
        notify_sends(&stack, "shlyuz.notify.v1.Unknown", vec![1, 2, 3]).await,
    ];

    // Housing's inbox pull settles the reply: the flat is leased and the serviceman housed.
    eventually("the flat leased", || async {
        (dwelling_status(&stack, &flat.id).await == pb::DwellingStatus::Leased).then_some(())
    })
    .await;
    assert_eq!(
        registrant(&stack, serviceman.iin).await.status(),
        pb::RegistrantStatus::Housed
    );
    let accepted = offers(&stack).await;
    assert_eq!(accepted.len(), 1, "the duplicate made no second offer");
    assert_eq!(accepted[0].status(), pb::OfferStatus::Accepted);
    // Everything, the duplicate and the unreadable item included, was acknowledged: notify's
    // messages are delivered.
    for message_id in &messages {
        eventually(&format!("message {message_id} acknowledged"), || async {
            (delivery_state(&stack, message_id).await == gateway_pb::DeliveryState::Delivered)
                .then_some(())
        })
        .await;
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_allowed_participants_reach_the_housing_services() {
    let stack = support::spawn_system(&[Target::Gateway, Target::Housing]).await;
    let mut review = pb::housing_review_service_client::HousingReviewServiceClient::new(
        stack.channel("jauynger-portal").await,
    );
    let refused = review
        .start_review(signed(
            &stack,
            "jauynger-portal",
            START_REVIEW,
            pb::StartReviewRequest {},
        ))
        .await
        .unwrap_err();
    let summary = summarize_status(&refused);
    assert_eq!(summary.code, tonic::Code::PermissionDenied);
    assert_eq!(summary.reason, "ACCESS_DENIED");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_through_the_gateway_name_the_field_or_the_reason() {
    let stack = support::spawn_system(&[Target::Gateway, Target::Housing]).await;
    let channel = stack.channel("ops").await;
    let bad = pb::AddRegistrantRequest {
        iin: "12345".to_string(),
        full_name: "Аманов Нұрсұлтан".to_string(),
        phone: "+77015550199".to_string(),
        reported_at: None,
        locality_kato: ASTANA.to_string(),
        family_size: 2,
    };
    let refused = register_client(channel.clone())
        .add_registrant(signed(&stack, "ops", ADD_REGISTRANT, bad))
        .await
        .unwrap_err();
    let summary = summarize_status(&refused);
    assert_eq!(summary.code, tonic::Code::InvalidArgument);
    assert_eq!(summary.fields, ["reported_at"]);

    let mut allocation = allocation_client(channel);
    let reply = |reply_code| pb::RecordReplyRequest {
        offer_id: "0190a4c2-7e1f-7000-8000-000000000001".to_string(),
        reply_code,
        phone: "+77015550199".to_string(),
        received_at: None,
    };
    let unknown = allocation
        .record_reply(signed(&stack, "ops", RECORD_REPLY, reply(6521)))
        .await
        .unwrap_err();
    let summary = summarize_status(&unknown);
    assert_eq!(summary.code, tonic::Code::NotFound);
    assert_eq!(summary.reason, "OFFER_NOT_FOUND");
    let bad_code = allocation
        .record_reply(signed(&stack, "ops", RECORD_REPLY, reply(1234)))
        .await
        .unwrap_err();
    let summary = summarize_status(&bad_code);
    assert_eq!(summary.code, tonic::Code::InvalidArgument);
    assert_eq!(summary.fields, ["reply_code"]);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_go_out_through_notify_and_the_replies_decide_them() {
    let stack = start(ROUNDS_EVERY_SECOND).await;
    let (first, second) = (people::SERVICEMAN_CLEAN, people::SERVICEMAN_EQUITY);
    add_registrant(&stack, first, phone_of(first), 0, 3).await;
    add_registrant(&stack, second, phone_of(second), 1, 3).await;
    let flat = add_flat(&stack, 2, 52.0).await;

    // The first in the queue gets the offer; the SMS goes out through notify, which found the
    // phone in the mobile citizens database, with the seed-003 text.
    let offer = offer_of(&stack, first.iin, "the first offer", |_| true).await;
    assert_eq!(offer.dwelling_id, flat.id);
    assert_eq!(offers(&stack).await.len(), 1, "one flat, one offer");
    let texts = sms_to(&stack, phone_of(first), 1).await;
    for part in [
        "Уважаемый Тоқаев Ғалым Бауыржанұлы!",
        "служебное жилище по адресу: Астана, Тұран даңғылы, 37-12, состоящая из 2 комнат с общей площадью 52 кв.м.",
        "Просим Вас в течении 48 часов подтвердить согласие либо отказ",
        "6521 – Согласен;",
        "6526 – Отказ от служебного жилища;",
    ] {
        assert!(texts[0].contains(part), "{}", texts[0]);
    }

    // He refuses (6526): the reply comes back through notify and the async channel, and the
    // next round offers the flat to the next in the queue.
    let refused = citizen_replies(&stack, phone_of(first), "6526").await;
    assert_eq!(refused.outcome, notify_pb::ReplyOutcome::Routed as i32);
    let refused_offer = offer_of(&stack, first.iin, "the refusal recorded", |offer| {
        offer.status() == pb::OfferStatus::Refused
    })
    .await;
    assert_eq!(refused_offer.id, offer.id);
    assert_eq!(refused_offer.reply_code, 6526);
    let next = offer_of(&stack, second.iin, "the offer to the next", |_| true).await;
    assert_eq!(next.dwelling_id, flat.id);
    sms_to(&stack, phone_of(second), 1).await;

    // A "6521" from a phone no offer went to is answered by notify and changes nothing.
    let stray = citizen_replies(&stack, "+77019990000", "6521").await;
    assert_eq!(
        stray.outcome,
        notify_pb::ReplyOutcome::AnsweredNoConversation as i32
    );
    sms_to(&stack, "+77019990000", 1).await;
    assert_eq!(
        dwelling_status(&stack, &flat.id).await,
        pb::DwellingStatus::Offered
    );

    // The second serviceman agrees: the flat is leased and he is housed.
    let agreed = citizen_replies(&stack, phone_of(second), "6521").await;
    assert_eq!(agreed.outcome, notify_pb::ReplyOutcome::Routed as i32);
    eventually("the flat leased", || async {
        (dwelling_status(&stack, &flat.id).await == pb::DwellingStatus::Leased).then_some(())
    })
    .await;
    assert_eq!(
        registrant(&stack, second.iin).await.status(),
        pb::RegistrantStatus::Housed
    );
    assert_eq!(
        registrant(&stack, first.iin).await.status(),
        pb::RegistrantStatus::Active
    );
    // Many relay passes later, each offer went out once.
    assert_eq!(offers(&stack).await.len(), 2);
    assert_eq!(
        sms_texts_to(&stack, phone_of(first)).len(),
        1,
        "a relayed offer is not sent again"
    );
    assert_eq!(sms_texts_to(&stack, phone_of(second)).len(), 1);
    stack.stop().await;
}

/// The test configuration with `clock` as housing's clock (`shlyuz up --test-clock`).
async fn start_with_clock(
    clock: &AdjustableClock,
    configure: impl FnOnce(&mut ShlyuzConfig),
) -> TestSystem {
    support::spawn_system_with_clock(&TARGETS, Some(clock), configure).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_offer_is_refused_after_48_hours_and_the_flat_goes_to_the_next() {
    const REPLY_GRACE_SECS: u64 = 900;
    let clock = AdjustableClock::new();
    let stack = start_with_clock(&clock, |config| {
        config.housing.allocation_interval_secs = ROUNDS_ON_REQUEST;
        config.housing.reply_grace_secs = REPLY_GRACE_SECS;
    })
    .await;
    let (first, second) = (people::SERVICEMAN_CLEAN, people::SERVICEMAN_EQUITY);
    add_registrant(&stack, first, phone_of(first), 0, 3).await;
    add_registrant(&stack, second, phone_of(second), 1, 3).await;
    let flat = add_flat(&stack, 2, 52.0).await;
    let allocation = allocation_client(stack.channel("ops").await);
    let round = async || {
        allocation
            .clone()
            .run_allocation_round(signed(
                &stack,
                "ops",
                RUN_ROUND,
                pb::RunAllocationRoundRequest {},
            ))
            .await
            .expect("round through the gateway")
            .into_inner()
    };

    let opening = round().await;
    assert_eq!(opening.offers_made.len(), 1);
    let offer = opening.offers_made[0].clone();
    assert_eq!(offer.iin, first.iin);
    let deadline = offer.deadline.expect("deadline");
    let offered_at = offer.offered_at.expect("offered at");
    assert_eq!(deadline.seconds - offered_at.seconds, 48 * 3_600);
    sms_to(&stack, phone_of(first), 1).await;

    // A minute before the deadline the offer is still open and nobody else is asked.
    clock.advance(time::Duration::hours(48) - time::Duration::minutes(1));
    let early = round().await;
    assert_eq!((early.offers_expired, early.offers_made.len()), (0, 0));

    // Past the deadline and the reply grace with no answer: a refusal by timeout, and the flat
    // goes to the next.
    clock.advance(time::Duration::seconds(REPLY_GRACE_SECS as i64) + time::Duration::minutes(2));
    let late = round().await;
    assert_eq!(late.offers_expired, 1);
    assert_eq!(late.offers_made.len(), 1);
    assert_eq!(late.offers_made[0].iin, second.iin);
    assert_eq!(late.offers_made[0].dwelling_id, flat.id);
    let timed_out = refusals(
        &stack,
        pb::ListRefusalsRequest {
            reply_code: -1,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(timed_out.len(), 1);
    assert_eq!(timed_out[0].offer_id, offer.id);
    assert_eq!(timed_out[0].iin, first.iin);
    assert!(timed_out[0].timed_out);
    assert_eq!(timed_out[0].reply_code, 0);
    let expired = offers(&stack)
        .await
        .into_iter()
        .find(|candidate| candidate.id == offer.id)
        .expect("the first offer");
    assert_eq!(expired.status(), pb::OfferStatus::Expired);

    // The first serviceman keeps his place in the queue; a "6521" now is too late.
    assert_eq!(
        registrant(&stack, first.iin).await.status(),
        pb::RegistrantStatus::Active
    );
    let too_late = allocation
        .clone()
        .record_reply(signed(
            &stack,
            "ops",
            RECORD_REPLY,
            pb::RecordReplyRequest {
                offer_id: offer.id.clone(),
                reply_code: 6521,
                phone: phone_of(first).to_string(),
                received_at: None,
            },
        ))
        .await
        .expect_err("a reply to an expired offer");
    let summary = summarize_status(&too_late);
    assert_eq!(summary.code, tonic::Code::FailedPrecondition);
    assert_eq!(summary.reason, "OFFER_EXPIRED");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_notify_cannot_deliver_is_closed_without_a_refusal() {
    let stack = start(ROUNDS_EVERY_SECOND).await;
    // The first in the queue has no phone in the mobile citizens database.
    let (unreachable, next) = (people::NO_PHONE_PERSON, people::SERVICEMAN_CLEAN);
    add_registrant(&stack, unreachable, "+77019990046", 0, 1).await;
    add_registrant(&stack, next, phone_of(next), 1, 1).await;
    let flat = add_flat(&stack, 1, 30.0).await;
    let offer = offer_of(&stack, unreachable.iin, "the first offer", |_| true).await;
    assert_eq!(offer.dwelling_id, flat.id);

    // notify finds no phone, gives up, and tells housing through the async channel.
    offer_of(
        &stack,
        unreachable.iin,
        "the offer closed undelivered",
        |offer| offer.status() == pb::OfferStatus::Undelivered,
    )
    .await;
    assert!(
        refusals(&stack, pb::ListRefusalsRequest::default())
            .await
            .is_empty(),
        "an SMS nobody received is no refusal"
    );

    // The flat goes to the next in the queue at once instead of waiting 48 hours.
    let second = offer_of(&stack, next.iin, "the offer to the next", |_| true).await;
    assert_eq!(second.dwelling_id, flat.id);
    assert_eq!(second.status(), pb::OfferStatus::Open);
    stack.stop().await;
}
