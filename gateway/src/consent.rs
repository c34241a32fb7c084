//! The consent hook: for access rules that require consent, `x-shlyuz-consent-id` must name an
//! active consent of that subject for that participant and purpose. [`RegistryConsents`] asks the
//! registry's `ConsentService`; [`InMemoryConsents`] serves tests and gateways without a registry.

use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use shlyuz_proto::registry::v1::consent_service_client::ConsentServiceClient;
use shlyuz_proto::registry::v1::{Consent, ConsentState, GetConsentRequest};
use tonic::transport::Channel;

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

/// Why a consent check failed: `PERMISSION_DENIED` / `CONSENT_REQUIRED`, except `Unavailable`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsentRefusal {
    /// No consent id was sent.
    #[error("x-shlyuz-consent-id is required by the access rule")]
    Missing,
    /// The id names no consent.
    #[error("consent {0} does not exist")]
    Unknown(String),
    /// The consent was never confirmed by the subject's OTP (or was locked after wrong OTPs).
    #[error("consent {0} is not confirmed by the subject")]
    NotConfirmed(String),
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

/// `Ok` when `query` is covered by an active consent, else `PERMISSION_DENIED` /
/// `CONSENT_REQUIRED` saying why — or `UNAVAILABLE` / `CONSENT_UNAVAILABLE` when the consent
/// store could not answer (an outage is not the subject's refusal, and is worth a retry).
///
/// A batch call names its subjects as a comma-separated list, and then `x-shlyuz-consent-id` holds
/// one consent id per subject, in the same order: each pair is checked, and the first refusal
/// names the subject's place in the list. A list of ids not as long as the list of subjects is
/// `INVALID_ARGUMENT` naming `x-shlyuz-consent-id`.
pub async fn require_consent(
    checker: &dyn ConsentChecker,
    query: ConsentQuery<'_>,
) -> Result<(), shlyuz_kit::error::ApiError> {
    let subjects: Vec<&str> = query.subject_iin.split(',').collect();
    let consent_ids: Vec<&str> = match query.consent_id {
        "" => Vec::new(),
        ids => ids.split(',').collect(),
    };
    if subjects.len() == 1 && consent_ids.len() <= 1 {
        return checker.check(query).await.map_err(refusal_error);
    }
    if consent_ids.is_empty() {
        return Err(refusal_error(ConsentRefusal::Missing));
    }
    if consent_ids.len() != subjects.len() {
        return Err(shlyuz_kit::error::ApiError::invalid_field(
            shlyuz_kit::envelope::CONSENT_ID,
            format!(
                "names {} consents for {} subjects: send one consent id per subject, in the order of {}",
                consent_ids.len(),
                subjects.len(),
                shlyuz_kit::envelope::SUBJECT_IIN
            ),
        ));
    }
    let count = subjects.len();
    let pairs: Vec<(&str, &str)> = subjects.into_iter().zip(consent_ids).collect();
    for (chunk_index, chunk) in pairs.chunks(BATCH_CONSENT_CHECKS_AT_ONCE).enumerate() {
        let checks = chunk.iter().map(|(subject_iin, consent_id)| {
            checker.check(ConsentQuery {
                subject_iin,
                consent_id,
                ..query
            })
        });
        let answers = futures::future::join_all(checks).await;
        let refused = answers
            .into_iter()
            .enumerate()
            .find_map(|(index, answer)| answer.err().map(|refusal| (index, refusal)));
        if let Some((index, refusal)) = refused {
            let error = refusal_error(refusal);
            let place = chunk_index * BATCH_CONSENT_CHECKS_AT_ONCE + index + 1;
            return Err(shlyuz_kit::error::ApiError::new(
                error.code(),
                error.reason(),
                format!("subject {place} of {count}: {}", error.message()),
            ));
        }
    }
    Ok(())
}

/// Consents of one batch call asked for at once.
const BATCH_CONSENT_CHECKS_AT_ONCE: usize = 16;

