//! The load generator: a fixed number of unary echo calls spread over a number of concurrent
//! callers sharing a few HTTP/2 connections, with each call's latency recorded.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use shlyuz_proto::echo::v1::EchoRequest;
use shlyuz_proto::echo::v1::echo_service_client::EchoServiceClient;
use tonic::transport::Channel;

use super::stats::LatencySummary;

/// Builds the `index`-th request of a run.
pub type RequestFactory = Arc<dyn Fn(usize) -> tonic::Request<EchoRequest> + Send + Sync>;

/// What one run measured.
#[derive(Debug, Clone)]
pub struct LoadResult {
    /// Calls that succeeded.
    pub succeeded: usize,
    /// Calls that failed.
    pub failed: usize,
    /// The first failure, for the report.
    pub first_error: Option<String>,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Latencies of the successful calls.
    pub latency: LatencySummary,
}

impl LoadResult {
    /// Successful calls per second.
    pub fn rate(&self) -> f64 {
        self.succeeded as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}

/// Makes `total` calls with `concurrency` callers over `channels` (caller `n` uses channel
/// `n % channels.len()`).
pub async fn run(
    channels: &[Channel],
    concurrency: usize,
    total: usize,
    requests: RequestFactory,
) -> LoadResult {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::with_capacity(concurrency);
    for worker in 0..concurrency.max(1) {
        let channel = channels[worker % channels.len()].clone();
        let next = next.clone();
        let requests = requests.clone();
        workers.push(tokio::spawn(async move {
            let mut client = EchoServiceClient::new(channel);
            let mut latencies = Vec::with_capacity(total / concurrency.max(1) + 1);
            let mut failed = 0;
            let mut first_error = None;
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= total {
                    break;
                }
                let request = requests(index);
                let call_started = Instant::now();
                match client.echo(request).await {
                    Ok(_) => latencies.push(call_started.elapsed().as_micros() as u64),
                    Err(status) => {
                        failed += 1;
                        first_error.get_or_insert_with(|| {
                            format!("{:?}: {}", status.code(), status.message())
                        });
                    }
                }
            }
            (latencies, failed, first_error)
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    let mut failed = 0;
    let mut first_error = None;
    for worker in workers {
        match worker.await {
            Ok((worker_latencies, worker_failed, worker_error)) => {
                latencies.extend(worker_latencies);
                failed += worker_failed;
                if first_error.is_none() {
                    first_error = worker_error;
                }
            }
            Err(error) => {
                failed += 1;
                first_error.get_or_insert_with(|| format!("load worker failed: {error}"));
            }
        }
    }
    let elapsed = started.elapsed();
    LoadResult {
        succeeded: latencies.len(),
        failed,
        first_error,
        elapsed,
        latency: LatencySummary::from_latencies(latencies),
    }
}
