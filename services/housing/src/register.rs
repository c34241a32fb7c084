//! The register of persons who need service housing and the housing stock: adding, reading and
//! listing them (queue order, AIP-158 pages).

use shlyuz_kit::error::FieldViolation;
use shlyuz_kit::iin::Iin;
use shlyuz_kit::paging;
use shlyuz_proto::housing::v1 as pb;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::Housing;
use crate::model::{
    DwellingStatus, HousingError, RegistrantStatus, RemovalReason, timestamp_from_millis,
};

/// A new person for the register.
#[derive(Debug, Clone)]
pub struct NewRegistrant {
    /// IIN.
    pub iin: String,
    /// Full name for the SMS.
    pub full_name: String,
    /// Phone of the mobile citizens database, `+7` and 10 digits.
    pub phone: String,
    /// When the report was filed, epoch ms: the queue order.
    pub reported_at_ms: i64,
    /// KATO of the garrison locality.
    pub locality_kato: String,
    /// Family size including the person.
    pub family_size: i64,
}

/// A new dwelling for the stock.
#[derive(Debug, Clone)]
pub struct NewDwelling {
    /// Postal address.
    pub address: String,
    /// KATO of the locality.
    pub locality_kato: String,
    /// Rooms.
    pub rooms: i64,
    /// Total area, m².
    pub total_area_m2: f64,
}

const REGISTRANT_COLUMNS: &str = "iin, full_name, phone, reported_at_ms, locality_kato, family_size, status, removal_reason, norm_matching_only, unreachable_until_ms";
const DWELLING_COLUMNS: &str = "id, address, locality_kato, rooms, total_area_m2, status";

/// Whether `phone` is `+7` followed by 10 digits.
pub fn is_valid_phone(phone: &str) -> bool {
    phone
        .strip_prefix("+7")
        .is_some_and(|rest| rest.len() == 10 && rest.bytes().all(|byte| byte.is_ascii_digit()))
}

fn is_valid_kato(kato: &str) -> bool {
    kato.len() == 9 && kato.bytes().all(|byte| byte.is_ascii_digit())
}