fn refusal_error(refusal: ConsentRefusal) -> shlyuz_kit::error::ApiError {
    match refusal {
        ConsentRefusal::Unavailable(_) => {
            shlyuz_kit::error::ApiError::unavailable("CONSENT_UNAVAILABLE", refusal.to_string())
        }
        _ => {
            shlyuz_kit::error::ApiError::permission_denied("CONSENT_REQUIRED", refusal.to_string())
        }
    }
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
        let mut records = self.records.write();
        records.insert(consent_id.to_string(), record);
    }

    /// Marks a consent revoked.
    pub fn revoke(&self, consent_id: &str) {
        let mut records = self.records.write();
        if let Some(record) = records.get_mut(consent_id) {
            record.revoked = true;
        }
    }

    fn evaluate(&self, query: ConsentQuery<'_>) -> Result<(), ConsentRefusal> {
        if query.consent_id.is_empty() {
            return Err(ConsentRefusal::Missing);
        }
        let records = self.records.read();
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

/// How long [`RegistryConsents`] trusts an answer: revocation takes effect within this time.
pub const REGISTRY_CONSENT_CACHE_TTL: Duration = Duration::from_secs(2);

/// Answers kept at most; beyond that the expired ones are dropped first, then all.
const REGISTRY_CONSENT_CACHE_LIMIT: usize = 10_000;

/// Deadline of one `GetConsent` call to the registry.
const REGISTRY_CONSENT_TIMEOUT: Duration = Duration::from_secs(2);

struct CachedConsent {
    fetched: Instant,
    consent: Consent,
}

/// Consents held by the registry's `ConsentService`, asked directly over mTLS (not through the
/// gateway's own proxy) and cached for a short time. Only found consents are cached: an unknown
/// id or a failed call is asked again next time, so an error is never served from the cache.
pub struct RegistryConsents {
    client: ConsentServiceClient<Channel>,
    ttl: Duration,
    cache: Mutex<HashMap<String, CachedConsent>>,
}

impl RegistryConsents {
    /// A checker over a channel to the registry, trusting answers for `ttl`.
    pub fn new(channel: Channel, ttl: Duration) -> Self {
        Self {
            client: ConsentServiceClient::new(channel),
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, consent_id: &str) -> Option<Consent> {
        let cache = self.cache.lock();
        cache
            .get(consent_id)
            .filter(|entry| entry.fetched.elapsed() < self.ttl)
            .map(|entry| entry.consent.clone())
    }

    fn remember(&self, consent_id: &str, consent: &Consent) {
        if self.ttl.is_zero() {
            return;
        }
        let mut cache = self.cache.lock();
        if cache.len() >= REGISTRY_CONSENT_CACHE_LIMIT {
            let ttl = self.ttl;
            cache.retain(|_, entry| entry.fetched.elapsed() < ttl);
            if cache.len() >= REGISTRY_CONSENT_CACHE_LIMIT {
                cache.clear();
            }
        }
        cache.insert(
            consent_id.to_string(),
            CachedConsent {
                fetched: Instant::now(),
                consent: consent.clone(),
            },
        );
    }

    async fn fetch(&self, consent_id: &str) -> Result<Consent, ConsentRefusal> {
        if let Some(consent) = self.cached(consent_id) {
            return Ok(consent);
        }
        let mut request = tonic::Request::new(GetConsentRequest {
            consent_id: consent_id.to_string(),
        });
        request.set_timeout(REGISTRY_CONSENT_TIMEOUT);
        let mut client = self.client.clone();
        match client.get_consent(request).await {
            Ok(response) => {
                let consent = response
                    .into_inner()
                    .consent
                    .ok_or_else(|| ConsentRefusal::Unavailable("empty answer".to_string()))?;
                self.remember(consent_id, &consent);
                Ok(consent)
            }
            Err(status) if status.code() == tonic::Code::NotFound => {
                Err(ConsentRefusal::Unknown(consent_id.to_string()))
            }
            Err(status) if status.code() == tonic::Code::InvalidArgument => {
                Err(ConsentRefusal::Unknown(consent_id.to_string()))
            }
            Err(status) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "consent check failed");
                Err(ConsentRefusal::Unavailable(format!(
                    "the registry answered {:?}",
                    status.code()
                )))
            }
        }
    }
}

