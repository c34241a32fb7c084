//! Signing as a tower layer: a request sent through a [`SigningService`] carries this
//! participant's envelope signed for the gRPC path it is sent to (`request.uri().path()`) and the
//! message it carries, so callers name no path. The envelope's fields come with the request
//! ([`with_envelope`]); the layer adds the `x-shlyuz-*` headers exactly as
//! [`EnvelopeBuilder::signed_request`] would, and as the gateway verifies them: the request hash
//! is the SHA-256 of the one gRPC message's bytes as sent (the frame without its 5-byte prefix).

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http_body_util::BodyExt as _;
use tonic::body::Body;

use crate::envelope::EnvelopeBuilder;
use crate::pki::SigningKey;

/// Length of a gRPC message prefix: the compressed flag and the big-endian message length.
const GRPC_PREFIX_LENGTH: usize = 5;

/// `message` with `envelope` for the signing layer to sign: a unary or server-streaming call.
pub fn with_envelope<M>(envelope: EnvelopeBuilder, message: M) -> tonic::Request<M> {
    let mut request = tonic::Request::new(message);
    request.extensions_mut().insert(OutgoingEnvelope {
        envelope,
        signed_body: SignedBody::OneMessage,
    });
    request
}

/// `stream` with `envelope` for the signing layer to sign without a request hash, as the gateway
/// checks client-streaming calls; the stream is sent as it comes, never buffered.
pub fn with_streaming_envelope<S>(envelope: EnvelopeBuilder, stream: S) -> tonic::Request<S> {
    let mut request = tonic::Request::new(stream);
    request.extensions_mut().insert(OutgoingEnvelope {
        envelope,
        signed_body: SignedBody::Stream,
    });
    request
}

/// The envelope a caller set on a request, carried to the layer in the request's extensions.
#[derive(Debug, Clone)]
struct OutgoingEnvelope {
    envelope: EnvelopeBuilder,
    signed_body: SignedBody,
}

/// What the signature covers besides the envelope and the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SignedBody {
    /// The hash of the one request message, read before the call is sent.
    OneMessage,
    /// No hash: the request is a stream.
    Stream,
}

/// Signs every request of the service it wraps with `signing_key`.
#[derive(Clone)]
pub struct SigningLayer {
    signing_key: Arc<SigningKey>,
}

impl SigningLayer {
    /// A layer signing with `signing_key`.
    pub fn new(signing_key: Arc<SigningKey>) -> Self {
        Self { signing_key }
    }
}

impl<S> tower::Layer<S> for SigningLayer {
    type Service = SigningService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SigningService::new(inner, self.signing_key.clone())
    }
}

/// A gRPC transport that signs each request before `inner` sends it. A request without an
/// envelope ([`with_envelope`]) is signed with an empty one (a fresh message id and timestamp, no
/// user, purpose or subject), as callers signed their envelope-less calls by hand.
#[derive(Clone)]
pub struct SigningService<S> {
    inner: S,
    signing_key: Arc<SigningKey>,
}

/// The gateway channel with signing: what generated clients run over.
pub type SignedChannel = SigningService<tonic::transport::Channel>;

impl<S> SigningService<S> {
    /// `inner` with every request signed by `signing_key`.
    pub fn new(inner: S, signing_key: Arc<SigningKey>) -> Self {
        Self { inner, signing_key }
    }
}

impl<S> std::fmt::Debug for SigningService<S> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SigningService")
            .finish_non_exhaustive()
    }
}

impl<S, ResponseBody> tower::Service<http::Request<Body>> for SigningService<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<ResponseBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    S::Error: Into<tower::BoxError>,
{
    type Response = http::Response<ResponseBody>;
    type Error = tower::BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // The service that was polled ready sends this request; the clone waits for the next.
        let fresh = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, fresh);
        let signing_key = self.signing_key.clone();
        Box::pin(async move {
            let signed = sign(&signing_key, request).await?;
            ready.call(signed).await.map_err(Into::into)
        })
    }
}