impl Housing {
    /// Puts a person on the register as ACTIVE; an IIN already on it is `ALREADY_EXISTS`.
    pub async fn add_registrant(&self, new: NewRegistrant) -> Result<pb::Registrant, HousingError> {
        let violations = registrant_violations(&new);
        if !violations.is_empty() {
            return Err(HousingError::Invalid(violations));
        }
        let now = self.now_millis();
        let inserted = sqlx::query(
            "INSERT INTO registrants (iin, full_name, phone, reported_at_ms, locality_kato, family_size, status, norm_matching_only, has_open_offer, created_at_ms, updated_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, 'ACTIVE', 0, 0, $7, $7)
             ON CONFLICT (iin) DO NOTHING",
        )
        .bind(&new.iin)
        .bind(new.full_name.trim())
        .bind(&new.phone)
        .bind(new.reported_at_ms)
        .bind(&new.locality_kato)
        .bind(new.family_size)
        .bind(now)
        .execute(self.database.pool())
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(HousingError::RegistrantExists);
        }
        self.get_registrant(&new.iin).await
    }

    /// One person with their queue position; unknown is `NOT_FOUND` (`REGISTRANT_NOT_FOUND`).
    pub async fn get_registrant(&self, iin: &str) -> Result<pb::Registrant, HousingError> {
        if let Err(error) = Iin::parse(iin) {
            return Err(HousingError::invalid_field("iin", error.to_string()));
        }
        let row = sqlx::query(&format!(
            "SELECT {REGISTRANT_COLUMNS} FROM registrants WHERE iin = $1"
        ))
        .bind(iin)
        .fetch_optional(self.database.pool())
        .await?
        .ok_or(HousingError::RegistrantNotFound)?;
        let mut registrant = registrant_from_row(&row)?;
        registrant.queue_position = self.queue_position(&registrant).await?;
        Ok(registrant)
    }

    /// 1-based position among ACTIVE persons of the same locality, 0 when not ACTIVE.
    async fn queue_position(&self, registrant: &pb::Registrant) -> Result<i64, HousingError> {
        if registrant.status != pb::RegistrantStatus::Active as i32 {
            return Ok(0);
        }
        let reported_at_ms = registrant
            .reported_at
            .as_ref()
            .map(|stamp| stamp.seconds * 1000 + i64::from(stamp.nanos / 1_000_000))
            .unwrap_or_default();
        let ahead: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM registrants WHERE status = 'ACTIVE' AND locality_kato = $1
               AND (reported_at_ms < $2 OR (reported_at_ms = $2 AND iin < $3))",
        )
        .bind(&registrant.locality_kato)
        .bind(reported_at_ms)
        .bind(&registrant.iin)
        .fetch_one(self.database.pool())
        .await?;
        Ok(ahead + 1)
    }

    /// The register in queue order (report time, then IIN), one page.
    pub async fn list_registrants(
        &self,
        request: &pb::ListRegistrantsRequest,
    ) -> Result<pb::ListRegistrantsResponse, HousingError> {
        let page_size = request_page_size(request.page_size)?;
        let status = RegistrantStatus::from_proto(request.status());
        let scope = format!(
            "registrants:{}:{}",
            request.locality_kato,
            status.map(RegistrantStatus::as_str).unwrap_or("")
        );
        let after = request_page_after(&request.page_token, &scope)?;
        let (after_reported, after_iin) = match after.as_deref().map(|key| key.split_once('/')) {
            None => (i64::MIN, String::new()),
            Some(Some((reported, iin))) => (
                reported
                    .parse::<i64>()
                    .map_err(|_| malformed_page_token())?,
                iin.to_string(),
            ),
            Some(None) => return Err(malformed_page_token()),
        };
        let rows = sqlx::query(&format!(
            "SELECT {REGISTRANT_COLUMNS} FROM registrants
             WHERE ($1 = '' OR locality_kato = $1) AND ($2 = '' OR status = $2)
               AND (reported_at_ms > $3 OR (reported_at_ms = $3 AND iin > $4))
             ORDER BY reported_at_ms, iin LIMIT $5"
        ))
        .bind(&request.locality_kato)
        .bind(status.map(RegistrantStatus::as_str).unwrap_or(""))
        .bind(after_reported)
        .bind(&after_iin)
        .bind(i64::try_from(page_size + 1).unwrap_or(i64::MAX))
        .fetch_all(self.database.pool())
        .await?;
        let has_more = rows.len() > page_size;
        let mut registrants = Vec::with_capacity(page_size.min(rows.len()));
        for row in rows.iter().take(page_size) {
            let mut registrant = registrant_from_row(row)?;
            registrant.queue_position = self.queue_position(&registrant).await?;
            registrants.push(registrant);
        }
        let next_page_token = match (has_more, rows.get(page_size.saturating_sub(1))) {
            (true, Some(last)) => {
                let reported: i64 = last.try_get("reported_at_ms")?;
                let iin: String = last.try_get("iin")?;
                paging::encode_page_token(&scope, &format!("{reported}/{iin}"))
            }
            _ => String::new(),
        };
        Ok(pb::ListRegistrantsResponse {
            registrants,
            next_page_token,
        })
    }

    /// Adds a FREE dwelling to the stock.
    pub async fn add_dwelling(&self, new: NewDwelling) -> Result<pb::Dwelling, HousingError> {
        let violations = dwelling_violations(&new);
        if !violations.is_empty() {
            return Err(HousingError::Invalid(violations));
        }
        let now = self.now_millis();
        let id = uuid::Uuid::now_v7().hyphenated().to_string();
        sqlx::query(
            "INSERT INTO dwellings (id, address, locality_kato, rooms, total_area_m2, status, created_at_ms, updated_at_ms)
             VALUES ($1, $2, $3, $4, $5, 'FREE', $6, $6)",
        )
        .bind(&id)
        .bind(new.address.trim())
        .bind(&new.locality_kato)
        .bind(new.rooms)
        .bind(new.total_area_m2)
        .bind(now)
        .execute(self.database.pool())
        .await?;
        self.get_dwelling(&id).await
    }

    /// One dwelling; unknown is `NOT_FOUND` (`DWELLING_NOT_FOUND`).
    pub async fn get_dwelling(&self, id: &str) -> Result<pb::Dwelling, HousingError> {
        if uuid::Uuid::parse_str(id).is_err() {
            return Err(HousingError::invalid_field("id", "must be a UUID"));
        }
        let row = sqlx::query(&format!(
            "SELECT {DWELLING_COLUMNS} FROM dwellings WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.database.pool())
        .await?
        .ok_or(HousingError::DwellingNotFound)?;
        dwelling_from_row(&row)
    }

    /// The stock ordered by id (creation order), one page.
    pub async fn list_dwellings(
        &self,
        request: &pb::ListDwellingsRequest,
    ) -> Result<pb::ListDwellingsResponse, HousingError> {
        let page_size = request_page_size(request.page_size)?;
        let status = DwellingStatus::from_proto(request.status());
        let scope = format!(
            "dwellings:{}:{}",
            request.locality_kato,
            status.map(DwellingStatus::as_str).unwrap_or("")
        );
        let after = request_page_after(&request.page_token, &scope)?.unwrap_or_default();
        let rows = sqlx::query(&format!(
            "SELECT {DWELLING_COLUMNS} FROM dwellings
             WHERE ($1 = '' OR locality_kato = $1) AND ($2 = '' OR status = $2) AND id > $3
             ORDER BY id LIMIT $4"
        ))
        .bind(&request.locality_kato)
        .bind(status.map(DwellingStatus::as_str).unwrap_or(""))
        .bind(&after)
        .bind(i64::try_from(page_size + 1).unwrap_or(i64::MAX))
        .fetch_all(self.database.pool())
        .await?;
        let has_more = rows.len() > page_size;
        let dwellings = rows
            .iter()
            .take(page_size)
            .map(dwelling_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next_page_token = match (has_more, dwellings.last()) {
            (true, Some(last)) => paging::encode_page_token(&scope, &last.id),
            _ => String::new(),
        };
        Ok(pb::ListDwellingsResponse {
            dwellings,
            next_page_token,
        })
    }
}

/// Rows per multi-row INSERT of an import (7–8 parameters each, well under every limit).
const IMPORT_BATCH: usize = 500;

impl Housing {
    /// Imports persons onto the register in one transaction (initial load from the existing
    /// register, benchmarks); every row is validated first and the first invalid row is
    /// `INVALID_ARGUMENT` naming `registrants[<index>].<field>`; an IIN already on the register
    /// fails the whole import.
    pub async fn import_registrants(
        &self,
        registrants: &[NewRegistrant],
    ) -> Result<(), HousingError> {
        for (index, new) in registrants.iter().enumerate() {
            let violations = registrant_violations(new);
            if !violations.is_empty() {
                return Err(HousingError::Invalid(
                    violations
                        .into_iter()
                        .map(|violation| FieldViolation {
                            field: format!("registrants[{index}].{}", violation.field),
                            description: violation.description,
                        })
                        .collect(),
                ));
            }
        }
        let now = self.now_millis();
        let mut transaction = self.database.pool().begin().await?;
        for batch in registrants.chunks(IMPORT_BATCH) {
            let rows: Vec<String> = (0..batch.len())
                .map(|row| {
                    let base = row * 7;
                    format!(
                        "(${}, ${}, ${}, ${}, ${}, ${}, 'ACTIVE', 0, 0, ${}, ${})",
                        base + 1,
                        base + 2,
                        base + 3,
                        base + 4,
                        base + 5,
                        base + 6,
                        base + 7,
                        base + 7
                    )
                })
                .collect();
            let statement = format!(
                "INSERT INTO registrants (iin, full_name, phone, reported_at_ms, locality_kato, family_size, status, norm_matching_only, has_open_offer, created_at_ms, updated_at_ms) VALUES {}",
                rows.join(", ")
            );
            let mut query = sqlx::query(&statement);
            for new in batch {
                query = query
                    .bind(&new.iin)
                    .bind(new.full_name.trim())
                    .bind(&new.phone)
                    .bind(new.reported_at_ms)
                    .bind(&new.locality_kato)
                    .bind(new.family_size)
                    .bind(now);
            }
            query
                .execute(&mut *transaction)
                .await
                .map_err(|error| match &error {
                    sqlx::Error::Database(database_error)
                        if database_error.is_unique_violation() =>
                    {
                        HousingError::ImportedRegistrantExists
                    }
                    _ => HousingError::from(error),
                })?;
        }
        transaction.commit().await?;
        Ok(())
    }

    /// Imports FREE dwellings into the stock in one transaction; returns their ids in order.
    pub async fn import_dwellings(
        &self,
        dwellings: &[NewDwelling],
    ) -> Result<Vec<String>, HousingError> {
        for (index, new) in dwellings.iter().enumerate() {
            let violations = dwelling_violations(new);
            if !violations.is_empty() {
                return Err(HousingError::Invalid(
                    violations
                        .into_iter()
                        .map(|violation| FieldViolation {
                            field: format!("dwellings[{index}].{}", violation.field),
                            description: violation.description,
                        })
                        .collect(),
                ));
            }
        }
        let now = self.now_millis();
        let mut ids = Vec::with_capacity(dwellings.len());
        let mut transaction = self.database.pool().begin().await?;
        for batch in dwellings.chunks(IMPORT_BATCH) {
            let rows: Vec<String> = (0..batch.len())
                .map(|row| {
                    let base = row * 6;
                    format!(
                        "(${}, ${}, ${}, ${}, ${}, 'FREE', ${}, ${})",
                        base + 1,
                        base + 2,
                        base + 3,
                        base + 4,
                        base + 5,
                        base + 6,
                        base + 6
                    )
                })
                .collect();
            let statement = format!(
                "INSERT INTO dwellings (id, address, locality_kato, rooms, total_area_m2, status, created_at_ms, updated_at_ms) VALUES {}",
                rows.join(", ")
            );
            let mut query = sqlx::query(&statement);
            for new in batch {
                let id = uuid::Uuid::now_v7().hyphenated().to_string();
                query = query
                    .bind(id.clone())
                    .bind(new.address.trim())
                    .bind(&new.locality_kato)
                    .bind(new.rooms)
                    .bind(new.total_area_m2)
                    .bind(now);
                ids.push(id);
            }
            query.execute(&mut *transaction).await?;
        }
        transaction.commit().await?;
        Ok(ids)
    }
}

fn registrant_violations(new: &NewRegistrant) -> Vec<FieldViolation> {
    let mut violations = Vec::new();
    if let Err(error) = Iin::parse(&new.iin) {
        violations.push(violation("iin", &error.to_string()));
    }
    if new.full_name.trim().is_empty() {
        violations.push(violation("full_name", "must not be empty"));
    }
    if !is_valid_phone(&new.phone) {
        violations.push(violation("phone", "must be +7 followed by 10 digits"));
    }
    if new.reported_at_ms <= 0 {
        violations.push(violation("reported_at", "must be set"));
    }
    if !is_valid_kato(&new.locality_kato) {
        violations.push(violation("locality_kato", "must be a 9-digit KATO code"));
    }
    if !(1..=50).contains(&new.family_size) {
        violations.push(violation("family_size", "must be between 1 and 50"));
    }
    violations
}

fn dwelling_violations(new: &NewDwelling) -> Vec<FieldViolation> {
    let mut violations = Vec::new();
    if new.address.trim().is_empty() {
        violations.push(violation("address", "must not be empty"));
    }
    if !is_valid_kato(&new.locality_kato) {
        violations.push(violation("locality_kato", "must be a 9-digit KATO code"));
    }
    if !(1..=20).contains(&new.rooms) {
        violations.push(violation("rooms", "must be between 1 and 20"));
    }
    if !(new.total_area_m2.is_finite() && new.total_area_m2 > 0.0 && new.total_area_m2 < 1000.0) {
        violations.push(violation(
            "total_area_m2",
            "must be a positive area below 1000 m²",
        ));
    }
    violations
}

fn violation(field: &str, description: &str) -> FieldViolation {
    FieldViolation {
        field: field.to_string(),
        description: description.to_string(),
    }
}

/// The kit's `page_size` check, its refusal kept as this request's field violation.
pub(crate) fn request_page_size(requested: i32) -> Result<usize, HousingError> {
    paging::page_size(requested)
        .map_err(|refusal| HousingError::Invalid(refusal.field_violations().to_vec()))
}

/// The kit's `page_token` check, its refusal kept as this request's field violation.
pub(crate) fn request_page_after(token: &str, scope: &str) -> Result<Option<String>, HousingError> {
    paging::decode_page_token(token, scope)
        .map_err(|refusal| HousingError::Invalid(refusal.field_violations().to_vec()))
}

/// A page token whose key is not one this list writes.
pub(crate) fn malformed_page_token() -> HousingError {
    HousingError::invalid_field("page_token", "is not a token returned by this list")
}

pub(crate) fn corrupt(column: &'static str) -> HousingError {
    tracing::error!(column, "unexpected stored value");
    HousingError::Corrupt { column }
}

fn registrant_from_row(row: &AnyRow) -> Result<pb::Registrant, HousingError> {
    let status: String = row.try_get("status")?;
    let status = RegistrantStatus::parse(&status).ok_or_else(|| corrupt("registrants.status"))?;
    let removal_reason: Option<String> = row.try_get("removal_reason")?;
    let removal_reason = removal_reason
        .as_deref()
        .and_then(RemovalReason::parse)
        .map(|reason| reason.to_proto() as i32)
        .unwrap_or_default();
    let family_size: i64 = row.try_get("family_size")?;
    let norm_matching_only: i64 = row.try_get("norm_matching_only")?;
    let unreachable_until_ms: i64 = row.try_get("unreachable_until_ms")?;
    Ok(pb::Registrant {
        iin: row.try_get("iin")?,
        full_name: row.try_get("full_name")?,
        phone: row.try_get("phone")?,
        reported_at: Some(timestamp_from_millis(row.try_get("reported_at_ms")?)),
        locality_kato: row.try_get("locality_kato")?,
        family_size: i32::try_from(family_size).unwrap_or(i32::MAX),
        status: status.to_proto() as i32,
        removal_reason,
        norm_matching_only: norm_matching_only != 0,
        queue_position: 0,
        unreachable_until: (unreachable_until_ms > 0)
            .then(|| timestamp_from_millis(unreachable_until_ms)),
    })
}

fn dwelling_from_row(row: &AnyRow) -> Result<pb::Dwelling, HousingError> {
    let status: String = row.try_get("status")?;
    let status = DwellingStatus::parse(&status).ok_or_else(|| corrupt("dwellings.status"))?;
    let rooms: i64 = row.try_get("rooms")?;
    Ok(pb::Dwelling {
        id: row.try_get("id")?,
        address: row.try_get("address")?,
        locality_kato: row.try_get("locality_kato")?,
        rooms: i32::try_from(rooms).unwrap_or(i32::MAX),
        total_area_m2: row.try_get("total_area_m2")?,
        status: status.to_proto() as i32,
    })
}
