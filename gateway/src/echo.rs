//! An echo upstream for gateway tests and benchmarks: answers with what it received and the
//! `x-shlyuz-*` metadata it saw, can be told to fail or wait, and counts the calls it served.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use futures::Stream;
use shlyuz_proto::echo::v1::echo_service_server::{EchoService, EchoServiceServer};
use shlyuz_proto::echo::v1::{
    EchoBidiStreamRequest, EchoBidiStreamResponse, EchoClientStreamRequest,
    EchoClientStreamResponse, EchoRequest, EchoResponse, EchoServerStreamRequest,
    EchoServerStreamResponse,
};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

/// The echo service; clones share the counters.
#[derive(Clone, Default)]
pub struct Echo {
    served: Arc<AtomicI64>,
    received: Arc<AtomicI64>,
    /// Unary calls received per `x-shlyuz-message-id`, and when the first arrived.
    by_message_id: Arc<Mutex<HashMap<String, (u32, std::time::Instant)>>>,
}

impl Echo {
    /// How many unary calls this instance answered.
    pub fn served(&self) -> i64 {
        self.served.load(Ordering::SeqCst)
    }

    /// How many unary calls reached this instance, failed ones included.
    pub fn received(&self) -> i64 {
        self.received.load(Ordering::SeqCst)
    }

    /// Unary calls received per `x-shlyuz-message-id` (calls without one are not counted). A
    /// receiver that deduplicates by message id acts once per key, however many calls arrived.
    pub fn calls_by_message_id(&self) -> HashMap<String, u32> {
        self.by_message_id
            .lock()
            .iter()
            .map(|(message_id, (calls, _))| (message_id.clone(), *calls))
            .collect()
    }

    /// When the first call with each `x-shlyuz-message-id` arrived.
    pub fn first_arrivals(&self) -> HashMap<String, std::time::Instant> {
        self.by_message_id
            .lock()
            .iter()
            .map(|(message_id, (_, arrived))| (message_id.clone(), *arrived))
            .collect()
    }

    /// The tonic service.
    pub fn into_server(self) -> EchoServiceServer<Echo> {
        EchoServiceServer::new(self)
    }
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl EchoService for Echo {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        self.received.fetch_add(1, Ordering::SeqCst);
        if let Some(message_id) = request
            .metadata()
            .get("x-shlyuz-message-id")
            .and_then(|value| value.to_str().ok())
        {
            self.by_message_id
                .lock()
                .entry(message_id.to_string())
                .or_insert_with(|| (0, std::time::Instant::now()))
                .0 += 1;
        }
        let metadata = request
            .metadata()
            .iter()
            .filter_map(|entry| match entry {
                tonic::metadata::KeyAndValueRef::Ascii(key, value) => {
                    let name = key.as_str();
                    (name.starts_with("x-shlyuz-")
                        || name == "traceparent"
                        || name == "grpc-timeout")
                        .then(|| {
                            (
                                name.to_string(),
                                value.to_str().unwrap_or_default().to_string(),
                            )
                        })
                }
                tonic::metadata::KeyAndValueRef::Binary(..) => None,
            })
            .collect();
        let message = request.into_inner();
        if message.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(message.delay_ms as u64)).await;
        }
        if message.fail_with_code != 0 {
            return Err(Status::new(
                tonic::Code::from_i32(message.fail_with_code),
                "echo was told to fail",
            ));
        }
        let served = self.served.fetch_add(1, Ordering::SeqCst) + 1;
        let mut response = Response::new(EchoResponse {
            payload: message.payload,
            metadata,
            served,
        });
        if !message.response_subjects.is_empty() {
            let value =
                tonic::metadata::MetadataValue::try_from(message.response_subjects.as_str())
                    .map_err(|_| Status::invalid_argument("response_subjects must be ASCII"))?;
            response
                .metadata_mut()
                .insert(shlyuz_kit::envelope::RESPONSE_SUBJECTS, value);
        }
        Ok(response)
    }

    type EchoServerStreamStream = ResponseStream<EchoServerStreamResponse>;

    async fn echo_server_stream(
        &self,
        request: Request<EchoServerStreamRequest>,
    ) -> Result<Response<Self::EchoServerStreamStream>, Status> {
        let message = request.into_inner();
        let payload = message.payload;
        let answers = (0..message.repeat.max(0)).map(move |index| {
            Ok(EchoServerStreamResponse {
                payload: payload.clone(),
                index,
            })
        });
        Ok(Response::new(Box::pin(tokio_stream::iter(answers))))
    }

    async fn echo_client_stream(
        &self,
        request: Request<Streaming<EchoClientStreamRequest>>,
    ) -> Result<Response<EchoClientStreamResponse>, Status> {
        let mut stream = request.into_inner();
        let mut payload = String::new();
        let mut count = 0;
        while let Some(message) = stream.next().await {
            payload.push_str(&message?.payload);
            count += 1;
        }
        Ok(Response::new(EchoClientStreamResponse { payload, count }))
    }

    type EchoBidiStreamStream = ResponseStream<EchoBidiStreamResponse>;

    async fn echo_bidi_stream(
        &self,
        request: Request<Streaming<EchoBidiStreamRequest>>,
    ) -> Result<Response<Self::EchoBidiStreamStream>, Status> {
        let stream = request.into_inner();
        let answers = stream.map(|message| {
            message.map(|received| EchoBidiStreamResponse {
                payload: received.payload,
            })
        });
        Ok(Response::new(Box::pin(answers)))
    }
}