/// `request` with its envelope headers, signed for its path and message.
async fn sign(
    signing_key: &SigningKey,
    request: http::Request<Body>,
) -> Result<http::Request<Body>, tonic::Status> {
    let (mut parts, body) = request.into_parts();
    let outgoing = parts
        .extensions
        .remove::<OutgoingEnvelope>()
        .unwrap_or_else(|| OutgoingEnvelope {
            envelope: EnvelopeBuilder::default(),
            signed_body: SignedBody::OneMessage,
        });
    let path = parts.uri.path();
    let (headers, body) = match outgoing.signed_body {
        SignedBody::Stream => (outgoing.envelope.sign(signing_key, path, None), body),
        SignedBody::OneMessage => {
            let framed = body.collect().await?.to_bytes();
            let message = single_message(&framed)?;
            let headers = outgoing.envelope.sign(signing_key, path, Some(message));
            (headers, Body::new(http_body_util::Full::new(framed)))
        }
    };
    for (name, value) in headers {
        // As `EnvelopeBuilder::signed_request`: a caller-supplied field that is not a valid
        // header value is left out, and the gateway refuses the envelope.
        if let Ok(value) = http::HeaderValue::from_str(&value) {
            parts.headers.insert(name, value);
        }
    }
    Ok(http::Request::from_parts(parts, body))
}

