//! Allocation, replies and the 48-hour window, on SQLite and PostgreSQL.

use crate::Housing;
use crate::norm::AreaNorm;
use crate::outbox::OutboxMessage;
use crate::register::{NewDwelling, NewRegistrant};
use shlyuz_kit::clock::ManualClock;
use shlyuz_kit::db::Database;
use shlyuz_kit::error::ApiError;
use shlyuz_kit::outbox::{DeliveryFailure, OutboxSink};
use shlyuz_proto::housing::v1 as pb;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

const ASTANA: &str = "711000000";
const ALMATY: &str = "751000000";

fn start() -> ManualClock {
    ManualClock::new(datetime!(2026-03-02 09:00 UTC))
}

async fn housing(database: &Database, clock: &ManualClock) -> Housing {
    database.migrate(&crate::MIGRATIONS).await.expect("migrate");
    Housing::new(database.clone(), clock.shared(), AreaNorm::default())
}

fn millis(instant: OffsetDateTime) -> i64 {
    i64::try_from(instant.unix_timestamp_nanos() / 1_000_000).expect("millis")
}

/// The `serial`-th valid IIN of a man born 1990-01-01 (some serials have no valid check digit).
fn iin(serial: u16) -> String {
    (1..=9999_u16)
        .filter_map(|candidate| {
            shlyuz_kit::iin::Iin::from_parts(
                time::macros::date!(1990 - 01 - 01),
                shlyuz_kit::iin::Sex::Male,
                candidate,
            )
        })
        .nth(usize::from(serial))
        .expect("iin")
        .as_str()
        .to_string()
}

fn phone(serial: u16) -> String {
    format!("+77010{serial:06}")
}

async fn register(
    housing: &Housing,
    serial: u16,
    reported: OffsetDateTime,
    locality: &str,
    family: i64,
) {
    housing
        .add_registrant(NewRegistrant {
            iin: iin(serial),
            full_name: format!("Серикбаев Ержан {serial}"),
            phone: phone(serial),
            reported_at_ms: millis(reported),
            locality_kato: locality.to_string(),
            family_size: family,
        })
        .await
        .expect("add registrant");
}

async fn dwelling(housing: &Housing, locality: &str, rooms: i64, area: f64) -> String {
    housing
        .add_dwelling(NewDwelling {
            address: format!("ул. Кенесары, {rooms}-{area}"),
            locality_kato: locality.to_string(),
            rooms,
            total_area_m2: area,
        })
        .await
        .expect("add dwelling")
        .id
}

async fn status_of(housing: &Housing, serial: u16) -> pb::Registrant {
    housing.get_registrant(&iin(serial)).await.expect("get")
}

async fn outbox_bodies(database: &Database) -> Vec<(String, String)> {
    sqlx::query_as::<_, (String, String)>("SELECT iin, body FROM outbox ORDER BY id")
        .fetch_all(database.pool())
        .await
        .expect("outbox")
}

fn reason(error: &ApiError) -> &str {
    error.reason()
}

