//! `shlyuz demo`: the seeds' scenarios, step by step, against a running `shlyuz up --test-clock`.
//! Every call goes through the gateway with mTLS and a signed envelope, as the participant that
//! would make it in the ministry (the Jauynger portal, the officials' workstation SDU, operations);
//! only the test clock is reached on housing's own address. Each step checks what it expects and
//! the demo stops with a non-zero exit at the first surprise.
//!
//! This module is the runner: the order of the scenarios, what they share (the participants'
//! clients, the SMS log) and the step-by-step report. Each scenario is a file of its own; the
//! demo depends on the proto and the kit only, never on a service crate.

mod audit;
mod client;
mod consent;
mod housing;
mod jauynger;
mod review;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use shlyuz_kit::error::summarize_status;
use shlyuz_kit::fixture_people::{self as people, FixturePerson};
use shlyuz_kit::gateway_client::GatewayClient;
use tonic::transport::Channel;

use crate::up::Endpoints;

/// The cast the scenarios share: people of the rules fixture, which `shlyuz up` loads with the
/// synthetic population. The candidate of the recruitment, also on the register for the review.
const CANDIDATE: FixturePerson = people::CLEAN_CANDIDATE;
/// Housing round: who accepts, who refuses (and with which code), who does not answer; the review
/// checks all three.
const ACCEPTS: FixturePerson = people::SERVICEMAN_CLEAN;
const REFUSES: FixturePerson = people::SERVICEMAN_EQUITY;
const SILENT: FixturePerson = people::SERVICEMAN_EARLIER_HOUSING;
/// The locality of the housing queue.
const ASTANA: &str = "711110000";

/// How long to wait for what happens in the background (SMS relays, inbox pulls).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

const STEPS: usize = 23;

