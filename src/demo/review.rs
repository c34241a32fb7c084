//! Seed 002: the proactive review of the housing register. More servicemen (and the candidate, a
//! civilian) join the register, SDU starts the review, housing asks the registries through the
//! gateway, and each person is removed for the seed's reason while the clean ones stay.

use anyhow::{Context, ensure};
use shlyuz_kit::fixture_people::{self as people, FixturePerson};
use shlyuz_proto::housing::v1 as housing_pb;

use super::{ACCEPTS, ASTANA, CANDIDATE, Demo, Described, Progress, REFUSES, SILENT, client};

/// Where the candidate, a civilian, waits for housing.
const KOKSHETAU: &str = "111010000";
/// Added for the review, with the reason each is expected to be removed for.
const REVIEWED: [(FixturePerson, housing_pb::RemovalReason); 9] = [
    (
        people::SERVICEMAN_PRIVATISED,
        housing_pb::RemovalReason::PrivatisationContract,
    ),
    (REFUSES, housing_pb::RemovalReason::EquityContract),
    (SILENT, housing_pb::RemovalReason::EarlierServiceHousing),
    (
        people::SERVICEMAN_SPOUSE_STATE_HOUSING,
        housing_pb::RemovalReason::PermanentUseInLocality,
    ),
    (
        people::SERVICEMAN_SPOUSE_MISSING,
        housing_pb::RemovalReason::MissingOrDead,
    ),
    (
        people::SERVICEMAN_FOREIGN_CITIZEN,
        housing_pb::RemovalReason::NotACitizen,
    ),
    (
        people::SERVICEMAN_RESIDENT_ABROAD,
        housing_pb::RemovalReason::ResidenceAbroad,
    ),
    (
        people::SERVICEMAN_INCAPABLE,
        housing_pb::RemovalReason::Incapable,
    ),
    (
        people::SERVICEMAN_CHILD_IMPRISONED,
        housing_pb::RemovalReason::Imprisoned,
    ),
];

impl Demo {
    /// The review scenario: the register grows, SDU reviews it, each removal is checked.
    pub(super) async fn review(&self, progress: &mut Progress) -> anyhow::Result<()> {
        progress.section("Service housing: proactive review of the register (seed 002)");
        progress
            .step(
                "seven more servicemen and a civilian join the register",
                async {
                    let mut minute = 10;
                    for (person, _) in REVIEWED
                        .iter()
                        .filter(|(person, _)| ![REFUSES, SILENT].contains(person))
                    {
                        self.add_registrant(*person, ASTANA, 1, minute).await?;
                        minute += 1;
                    }
                    self.add_registrant(CANDIDATE, KOKSHETAU, 1, minute).await?;
                    let active = self
                        .register()
                        .list_registrants(client::signed(housing_pb::ListRegistrantsRequest {
                            status: housing_pb::RegistrantStatus::Active as i32,
                            page_size: 1000,
                            ..Default::default()
                        }))
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
                            self.sdu.signed_channel(),
                        )
                        .start_review(client::signed(housing_pb::StartReviewRequest {}))
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
                    for (person, reason) in REVIEWED {
                        let registrant = self.registrant(person).await?;
                        ensure!(
                            registrant.status() == housing_pb::RegistrantStatus::Removed
                                && registrant.removal_reason() == reason,
                            "{} is {:?} / {:?}, expected REMOVED / {reason:?}",
                            person.full_name,
                            registrant.status(),
                            registrant.removal_reason()
                        );
                        lines.push(format!("removed {}: {reason:?}", person.full_name));
                    }
                    for person in [ACCEPTS, CANDIDATE] {
                        let registrant = self.registrant(person).await?;
                        ensure!(
                            registrant.status() != housing_pb::RegistrantStatus::Removed,
                            "{} was removed ({:?})",
                            person.full_name,
                            registrant.removal_reason()
                        );
                        lines.push(format!(
                            "kept {}: {:?}",
                            person.full_name,
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
}