shlyuz_kit::storage_test!(
    queue_order_and_entitled_area_pick_the_recipient,
    |database: Database| async move {
        let clock = start();
        let housing = housing(&database, &clock).await;
        // Earliest report first; a single person is not offered a three-room flat; another
        // locality's queue is never used.
        register(&housing, 1, datetime!(2024-01-10 10:00 UTC), ASTANA, 1).await;
        register(&housing, 2, datetime!(2024-02-01 10:00 UTC), ASTANA, 4).await;
        register(&housing, 3, datetime!(2023-01-01 10:00 UTC), ALMATY, 4).await;
        let flat = dwelling(&housing, ASTANA, 3, 68.5).await;

        assert_eq!(status_of(&housing, 1).await.queue_position, 1);
        assert_eq!(status_of(&housing, 2).await.queue_position, 2);

        let round = housing.run_allocation_round().await.expect("round");
        assert_eq!(round.offers_made.len(), 1);
        let offer = &round.offers_made[0];
        assert_eq!(offer.iin, iin(2));
        assert_eq!(offer.dwelling_id, flat);
        let deadline = offer.deadline.expect("deadline");
        assert_eq!(
            deadline.seconds,
            (datetime!(2026-03-04 09:00 UTC)).unix_timestamp()
        );

        let dwelling_now = housing.get_dwelling(&flat).await.expect("dwelling");
        assert_eq!(dwelling_now.status(), pb::DwellingStatus::Offered);
        let sms = outbox_bodies(&database).await;
        assert_eq!(sms.len(), 1);
        assert_eq!(sms[0].0, iin(2));
        assert!(sms[0].1.starts_with("Уважаемый Серикбаев Ержан 2!"));
        assert!(
            sms[0]
                .1
                .contains("состоящая из 3 комнат с общей площадью 68.5 кв.м.")
        );

        // A second round makes no second offer for the same dwelling or person.
        let again = housing.run_allocation_round().await.expect("round");
        assert!(again.offers_made.is_empty());
    }
);

shlyuz_kit::storage_test!(
    acceptance_concludes_the_lease,
    |database: Database| async move {
        let clock = start();
        let housing = housing(&database, &clock).await;
        register(&housing, 1, datetime!(2024-01-10 10:00 UTC), ASTANA, 2).await;
        let flat = dwelling(&housing, ASTANA, 1, 36.0).await;
        let offer = housing
            .run_allocation_round()
            .await
            .expect("round")
            .offers_made
            .remove(0);

        clock.advance(Duration::hours(5));
        let accepted = housing
            .record_reply(&offer.id, 6521, &phone(1))
            .await
            .expect("reply");
        assert_eq!(accepted.status(), pb::OfferStatus::Accepted);
        assert_eq!(accepted.reply_code, 6521);
        assert_eq!(
            housing
                .get_dwelling(&flat)
                .await
                .expect("dwelling")
                .status(),
            pb::DwellingStatus::Leased
        );
        let person = status_of(&housing, 1).await;
        assert_eq!(person.status(), pb::RegistrantStatus::Housed);
        assert_eq!(person.queue_position, 0);

        // The same reply again (an SMS retried by the operator) changes nothing.
        let duplicate = housing
            .record_reply(&offer.id, 6521, &phone(1))
            .await
            .expect("duplicate");
        assert_eq!(duplicate.status(), pb::OfferStatus::Accepted);
        // A different code after the answer is refused.
        let late_change = housing
            .record_reply(&offer.id, 6526, &phone(1))
            .await
            .map_err(ApiError::from)
            .unwrap_err();
        assert_eq!(reason(&late_change), "OFFER_ALREADY_ANSWERED");
        assert_eq!(
            housing
                .get_dwelling(&flat)
                .await
                .expect("dwelling")
                .status(),
            pb::DwellingStatus::Leased
        );
    }
);

shlyuz_kit::storage_test!(
    refusal_passes_the_dwelling_to_the_next_in_queue,
    |database: Database| async move {
        let clock = start();
        let housing = housing(&database, &clock).await;
        register(&housing, 1, datetime!(2024-01-10 10:00 UTC), ASTANA, 2).await;
        register(&housing, 2, datetime!(2024-01-11 10:00 UTC), ASTANA, 2).await;
        let flat = dwelling(&housing, ASTANA, 1, 34.0).await;
        let first = housing
            .run_allocation_round()
            .await
            .expect("round")
            .offers_made
            .remove(0);
        assert_eq!(first.iin, iin(1));

        let refused = housing
            .record_reply(&first.id, 6523, &phone(1))
            .await
            .expect("refuse");
        assert_eq!(refused.status(), pb::OfferStatus::Refused);
        assert_eq!(
            housing
                .get_dwelling(&flat)
                .await
                .expect("dwelling")
                .status(),
            pb::DwellingStatus::Free
        );
        // The duplicate refusal is idempotent.
        housing
            .record_reply(&first.id, 6523, &phone(1))
            .await
            .expect("duplicate refusal");

        let second = housing
            .run_allocation_round()
            .await
            .expect("round")
            .offers_made
            .remove(0);
        assert_eq!(second.iin, iin(2));
        assert_eq!(second.dwelling_id, flat);
        // The first person stays ACTIVE and first in the queue, but is not offered the same dwelling.
        let person = status_of(&housing, 1).await;
        assert_eq!(person.status(), pb::RegistrantStatus::Active);
        assert_eq!(person.queue_position, 1);

        let refusals = housing
            .list_refusals(&pb::ListRefusalsRequest {
                reply_code: 6523,
                ..Default::default()
            })
            .await
            .expect("refusals");
        assert_eq!(refusals.refusals.len(), 1);
        assert_eq!(refusals.refusals[0].iin, iin(1));
        assert!(!refusals.refusals[0].timed_out);
    }
);

