//! What the gateway takes in for a call before checking it: the call's metadata within a size
//! limit, its request message within a deadline, and — across all calls together — at most a
//! configured number of buffered request bytes, so that slow or unfinished requests cannot make
//! the gateway hold memory without bound before their signatures are checked.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body_util::BodyExt;
use prometheus_client::metrics::gauge::Gauge;
use shlyuz_kit::error::ApiError;
use tonic::Code;

use crate::proxy::GatewayBody;

/// Largest metadata (header names and values, 32 bytes more each, as HTTP/2 counts them) a call
/// may carry. The listener's own limit (`ListenerOptions::max_header_list_bytes`) is set above it,
/// so that a call between the two gets `HEADERS_TOO_LARGE` instead of HTTP 431.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;

/// How long a caller is told to wait before retrying when the buffer budget is spent.
const OVERLOADED_RETRY_AFTER: Duration = Duration::from_secs(1);

/// `RESOURCE_EXHAUSTED` `HEADERS_TOO_LARGE` when the call's metadata exceeds
/// [`MAX_METADATA_BYTES`].
pub fn check_metadata_size(headers: &HeaderMap) -> Result<(), ApiError> {
    let size: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 32)
        .sum();
    if size <= MAX_METADATA_BYTES {
        return Ok(());
    }
    Err(ApiError::new(
        Code::ResourceExhausted,
        "HEADERS_TOO_LARGE",
        format!(
            "the call's metadata is {size} bytes, more than the gateway's limit of {MAX_METADATA_BYTES} bytes"
        ),
    ))
}

/// The request bytes all calls together may hold while their messages are read and checked.
pub struct RequestBudget {
    capacity: usize,
    used: AtomicUsize,
    buffered: Gauge,
}

impl RequestBudget {
    /// A budget of `capacity` bytes, reported in `buffered` (the gauge
    /// `shlyuz_gateway_buffered_request_bytes`).
    pub fn new(capacity: usize, buffered: Gauge) -> Arc<Self> {
        Arc::new(Self {
            capacity,
            used: AtomicUsize::new(0),
            buffered,
        })
    }

    fn reserve(&self, bytes: usize) -> bool {
        let reserved = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes)
                    .filter(|total| *total <= self.capacity)
            });
        match reserved {
            Ok(before) => {
                self.report(before + bytes);
                true
            }
            Err(_) => false,
        }
    }

    fn release(&self, bytes: usize) {
        let before = self.used.fetch_sub(bytes, Ordering::AcqRel);
        self.report(before - bytes);
    }

    fn report(&self, used: usize) {
        self.buffered.set(i64::try_from(used).unwrap_or(i64::MAX));
    }
}

/// Bytes of the budget one call holds; given back when dropped.
pub struct BufferLease {
    budget: Arc<RequestBudget>,
    bytes: usize,
}

impl BufferLease {
    fn grow(&mut self, bytes: usize) -> Result<(), ApiError> {
        if !self.budget.reserve(bytes) {
            return Err(ApiError::resource_exhausted(
                "GATEWAY_OVERLOADED",
                format!(
                    "the gateway is holding its limit of {} request bytes; retry later",
                    self.budget.capacity
                ),
                OVERLOADED_RETRY_AFTER,
            ));
        }
        self.bytes += bytes;
        Ok(())
    }
}

impl Drop for BufferLease {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

/// Reads a whole request body: at most `max_bytes` (the route's limit, `MESSAGE_TOO_LARGE`),
/// within `timeout` (`DEADLINE_EXCEEDED` `REQUEST_BODY_TIMEOUT`), each frame taken from `budget`
/// as it arrives (`RESOURCE_EXHAUSTED` `GATEWAY_OVERLOADED` when it is spent). The lease keeps
/// the bytes counted for as long as the caller holds on to them.
pub async fn read_request(
    body: GatewayBody,
    max_bytes: usize,
    timeout: Duration,
    budget: &Arc<RequestBudget>,
) -> Result<(Bytes, BufferLease), ApiError> {
    let mut lease = BufferLease {
        budget: budget.clone(),
        bytes: 0,
    };
    let reading = async {
        let mut body = body;
        let mut buffer = BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|error| {
                ApiError::new(
                    Code::Cancelled,
                    "REQUEST_INTERRUPTED",
                    format!("the request body could not be read: {error}"),
                )
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if buffer.len() + data.len() > max_bytes {
                return Err(ApiError::new(
                    Code::ResourceExhausted,
                    "MESSAGE_TOO_LARGE",
                    format!("the request exceeds the route's limit of {max_bytes} bytes"),
                ));
            }
            lease.grow(data.len())?;
            buffer.extend_from_slice(&data);
        }
        Ok(buffer.freeze())
    };
    match tokio::time::timeout(timeout, reading).await {
        Ok(Ok(bytes)) => Ok((bytes, lease)),
        Ok(Err(refusal)) => Err(refusal),
        Err(_elapsed) => Err(ApiError::new(
            Code::DeadlineExceeded,
            "REQUEST_BODY_TIMEOUT",
            format!(
                "the request message did not arrive within {} ms",
                timeout.as_millis()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_given_back_when_leases_drop() {
        let budget = RequestBudget::new(100, Gauge::default());
        let mut first = BufferLease {
            budget: budget.clone(),
            bytes: 0,
        };
        first.grow(60).expect("within the budget");
        let mut second = BufferLease {
            budget: budget.clone(),
            bytes: 0,
        };
        let refused = second.grow(60).expect_err("over the budget");
        assert_eq!(refused.reason(), "GATEWAY_OVERLOADED");
        drop(first);
        second.grow(60).expect("the first lease was given back");
        drop(second);
        assert_eq!(budget.used.load(Ordering::Acquire), 0);
    }

    #[test]
    fn metadata_over_the_limit_is_refused_with_its_reason() {
        let mut headers = HeaderMap::new();
        headers.insert("x-small", "a".parse().expect("value"));
        check_metadata_size(&headers).expect("small metadata");
        headers.insert(
            "x-padding",
            "p".repeat(MAX_METADATA_BYTES).parse().expect("value"),
        );
        let refused = check_metadata_size(&headers).expect_err("too large");
        assert_eq!(refused.code(), Code::ResourceExhausted);
        assert_eq!(refused.reason(), "HEADERS_TOO_LARGE");
    }
}