/// The bytes of the one gRPC message in `framed`, which the gateway hashes.
fn single_message(framed: &[u8]) -> Result<&[u8], tonic::Status> {
    let not_one_message = || {
        tonic::Status::internal(
            "a signed request must carry exactly one message; sign a client stream with \
             with_streaming_envelope",
        )
    };
    let Some((prefix, message)) = framed.split_at_checked(GRPC_PREFIX_LENGTH) else {
        return Err(not_one_message());
    };
    let length = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]);
    if usize::try_from(length).ok() != Some(message.len()) {
        return Err(not_one_message());
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::SocketAddr;
    use std::pin::Pin;

    use futures::{Stream, StreamExt as _};
    use parking_lot::Mutex;
    use prost::Message as _;
    use shlyuz_proto::echo::v1::echo_service_client::EchoServiceClient;
    use shlyuz_proto::echo::v1::echo_service_server::{EchoService, EchoServiceServer};
    use shlyuz_proto::echo::v1::{
        EchoBidiStreamRequest, EchoBidiStreamResponse, EchoClientStreamRequest,
        EchoClientStreamResponse, EchoRequest, EchoResponse, EchoServerStreamRequest,
        EchoServerStreamResponse,
    };
    use tonic::transport::Channel;
    use tonic::{Request, Response, Status, Streaming};

    use super::*;
    use crate::envelope::{self, EnvelopeVersion, SignedFields, canonical_string, sha256_hex};

    const ECHO_PATH: &str = "/shlyuz.echo.v1.EchoService/Echo";
    const CLIENT_STREAM_PATH: &str = "/shlyuz.echo.v1.EchoService/EchoClientStream";

    /// What the local server received: the envelope headers and the message as it decoded it.
    #[derive(Debug, Clone)]
    struct Received {
        headers: BTreeMap<String, String>,
        encoded_message: Vec<u8>,
    }

    /// Records every call, answering the payload back.
    #[derive(Clone, Default)]
    struct Recorder {
        received: Arc<Mutex<Vec<Received>>>,
    }

    impl Recorder {
        fn record(&self, metadata: &tonic::metadata::MetadataMap, encoded_message: Vec<u8>) {
            let headers = metadata
                .clone()
                .into_headers()
                .iter()
                .filter(|(name, _)| name.as_str().starts_with(envelope::HEADER_PREFIX))
                .map(|(name, value)| {
                    (
                        name.as_str().to_string(),
                        value.to_str().unwrap_or("<not ascii>").to_string(),
                    )
                })
                .collect();
            self.received.lock().push(Received {
                headers,
                encoded_message,
            });
        }

        fn calls(&self) -> Vec<Received> {
            self.received.lock().clone()
        }
    }

    type AnswerStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

    #[tonic::async_trait]
    impl EchoService for Recorder {
        async fn echo(
            &self,
            request: Request<EchoRequest>,
        ) -> Result<Response<EchoResponse>, Status> {
            self.record(request.metadata(), request.get_ref().encode_to_vec());
            Ok(Response::new(EchoResponse {
                payload: request.into_inner().payload,
                ..EchoResponse::default()
            }))
        }

        type EchoServerStreamStream = AnswerStream<EchoServerStreamResponse>;

        async fn echo_server_stream(
            &self,
            _request: Request<EchoServerStreamRequest>,
        ) -> Result<Response<Self::EchoServerStreamStream>, Status> {
            Err(Status::unimplemented("not used here"))
        }

        async fn echo_client_stream(
            &self,
            request: Request<Streaming<EchoClientStreamRequest>>,
        ) -> Result<Response<EchoClientStreamResponse>, Status> {
            self.record(request.metadata(), Vec::new());
            let mut stream = request.into_inner();
            let mut payload = String::new();
            let mut count = 0;
            while let Some(message) = stream.next().await {
                payload.push_str(&message?.payload);
                count += 1;
            }
            Ok(Response::new(EchoClientStreamResponse { payload, count }))
        }

        type EchoBidiStreamStream = AnswerStream<EchoBidiStreamResponse>;

        async fn echo_bidi_stream(
            &self,
            _request: Request<Streaming<EchoBidiStreamRequest>>,
        ) -> Result<Response<Self::EchoBidiStreamStream>, Status> {
            Err(Status::unimplemented("not used here"))
        }
    }

    /// A local tonic server recording what it receives, and a channel to it.
    async fn start_recorder() -> (Recorder, Channel) {
        let recorder = Recorder::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let address: SocketAddr = listener.local_addr().expect("local address");
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(EchoServiceServer::new(recorder.clone()))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let channel = Channel::from_shared(format!("http://{address}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect to the local server");
        (recorder, channel)
    }

    fn signing_key() -> Arc<SigningKey> {
        let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("a key");
        Arc::new(SigningKey::from_pkcs8_der(key_pair.serialized_der()).expect("an Ed25519 key"))
    }

    fn header<'a>(received: &'a Received, name: &str) -> &'a str {
        received.headers.get(name).map(String::as_str).unwrap_or("")
    }

    /// Whether the received envelope verifies with `signing_key` for `path` and `request_hash`,
    /// checked the way the gateway checks it: the canonical string rebuilt from the headers.
    fn verifies(
        received: &Received,
        signing_key: &SigningKey,
        path: &str,
        request_hash: &str,
    ) -> bool {
        use base64::Engine as _;
        let version = match header(received, envelope::ENVELOPE_VERSION) {
            "2" => EnvelopeVersion::V2,
            _ => EnvelopeVersion::V1,
        };
        let fields = SignedFields {
            version,
            message_id: header(received, envelope::MESSAGE_ID),
            path,
            timestamp: header(received, envelope::TIMESTAMP),
            user_id: header(received, envelope::USER_ID),
            user_role: header(received, envelope::USER_ROLE),
            user_region: header(received, envelope::USER_REGION),
            subject_iin: header(received, envelope::SUBJECT_IIN),
            purpose: header(received, envelope::PURPOSE),
            consent_id: header(received, envelope::CONSENT_ID),
            request_sha256_hex: request_hash,
        };
        let Ok(signature) =
            base64::engine::general_purpose::STANDARD.decode(header(received, envelope::SIGNATURE))
        else {
            return false;
        };
        signing_key
            .verifying_key()
            .verify(canonical_string(&fields).as_bytes(), &signature)
            .is_ok()
    }

    fn full_envelope() -> EnvelopeBuilder {
        EnvelopeBuilder {
            message_id: "0191f5a0-3c1e-7b3a-9a52-5d0b5e0f6c11".to_string(),
            correlation_id: "case-42".to_string(),
            user_id: "850315400025".to_string(),
            user_role: "ddo_executor".to_string(),
            user_region: "110000000".to_string(),
            purpose: "HOUSING_REGISTER_REVIEW".to_string(),
            subject_iin: "900101300017,850315400025".to_string(),
            consent_id: "consent-7".to_string(),
            timestamp: "2026-11-25T07:30:00.123Z".to_string(),
            version: EnvelopeVersion::V2,
        }
    }

    fn echo_request(payload: &str) -> EchoRequest {
        EchoRequest {
            payload: payload.to_string(),
            ..EchoRequest::default()
        }
    }

    #[tokio::test]
    async fn the_layer_sends_the_headers_signed_request_signs_for_the_same_call() {
        let (recorder, channel) = start_recorder().await;
        let key = signing_key();
        let message = echo_request("сәлем");

        let mut through_layer =
            EchoServiceClient::new(SigningService::new(channel.clone(), key.clone()));
        let answer = through_layer
            .echo(with_envelope(full_envelope(), message.clone()))
            .await
            .expect("the signed call is answered");
        assert_eq!(answer.into_inner().payload, "сәлем");
        let by_hand = full_envelope().signed_request(&key, ECHO_PATH, message.clone());
        EchoServiceClient::new(channel)
            .echo(by_hand)
            .await
            .expect("the hand-signed call is answered");

        let calls = recorder.calls();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].headers, calls[1].headers);
        assert_eq!(
            header(&calls[0], envelope::PURPOSE),
            "HOUSING_REGISTER_REVIEW"
        );
        assert_eq!(
            header(&calls[0], envelope::SUBJECT_IIN),
            "900101300017,850315400025"
        );
        assert_eq!(header(&calls[0], envelope::CONSENT_ID), "consent-7");
        assert_eq!(header(&calls[0], envelope::CORRELATION_ID), "case-42");
        let hash = sha256_hex(&calls[0].encoded_message);
        assert!(verifies(&calls[0], &key, ECHO_PATH, &hash));
        // The path signed is the one the call went to, and so is the message.
        assert!(!verifies(&calls[0], &key, CLIENT_STREAM_PATH, &hash));
        assert!(!verifies(
            &calls[0],
            &key,
            ECHO_PATH,
            &sha256_hex(&echo_request("other").encode_to_vec())
        ));
    }

    #[tokio::test]
    async fn a_call_without_an_envelope_is_signed_with_an_empty_one() {
        let (recorder, channel) = start_recorder().await;
        let key = signing_key();
        let mut client = EchoServiceClient::new(tower::Layer::layer(
            &SigningLayer::new(key.clone()),
            channel,
        ));
        client
            .echo(echo_request("plain"))
            .await
            .expect("the call is answered");
        client
            .echo(echo_request("plain"))
            .await
            .expect("the second call is answered");

        let calls = recorder.calls();
        assert_eq!(calls.len(), 2);
        let first = &calls[0];
        let names: Vec<&str> = first.headers.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                envelope::ENVELOPE_VERSION,
                envelope::MESSAGE_ID,
                envelope::SIGNATURE,
                envelope::TIMESTAMP
            ]
        );
        assert!(verifies(
            first,
            &key,
            ECHO_PATH,
            &sha256_hex(&first.encoded_message)
        ));
        // Each call is a new message.
        assert_ne!(
            header(first, envelope::MESSAGE_ID),
            header(&calls[1], envelope::MESSAGE_ID)
        );
    }

    #[tokio::test]
    async fn a_client_stream_is_signed_without_a_hash_and_sent_whole() {
        let (recorder, channel) = start_recorder().await;
        let key = signing_key();
        let mut client = EchoServiceClient::new(SigningService::new(channel, key.clone()));
        let parts = ["a", "b", "c"].map(|payload| EchoClientStreamRequest {
            payload: payload.to_string(),
        });
        let answer = client
            .echo_client_stream(with_streaming_envelope(
                full_envelope(),
                tokio_stream::iter(parts),
            ))
            .await
            .expect("the stream is answered")
            .into_inner();
        assert_eq!((answer.payload.as_str(), answer.count), ("abc", 3));
        let calls = recorder.calls();
        assert!(verifies(&calls[0], &key, CLIENT_STREAM_PATH, ""));
    }

    #[tokio::test]
    async fn a_stream_signed_as_one_message_is_refused_before_it_is_sent() {
        let (recorder, channel) = start_recorder().await;
        let mut client = EchoServiceClient::new(SigningService::new(channel, signing_key()));
        let parts = ["a", "b"].map(|payload| EchoClientStreamRequest {
            payload: payload.to_string(),
        });
        let refused = client
            .echo_client_stream(with_envelope(full_envelope(), tokio_stream::iter(parts)))
            .await
            .expect_err("two messages cannot be signed as one");
        assert_eq!(refused.code(), tonic::Code::Internal);
        assert!(
            refused.message().contains("with_streaming_envelope"),
            "{refused:?}"
        );
        assert!(recorder.calls().is_empty());
    }
}