shlyuz_kit::storage_test!(
    reply_6527_limits_future_offers_to_the_norm,
    |database: Database| async move {
        let clock = start();
        let housing = housing(&database, &clock).await;
        // Family of four: entitled 60–72 m²; a 50 m² two-room flat is smaller than the norm.
        register(&housing, 1, datetime!(2024-01-10 10:00 UTC), ASTANA, 4).await;
        let small = dwelling(&housing, ASTANA, 2, 50.0).await;
        let offer = housing
            .run_allocation_round()
            .await
            .expect("round")
            .offers_made
            .remove(0);
        assert_eq!(offer.dwelling_id, small);
        housing
            .record_reply(&offer.id, 6527, &phone(1))
            .await
            .expect("6527");
        assert!(status_of(&housing, 1).await.norm_matching_only);

        let other_small = dwelling(&housing, ASTANA, 2, 52.0).await;
        assert!(
            housing
                .run_allocation_round()
                .await
                .expect("round")
                .offers_made
                .is_empty()
        );
        let fitting = dwelling(&housing, ASTANA, 3, 66.0).await;
        let round = housing.run_allocation_round().await.expect("round");
        assert_eq!(round.offers_made.len(), 1);
        assert_eq!(round.offers_made[0].dwelling_id, fitting);
        assert_ne!(round.offers_made[0].dwelling_id, other_small);
    }
);

shlyuz_kit::storage_test!(
    no_answer_in_48_hours_is_a_refusal_even_after_a_restart,
    |database: Database| async move {
        let clock = start();
        let first_process = housing(&database, &clock).await;
        register(
            &first_process,
            1,
            datetime!(2024-01-10 10:00 UTC),
            ASTANA,
            1,
        )
        .await;
        register(
            &first_process,
            2,
            datetime!(2024-01-12 10:00 UTC),
            ASTANA,
            1,
        )
        .await;
        let flat = dwelling(&first_process, ASTANA, 1, 30.0).await;
        let offer = first_process
            .run_allocation_round()
            .await
            .expect("round")
            .offers_made
            .remove(0);
        drop(first_process);

        // A new process over the same database, just before the deadline: nothing expires.
        let restarted = housing(&database, &clock).await;
        clock.advance(Duration::hours(48) - Duration::seconds(1));
        let early = restarted.run_allocation_round().await.expect("round");
        assert_eq!(early.offers_expired, 0);
        assert!(early.offers_made.is_empty());

        clock.advance(Duration::seconds(1));
        let late_reply = restarted
            .record_reply(&offer.id, 6521, &phone(1))
            .await
            .map_err(ApiError::from)
            .unwrap_err();
        assert_eq!(reason(&late_reply), "OFFER_EXPIRED");
        assert_eq!(
            status_of(&restarted, 1).await.status(),
            pb::RegistrantStatus::Active
        );

        let round = restarted.run_allocation_round().await.expect("round");
        assert_eq!(round.offers_made.len(), 1);
        assert_eq!(round.offers_made[0].iin, iin(2));
        assert_eq!(round.offers_made[0].dwelling_id, flat);

        let timeouts = restarted
            .list_refusals(&pb::ListRefusalsRequest {
                reply_code: -1,
                ..Default::default()
            })
            .await
            .expect("timeouts");
        assert_eq!(timeouts.refusals.len(), 1);
        assert!(timeouts.refusals[0].timed_out);
        assert_eq!(timeouts.refusals[0].reply_code, 0);
    }
);

