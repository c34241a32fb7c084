//! Automatic allocation (seed 003): allocation rounds, the 48-hour answer window and replies
//! 6521–6527.
//!
//! A round locks the `allocation_lock` row first, so two rounds (two replicas, or a timer and an
//! operator) never plan at once; every offer is still written with conditional UPDATEs
//! (`… WHERE status = 'FREE'`, `… AND has_open_offer = 0`) and the database's partial unique
//! indexes forbid a second open offer for a dwelling or a person, whatever happens.

use std::collections::{HashMap, HashSet};

use shlyuz_kit::paging;
use shlyuz_proto::housing::v1 as pb;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use crate::Housing;
use crate::model::{HousingError, OfferStatus, reply_code, timestamp_from_millis};
use crate::outbox::OutboxChannel;
use crate::register::{corrupt, request_page_after, request_page_size};
use crate::texts::{OFFER_TEMPLATE, offer_parameters, offer_sms};

/// What one allocation round did.
#[derive(Debug, Clone, Default)]
pub struct RoundOutcome {
    /// Offers past their deadline recorded as refused by timeout.
    pub offers_expired: i64,
    /// Offers made.
    pub offers_made: Vec<pb::Offer>,
}

struct Candidate {
    iin: String,
    full_name: String,
    phone: String,
    family_size: i64,
    norm_matching_only: bool,
    taken: bool,
}

