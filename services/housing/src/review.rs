//! Proactive review of the register (seed 002): for every ACTIVE person, the checks in the seed's
//! order — family from the civil registry (step 5), privatisation (6), equity contract (7),
//! earlier service housing (8), permanent use of state housing in the locality (9), then the
//! criteria of step 10 (missing/dead, citizenship, residence abroad, incapacity, imprisonment) —
//! through [`RegistryChecks`]; a person who fails a check is removed with that reason, the seed-002
//! notice goes to the personal cabinet through the outbox, and each run leaves a report.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;

use futures::StreamExt as _;
use shlyuz_kit::paging;
use shlyuz_proto::housing::v1 as pb;
use sqlx::Row;

use crate::Housing;
use crate::model::{HousingError, RemovalReason, timestamp_from_millis};
use crate::outbox::{OutboxChannel, OutboxTemplate, enqueue};
use crate::register::{malformed_page_token, request_page_after, request_page_size};
use crate::texts::{REMOVAL_TEMPLATE, removal_notice, removal_parameters};

/// What the person registry (ГБД ФЛ) says about one person, for the criteria of step 10.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PersonFacts {
    /// Declared missing or dead.
    pub missing_or_dead: bool,
    /// A citizen of Kazakhstan.
    pub citizen: bool,
    /// Permanent residence in another country.
    pub residence_abroad: bool,
    /// Declared legally incapable by a court.
    pub incapable: bool,
}

/// A registry look-up of the review that failed: the persons it was for stay on the register,
/// counted as not checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the {registry} look-up failed: {message}")]
pub struct LookupFailed {
    /// The registry asked, e.g. `civil registry`.
    pub registry: String,
    /// What went wrong.
    pub message: String,
}

/// The registry look-ups of the review, each for a batch of IINs (persons and family members).
/// Implementations: [`crate::gateway_checks::GatewayRegistryChecks`] (the registries through the
/// gateway) and in-memory ones in tests.
pub trait RegistryChecks: Send + Sync {
    /// Step 5: each person's family members (current spouse, children) by IIN.
    fn families(
        &self,
        iins: &[String],
    ) -> impl Future<Output = Result<HashMap<String, Vec<String>>, LookupFailed>> + Send;
    /// Step 6: the IINs that hold a housing privatisation contract.
    fn with_privatisation_contract(
        &self,
        iins: &[String],
    ) -> impl Future<Output = Result<HashSet<String>, LookupFailed>> + Send;
    /// Step 7: the IINs with an equity contract for housing construction.
    fn with_equity_contract(
        &self,
        iins: &[String],
    ) -> impl Future<Output = Result<HashSet<String>, LookupFailed>> + Send;
    /// Step 8: the IINs that received service housing at an earlier place of service.
    fn with_earlier_service_housing(
        &self,
        iins: &[String],
    ) -> impl Future<Output = Result<HashSet<String>, LookupFailed>> + Send;
    /// Step 9: the IINs with housing in permanent use from the state fund in `locality_kato`.
    fn with_permanent_use_in(
        &self,
        iins: &[String],
        locality_kato: &str,
    ) -> impl Future<Output = Result<HashSet<String>, LookupFailed>> + Send;
    /// Step 10.1–10.4: what the person registry says; unknown IINs are absent.
    fn persons(
        &self,
        iins: &[String],
    ) -> impl Future<Output = Result<HashMap<String, PersonFacts>, LookupFailed>> + Send;
    /// Step 10.5: the IINs currently in a place of deprivation of liberty.
    fn imprisoned(
        &self,
        iins: &[String],
    ) -> impl Future<Output = Result<HashSet<String>, LookupFailed>> + Send;
}

/// How a review run spreads its work.
#[derive(Debug, Clone, Copy)]
pub struct ReviewSettings {
    /// Persons checked together; their family members are added to each batch look-up.
    pub persons_per_chunk: usize,
    /// Chunks checked at the same time.
    pub concurrency: usize,
}

impl Default for ReviewSettings {
    fn default() -> Self {
        Self {
            persons_per_chunk: 200,
            concurrency: 4,
        }
    }
}