shlyuz_kit::storage_test!(
    bad_replies_are_refused_without_changes,
    |database: Database| async move {
        let clock = start();
        let housing = housing(&database, &clock).await;
        register(&housing, 1, datetime!(2024-01-10 10:00 UTC), ASTANA, 1).await;
        let flat = dwelling(&housing, ASTANA, 1, 30.0).await;
        let offer = housing
            .run_allocation_round()
            .await
            .expect("round")
            .offers_made
            .remove(0);

        let stranger = housing
            .record_reply(&offer.id, 6521, &phone(99))
            .await
            .map_err(ApiError::from)
            .unwrap_err();
        assert_eq!(stranger.code(), tonic::Code::PermissionDenied);
        assert_eq!(reason(&stranger), "REPLY_PHONE_MISMATCH");
        // Through notify the sender is the reply window's recipient: another person's is refused.
        let other_window = housing
            .record_notify_reply(&offer.id, 6521, &iin(2), None)
            .await
            .map_err(ApiError::from)
            .unwrap_err();
        assert_eq!(other_window.code(), tonic::Code::PermissionDenied);
        assert_eq!(reason(&other_window), "REPLY_RECIPIENT_MISMATCH");
        let unknown = housing
            .record_reply(&uuid::Uuid::now_v7().to_string(), 6521, &phone(1))
            .await
            .map_err(ApiError::from)
            .unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::NotFound);
        assert_eq!(reason(&unknown), "OFFER_NOT_FOUND");
        let bad_code = housing
            .record_reply(&offer.id, 6528, &phone(1))
            .await
            .map_err(ApiError::from)
            .unwrap_err();
        assert_eq!(bad_code.code(), tonic::Code::InvalidArgument);
        assert_eq!(bad_code.field_violations()[0].field, "reply_code");

        assert_eq!(
            housing
                .get_dwelling(&flat)
                .await
                .expect("dwelling")
                .status(),
            pb::DwellingStatus::Offered
        );
        let open = housing
            .list_offers(&pb::ListOffersRequest {
                status: pb::OfferStatus::Open as i32,
                ..Default::default()
            })
            .await
            .expect("offers");
        assert_eq!(open.offers.len(), 1);
    }
);

shlyuz_kit::storage_test!(
    two_rounds_at_once_never_offer_a_dwelling_twice,
    |database: Database| async move {
        let clock = start();
        let housing = housing(&database, &clock).await;
        for serial in 1..=30 {
            register(
                &housing,
                serial,
                datetime!(2024-01-10 10:00 UTC) + Duration::minutes(i64::from(serial)),
                ASTANA,
                1,
            )
            .await;
        }
        for _ in 0..20 {
            dwelling(&housing, ASTANA, 1, 30.0).await;
        }
        let other = housing.clone();
        let (first, second) = tokio::join!(
            tokio::spawn(async move { other.run_allocation_round().await }),
            housing.run_allocation_round(),
        );
        let first = first.expect("join").expect("first round");
        let second = second.expect("second round");
        assert_eq!(first.offers_made.len() + second.offers_made.len(), 20);

        let open = housing
            .list_offers(&pb::ListOffersRequest {
                status: pb::OfferStatus::Open as i32,
                ..Default::default()
            })
            .await
            .expect("offers");
        assert_eq!(open.offers.len(), 20);
        let dwellings: std::collections::HashSet<_> = open
            .offers
            .iter()
            .map(|offer| offer.dwelling_id.clone())
            .collect();
        let persons: std::collections::HashSet<_> =
            open.offers.iter().map(|offer| offer.iin.clone()).collect();
        assert_eq!(dwellings.len(), 20);
        assert_eq!(persons.len(), 20);
        // The first twenty in the queue got them.
        for serial in 1..=20 {
            assert!(persons.contains(&iin(serial)), "person {serial} skipped");
        }
        assert_eq!(outbox_bodies(&database).await.len(), 20);
    }
);

