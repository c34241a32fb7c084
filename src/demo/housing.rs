//! Seed 003: automatic allocation of service housing with a 48-hour answer window. Three
//! servicemen join the Astana queue, a round offers each a flat by SMS, one accepts and one refuses
//! by SMS reply, and the third stays silent until the test clock has moved past the window. Also
//! the preflight, which guards this scenario: its people must not be on the register yet.

use anyhow::{Context, bail, ensure};
use shlyuz_kit::fixture_people::FixturePerson;
use shlyuz_kit::gateway_client::SignedChannel;
use shlyuz_proto::housing::v1 as housing_pb;
use shlyuz_proto::notify::v1 as notify_pb;
use shlyuz_proto::testing::v1 as testing_pb;

use super::{
    ACCEPTS, ASTANA, Demo, Described, Progress, REFUSES, SILENT, client, describe, phone, settle,
};

/// The reply code of the refusal: the area does not meet the norm.
const REFUSAL_CODE: i32 = 6522;

impl Demo {
    /// Before anything changes: the gateway answers, housing's register has none of the demo's
    /// people yet (a second run would find them there), and the test clock is reachable.
    pub(super) async fn preflight(&self, progress: &mut Progress) -> anyhow::Result<()> {
        progress.section("Preflight");
        progress
            .step(
                "the gateway answers and housing's register is fresh",
                async {
                    let response = self
                        .register()
                        .get_registrant(client::signed(housing_pb::GetRegistrantRequest {
                            iin: ACCEPTS.iin.to_string(),
                        }))
                        .await;
                    match response {
                        Err(status) if status.code() == tonic::Code::NotFound => {}
                        Ok(_) => bail!(
                            "{} is already on the housing register: the demo ran against this data \
                         directory before; start `shlyuz up --test-clock` with a fresh --data-dir",
                            ACCEPTS.full_name
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

    /// The allocation round: an acceptance, a refusal and a timeout.
    pub(super) async fn housing_round(&self, progress: &mut Progress) -> anyhow::Result<()> {
        progress.section("Service housing: automatic allocation with a 48-hour window (seed 003)");
        progress
            .step(
                "three servicemen join the Astana queue; three flats are free",
                async {
                    for (minute, (person, family_size)) in [(ACCEPTS, 3), (REFUSES, 1), (SILENT, 1)]
                        .into_iter()
                        .enumerate()
                    {
                        self.add_registrant(person, ASTANA, family_size, minute as i64)
                            .await?;
                    }
                    let mut stock =
                        housing_pb::housing_stock_service_client::HousingStockServiceClient::new(
                            self.ops.signed_channel(),
                        );
                    for (address, rooms, area) in [
                        ("Астана, Тұран даңғылы, 37-12", 3, 52.0),
                        ("Астана, Қабанбай батыр даңғылы, 11-40", 1, 17.5),
                        ("Астана, Сарайшық көшесі, 5-3", 1, 16.0),
                    ] {
                        stock
                            .add_dwelling(client::signed(housing_pb::AddDwellingRequest {
                                address: address.into(),
                                locality_kato: ASTANA.into(),
                                rooms,
                                total_area_m2: area,
                            }))
                            .await
                            .described()?;
                    }
                    Ok((
                        (),
                        format!(
                            "queue: {}, {}, {}",
                            ACCEPTS.full_name, REFUSES.full_name, SILENT.full_name
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
                    for person in [ACCEPTS, REFUSES, SILENT] {
                        let offer = self
                            .wait_for_offer(person, housing_pb::OfferStatus::Open)
                            .await?;
                        let person_phone = phone(person)?;
                        let text = self.wait_for_sms(person_phone, |text| text.contains("6521")).await?;
                        lines.push(format!(
                            "SMS to {person_phone}: {}…",
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
                        ACCEPTS.full_name,
                        housed.status()
                    );
                    Ok((
                        (),
                        format!(
                            "{}: lease concluded for dwelling {} (HOUSED)\n{}: refused with {} — \
                         the area does not meet the norm",
                            ACCEPTS.full_name,
                            accepted.dwelling_id,
                            REFUSES.full_name,
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
                    .list_refusals(client::signed(housing_pb::ListRefusalsRequest {
                            reply_code: -1,
                            ..Default::default()
                        },
                    ))
                    .await
                    .described()?
                    .refusals;
                let timed_out = refusals
                    .iter()
                    .find(|refusal| refusal.iin == SILENT.iin && refusal.timed_out)
                    .with_context(|| {
                        format!("no timed-out refusal for {}", SILENT.full_name)
                    })?;
                Ok((
                    (),
                    format!(
                        "{}: offer {} EXPIRED, deemed refused (6526); the flat goes to the next \
                         in the queue",
                        SILENT.full_name,
                        timed_out.offer_id
                    ),
                ))
            })
            .await
    }

    /// Operations puts `person` on the register of `locality`, reported `minute`s into the
    /// demo's morning.
    pub(super) async fn add_registrant(
        &self,
        person: FixturePerson,
        locality: &str,
        family_size: i32,
        minute: i64,
    ) -> anyhow::Result<housing_pb::Registrant> {
        self.register()
            .add_registrant(client::signed(housing_pb::AddRegistrantRequest {
                iin: person.iin.to_string(),
                full_name: person.full_name.to_string(),
                phone: phone(person)?.to_string(),
                // Reported on 2024-01-10 at 09:00 + `minute`: the queue order.
                reported_at: Some(prost_types::Timestamp {
                    seconds: 1_704_877_200 + 60 * minute,
                    nanos: 0,
                }),
                locality_kato: locality.to_string(),
                family_size,
            }))
            .await
            .described()?
            .registrant
            .context("no registrant in the response")
    }

    /// `person` as the register holds them.
    pub(super) async fn registrant(
        &self,
        person: FixturePerson,
    ) -> anyhow::Result<housing_pb::Registrant> {
        self.register()
            .get_registrant(client::signed(housing_pb::GetRegistrantRequest {
                iin: person.iin.to_string(),
            }))
            .await
            .described()?
            .registrant
            .context("no registrant in the response")
    }

    /// Runs a round now. Housing also runs rounds on its own schedule, so the demo checks the
    /// offers afterwards rather than what this round reports.
    async fn run_round(&self) -> anyhow::Result<()> {
        self.allocation()
            .run_allocation_round(client::signed(housing_pb::RunAllocationRoundRequest {}))
            .await
            .described()?;
        Ok(())
    }

    /// Waits until `person`'s latest offer has `status` (replies reach housing asynchronously).
    async fn wait_for_offer(
        &self,
        person: FixturePerson,
        status: housing_pb::OfferStatus,
    ) -> anyhow::Result<housing_pb::Offer> {
        settle(
            || async {
                let offers = self
                    .allocation()
                    .list_offers(client::signed(housing_pb::ListOffersRequest {
                        status: status as i32,
                        page_size: 1000,
                        ..Default::default()
                    }))
                    .await
                    .described()?
                    .offers;
                Ok(offers
                    .into_iter()
                    .rev()
                    .find(|offer| offer.iin == person.iin))
            },
            || format!("no {status:?} offer for {}", person.full_name),
        )
        .await
    }

    /// The citizen's SMS reaches notify (operations plays the SMS operator's webhook).
    async fn citizen_replies(&self, person: FixturePerson, text: &str) -> anyhow::Result<()> {
        let response = notify_pb::inbound_sms_service_client::InboundSmsServiceClient::new(
            self.ops.signed_channel(),
        )
        .receive_sms(client::signed(notify_pb::ReceiveSmsRequest {
            from_phone: phone(person)?.to_string(),
            text: text.to_string(),
            provider_message_id: uuid::Uuid::now_v7().to_string(),
        }))
        .await
        .described()?;
        ensure!(
            response.outcome() == notify_pb::ReplyOutcome::Routed,
            "notify did not route {text:?} from {}: {:?}",
            person.full_name,
            response.outcome()
        );
        Ok(())
    }

    /// Housing's register, as operations calls it.
    pub(super) fn register(
        &self,
    ) -> housing_pb::housing_register_service_client::HousingRegisterServiceClient<SignedChannel>
    {
        housing_pb::housing_register_service_client::HousingRegisterServiceClient::new(
            self.ops.signed_channel(),
        )
    }

    /// Housing's allocation, as operations calls it.
    fn allocation(
        &self,
    ) -> housing_pb::housing_allocation_service_client::HousingAllocationServiceClient<SignedChannel>
    {
        housing_pb::housing_allocation_service_client::HousingAllocationServiceClient::new(
            self.ops.signed_channel(),
        )
    }
}

/// A timestamp as the demo prints it, or `—` when there is none.
fn timestamp_text(timestamp: Option<prost_types::Timestamp>) -> String {
    timestamp
        .and_then(|stamp| time::OffsetDateTime::from_unix_timestamp(stamp.seconds).ok())
        .map(shlyuz_kit::envelope::format_timestamp)
        .unwrap_or_else(|| "—".to_string())
}
