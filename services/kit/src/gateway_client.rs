//! A service's outbound side: one channel to the gateway plus the participant's signing key, so
//! every call a service makes to another goes through the gateway with a signed envelope.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tonic::transport::Channel;

use crate::client::{ClientSettings, connect_lazy};
use crate::envelope::EnvelopeBuilder;
use crate::pki::SigningKey;
use crate::server::TlsFiles;

/// The name the gateway's certificate carries in the development PKI and the Kubernetes setup.
pub const DEFAULT_GATEWAY_SERVER_NAME: &str = "gateway";

/// Where and as whom a service calls the gateway.
#[derive(Debug, Clone)]
pub struct GatewayClientSettings {
    /// `host:port` of the gateway.
    pub address: String,
    /// The name the gateway's certificate must carry.
    pub server_name: String,
    /// The participant's certificate files; `None` means plaintext (tests only).
    pub tls: Option<TlsFiles>,
    /// Connection timeout.
    pub connect_timeout: Duration,
}

/// A lazily connected gateway channel and the key that signs this participant's envelopes.
#[derive(Clone)]
pub struct GatewayClient {
    channel: Channel,
    signing_key: Arc<SigningKey>,
    participant: String,
}

impl std::fmt::Debug for GatewayClient {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("GatewayClient")
            .field("participant", &self.participant)
            .finish_non_exhaustive()
    }
}

impl GatewayClient {
    /// A client for `participant` that connects on first use.
    pub fn connect_lazy(
        settings: &GatewayClientSettings,
        participant: &str,
        signing_key: Arc<SigningKey>,
    ) -> anyhow::Result<Self> {
        let channel = connect_lazy(&ClientSettings {
            address: settings.address.clone(),
            tls: settings.tls.clone(),
            server_name: settings.server_name.clone(),
            connect_timeout: settings.connect_timeout,
        })
        .with_context(|| format!("{participant}: gateway channel to {}", settings.address))?;
        Ok(Self::from_channel(channel, participant, signing_key))
    }

    /// A client over an existing channel (tests, or a channel shared with other clients).
    pub fn from_channel(channel: Channel, participant: &str, signing_key: Arc<SigningKey>) -> Self {
        Self {
            channel,
            signing_key,
            participant: participant.to_string(),
        }
    }

    /// The channel, for generated gRPC clients.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The participant this client signs as.
    pub fn participant(&self) -> &str {
        &self.participant
    }

    /// `message` for the gRPC method `path` (`/package.Service/Method`), with `envelope` signed by
    /// this participant's key.
    pub fn signed_request<M: prost::Message>(
        &self,
        envelope: &EnvelopeBuilder,
        path: &str,
        message: M,
    ) -> tonic::Request<M> {
        envelope.signed_request(&self.signing_key, path, message)
    }
}