shlyuz_kit::storage_test!(bad_input_names_the_field, |database: Database| async move {
    let clock = start();
    let housing = housing(&database, &clock).await;
    let error = housing
        .add_registrant(NewRegistrant {
            iin: "123".into(),
            full_name: " ".into(),
            phone: "8701".into(),
            reported_at_ms: 0,
            locality_kato: "71".into(),
            family_size: 0,
        })
        .await
        .map_err(ApiError::from)
        .unwrap_err();
    let fields: Vec<_> = error
        .field_violations()
        .iter()
        .map(|violation| violation.field.as_str())
        .collect();
    assert_eq!(
        fields,
        [
            "iin",
            "full_name",
            "phone",
            "reported_at",
            "locality_kato",
            "family_size"
        ]
    );
    register(&housing, 1, datetime!(2024-01-10 10:00 UTC), ASTANA, 1).await;
    let duplicate = housing
        .add_registrant(NewRegistrant {
            iin: iin(1),
            full_name: "X".into(),
            phone: phone(1),
            reported_at_ms: 1,
            locality_kato: ASTANA.into(),
            family_size: 1,
        })
        .await
        .map_err(ApiError::from)
        .unwrap_err();
    assert_eq!(duplicate.reason(), "REGISTRANT_EXISTS");
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM registrants")
        .fetch_one(database.pool())
        .await
        .expect("count");
    assert_eq!(count, 1);
});

