//! The consent hook: for access rules that require consent, `x-shlyuz-consent-id` must name an
//! active consent of that subject for that participant and purpose. The registry's
//! `ConsentService` provides the real store; until it is wired in, the check sits behind this trait.

use std::collections::HashMap;
use std::sync::RwLock;

use futures::future::BoxFuture;

/// What the gateway asks about one call.
#[derive(Debug, Clone, Copy)]
pub struct ConsentQuery<'a> {
    /// The calling participant.
    pub participant: &'a str,
    /// The subject whose data is requested.
    pub subject_iin: &'a str,
    /// The stated purpose.
    pub purpose: &'a str,
    /// `x-shlyuz-consent-id`, possibly empty.
    pub consent_id: &'a str,
    /// Now, epoch milliseconds.
    pub now_ms: i64,
}

/// Why a consent check failed; every variant becomes `PERMISSION_DENIED` / `CONSENT_REQUIRED`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsentRefusal {
    /// No consent id was sent.
    #[error("x-shlyuz-consent-id is required by the access rule")]
    Missing,
    /// The id names no consent.
    #[error("consent {0} does not exist")]
    Unknown(String),
    /// The consent was revoked by the subject.
    #[error("consent {0} was revoked")]
    Revoked(String),
    /// The consent has expired.
    #[error("consent {0} has expired")]
    Expired(String),
    /// The consent is for another subject, participant or purpose.
    #[error("consent {0} does not cover this subject, participant and purpose")]
    Mismatch(String),
    /// The consent store could not answer.
    #[error("consent could not be checked: {0}")]
    Unavailable(String),
}

/// Checks consents.
pub trait ConsentChecker: Send + Sync + 'static {
    /// `Ok` when the query is covered by an active consent.
    fn check<'a>(&'a self, query: ConsentQuery<'a>) -> BoxFuture<'a, Result<(), ConsentRefusal>>;
}

/// One consent record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentRecord {
    /// Subject who consented.
    pub subject_iin: String,
    /// Participant allowed to access.
    pub participant: String,
    /// Purpose consented to.
    pub purpose: String,
    /// Expiry, epoch milliseconds.
    pub expires_at_ms: i64,
    /// Whether the subject revoked it.
    pub revoked: bool,
}

/// Consents held in memory: the gateway's store until the registry's consent service is wired in,
/// and the store of tests.
#[derive(Default)]
pub struct InMemoryConsents {
    records: RwLock<HashMap<String, ConsentRecord>>,
}

impl InMemoryConsents {
    /// Adds or replaces a consent.
    pub fn insert(&self, consent_id: &str, record: ConsentRecord) {
        let mut records = self
            .records
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        records.insert(consent_id.to_string(), record);
    }

    /// Marks a consent revoked.
    pub fn revoke(&self, consent_id: &str) {
        let mut records = self
            .records
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(record) = records.get_mut(consent_id) {
            record.revoked = true;
        }
    }

    fn evaluate(&self, query: ConsentQuery<'_>) -> Result<(), ConsentRefusal> {
        if query.consent_id.is_empty() {
            return Err(ConsentRefusal::Missing);
        }
        let records = self
            .records
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(record) = records.get(query.consent_id) else {
            return Err(ConsentRefusal::Unknown(query.consent_id.to_string()));
        };
        if record.revoked {
            return Err(ConsentRefusal::Revoked(query.consent_id.to_string()));
        }
        if record.expires_at_ms <= query.now_ms {
            return Err(ConsentRefusal::Expired(query.consent_id.to_string()));
        }
        if record.subject_iin != query.subject_iin
            || record.participant != query.participant
            || record.purpose != query.purpose
        {
            return Err(ConsentRefusal::Mismatch(query.consent_id.to_string()));
        }
        Ok(())
    }
}

impl ConsentChecker for InMemoryConsents {
    fn check<'a>(&'a self, query: ConsentQuery<'a>) -> BoxFuture<'a, Result<(), ConsentRefusal>> {
        Box::pin(async move { self.evaluate(query) })
    }
}