/// Runs the demo against the `shlyuz up` that wrote `endpoints_path`.
pub async fn run(endpoints_path: &Path) -> anyhow::Result<()> {
    shlyuz_kit::install_crypto_provider();
    let started = Instant::now();
    let endpoints = Endpoints::read_file(endpoints_path)?;
    let demo = Demo::connect(endpoints).await?;
    let mut progress = Progress::default();
    println!(
        "Shlyuz demo against the gateway at {} ({STEPS} steps)",
        demo.endpoints.gateway
    );
    demo.preflight(&mut progress).await?;
    demo.jauynger(&mut progress).await?;
    demo.housing_round(&mut progress).await?;
    demo.review(&mut progress).await?;
    demo.audit(&mut progress).await?;
    println!(
        "\nDemo finished: {} steps in {:.1} s.",
        progress.done,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Prints `[ n/N] title`, runs the step, and prints what it found or why it failed.
#[derive(Default)]
struct Progress {
    done: usize,
    section: &'static str,
}

impl Progress {
    fn section(&mut self, title: &'static str) {
        if self.section != title {
            println!("\n{title}");
            self.section = title;
        }
    }

    async fn step<T>(
        &mut self,
        title: &str,
        work: impl Future<Output = anyhow::Result<(T, String)>>,
    ) -> anyhow::Result<T> {
        let number = self.done + 1;
        let started = Instant::now();
        match work.await {
            Ok((value, found)) => {
                self.done = number;
                println!(
                    "  [{number:>2}/{STEPS}] {title} … ok ({} ms)",
                    started.elapsed().as_millis()
                );
                for line in found.lines().filter(|line| !line.is_empty()) {
                    println!("          {line}");
                }
                Ok(value)
            }
            Err(error) => {
                println!("  [{number:>2}/{STEPS}] {title} … FAILED");
                Err(error.context(format!("step {number} ({title})")))
            }
        }
    }
}

/// A gRPC error as the demo reports it: code, reason and message.
fn describe(status: &tonic::Status) -> anyhow::Error {
    let summary = summarize_status(status);
    anyhow::anyhow!(
        "{:?} {}: {}",
        summary.code,
        summary.reason,
        status.message()
    )
}

/// The message of a gRPC response, or the error as [`describe`] words it.
trait Described<T> {
    fn described(self) -> anyhow::Result<T>;
}

impl<T> Described<T> for Result<tonic::Response<T>, tonic::Status> {
    fn described(self) -> anyhow::Result<T> {
        self.map(tonic::Response::into_inner)
            .map_err(|status| describe(&status))
    }
}

/// What the scenarios share: each participant's client through the gateway, the test clock and
/// the SMS log.
struct Demo {
    endpoints: Endpoints,
    portal: GatewayClient,
    sdu: GatewayClient,
    ops: GatewayClient,
    test_clock: Channel,
    sms_log: PathBuf,
    /// SMS already in the log when the demo started: earlier ones are not this run's.
    sms_before: usize,
}

impl Demo {
    async fn connect(endpoints: Endpoints) -> anyhow::Result<Demo> {
        let test_clock_address = endpoints.test_clock.clone().context(
            "shlyuz up was started without --test-clock; the demo moves housing's clock through \
             the 48-hour answer window: restart it as `shlyuz up --test-clock`",
        )?;
        let sms_log = endpoints.sms_log.clone().context(
            "notify does not write SMS to a log file (notify.sms.provider is not `log`); the demo \
             reads the offer SMS from it",
        )?;
        let test_clock = client::connect_test_clock(&endpoints, &test_clock_address).await?;
        Ok(Demo {
            portal: client::connect_participant(&endpoints, "jauynger-portal")?,
            sdu: client::connect_participant(&endpoints, "sdu")?,
            ops: client::connect_participant(&endpoints, "ops")?,
            test_clock,
            sms_before: std::fs::read_to_string(&sms_log)
                .map(|log| log.lines().count())
                .unwrap_or(0),
            sms_log,
            endpoints,
        })
    }

    /// Waits until the SMS log holds `count` SMS to `phone` whose text `matches`; returns them.
    async fn wait_for_sms_count(
        &self,
        phone: &str,
        count: usize,
        matches: impl Fn(&str) -> bool,
    ) -> anyhow::Result<Vec<String>> {
        settle(
            || async {
                let texts: Vec<String> = self
                    .sms_to(phone)
                    .into_iter()
                    .filter(|text| matches(text))
                    .collect();
                Ok((texts.len() >= count).then_some(texts))
            },
            || {
                format!(
                    "fewer than {count} SMS to {phone} in {}",
                    self.sms_log.display()
                )
            },
        )
        .await
    }

    /// The texts of the SMS the log provider sent to `phone` since the demo started, in sending
    /// order.
    fn sms_to(&self, phone: &str) -> Vec<String> {
        std::fs::read_to_string(&self.sms_log)
            .unwrap_or_default()
            .lines()
            .skip(self.sms_before)
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|sms| sms["to"] == phone)
            .filter_map(|sms| sms["text"].as_str().map(str::to_string))
            .collect()
    }

    /// Waits until the SMS log holds an SMS to `phone` whose text `matches`.
    async fn wait_for_sms(
        &self,
        phone: &str,
        matches: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        settle(
            || async { Ok(self.sms_to(phone).into_iter().find(|text| matches(text))) },
            || format!("no such SMS to {phone} in {}", self.sms_log.display()),
        )
        .await
    }
}

/// The fixture's phone of `person`: where their SMS go and where their replies come from.
fn phone(person: FixturePerson) -> anyhow::Result<&'static str> {
    person
        .phone
        .with_context(|| format!("the rules fixture has no phone for {}", person.iin))
}

/// Polls `look` every 200 ms until it finds something, for at most [`SETTLE_TIMEOUT`] (replies,
/// SMS and offers settle in the background); `missing` words what never came.
async fn settle<T, Look, Found>(
    mut look: Look,
    missing: impl FnOnce() -> String,
) -> anyhow::Result<T>
where
    Look: FnMut() -> Found,
    Found: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        if let Some(found) = look().await? {
            return Ok(found);
        }
        if Instant::now() > deadline {
            bail!("{} after {} s", missing(), SETTLE_TIMEOUT.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The six-digit code of a one-time-password SMS.
fn six_digit_code(text: &str) -> anyhow::Result<String> {
    text.split(|character: char| !character.is_ascii_digit())
        .find(|part| part.len() == 6)
        .map(str::to_string)
        .with_context(|| format!("no six-digit code in the SMS {text:?}"))
}