/// Whether `consent` covers the call.
fn evaluate_registry_consent(
    consent: &Consent,
    query: ConsentQuery<'_>,
) -> Result<(), ConsentRefusal> {
    let id = || query.consent_id.to_string();
    match ConsentState::try_from(consent.state) {
        Ok(ConsentState::Active) => {}
        Ok(ConsentState::Revoked) => return Err(ConsentRefusal::Revoked(id())),
        Ok(ConsentState::Expired) => return Err(ConsentRefusal::Expired(id())),
        _ => return Err(ConsentRefusal::NotConfirmed(id())),
    }
    if consent.expire_time_ms <= query.now_ms {
        return Err(ConsentRefusal::Expired(id()));
    }
    if consent.subject_iin != query.subject_iin
        || consent.participant != query.participant
        || consent.purpose != query.purpose
    {
        return Err(ConsentRefusal::Mismatch(id()));
    }
    Ok(())
}

impl ConsentChecker for RegistryConsents {
    fn check<'a>(&'a self, query: ConsentQuery<'a>) -> BoxFuture<'a, Result<(), ConsentRefusal>> {
        Box::pin(async move {
            if query.consent_id.is_empty() {
                return Err(ConsentRefusal::Missing);
            }
            let consent = self.fetch(query.consent_id).await?;
            evaluate_registry_consent(&consent, query)
        })
    }
}

/// The consent check of a gateway whose `target:<name>` upstreams resolve through `targets`:
/// the registry's ConsentService where a `registry` target is named, else consents held in
/// memory (a gateway without a registry, in tests and benchmarks).
pub fn checker_for(
    targets: &crate::directory::TargetResolver,
    tls: Option<shlyuz_kit::server::TlsFiles>,
) -> anyhow::Result<Arc<dyn ConsentChecker>> {
    let Some(address) = targets.resolve(REGISTRY_TARGET) else {
        return Ok(Arc::new(InMemoryConsents::default()));
    };
    let channel = shlyuz_kit::client::connect_lazy(&shlyuz_kit::client::ClientSettings {
        address: address.to_string(),
        tls,
        server_name: REGISTRY_TARGET.to_string(),
        connect_timeout: std::time::Duration::from_secs(2),
    })
    .map_err(|error| anyhow::anyhow!("gateway: consent channel to the registry: {error:#}"))?;
    Ok(Arc::new(RegistryConsents::new(
        channel,
        REGISTRY_CONSENT_CACHE_TTL,
    )))
}

/// The target whose ConsentService the gateway asks.
const REGISTRY_TARGET: &str = "registry";

#[cfg(test)]
mod tests {
    use super::*;

    struct Failing;

    impl ConsentChecker for Failing {
        fn check<'a>(
            &'a self,
            _query: ConsentQuery<'a>,
        ) -> BoxFuture<'a, Result<(), ConsentRefusal>> {
            Box::pin(async { Err(ConsentRefusal::Unavailable("registry down".to_string())) })
        }
    }

    fn query() -> ConsentQuery<'static> {
        ConsentQuery {
            participant: "intake",
            subject_iin: "900101300017",
            purpose: "MILITARY_RECRUITMENT",
            consent_id: "c-1",
            now_ms: 1_000,
        }
    }

    #[tokio::test]
    async fn an_outage_of_the_consent_store_is_unavailable_not_a_refusal() {
        let error = require_consent(&Failing, query())
            .await
            .expect_err("no answer");
        assert_eq!(error.code(), tonic::Code::Unavailable);
        assert_eq!(error.reason(), "CONSENT_UNAVAILABLE");

        let refused = require_consent(&InMemoryConsents::default(), query())
            .await
            .expect_err("no such consent");
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        assert_eq!(refused.reason(), "CONSENT_REQUIRED");
    }
}
