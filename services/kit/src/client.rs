//! gRPC client channels to the gateway or another Shlyuz endpoint, with the participant's own
//! client certificate (mTLS) or plaintext when explicitly configured.

use std::time::Duration;

use anyhow::Context;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::server::TlsFiles;

/// How to reach a gRPC endpoint.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// `host:port` of the endpoint.
    pub address: String,
    /// The participant's certificate files; `None` means plaintext.
    pub tls: Option<TlsFiles>,
    /// The name the server certificate must carry (e.g. `gateway` or `localhost`).
    pub server_name: String,
    /// Connection timeout.
    pub connect_timeout: Duration,
}

fn endpoint(settings: &ClientSettings) -> anyhow::Result<Endpoint> {
    let scheme = if settings.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{}", settings.address))
        .with_context(|| format!("invalid endpoint address {:?}", settings.address))?
        .connect_timeout(settings.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true);
    if let Some(files) = &settings.tls {
        let ca_pem = std::fs::read(&files.ca_cert)
            .with_context(|| format!("cannot read CA certificate {}", files.ca_cert.display()))?;
        let cert_pem = std::fs::read(&files.cert)
            .with_context(|| format!("cannot read certificate {}", files.cert.display()))?;
        let key_pem = std::fs::read(&files.key)
            .with_context(|| format!("cannot read private key {}", files.key.display()))?;
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca_pem))
            .identity(Identity::from_pem(cert_pem, key_pem))
            .domain_name(settings.server_name.clone());
        endpoint = endpoint
            .tls_config(tls)
            .context("invalid client TLS configuration")?;
    }
    Ok(endpoint)
}

/// Connects now, failing when the endpoint is unreachable or the handshake fails.
pub async fn connect(settings: &ClientSettings) -> anyhow::Result<Channel> {
    endpoint(settings)?
        .connect()
        .await
        .with_context(|| format!("cannot connect to {}", settings.address))
}

/// A channel that connects on first use and reconnects as needed (for long-lived service clients).
pub fn connect_lazy(settings: &ClientSettings) -> anyhow::Result<Channel> {
    Ok(endpoint(settings)?.connect_lazy())
}
