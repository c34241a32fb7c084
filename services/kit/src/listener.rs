//! How a gRPC server accepts connections, before HTTP/2 sees them: at most `max_connections`
//! open at once (the others are closed at once), the TLS 1.3 handshake within a time limit, and
//! client-certificate revocation lists reloaded from their file for new connections.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tonic::transport::server::Connected;

use crate::file_watch::{FileStamp, hangup_signals, next_hangup};
use crate::pki::{load_certs, load_private_key};
use crate::server::TlsFiles;
use crate::telemetry::MetricsRegistry;

/// Limits on a server's connections and streams, and the revocation lists of its clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerOptions {
    /// How long a new connection may take to complete its TLS handshake before it is closed.
    pub tls_handshake_timeout: Duration,
    /// Connections open at once; further ones are closed as soon as they are accepted.
    pub max_connections: usize,
    /// HTTP/2 streams (calls) one connection may have open at once.
    pub max_concurrent_streams: u32,
    /// How often an idle HTTP/2 connection is pinged.
    pub http2_keepalive_interval: Duration,
    /// How long a ping may go unanswered before the connection is closed.
    pub http2_keepalive_timeout: Duration,
    /// The HTTP/2 header list size above which the transport itself answers HTTP 431; set above
    /// the size services refuse with a gRPC status, so that callers see the status.
    pub max_header_list_bytes: u32,
    /// PEM file of certificate revocation lists for client certificates (mutual TLS only):
    /// reloaded when it changes or on SIGHUP, for new connections.
    pub client_crl_file: Option<PathBuf>,
    /// How often `client_crl_file` is checked for changes.
    pub reload_interval: Duration,
}

impl Default for ListenerOptions {
    fn default() -> Self {
        Self {
            tls_handshake_timeout: Duration::from_secs(10),
            max_connections: 1_000,
            max_concurrent_streams: 200,
            http2_keepalive_interval: Duration::from_secs(60),
            http2_keepalive_timeout: Duration::from_secs(20),
            max_header_list_bytes: 32 * 1024,
            client_crl_file: None,
            reload_interval: Duration::from_secs(2),
        }
    }
}