/// Who a reply is checked against.
enum ReplySender<'a> {
    /// The phone the reply came from (RecordReply): must be the offer's phone.
    Phone(&'a str),
    /// The recipient IIN of notify's reply window: must be the offer's person.
    Recipient(&'a str),
}

/// An offer decided by a round, not yet written.
struct PlannedOffer {
    dwelling_id: String,
    iin: String,
    phone: String,
    text: String,
    parameters: String,
}

/// Planned offers written per batch of statements (at most 6 parameters a row, well under every limit).
const WRITE_BATCH: usize = 500;

/// `$first, $first+1, …` for `count` parameters.
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|index| format!("${index}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One locality's queue for a round: the candidates in queue order, and the same candidates
/// grouped by what decides matching (family size, the 6527 flag), so that a dwelling is matched by
/// looking at the head of each group instead of walking the whole queue.
#[derive(Default)]
struct Queue {
    candidates: Vec<Candidate>,
    groups: Vec<Group>,
}

/// Candidates of one family size and flag, as indices into [`Queue::candidates`] in queue order.
struct Group {
    family_size: i64,
    norm_matching_only: bool,
    members: Vec<usize>,
    /// Members before this one are all taken.
    head: usize,
}

impl Queue {
    fn push(&mut self, candidate: Candidate) {
        let index = self.candidates.len();
        let key = (candidate.family_size, candidate.norm_matching_only);
        match self
            .groups
            .iter_mut()
            .find(|group| (group.family_size, group.norm_matching_only) == key)
        {
            Some(group) => group.members.push(index),
            None => self.groups.push(Group {
                family_size: key.0,
                norm_matching_only: key.1,
                members: vec![index],
                head: 0,
            }),
        }
        self.candidates.push(candidate);
    }

    /// The earliest untaken candidate accepted by `accepts`, which is asked once per group with
    /// no candidate (does the group's family size and flag match?) and then per candidate.
    fn first_match(
        &mut self,
        accepts: impl Fn(i64, bool, Option<&Candidate>) -> bool,
    ) -> Option<usize> {
        let mut best: Option<usize> = None;
        for group in &mut self.groups {
            if !accepts(group.family_size, group.norm_matching_only, None) {
                continue;
            }
            while group
                .members
                .get(group.head)
                .is_some_and(|index| self.candidates[*index].taken)
            {
                group.head += 1;
            }
            let found = group.members[group.head.min(group.members.len())..]
                .iter()
                .copied()
                .take_while(|index| best.is_none_or(|best| *index < best))
                .find(|index| {
                    let candidate = &self.candidates[*index];
                    !candidate.taken
                        && accepts(group.family_size, group.norm_matching_only, Some(candidate))
                });
            if found.is_some() {
                best = found;
            }
        }
        best
    }
}

const OFFER_COLUMNS: &str =
    "id, dwelling_id, iin, phone, offered_at_ms, deadline_ms, status, reply_code, closed_at_ms";

impl Housing {
    /// Runs one allocation round: records every overdue offer as refused by timeout, then offers
    /// each FREE dwelling to the first ACTIVE person of its locality, in queue order, without an
    /// open offer, who has not refused it before and whose entitled area it matches.
    pub async fn run_allocation_round(&self) -> Result<RoundOutcome, HousingError> {
        let now = self.now_millis();
        let mut transaction = self.database.pool().begin().await?;
        // The first statement is a write: it serialises rounds (a row lock on PostgreSQL, the
        // write lock on SQLite) before anything is read.
        sqlx::query("UPDATE allocation_lock SET round_id = $1, locked_at_ms = $2 WHERE id = 1")
            .bind(uuid::Uuid::now_v7().hyphenated().to_string())
            .bind(now)
            .execute(&mut *transaction)
            .await?;

        let offers_expired = expire_overdue(
            &mut transaction,
            now,
            now.saturating_sub(self.reply_grace_ms),
        )
        .await?;
        let phase_started = std::time::Instant::now();

        let dwellings = sqlx::query(
            "SELECT id, address, locality_kato, rooms, total_area_m2 FROM dwellings
             WHERE status = 'FREE' ORDER BY locality_kato, created_at_ms, id",
        )
        .fetch_all(&mut *transaction)
        .await?;
        let candidate_rows = sqlx::query(
            "SELECT iin, full_name, phone, locality_kato, family_size, norm_matching_only FROM registrants
             WHERE status = 'ACTIVE' AND has_open_offer = 0 AND unreachable_until_ms <= $1
             ORDER BY locality_kato, reported_at_ms, iin",
        )
        .bind(now)
        .fetch_all(&mut *transaction)
        .await?;
        let refused_rows = sqlx::query(
            "SELECT offers.dwelling_id, offers.iin FROM offers
             JOIN dwellings ON dwellings.id = offers.dwelling_id
             WHERE offers.status IN ('REFUSED', 'EXPIRED', 'WITHDRAWN') AND dwellings.status = 'FREE'",
        )
        .fetch_all(&mut *transaction)
        .await?;

        let read_ms = phase_started.elapsed().as_millis();
        let mut queues: HashMap<String, Queue> = HashMap::new();
        for row in &candidate_rows {
            let locality: String = row.try_get("locality_kato")?;
            let norm_matching_only: i64 = row.try_get("norm_matching_only")?;
            queues.entry(locality).or_default().push(Candidate {
                iin: row.try_get("iin")?,
                full_name: row.try_get("full_name")?,
                phone: row.try_get("phone")?,
                family_size: row.try_get("family_size")?,
                norm_matching_only: norm_matching_only != 0,
                taken: false,
            });
        }
        // Who already refused (or let expire) which dwelling: they are not asked again.
        let mut refused: HashMap<String, HashSet<String>> = HashMap::new();
        for row in &refused_rows {
            refused
                .entry(row.try_get("dwelling_id")?)
                .or_default()
                .insert(row.try_get("iin")?);
        }
        let no_refusals = HashSet::new();

        let mut planned = Vec::new();
        for dwelling in &dwellings {
            let dwelling_id: String = dwelling.try_get("id")?;
            let locality: String = dwelling.try_get("locality_kato")?;
            let rooms: i64 = dwelling.try_get("rooms")?;
            let area: f64 = dwelling.try_get("total_area_m2")?;
            let Some(queue) = queues.get_mut(&locality) else {
                continue;
            };
            let refused_by = refused.get(&dwelling_id).unwrap_or(&no_refusals);
            let Some(chosen) = queue.first_match(|family_size, norm_matching_only, candidate| {
                self.norm
                    .may_offer(family_size, norm_matching_only, rooms, area)
                    && candidate.is_none_or(|candidate| !refused_by.contains(&candidate.iin))
            }) else {
                continue;
            };
            let candidate = &mut queue.candidates[chosen];
            candidate.taken = true;
            let address: String = dwelling.try_get("address")?;
            planned.push(PlannedOffer {
                text: offer_sms(&candidate.full_name, &address, rooms, area),
                parameters: offer_parameters(&candidate.full_name, &address, rooms, area),
                dwelling_id,
                iin: candidate.iin.clone(),
                phone: candidate.phone.clone(),
            });
        }
        let plan_ms = phase_started.elapsed().as_millis() - read_ms;
        let mut offers_made = Vec::with_capacity(planned.len());
        for batch in planned.chunks(WRITE_BATCH) {
            offers_made.extend(self.write_offers(&mut transaction, now, batch).await?);
        }
        let write_ms = phase_started.elapsed().as_millis() - read_ms - plan_ms;
        transaction.commit().await?;
        tracing::debug!(read_ms, plan_ms, write_ms, "allocation round phases");
        if offers_expired > 0 || !offers_made.is_empty() {
            tracing::info!(
                offers_expired,
                offers_made = offers_made.len(),
                "allocation round done"
            );
        }
        Ok(RoundOutcome {
            offers_expired,
            offers_made,
        })
    }

    /// Writes a batch of planned offers and their SMS outbox rows with a few multi-row statements.
    /// The persons and dwellings are taken with conditional UPDATEs (`… AND has_open_offer = 0`,
    /// `… AND status = 'FREE'`) whose RETURNING lists say what was really taken: a pair whose
    /// person or dwelling changed since the round read them (a reply, a review) is dropped and
    /// left for the next round.
    async fn write_offers(
        &self,
        transaction: &mut Transaction<'static, Any>,
        now: i64,
        batch: &[PlannedOffer],
    ) -> Result<Vec<pb::Offer>, HousingError> {
        let iins: Vec<&str> = batch.iter().map(|offer| offer.iin.as_str()).collect();
        let statement = format!(
            "UPDATE registrants SET has_open_offer = 1, updated_at_ms = $1
             WHERE status = 'ACTIVE' AND has_open_offer = 0 AND iin IN ({}) RETURNING iin",
            placeholders(2, iins.len())
        );
        let mut query = sqlx::query_scalar::<_, String>(&statement).bind(now);
        for iin in &iins {
            query = query.bind(*iin);
        }
        let persons_taken: HashSet<String> = query
            .fetch_all(&mut **transaction)
            .await?
            .into_iter()
            .collect();

        let with_person: Vec<&PlannedOffer> = batch
            .iter()
            .filter(|offer| persons_taken.contains(&offer.iin))
            .collect();
        let dwellings_taken: HashSet<String> = if with_person.is_empty() {
            HashSet::new()
        } else {
            let statement = format!(
                "UPDATE dwellings SET status = 'OFFERED', updated_at_ms = $1
                 WHERE status = 'FREE' AND id IN ({}) RETURNING id",
                placeholders(2, with_person.len())
            );
            let mut query = sqlx::query_scalar::<_, String>(&statement).bind(now);
            for offer in &with_person {
                query = query.bind(offer.dwelling_id.as_str());
            }
            query
                .fetch_all(&mut **transaction)
                .await?
                .into_iter()
                .collect()
        };
        let (ready, lost): (Vec<&PlannedOffer>, Vec<&PlannedOffer>) = with_person
            .into_iter()
            .partition(|offer| dwellings_taken.contains(&offer.dwelling_id));
        if !lost.is_empty() {
            // Their dwelling was taken meanwhile: the persons wait for the next round.
            let statement = format!(
                "UPDATE registrants SET has_open_offer = 0 WHERE iin IN ({})",
                placeholders(1, lost.len())
            );
            let mut query = sqlx::query(&statement);
            for offer in &lost {
                query = query.bind(offer.iin.as_str());
            }
            query.execute(&mut **transaction).await?;
        }
        if ready.is_empty() {
            return Ok(Vec::new());
        }

        let deadline = now.saturating_add(self.answer_window_ms);
        let offer_ids: Vec<String> = ready
            .iter()
            .map(|_| uuid::Uuid::now_v7().hyphenated().to_string())
            .collect();
        let rows: Vec<String> = (0..ready.len())
            .map(|row| {
                let base = row * 4;
                format!(
                    "(${}, ${}, ${}, ${}, $1, $2, 'OPEN', 0)",
                    base + 3,
                    base + 4,
                    base + 5,
                    base + 6
                )
            })
            .collect();
        let statement = format!(
            "INSERT INTO offers (id, dwelling_id, iin, phone, offered_at_ms, deadline_ms, status, reply_code) VALUES {}",
            rows.join(", ")
        );
        let mut query = sqlx::query(&statement).bind(now).bind(deadline);
        for (offer, offer_id) in ready.iter().zip(&offer_ids) {
            query = query
                .bind(offer_id.as_str())
                .bind(offer.dwelling_id.as_str())
                .bind(offer.iin.as_str())
                .bind(offer.phone.as_str());
        }
        query.execute(&mut **transaction).await?;

        // The SMS opens a reply window on notify: correlation id = the offer id, closing at the
        // offer's deadline.
        let rows: Vec<String> = (0..ready.len())
            .map(|row| {
                let base = row * 6;
                format!(
                    "(${}, $1, '{}', ${}, ${}, ${}, '{}', ${}, ${}, $2)",
                    base + 3,
                    OutboxChannel::Sms.as_str(),
                    base + 4,
                    base + 5,
                    base + 6,
                    OFFER_TEMPLATE,
                    base + 7,
                    base + 8
                )
            })
            .collect();
        let statement = format!(
            "INSERT INTO outbox (id, created_at_ms, channel, iin, phone, body, template_id, parameters, correlation_id, expires_at_ms) VALUES {}",
            rows.join(", ")
        );
        let mut query = sqlx::query(&statement).bind(now).bind(deadline);
        for (offer, offer_id) in ready.iter().zip(&offer_ids) {
            query = query
                .bind(uuid::Uuid::now_v7().hyphenated().to_string())
                .bind(offer.iin.as_str())
                .bind(offer.phone.as_str())
                .bind(offer.text.as_str())
                .bind(offer.parameters.as_str())
                .bind(offer_id.as_str());
        }
        query.execute(&mut **transaction).await?;

        Ok(ready
            .iter()
            .zip(offer_ids)
            .map(|(offer, offer_id)| pb::Offer {
                id: offer_id,
                dwelling_id: offer.dwelling_id.clone(),
                iin: offer.iin.clone(),
                offered_at: Some(timestamp_from_millis(now)),
                deadline: Some(timestamp_from_millis(deadline)),
                status: pb::OfferStatus::Open as i32,
                reply_code: 0,
                closed_at: None,
            })
            .collect())
    }

    #[cfg(test)]
    /// Records the SMS reply `code` from `phone` to offer `offer_id`.
    ///
    /// 6521 concludes the lease (dwelling LEASED, person HOUSED); 6522–6527 record a refusal and
    /// free the dwelling for the next in queue (6527 also restricts future offers to the norm).
    /// The same reply twice returns the same offer unchanged. A reply from another phone is
    /// `PERMISSION_DENIED` (`REPLY_PHONE_MISMATCH`); after the deadline `FAILED_PRECONDITION`
    /// (`OFFER_EXPIRED`); a different code after an answer `FAILED_PRECONDITION`
    /// (`OFFER_ALREADY_ANSWERED`); an unknown offer `NOT_FOUND` (`OFFER_NOT_FOUND`).
    pub async fn record_reply(
        &self,
        offer_id: &str,
        code: i64,
        phone: &str,
    ) -> Result<pb::Offer, HousingError> {
        self.record_reply_received_at(offer_id, code, phone, None)
            .await
    }

    /// [`Housing::record_reply`] for a reply the operator received at `received_at_ms` (a reply
    /// sent within the window counts even when it is recorded after the deadline, as long as the
    /// offer has not been closed meanwhile); `None` or a time in the future means now.
    pub async fn record_reply_received_at(
        &self,
        offer_id: &str,
        code: i64,
        phone: &str,
        received_at_ms: Option<i64>,
    ) -> Result<pb::Offer, HousingError> {
        self.record_reply_from(offer_id, code, ReplySender::Phone(phone), received_at_ms)
            .await
    }

    /// [`Housing::record_reply_received_at`] for a reply notify routed through the reply window
    /// of the offer SMS: notify opened that window for the phone it sent the SMS to (the mobile
    /// citizens database's phone of the IIN), so the sender is checked by the recipient IIN notify
    /// names, not by the phone housing stored at registration (docs/decisions.md 68). Another IIN
    /// is `PERMISSION_DENIED` (`REPLY_RECIPIENT_MISMATCH`).
    pub async fn record_notify_reply(
        &self,
        offer_id: &str,
        code: i64,
        recipient_iin: &str,
        received_at_ms: Option<i64>,
    ) -> Result<pb::Offer, HousingError> {
        self.record_reply_from(
            offer_id,
            code,
            ReplySender::Recipient(recipient_iin),
            received_at_ms,
        )
        .await
    }

    /// notify could not deliver the SMS of `offer_id` (its `DeliveryFailed`): an OPEN offer is
    /// closed as UNDELIVERED — neither an answer nor a refusal —, the dwelling is free for the next
    /// in the queue, and rounds skip the person for [`crate::UNREACHABLE_PAUSE`] (their place in the
    /// queue is kept). An offer already closed is returned unchanged.
    pub async fn record_undelivered(
        &self,
        offer_id: &str,
        recipient_iin: &str,
        reason: &str,
    ) -> Result<pb::Offer, HousingError> {
        if uuid::Uuid::parse_str(offer_id).is_err() {
            return Err(HousingError::invalid_field("offer_id", "must be a UUID"));
        }
        let now = self.now_millis();
        let mut transaction = self.database.pool().begin().await?;
        let offer = offer_from_row(&lock_offer(&mut transaction, offer_id).await?)?;
        if !recipient_iin.is_empty() && recipient_iin != offer.iin {
            return Err(HousingError::DeliveryRecipientMismatch);
        }
        if offer.status() != pb::OfferStatus::Open {
            return Ok(offer);
        }
        let pause_ms =
            i64::try_from(crate::UNREACHABLE_PAUSE.whole_milliseconds()).unwrap_or(i64::MAX);
        close_open_offer(
            &mut transaction,
            now,
            OfferIds {
                offer_id,
                dwelling_id: &offer.dwelling_id,
                iin: &offer.iin,
            },
            OfferStatus::Undelivered,
            Some(now.saturating_add(pause_ms)),
        )
        .await?;
        let row = sqlx::query(&format!("SELECT {OFFER_COLUMNS} FROM offers WHERE id = $1"))
            .bind(offer_id)
            .fetch_one(&mut *transaction)
            .await?;
        transaction.commit().await?;
        tracing::warn!(
            offer_id,
            reason,
            "offer SMS undelivered: the offer is closed, not refused"
        );
        offer_from_row(&row)
    }

    async fn record_reply_from(
        &self,
        offer_id: &str,
        code: i64,
        sender: ReplySender<'_>,
        received_at_ms: Option<i64>,
    ) -> Result<pb::Offer, HousingError> {
        if uuid::Uuid::parse_str(offer_id).is_err() {
            return Err(HousingError::invalid_field("offer_id", "must be a UUID"));
        }
        if !reply_code::is_valid(code) {
            return Err(HousingError::invalid_field(
                "reply_code",
                format!("must be one of 6521–6527, got {code}"),
            ));
        }
        let now = self.now_millis();
        let answered_at = received_at_ms.map_or(now, |received| received.min(now));
        let mut transaction = self.database.pool().begin().await?;
        let row = lock_offer(&mut transaction, offer_id).await?;
        let offer = offer_from_row(&row)?;
        match sender {
            ReplySender::Phone(phone) => {
                let offer_phone: String = row.try_get("phone")?;
                if offer_phone != phone {
                    tracing::warn!(offer_id, "reply from a phone the offer was not sent to");
                    return Err(HousingError::ReplyPhoneMismatch);
                }
            }
            ReplySender::Recipient(iin) if iin != offer.iin => {
                tracing::warn!(offer_id, "reply window of another recipient");
                return Err(HousingError::ReplyRecipientMismatch);
            }
            ReplySender::Recipient(_) => {}
        }
        let status = OfferStatus::from_proto(offer.status()).unwrap_or(OfferStatus::Open);
        match status {
            OfferStatus::Open if answered_at >= offer_deadline_ms(&offer) => {
                close_as_expired(
                    &mut transaction,
                    now,
                    &offer.id,
                    &offer.dwelling_id,
                    &offer.iin,
                )
                .await?;
                transaction.commit().await?;
                return Err(HousingError::OfferExpired);
            }
            OfferStatus::Open => {}
            OfferStatus::Expired => return Err(HousingError::OfferExpired),
            OfferStatus::Withdrawn => return Err(HousingError::OfferWithdrawn),
            OfferStatus::Undelivered => return Err(HousingError::OfferUndelivered),
            OfferStatus::Accepted | OfferStatus::Refused => {
                if i64::from(offer.reply_code) == code {
                    return Ok(offer);
                }
                return Err(HousingError::OfferAlreadyAnswered);
            }
        }

        let (offer_status, dwelling_status, person_update) = if code == reply_code::ACCEPT {
            (
                OfferStatus::Accepted,
                "LEASED",
                "UPDATE registrants SET status = 'HOUSED', has_open_offer = 0, updated_at_ms = $2 WHERE iin = $1",
            )
        } else if code == reply_code::NORM_ONLY_FROM_NOW {
            (
                OfferStatus::Refused,
                "FREE",
                "UPDATE registrants SET has_open_offer = 0, norm_matching_only = 1, updated_at_ms = $2 WHERE iin = $1",
            )
        } else {
            (
                OfferStatus::Refused,
                "FREE",
                "UPDATE registrants SET has_open_offer = 0, updated_at_ms = $2 WHERE iin = $1",
            )
        };
        sqlx::query(
            "UPDATE offers SET status = $2, reply_code = $3, closed_at_ms = $4 WHERE id = $1 AND status = 'OPEN'",
        )
        .bind(&offer.id)
        .bind(offer_status.as_str())
        .bind(code)
        .bind(now)
        .execute(&mut *transaction)
        .await?;
        sqlx::query(
            "UPDATE dwellings SET status = $2, updated_at_ms = $3 WHERE id = $1 AND status = 'OFFERED'",
        )
        .bind(&offer.dwelling_id)
        .bind(dwelling_status)
        .bind(now)
        .execute(&mut *transaction)
        .await?;
        sqlx::query(person_update)
            .bind(&offer.iin)
            .bind(now)
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        tracing::info!(offer_id = %offer.id, reply_code = code, "offer reply recorded");
        Ok(pb::Offer {
            status: offer_status.to_proto() as i32,
            reply_code: i32::try_from(code).unwrap_or_default(),
            closed_at: Some(timestamp_from_millis(now)),
            ..offer
        })
    }

    /// Offers, oldest first, optionally of one status.
    pub async fn list_offers(
        &self,
        request: &pb::ListOffersRequest,
    ) -> Result<pb::ListOffersResponse, HousingError> {
        let page_size = request_page_size(request.page_size)?;
        let status = OfferStatus::from_proto(request.status());
        let scope = format!("offers:{}", status.map(OfferStatus::as_str).unwrap_or(""));
        let after = request_page_after(&request.page_token, &scope)?.unwrap_or_default();
        let rows = sqlx::query(&format!(
            "SELECT {OFFER_COLUMNS} FROM offers WHERE ($1 = '' OR status = $1) AND id > $2 ORDER BY id LIMIT $3"
        ))
        .bind(status.map(OfferStatus::as_str).unwrap_or(""))
        .bind(&after)
        .bind(i64::try_from(page_size + 1).unwrap_or(i64::MAX))
        .fetch_all(self.database.pool())
        .await?;
        let has_more = rows.len() > page_size;
        let offers = rows
            .iter()
            .take(page_size)
            .map(offer_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next_page_token = match (has_more, offers.last()) {
            (true, Some(last)) => paging::encode_page_token(&scope, &last.id),
            _ => String::new(),
        };
        Ok(pb::ListOffersResponse {
            offers,
            next_page_token,
        })
    }

    /// Refusals (replies 6522–6527 and timeouts), oldest first; `reply_code` 0 for all, -1 for
    /// timeouts only, 6522–6527 for one code.
    pub async fn list_refusals(
        &self,
        request: &pb::ListRefusalsRequest,
    ) -> Result<pb::ListRefusalsResponse, HousingError> {
        let page_size = request_page_size(request.page_size)?;
        let code = i64::from(request.reply_code);
        if !(code == 0
            || code == -1
            || (reply_code::AREA_NOT_NORM..=reply_code::NORM_ONLY_FROM_NOW).contains(&code))
        {
            return Err(HousingError::invalid_field(
                "reply_code",
                "must be 0 (all), -1 (timeouts) or one of 6522–6527",
            ));
        }
        let scope = format!("refusals:{code}");
        let after = request_page_after(&request.page_token, &scope)?.unwrap_or_default();
        let rows = sqlx::query(&format!(
            "SELECT {OFFER_COLUMNS} FROM offers
             WHERE (($1 = 0 AND status IN ('REFUSED', 'EXPIRED'))
                 OR ($1 = -1 AND status = 'EXPIRED')
                 OR ($1 > 0 AND status = 'REFUSED' AND reply_code = $1))
               AND id > $2
             ORDER BY id LIMIT $3"
        ))
        .bind(code)
        .bind(&after)
        .bind(i64::try_from(page_size + 1).unwrap_or(i64::MAX))
        .fetch_all(self.database.pool())
        .await?;
        let has_more = rows.len() > page_size;
        let mut refusals = Vec::new();
        for row in rows.iter().take(page_size) {
            let offer = offer_from_row(row)?;
            refusals.push(pb::Refusal {
                timed_out: offer.status == pb::OfferStatus::Expired as i32,
                offer_id: offer.id,
                dwelling_id: offer.dwelling_id,
                iin: offer.iin,
                reply_code: offer.reply_code,
                recorded_at: offer.closed_at,
            });
        }
        let next_page_token = match (has_more, refusals.last()) {
            (true, Some(last)) => paging::encode_page_token(&scope, &last.offer_id),
            _ => String::new(),
        };
        Ok(pb::ListRefusalsResponse {
            refusals,
            next_page_token,
        })
    }
}

fn offer_deadline_ms(offer: &pb::Offer) -> i64 {
    offer
        .deadline
        .as_ref()
        .map(|stamp| stamp.seconds * 1000 + i64::from(stamp.nanos / 1_000_000))
        .unwrap_or(i64::MIN)
}

/// Records every OPEN offer whose deadline is at or before `deadline_before` (now less the reply
/// grace) as refused by timeout.
async fn expire_overdue(
    transaction: &mut Transaction<'static, Any>,
    now: i64,
    deadline_before: i64,
) -> Result<i64, HousingError> {
    let overdue = sqlx::query(
        "SELECT id, dwelling_id, iin FROM offers WHERE status = 'OPEN' AND deadline_ms <= $1 ORDER BY id",
    )
    .bind(deadline_before)
    .fetch_all(&mut **transaction)
    .await?;
    let mut expired = 0;
    for row in &overdue {
        let offer_id: String = row.try_get("id")?;
        let dwelling_id: String = row.try_get("dwelling_id")?;
        let iin: String = row.try_get("iin")?;
        if close_as_expired(transaction, now, &offer_id, &dwelling_id, &iin).await? {
            expired += 1;
        }
    }
    Ok(expired)
}

/// Closes one open offer as expired: the refusal by timeout, the dwelling FREE again, the person
/// free for the next offer. `false` when the offer was not open any more.
async fn close_as_expired(
    transaction: &mut Transaction<'static, Any>,
    now: i64,
    offer_id: &str,
    dwelling_id: &str,
    iin: &str,
) -> Result<bool, HousingError> {
    let closed = close_open_offer(
        transaction,
        now,
        OfferIds {
            offer_id,
            dwelling_id,
            iin,
        },
        OfferStatus::Expired,
        None,
    )
    .await?;
    if closed {
        tracing::info!(offer_id, "offer expired without an answer");
    }
    Ok(closed)
}

/// What [`close_open_offer`] touches: the offer, its dwelling and its person.
pub(crate) struct OfferIds<'a> {
    pub(crate) offer_id: &'a str,
    pub(crate) dwelling_id: &'a str,
    pub(crate) iin: &'a str,
}

/// Closes an offer if it is still OPEN, with `status` and no reply code: the dwelling is FREE again
/// and the person free for the next offer (skipped by rounds until `unreachable_until_ms` when
/// given). `false` when the offer was not open any more.
pub(crate) async fn close_open_offer(
    transaction: &mut Transaction<'static, Any>,
    now: i64,
    offer: OfferIds<'_>,
    status: OfferStatus,
    unreachable_until_ms: Option<i64>,
) -> Result<bool, HousingError> {
    let closed = sqlx::query(
        "UPDATE offers SET status = $3, reply_code = 0, closed_at_ms = $2 WHERE id = $1 AND status = 'OPEN'",
    )
    .bind(offer.offer_id)
    .bind(now)
    .bind(status.as_str())
    .execute(&mut **transaction)
    .await?;
    if closed.rows_affected() != 1 {
        return Ok(false);
    }
    sqlx::query(
        "UPDATE dwellings SET status = 'FREE', updated_at_ms = $2 WHERE id = $1 AND status = 'OFFERED'",
    )
    .bind(offer.dwelling_id)
    .bind(now)
    .execute(&mut **transaction)
    .await?;
    match unreachable_until_ms {
        Some(until) => {
            sqlx::query(
                "UPDATE registrants SET has_open_offer = 0, unreachable_until_ms = $2, updated_at_ms = $3 WHERE iin = $1",
            )
            .bind(offer.iin)
            .bind(until)
            .bind(now)
            .execute(&mut **transaction)
            .await?;
        }
        None => {
            sqlx::query(
                "UPDATE registrants SET has_open_offer = 0, updated_at_ms = $2 WHERE iin = $1",
            )
            .bind(offer.iin)
            .bind(now)
            .execute(&mut **transaction)
            .await?;
        }
    }
    Ok(true)
}

/// Takes the offer's row lock (PostgreSQL) or the write lock (SQLite) with a no-op write, then
/// reads it, so two decisions about one offer are made one after the other.
async fn lock_offer(
    transaction: &mut Transaction<'static, Any>,
    offer_id: &str,
) -> Result<AnyRow, HousingError> {
    let touched = sqlx::query("UPDATE offers SET status = status WHERE id = $1")
        .bind(offer_id)
        .execute(&mut **transaction)
        .await?;
    if touched.rows_affected() == 0 {
        return Err(HousingError::OfferNotFound);
    }
    Ok(
        sqlx::query(&format!("SELECT {OFFER_COLUMNS} FROM offers WHERE id = $1"))
            .bind(offer_id)
            .fetch_one(&mut **transaction)
            .await?,
    )
}

fn offer_from_row(row: &AnyRow) -> Result<pb::Offer, HousingError> {
    let status: String = row.try_get("status")?;
    let status = OfferStatus::parse(&status).ok_or_else(|| corrupt("offers.status"))?;
    let reply: i64 = row.try_get("reply_code")?;
    let closed_at_ms: Option<i64> = row.try_get("closed_at_ms")?;
    Ok(pb::Offer {
        id: row.try_get("id")?,
        dwelling_id: row.try_get("dwelling_id")?,
        iin: row.try_get("iin")?,
        offered_at: Some(timestamp_from_millis(row.try_get("offered_at_ms")?)),
        deadline: Some(timestamp_from_millis(row.try_get("deadline_ms")?)),
        status: status.to_proto() as i32,
        reply_code: i32::try_from(reply).unwrap_or_default(),
        closed_at: closed_at_ms.map(timestamp_from_millis),
    })
}
