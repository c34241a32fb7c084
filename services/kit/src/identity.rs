//! Who is calling: the participant id of the verified client certificate of a gRPC call, and the
//! check that keeps a service's own routes to the participants allowed to call it (the gateway).

use parking_lot::RwLock;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::error::ApiError;
use crate::pki::participant_id_from_cert;

/// `ErrorInfo` reason when a participant calls a service it must reach through the gateway.
pub const REASON_CALLER_NOT_ALLOWED: &str = crate::error::reasons::CALLER_NOT_ALLOWED;

/// How many certificates an [`IdentityCache`] remembers before it starts over.
const IDENTITY_CACHE_LIMIT: usize = 4_096;

/// gRPC services every authenticated peer may call on any target: probes and reflection. The test
/// clock ([`crate::test_clock`]) checks its caller itself.
const OPEN_SERVICES: [&str; 4] = [
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/shlyuz.testing.v1.TestClockService/",
];

/// Participant ids read from client certificates, remembered by certificate so that X.509 is
/// parsed once per client certificate, not once per call. Bounded: cleared when it grows past
/// 4,096 certificates.
#[derive(Debug, Default)]
pub struct IdentityCache {
    by_certificate: RwLock<HashMap<Vec<u8>, Result<String, String>>>,
}

impl IdentityCache {
    /// The participant of the mutual-TLS connection a request came on (`UNAUTHENTICATED` when
    /// there is no client certificate or it names no participant).
    pub fn participant_of(&self, extensions: &http::Extensions) -> Result<String, ApiError> {
        let certificates = extensions
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(|info| info.peer_certs());
        let Some(leaf) = certificates
            .as_ref()
            .and_then(|certificates| certificates.first())
        else {
            return Err(ApiError::unauthenticated(
                crate::error::reasons::CLIENT_CERTIFICATE_REQUIRED,
                "a client certificate is required (mutual TLS)",
            ));
        };
        let der: &[u8] = leaf.as_ref();
        let cached = self.by_certificate.read().get(der).cloned();
        let identity = match cached {
            Some(identity) => identity,
            None => {
                let identity = participant_id_from_cert(der).map_err(|error| error.to_string());
                let mut cache = self.by_certificate.write();
                if cache.len() >= IDENTITY_CACHE_LIMIT {
                    cache.clear();
                }
                cache.insert(der.to_vec(), identity.clone());
                identity
            }
        };
        identity.map_err(|error| {
            ApiError::unauthenticated(
                crate::error::reasons::UNKNOWN_PARTICIPANT,
                format!("no participant id in the client certificate: {error}"),
            )
        })
    }
}

/// Which participants may call a server's own routes.
#[derive(Debug, Clone, Default)]
pub enum Callers {
    /// Every participant the CA vouches for (the gateway, which applies the directory's rules).
    #[default]
    Any,
    /// Only these participants (a service behind the gateway: the gateway). Health probes and
    /// reflection stay open to every authenticated peer.
    Only(Arc<BTreeSet<String>>),
}

impl Callers {
    /// Only `participants`.
    pub fn only<I, S>(participants: I) -> Callers
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Callers::Only(Arc::new(participants.into_iter().map(Into::into).collect()))
    }
}

/// Refuses calls to a server's own routes from participants [`Callers`] does not name.
#[derive(Debug, Clone, Default)]
pub(crate) struct CallerCheck {
    callers: Callers,
    identities: Arc<IdentityCache>,
}

impl CallerCheck {
    pub(crate) fn new(callers: Callers) -> CallerCheck {
        CallerCheck {
            callers,
            identities: Arc::default(),
        }
    }

    /// `Ok` when the call may proceed.
    pub(crate) fn check(&self, path: &str, extensions: &http::Extensions) -> Result<(), ApiError> {
        let Callers::Only(allowed) = &self.callers else {
            return Ok(());
        };
        if OPEN_SERVICES.iter().any(|prefix| path.starts_with(prefix)) {
            return Ok(());
        }
        let participant = self.identities.participant_of(extensions)?;
        if allowed.contains(&participant) {
            return Ok(());
        }
        let names: Vec<&str> = allowed.iter().map(String::as_str).collect();
        Err(ApiError::permission_denied(
            REASON_CALLER_NOT_ALLOWED,
            format!(
                "participant {participant} may not call this service directly; call it through \
                 the gateway"
            ),
        )
        .with_metadata("participant", participant)
        .with_metadata("allowed", names.join(",")))
    }
}