shlyuz_kit::storage_test!(lists_page_in_queue_order, |database: Database| async move {
    let clock = start();
    let housing = housing(&database, &clock).await;
    for serial in [5_u16, 3, 4, 1, 2] {
        register(
            &housing,
            serial,
            datetime!(2024-01-10 10:00 UTC) + Duration::hours(i64::from(serial)),
            ASTANA,
            1,
        )
        .await;
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = housing
            .list_registrants(&pb::ListRegistrantsRequest {
                page_size: 2,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .expect("page");
        seen.extend(
            page.registrants
                .iter()
                .map(|registrant| (registrant.iin.clone(), registrant.queue_position)),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let expected: Vec<_> = (1..=5_u16)
        .map(|serial| (iin(serial), i64::from(serial)))
        .collect();
    assert_eq!(seen, expected);
});

shlyuz_kit::storage_test!(
    a_reply_received_in_time_counts_when_recorded_late,
    |database: Database| async move {
        let clock = start();
        let housing = housing(&database, &clock).await;
        register(&housing, 1, datetime!(2024-01-10 10:00 UTC), ASTANA, 1).await;
        let flat = dwelling(&housing, ASTANA, 1, 30.0).await;
        let offer = housing
            .run_allocation_round()
            .await
            .expect("round")
            .offers_made
            .remove(0);

        // The SMS reached notify 47 hours in; housing records it at 49 hours, before any round ran.
        clock.advance(Duration::hours(49));
        let received = millis(datetime!(2026-03-02 09:00 UTC) + Duration::hours(47));
        let accepted = housing
            .record_reply_received_at(&offer.id, 6521, &phone(1), Some(received))
            .await
            .expect("reply in time");
        assert_eq!(accepted.status(), pb::OfferStatus::Accepted);
        assert_eq!(
            housing
                .get_dwelling(&flat)
                .await
                .expect("dwelling")
                .status(),
            pb::DwellingStatus::Leased
        );
    }
);

shlyuz_kit::storage_test!(
    the_earliest_matching_report_wins_across_family_sizes,
    |database: Database| async move {
        let clock = start();
        let housing = housing(&database, &clock).await;
        // A one-room flat fits everyone: the earliest report gets it whatever the family size.
        register(&housing, 1, datetime!(2024-03-01 10:00 UTC), ASTANA, 1).await;
        register(&housing, 2, datetime!(2024-01-01 10:00 UTC), ASTANA, 3).await;
        register(&housing, 3, datetime!(2024-02-01 10:00 UTC), ASTANA, 1).await;
        let one_room = dwelling(&housing, ASTANA, 1, 33.0).await;
        let two_rooms = dwelling(&housing, ASTANA, 2, 50.0).await;
        let offers = housing
            .run_allocation_round()
            .await
            .expect("round")
            .offers_made;
        // Each dwelling in turn goes to the first in queue it fits: the one-room flat (first in the
        // stock) to the family of three, the earliest report; the single persons are not entitled to
        // a two-room flat of 50 m², so it stays free.
        assert_eq!(offers.len(), 1);
        assert_eq!(offers[0].dwelling_id, one_room);
        assert_eq!(offers[0].iin, iin(2));
        assert_eq!(
            housing
                .get_dwelling(&two_rooms)
                .await
                .expect("dwelling")
                .status(),
            pb::DwellingStatus::Free
        );
    }
);

/// A sink that accepts `accept` messages, then fails like an unreachable notify.
struct FlakySink {
    accept: std::sync::atomic::AtomicUsize,
    delivered: std::sync::Mutex<Vec<String>>,
}

impl OutboxSink<OutboxMessage> for FlakySink {
    async fn deliver(&self, message: &OutboxMessage) -> Result<(), DeliveryFailure> {
        use std::sync::atomic::Ordering;
        if self.accept.load(Ordering::SeqCst) == 0 {
            return Err(DeliveryFailure::Transient("notify is down".to_string()));
        }
        self.accept.fetch_sub(1, Ordering::SeqCst);
        self.delivered
            .lock()
            .expect("lock")
            .push(message.iin.clone());
        Ok(())
    }
}

shlyuz_kit::storage_test!(
    the_outbox_relay_resumes_where_delivery_failed,
    |database: Database| async move {
        let clock = start();
        let housing = housing(&database, &clock).await;
        for serial in 1..=3 {
            register(
                &housing,
                serial,
                datetime!(2024-01-10 10:00 UTC) + Duration::hours(i64::from(serial)),
                ASTANA,
                1,
            )
            .await;
            dwelling(&housing, ASTANA, 1, 30.0).await;
        }
        let offers = housing
            .run_allocation_round()
            .await
            .expect("round")
            .offers_made;
        assert_eq!(offers.len(), 3);
        // Each SMS carries what notify needs: the offer template and a reply window named by
        // the offer id that closes at the offer's deadline.
        let unsent = housing.unsent_messages(100).await.expect("unsent");
        for (message, offer) in unsent.iter().zip(&offers) {
            assert_eq!(message.template_id, "housing.offer");
            assert_eq!(message.correlation_id, offer.id);
            let deadline = offer.deadline.expect("deadline");
            assert_eq!(message.expires_at_ms, deadline.seconds * 1000);
            let parameters: std::collections::HashMap<String, String> =
                serde_json::from_str(&message.parameters).expect("parameters");
            assert_eq!(parameters["rooms"], "1");
            assert_eq!(parameters["area"], "30");
        }

        let sink = FlakySink {
            accept: 1.into(),
            delivered: Default::default(),
        };
        assert_eq!(housing.relay_outbox(&sink, 100).await.expect("relay"), 1);
        assert_eq!(housing.unsent_messages(100).await.expect("unsent").len(), 2);
        sink.accept.store(10, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(housing.relay_outbox(&sink, 100).await.expect("relay"), 2);
        assert!(
            housing
                .unsent_messages(100)
                .await
                .expect("unsent")
                .is_empty()
        );
        let delivered = sink.delivered.lock().expect("lock").clone();
        assert_eq!(delivered, [iin(1), iin(2), iin(3)]);
    }
);

/// A sink that refuses the messages of one person for good (as notify refuses a notice it can
/// never send) and delivers the others.
struct RefusingSink {
    refused_iin: String,
    delivered: std::sync::Mutex<Vec<String>>,
}

impl OutboxSink<OutboxMessage> for RefusingSink {
    async fn deliver(&self, message: &OutboxMessage) -> Result<(), DeliveryFailure> {
        if message.iin == self.refused_iin {
            return Err(DeliveryFailure::Refused(
                "notify refused: FailedPrecondition: no such template".to_string(),
            ));
        }
        self.delivered
            .lock()
            .expect("lock")
            .push(message.iin.clone());
        Ok(())
    }
}

shlyuz_kit::storage_test!(
    a_message_refused_for_good_is_parked_and_the_others_still_go_out,
    |database: Database| async move {
        let clock = start();
        let housing = housing(&database, &clock).await;
        for serial in 1..=3 {
            register(
                &housing,
                serial,
                datetime!(2024-01-10 10:00 UTC) + Duration::hours(i64::from(serial)),
                ASTANA,
                1,
            )
            .await;
            dwelling(&housing, ASTANA, 1, 30.0).await;
        }
        let offers = housing
            .run_allocation_round()
            .await
            .expect("round")
            .offers_made;
        assert_eq!(offers.len(), 3);

        let sink = RefusingSink {
            refused_iin: iin(2),
            delivered: Default::default(),
        };
        assert_eq!(housing.relay_outbox(&sink, 100).await.expect("relay"), 3);
        assert_eq!(
            sink.delivered.lock().expect("lock").clone(),
            [iin(1), iin(3)],
            "the message behind the refused one went out"
        );
        assert!(
            housing
                .unsent_messages(100)
                .await
                .expect("unsent")
                .is_empty()
        );
        let refused = housing.refused_messages(100).await.expect("refused");
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].message.iin, iin(2));
        assert_eq!(refused[0].message.correlation_id, offers[1].id);
        assert_eq!(
            refused[0].refusal,
            "notify refused: FailedPrecondition: no such template"
        );
        assert_eq!(
            refused[0].refused_at_ms,
            shlyuz_kit::clock::Clock::now_millis(&clock)
        );

        // A parked message is not tried again.
        assert_eq!(housing.relay_outbox(&sink, 100).await.expect("relay"), 0);
        assert_eq!(sink.delivered.lock().expect("lock").len(), 2);
        // The offer whose SMS can never go out is closed as undelivered, not left to time out.
        let offers = housing
            .list_offers(&pb::ListOffersRequest::default())
            .await
            .expect("offers")
            .offers;
        let parked = offers
            .iter()
            .find(|offer| offer.id == refused[0].message.correlation_id)
            .expect("the parked offer");
        assert_eq!(parked.status(), pb::OfferStatus::Undelivered);
    }
);

shlyuz_kit::storage_test!(
    a_round_waits_out_the_reply_grace_before_recording_a_timeout,
    |database: Database| async move {
        let clock = start();
        let housing = housing(&database, &clock).await;
        register(&housing, 1, datetime!(2024-01-10 10:00 UTC), ASTANA, 1).await;
        register(&housing, 2, datetime!(2024-01-11 10:00 UTC), ASTANA, 1).await;
        dwelling(&housing, ASTANA, 1, 30.0).await;
        dwelling(&housing, ASTANA, 1, 30.0).await;
        let offers = housing
            .run_allocation_round()
            .await
            .expect("round")
            .offers_made;
        assert_eq!(offers.len(), 2);

        // Ten minutes past the deadline, within the 15-minute grace: nothing expires yet, and the
        // first person's "6521", received by notify a minute before the deadline, still counts.
        clock.advance(crate::ANSWER_WINDOW + Duration::minutes(10));
        let within = housing.run_allocation_round().await.expect("round");
        assert_eq!(within.offers_expired, 0);
        let received = millis(datetime!(2026-03-02 09:00 UTC) + crate::ANSWER_WINDOW) - 60_000;
        let accepted = housing
            .record_reply_received_at(&offers[0].id, 6521, &phone(1), Some(received))
            .await
            .expect("a reply received in time");
        assert_eq!(accepted.status(), pb::OfferStatus::Accepted);

        // Past the grace the silent one is refused by timeout.
        clock.advance(Duration::minutes(6));
        let after = housing.run_allocation_round().await.expect("round");
        assert_eq!(after.offers_expired, 1);
        let timeouts = housing
            .list_refusals(&pb::ListRefusalsRequest {
                reply_code: -1,
                ..Default::default()
            })
            .await
            .expect("timeouts")
            .refusals;
        assert_eq!(timeouts.len(), 1);
        assert_eq!(timeouts[0].iin, iin(2));
    }
);

shlyuz_kit::storage_test!(
    an_undelivered_offer_is_no_refusal_and_the_flat_goes_to_the_next,
    |database: Database| async move {
        let clock = start();
        let housing = housing(&database, &clock).await;
        register(&housing, 1, datetime!(2024-01-10 10:00 UTC), ASTANA, 1).await;
        register(&housing, 2, datetime!(2024-01-11 10:00 UTC), ASTANA, 1).await;
        let flat = dwelling(&housing, ASTANA, 1, 30.0).await;
        let offer = housing
            .run_allocation_round()
            .await
            .expect("round")
            .offers_made
            .remove(0);
        assert_eq!(offer.iin, iin(1));

        // notify found no phone for the first person: the offer closes without a refusal.
        let closed = housing
            .record_undelivered(&offer.id, &iin(1), "PHONE_NOT_FOUND")
            .await
            .expect("undelivered");
        assert_eq!(closed.status(), pb::OfferStatus::Undelivered);
        assert_eq!(
            housing
                .record_undelivered(&offer.id, &iin(1), "PHONE_NOT_FOUND")
                .await
                .expect("again")
                .status(),
            pb::OfferStatus::Undelivered,
            "a repeated report changes nothing"
        );
        let refusals = housing
            .list_refusals(&pb::ListRefusalsRequest::default())
            .await
            .expect("refusals");
        assert!(refusals.refusals.is_empty(), "{refusals:?}");
        let first = status_of(&housing, 1).await;
        assert_eq!(first.status(), pb::RegistrantStatus::Active);
        assert_eq!(first.queue_position, 1, "the place in the queue is kept");
        let until = first.unreachable_until.expect("unreachable until");
        assert_eq!(
            until.seconds * 1000,
            millis(datetime!(2026-03-02 09:00 UTC) + crate::UNREACHABLE_PAUSE)
        );
        let late = housing
            .record_reply(&offer.id, 6521, &phone(1))
            .await
            .map_err(ApiError::from)
            .expect_err("a reply to an undelivered offer");
        assert_eq!(reason(&late), "OFFER_UNDELIVERED");

        // The next round offers the flat to the next in the queue.
        let next = housing
            .run_allocation_round()
            .await
            .expect("round")
            .offers_made;
        assert_eq!(next.len(), 1);
        assert_eq!(
            (next[0].iin.as_str(), next[0].dwelling_id.as_str()),
            (iin(2).as_str(), flat.as_str())
        );

        // After the pause the first person is offered again.
        let another = dwelling(&housing, ASTANA, 1, 30.0).await;
        assert!(
            housing
                .run_allocation_round()
                .await
                .expect("round")
                .offers_made
                .is_empty(),
            "still paused"
        );
        clock.advance(crate::UNREACHABLE_PAUSE);
        let again = housing
            .run_allocation_round()
            .await
            .expect("round")
            .offers_made;
        assert_eq!(again.len(), 1);
        assert_eq!(
            (again[0].iin.as_str(), again[0].dwelling_id.as_str()),
            (iin(1).as_str(), another.as_str())
        );
    }
);