/// Builds the rustls configuration of a mutual-TLS server: TLS 1.3 only, a client certificate
/// issued by the CA required, and, with `crl_file`, not revoked by one of its CRLs.
pub fn server_tls_config(
    files: &TlsFiles,
    crl_file: Option<&Path>,
) -> anyhow::Result<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for ca_cert in load_certs(&files.ca_cert).context("CA certificate")? {
        roots
            .add(ca_cert)
            .with_context(|| format!("CA certificate {}", files.ca_cert.display()))?;
    }
    let mut verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    if let Some(crl_file) = crl_file {
        verifier = verifier.with_crls(load_crls(crl_file)?);
    }
    let verifier = verifier
        .build()
        .context("cannot build the client certificate verifier")?;
    let chain = load_certs(&files.cert).context("certificate")?;
    let key = load_private_key(&files.key).context("private key")?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .with_context(|| format!("certificate {}", files.cert.display()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Every CRL of a PEM file; a file without one is an error, since revocation was asked for.
fn load_crls(
    path: &Path,
) -> anyhow::Result<Vec<rustls::pki_types::CertificateRevocationListDer<'static>>> {
    let pem = std::fs::read(path)
        .with_context(|| format!("cannot read the client CRL file {}", path.display()))?;
    let crls = rustls_pemfile::crls(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("invalid PEM in the client CRL file {}", path.display()))?;
    if crls.is_empty() {
        anyhow::bail!("the client CRL file {} holds no X509 CRL", path.display());
    }
    Ok(crls)
}

/// The TLS configuration new connections are accepted with, replaced when the CRL file changes;
/// connections already open keep the configuration they were accepted with.
#[derive(Clone)]
pub(crate) struct ServerTls {
    current: Arc<ArcSwap<ServerConfig>>,
    files: TlsFiles,
    crl_file: Option<PathBuf>,
}

impl ServerTls {
    /// Loads the configuration; bad files fail start-up.
    pub(crate) fn load(files: &TlsFiles, crl_file: Option<&Path>) -> anyhow::Result<ServerTls> {
        let config = server_tls_config(files, crl_file)?;
        Ok(ServerTls {
            current: Arc::new(ArcSwap::from_pointee(config)),
            files: files.clone(),
            crl_file: crl_file.map(Path::to_path_buf),
        })
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.load_full())
    }

    /// Rebuilds the configuration from the files; on failure the previous one stays.
    fn reload(&self) -> anyhow::Result<()> {
        let config = server_tls_config(&self.files, self.crl_file.as_deref())?;
        self.current.store(Arc::new(config));
        Ok(())
    }

    /// Reloads when the CRL file changes (checked every `interval`) or on SIGHUP, until the
    /// returned task is aborted. Counted in `shlyuz_server_client_crl_reloads_total{result}`.
    pub(crate) fn spawn_reloader(
        self,
        interval: Duration,
        metrics: &ListenerMetrics,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let crl_file = self.crl_file.clone()?;
        let reloads = metrics.crl_reloads.clone();
        let mut hangups = hangup_signals("client CRL");
        let mut last_stamp = FileStamp::of(&crl_file);
        Some(tokio::spawn(async move {
            let mut poll = tokio::time::interval(interval.max(Duration::from_millis(1)));
            poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick completes at once; the file was just loaded.
            poll.tick().await;
            loop {
                let trigger = tokio::select! {
                    () = next_hangup(&mut hangups) => "sighup",
                    _ = poll.tick() => {
                        if FileStamp::of(&crl_file) == last_stamp {
                            continue;
                        }
                        "file changed"
                    }
                };
                last_stamp = FileStamp::of(&crl_file);
                let reloading = self.clone();
                let outcome = tokio::task::spawn_blocking(move || reloading.reload()).await;
                match outcome {
                    Ok(Ok(())) => {
                        reloads.get_or_create(&RELOAD_OK).inc();
                        tracing::info!(file = %crl_file.display(), trigger, "client CRLs reloaded");
                    }
                    Ok(Err(error)) => {
                        reloads.get_or_create(&RELOAD_REJECTED).inc();
                        tracing::error!(
                            file = %crl_file.display(),
                            trigger,
                            error = format!("{error:#}"),
                            "client CRL reload rejected, keeping the previous lists"
                        );
                    }
                    Err(join_error) => {
                        reloads.get_or_create(&RELOAD_REJECTED).inc();
                        tracing::error!(error = %join_error, "client CRL reload task failed");
                    }
                }
            }
        }))
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

const RELOAD_OK: ReloadLabels = ReloadLabels { result: "ok" };
const RELOAD_REJECTED: ReloadLabels = ReloadLabels { result: "rejected" };

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    reason: &'static str,
}

/// Connections refused because `max_connections` were open.
const REFUSED_AT_CAPACITY: RefusalLabels = RefusalLabels {
    reason: "max_connections",
};
/// Connections closed because their TLS handshake did not finish in time.
const REFUSED_HANDSHAKE_TIMEOUT: RefusalLabels = RefusalLabels {
    reason: "tls_handshake_timeout",
};
/// Connections whose TLS handshake failed (an untrusted, revoked or expired certificate, an old
/// protocol version).
const REFUSED_HANDSHAKE_FAILED: RefusalLabels = RefusalLabels {
    reason: "tls_handshake_failed",
};

/// What the listener counts.
#[derive(Clone)]
pub(crate) struct ListenerMetrics {
    open: Gauge,
    refused: Family<RefusalLabels, Counter>,
    crl_reloads: Family<ReloadLabels, Counter>,
}

impl ListenerMetrics {
    pub(crate) fn registered(registry: &MetricsRegistry) -> Self {
        let open = Gauge::default();
        let refused = Family::<RefusalLabels, Counter>::default();
        let crl_reloads = Family::<ReloadLabels, Counter>::default();
        for reason in [
            REFUSED_AT_CAPACITY,
            REFUSED_HANDSHAKE_TIMEOUT,
            REFUSED_HANDSHAKE_FAILED,
        ] {
            let _ = refused.get_or_create(&reason);
        }
        registry.register(
            "server_connections_open",
            "connections accepted and not yet closed",
            open.clone(),
        );
        registry.register(
            "server_connections_refused",
            "connections closed before HTTP/2, by reason",
            refused.clone(),
        );
        registry.register(
            "server_client_crl_reloads",
            "client CRL reloads by result: ok (applied) or rejected (previous lists kept)",
            crl_reloads.clone(),
        );
        Self {
            open,
            refused,
            crl_reloads,
        }
    }
}

/// Connections handed to the HTTP/2 server, each holding its place under `max_connections`.
pub(crate) type Incoming<IO> = tokio_stream::wrappers::ReceiverStream<io::Result<Counted<IO>>>;

/// Accepts plaintext connections under the connection cap.
pub(crate) fn accept_plaintext(
    listener: TcpListener,
    options: &ListenerOptions,
    metrics: ListenerMetrics,
) -> Incoming<TcpStream> {
    accept_with(
        listener,
        options,
        metrics,
        |stream| async move { Ok(stream) },
    )
}

/// Accepts mutual-TLS connections under the connection cap, each with the TLS configuration
/// current when it arrived and within the handshake timeout.
pub(crate) fn accept_tls(
    listener: TcpListener,
    options: &ListenerOptions,
    metrics: ListenerMetrics,
    tls: ServerTls,
) -> Incoming<tokio_rustls::server::TlsStream<TcpStream>> {
    accept_with(listener, options, metrics, move |stream| {
        let acceptor = tls.acceptor();
        async move { acceptor.accept(stream).await }
    })
}

/// The accept loop: a connection over the cap is dropped (closed) at once; the others complete
/// `handshake` within the timeout in their own task and are then handed over. The loop — and
/// with it the listening socket — ends when the server drops the stream.
fn accept_with<IO, Handshake, Handshaking>(
    listener: TcpListener,
    options: &ListenerOptions,
    metrics: ListenerMetrics,
    handshake: Handshake,
) -> Incoming<IO>
where
    IO: Send + 'static,
    Handshake: Fn(TcpStream) -> Handshaking + Send + 'static,
    Handshaking: std::future::Future<Output = io::Result<IO>> + Send + 'static,
{
    let (sender, receiver) = mpsc::channel(64);
    let permits = Arc::new(Semaphore::new(options.max_connections));
    let handshake_timeout = options.tls_handshake_timeout;
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = sender.closed() => return,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, usually: back off instead of spinning.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                metrics.refused.get_or_create(&REFUSED_AT_CAPACITY).inc();
                tracing::debug!(%peer, "connection refused: too many open connections");
                drop(stream);
                continue;
            };
            // Unary gRPC calls are small; Nagle would add latency for nothing.
            let _ = stream.set_nodelay(true);
            let handshaking = handshake(stream);
            let sender = sender.clone();
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let io = match tokio::time::timeout(handshake_timeout, handshaking).await {
                    Ok(Ok(io)) => io,
                    Ok(Err(error)) => {
                        metrics
                            .refused
                            .get_or_create(&REFUSED_HANDSHAKE_FAILED)
                            .inc();
                        tracing::debug!(%peer, %error, "TLS handshake failed");
                        return;
                    }
                    Err(_elapsed) => {
                        metrics
                            .refused
                            .get_or_create(&REFUSED_HANDSHAKE_TIMEOUT)
                            .inc();
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
                metrics.open.inc();
                let counted = Counted {
                    io,
                    _permit: permit,
                    open: metrics.open.clone(),
                };
                let _ = sender.send(Ok(counted)).await;
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(receiver)
}

/// A connection that holds its place under the connection cap until it is closed.
pub(crate) struct Counted<IO> {
    io: IO,
    _permit: OwnedSemaphorePermit,
    open: Gauge,
}

impl<IO> Drop for Counted<IO> {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl<IO: Connected> Connected for Counted<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Counted<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(context, buffer)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Counted<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(context, buffer)
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(context)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(context)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(context, buffers)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::DevPki;

    #[test]
    fn a_crl_file_without_a_crl_stops_start_up() {
        crate::install_crypto_provider();
        let dir = tempfile::tempdir().expect("temp dir");
        let pki = DevPki::ensure(&dir.path().join("pki"), &["gateway"]).expect("pki");
        let files = pki.tls_files("gateway").expect("gateway files");
        let crl_file = dir.path().join("clients.crl");

        std::fs::write(&crl_file, "").expect("write an empty file");
        let refused = ServerTls::load(&files, Some(&crl_file))
            .err()
            .expect("an empty CRL file was accepted");
        assert!(
            format!("{refused:#}").contains("holds no X509 CRL"),
            "{refused:#}"
        );

        std::fs::write(
            &crl_file,
            pki.revocation_list(&[], 1).expect("revocation list"),
        )
        .expect("write a CRL");
        let tls = ServerTls::load(&files, Some(&crl_file)).expect("a valid CRL file");

        // A broken update is refused and the previous lists stay in use.
        std::fs::write(&crl_file, "-----BEGIN X509 CRL-----\nnot base64\n").expect("write");
        let before = tls.current.load_full();
        assert!(tls.reload().is_err(), "a broken CRL file was applied");
        assert!(Arc::ptr_eq(&before, &tls.current.load_full()));
    }
}