/// A person under review.
#[derive(Debug, Clone)]
struct Subject {
    iin: String,
    locality_kato: String,
    family_size: i64,
}

/// What the checks decided for one chunk.
#[derive(Debug, Default)]
struct ChunkOutcome {
    family_sizes: Vec<(String, i64)>,
    removals: Vec<(String, RemovalReason)>,
}

impl Housing {
    /// Reviews every ACTIVE person with `checks` and returns the run's report. A chunk whose
    /// look-ups fail keeps its persons on the register (counted as not checked); nobody is removed
    /// on incomplete data.
    pub async fn run_review<C: RegistryChecks>(
        &self,
        checks: &C,
        settings: ReviewSettings,
    ) -> Result<pb::ReviewRun, HousingError> {
        let run_id = uuid::Uuid::now_v7().hyphenated().to_string();
        sqlx::query("INSERT INTO review_runs (id, started_at_ms) VALUES ($1, $2)")
            .bind(&run_id)
            .bind(self.now_millis())
            .execute(self.database.pool())
            .await?;
        let rows = sqlx::query(
            "SELECT iin, locality_kato, family_size FROM registrants WHERE status = 'ACTIVE' ORDER BY reported_at_ms, iin",
        )
        .fetch_all(self.database.pool())
        .await?;
        let subjects = rows
            .iter()
            .map(|row| {
                Ok(Subject {
                    iin: row.try_get("iin")?,
                    locality_kato: row.try_get("locality_kato")?,
                    family_size: row.try_get("family_size")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let persons_checked = i64::try_from(subjects.len()).unwrap_or(i64::MAX);

        // Owned chunks: a stream over borrowed slices makes the future not provably `Send`.
        let chunks: Vec<Vec<Subject>> = subjects
            .chunks(settings.persons_per_chunk.max(1))
            .map(<[Subject]>::to_vec)
            .collect();
        let mut outcomes = futures::stream::iter(chunks)
            .map(|chunk| async move { (chunk.len(), review_chunk(checks, &chunk).await) })
            .buffer_unordered(settings.concurrency.max(1));
        let mut persons_not_checked = 0_i64;
        let mut persons_removed = 0_i64;
        while let Some((chunk_len, outcome)) = outcomes.next().await {
            match outcome {
                Ok(outcome) => persons_removed += self.apply_chunk(&run_id, outcome).await?,
                Err(error) => {
                    tracing::warn!(review_id = %run_id, persons = chunk_len, error = %error, "review chunk not checked");
                    persons_not_checked += i64::try_from(chunk_len).unwrap_or(i64::MAX);
                }
            }
        }
        sqlx::query(
            "UPDATE review_runs SET finished_at_ms = $2, persons_checked = $3, persons_removed = $4 WHERE id = $1",
        )
        .bind(&run_id)
        .bind(self.now_millis())
        .bind(persons_checked - persons_not_checked)
        .bind(persons_removed)
        .execute(self.database.pool())
        .await?;
        tracing::info!(review_id = %run_id, persons_checked, persons_removed, persons_not_checked, "review run done");
        let mut report = self.get_review(&run_id).await?;
        report.persons_not_checked = persons_not_checked;
        Ok(report)
    }

    /// Writes one chunk's decisions in one transaction; returns how many persons were removed.
    async fn apply_chunk(&self, run_id: &str, outcome: ChunkOutcome) -> Result<i64, HousingError> {
        let now = self.now_millis();
        let mut transaction = self.database.pool().begin().await?;
        for (iin, family_size) in &outcome.family_sizes {
            sqlx::query(
                "UPDATE registrants SET family_size = $2, updated_at_ms = $3 WHERE iin = $1 AND status = 'ACTIVE' AND family_size <> $2",
            )
            .bind(iin)
            .bind(*family_size)
            .bind(now)
            .execute(&mut *transaction)
            .await?;
        }
        let mut removed = 0;
        for (iin, reason) in &outcome.removals {
            let updated = sqlx::query(
                "UPDATE registrants SET status = 'REMOVED', removal_reason = $2, has_open_offer = 0, updated_at_ms = $3
                 WHERE iin = $1 AND status = 'ACTIVE'",
            )
            .bind(iin)
            .bind(reason.as_str())
            .bind(now)
            .execute(&mut *transaction)
            .await?;
            if updated.rows_affected() != 1 {
                continue;
            }
            // An offer still open for a removed person is withdrawn and its dwelling freed.
            let open_offer: Option<(String, String)> = sqlx::query_as(
                "SELECT id, dwelling_id FROM offers WHERE iin = $1 AND status = 'OPEN'",
            )
            .bind(iin)
            .fetch_optional(&mut *transaction)
            .await?;
            if let Some((offer_id, dwelling_id)) = open_offer {
                crate::allocation::close_open_offer(
                    &mut transaction,
                    now,
                    crate::allocation::OfferIds {
                        offer_id: &offer_id,
                        dwelling_id: &dwelling_id,
                        iin,
                    },
                    crate::model::OfferStatus::Withdrawn,
                    None,
                )
                .await?;
            }
            sqlx::query(
                "INSERT INTO removals (iin, review_id, reason, removed_at_ms) VALUES ($1, $2, $3, $4)",
            )
            .bind(iin)
            .bind(run_id)
            .bind(reason.as_str())
            .bind(now)
            .execute(&mut *transaction)
            .await?;
            enqueue(
                &mut transaction,
                now,
                OutboxChannel::Cabinet,
                iin,
                "",
                &removal_notice(*reason),
                &OutboxTemplate {
                    template_id: REMOVAL_TEMPLATE,
                    parameters: removal_parameters(*reason),
                    correlation_id: "",
                    expires_at_ms: 0,
                },
            )
            .await?;
            removed += 1;
        }
        transaction.commit().await?;
        Ok(removed)
    }

    /// The report of one run; unknown is `NOT_FOUND` (`REVIEW_NOT_FOUND`).
    pub async fn get_review(&self, id: &str) -> Result<pb::ReviewRun, HousingError> {
        if uuid::Uuid::parse_str(id).is_err() {
            return Err(HousingError::invalid_field("id", "must be a UUID"));
        }
        let row = sqlx::query(
            "SELECT id, started_at_ms, finished_at_ms, persons_checked, persons_removed FROM review_runs WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.database.pool())
        .await?
        .ok_or(HousingError::ReviewNotFound)?;
        let counts = sqlx::query(
            "SELECT reason, COUNT(*) AS removed FROM removals WHERE review_id = $1 GROUP BY reason",
        )
        .bind(id)
        .fetch_all(self.database.pool())
        .await?;
        let mut removals_by_reason = Vec::new();
        for count in &counts {
            let reason: String = count.try_get("reason")?;
            if let Some(reason) = RemovalReason::parse(&reason) {
                removals_by_reason.push((reason, count.try_get::<i64, _>("removed")?));
            }
        }
        removals_by_reason.sort();
        let finished_at_ms: Option<i64> = row.try_get("finished_at_ms")?;
        Ok(pb::ReviewRun {
            id: row.try_get("id")?,
            started_at: Some(timestamp_from_millis(row.try_get("started_at_ms")?)),
            finished_at: finished_at_ms.map(timestamp_from_millis),
            persons_checked: row.try_get("persons_checked")?,
            persons_removed: row.try_get("persons_removed")?,
            removals_by_reason: removals_by_reason
                .into_iter()
                .map(|(reason, count)| pb::ReasonCount {
                    reason: reason.to_proto() as i32,
                    count,
                })
                .collect(),
            persons_not_checked: 0,
        })
    }

    /// Review runs, newest first.
    pub async fn list_reviews(
        &self,
        request: &pb::ListReviewsRequest,
    ) -> Result<pb::ListReviewsResponse, HousingError> {
        let page_size = request_page_size(request.page_size)?;
        let scope = "reviews";
        let before = request_page_after(&request.page_token, scope)?;
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM review_runs WHERE ($1 = '' OR id < $1) ORDER BY id DESC LIMIT $2",
        )
        .bind(before.unwrap_or_default())
        .bind(i64::try_from(page_size + 1).unwrap_or(i64::MAX))
        .fetch_all(self.database.pool())
        .await?;
        let mut reviews = Vec::new();
        for id in ids.iter().take(page_size) {
            reviews.push(self.get_review(id).await?);
        }
        let next_page_token = match (ids.len() > page_size, reviews.last()) {
            (true, Some(last)) => paging::encode_page_token(scope, &last.id),
            _ => String::new(),
        };
        Ok(pb::ListReviewsResponse {
            reviews,
            next_page_token,
        })
    }

    /// Removals, oldest first, optionally of one reason.
    pub async fn list_removals(
        &self,
        request: &pb::ListRemovalsRequest,
    ) -> Result<pb::ListRemovalsResponse, HousingError> {
        let page_size = request_page_size(request.page_size)?;
        let reason = RemovalReason::from_proto(request.reason());
        let reason_text = reason.map(RemovalReason::as_str).unwrap_or("");
        let scope = format!("removals:{reason_text}");
        let after = request_page_after(&request.page_token, &scope)?;
        let (after_ms, after_iin) = match after.as_deref().map(|key| key.split_once('/')) {
            None => (i64::MIN, String::new()),
            Some(Some((millis, iin))) => (
                millis.parse::<i64>().map_err(|_| malformed_page_token())?,
                iin.to_string(),
            ),
            Some(None) => return Err(malformed_page_token()),
        };
        let rows = sqlx::query(
            "SELECT iin, review_id, reason, removed_at_ms FROM removals
             WHERE ($1 = '' OR reason = $1) AND (removed_at_ms > $2 OR (removed_at_ms = $2 AND iin > $3))
             ORDER BY removed_at_ms, iin LIMIT $4",
        )
        .bind(reason_text)
        .bind(after_ms)
        .bind(&after_iin)
        .bind(i64::try_from(page_size + 1).unwrap_or(i64::MAX))
        .fetch_all(self.database.pool())
        .await?;
        let mut removals = Vec::new();
        let mut last_key = String::new();
        for row in rows.iter().take(page_size) {
            let stored_reason: String = row.try_get("reason")?;
            let removed_at_ms: i64 = row.try_get("removed_at_ms")?;
            let iin: String = row.try_get("iin")?;
            last_key = format!("{removed_at_ms}/{iin}");
            removals.push(pb::Removal {
                iin,
                reason: RemovalReason::parse(&stored_reason)
                    .map(|reason| reason.to_proto() as i32)
                    .unwrap_or_default(),
                review_id: row.try_get("review_id")?,
                removed_at: Some(timestamp_from_millis(removed_at_ms)),
            });
        }
        let next_page_token = if rows.len() > page_size {
            paging::encode_page_token(&scope, &last_key)
        } else {
            String::new()
        };
        Ok(pb::ListRemovalsResponse {
            removals,
            next_page_token,
        })
    }
}

/// The persons' IINs and their family members', without repeats.
fn with_families(subjects: &[&Subject], families: &HashMap<String, Vec<String>>) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut iins = Vec::new();
    for subject in subjects {
        let members = families
            .get(&subject.iin)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for iin in std::iter::once(&subject.iin).chain(members) {
            if seen.insert(iin.as_str()) {
                iins.push(iin.clone());
            }
        }
    }
    iins
}

/// Moves every subject found in `hits` (the person or, if `family_counts`, a family member) to
/// `removals` with `reason`; returns the others.
fn split_hits<'a>(
    remaining: Vec<&'a Subject>,
    families: &HashMap<String, Vec<String>>,
    hits: &HashSet<String>,
    reason: RemovalReason,
    removals: &mut Vec<(String, RemovalReason)>,
) -> Vec<&'a Subject> {
    let mut kept = Vec::with_capacity(remaining.len());
    for subject in remaining {
        let family_hit = families
            .get(&subject.iin)
            .is_some_and(|members| members.iter().any(|member| hits.contains(member)));
        if hits.contains(&subject.iin) || family_hit {
            removals.push((subject.iin.clone(), reason));
        } else {
            kept.push(subject);
        }
    }
    kept
}

/// The seed-002 checks for one chunk of persons, in the seed's order; each step asks only about
/// the persons still on the register after the previous one.
async fn review_chunk<C: RegistryChecks>(
    checks: &C,
    chunk: &[Subject],
) -> Result<ChunkOutcome, LookupFailed> {
    let iins: Vec<String> = chunk.iter().map(|subject| subject.iin.clone()).collect();
    // Step 5: the family, which also sets the family size the entitled area is computed from.
    let families = checks.families(&iins).await?;
    let mut outcome = ChunkOutcome::default();
    for subject in chunk {
        let members = families.get(&subject.iin).map(Vec::len).unwrap_or(0);
        let family_size = i64::try_from(members).unwrap_or(i64::MAX).saturating_add(1);
        if family_size != subject.family_size {
            outcome
                .family_sizes
                .push((subject.iin.clone(), family_size));
        }
    }
    let mut remaining: Vec<&Subject> = chunk.iter().collect();

    // Step 6: privatisation contract (State Property Register).
    if !remaining.is_empty() {
        let hits = checks
            .with_privatisation_contract(&with_families(&remaining, &families))
            .await?;
        remaining = split_hits(
            remaining,
            &families,
            &hits,
            RemovalReason::PrivatisationContract,
            &mut outcome.removals,
        );
    }
    // Step 7: equity contract (Kaztizilim).
    if !remaining.is_empty() {
        let hits = checks
            .with_equity_contract(&with_families(&remaining, &families))
            .await?;
        remaining = split_hits(
            remaining,
            &families,
            &hits,
            RemovalReason::EquityContract,
            &mut outcome.removals,
        );
    }
    // Step 8: service housing at an earlier place of service (ИШ АС МР).
    if !remaining.is_empty() {
        let hits = checks
            .with_earlier_service_housing(&with_families(&remaining, &families))
            .await?;
        remaining = split_hits(
            remaining,
            &families,
            &hits,
            RemovalReason::EarlierServiceHousing,
            &mut outcome.removals,
        );
    }
    // Step 9: permanent use of state housing in the garrison locality (ЕГКН), per locality.
    if !remaining.is_empty() {
        let mut by_locality: BTreeMap<&str, Vec<&Subject>> = BTreeMap::new();
        for subject in remaining {
            by_locality
                .entry(subject.locality_kato.as_str())
                .or_default()
                .push(subject);
        }
        remaining = Vec::new();
        for (locality, group) in by_locality {
            let hits = checks
                .with_permanent_use_in(&with_families(&group, &families), locality)
                .await?;
            remaining.extend(split_hits(
                group,
                &families,
                &hits,
                RemovalReason::PermanentUseInLocality,
                &mut outcome.removals,
            ));
        }
    }
    // Step 10: ГБД ФЛ and АХАЖ criteria, in the seed's order.
    if !remaining.is_empty() {
        let subjects = with_families(&remaining, &families);
        let facts = checks.persons(&subjects).await?;
        let imprisoned = checks.imprisoned(&subjects).await?;
        for subject in remaining {
            let members = families
                .get(&subject.iin)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let person = facts.get(&subject.iin);
            let anyone_missing_or_dead = std::iter::once(&subject.iin)
                .chain(members)
                .any(|iin| facts.get(iin).is_some_and(|fact| fact.missing_or_dead));
            let anyone_imprisoned = std::iter::once(&subject.iin)
                .chain(members)
                .any(|iin| imprisoned.contains(iin));
            let reason = if anyone_missing_or_dead {
                Some(RemovalReason::MissingOrDead)
            } else if person.is_some_and(|fact| !fact.citizen) {
                Some(RemovalReason::NotACitizen)
            } else if person.is_some_and(|fact| fact.residence_abroad) {
                Some(RemovalReason::ResidenceAbroad)
            } else if person.is_some_and(|fact| fact.incapable) {
                Some(RemovalReason::Incapable)
            } else if anyone_imprisoned {
                Some(RemovalReason::Imprisoned)
            } else {
                None
            };
            if let Some(reason) = reason {
                outcome.removals.push((subject.iin.clone(), reason));
            }
        }
    }
    Ok(outcome)
}
