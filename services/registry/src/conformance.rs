//! The conformance suite every registry service runs: the behaviour a caller relies on for each
//! look-up method, checked over a real gRPC connection — to the registry directly or through the
//! gateway — whatever the backend (the embedded tables on SQLite or PostgreSQL, or an external
//! registry behind a mock upstream).
//!
//! A registry describes its methods once ([`Method::get`], [`Method::list`], [`Method::batch`])
//! and runs [`run`] with a [`Caller`] and [`SuiteData`]; the suite checks, for every method:
//! - every malformed IIN (length, non-digits, impossible date, check digit) is `INVALID_ARGUMENT`
//!   naming the field (`iin`, `iins[1]`);
//! - a person outside the declared subjects is `PERMISSION_DENIED` / `SUBJECT_MISMATCH`;
//! - an unknown IIN is `NOT_FOUND` / `PERSON_NOT_FOUND` for `Get…`, an empty last page for
//!   `List…`, and an entry of its own (empty, or in `not_found_iins`) for a batch;
//! - a known person is answered; walking a `List…` one record per page returns exactly the
//!   records of one large page, each once, and a page token of another person is refused;
//! - a batch answers every requested IIN once, in request order, and refuses more than 500.
//!
//! [`run_faults`] checks what callers see for each failure of an external registry.

use std::sync::Arc;

use bytes::{Buf as _, BufMut as _, Bytes};
use futures::future::BoxFuture;
use prost::Message;
use shlyuz_kit::error::summarize_status;
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::records::KindSpec;

/// A codec that passes encoded messages through, so one suite calls every method.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, buffer: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        buffer.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(&mut self, buffer: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Self::Error> {
        Ok(Some(buffer.copy_to_bytes(buffer.remaining())))
    }
}

type CallFn = dyn Fn(&'static str, Vec<String>, Bytes) -> BoxFuture<'static, Result<Bytes, tonic::Status>>
    + Send
    + Sync;

/// How the suite reaches the service: the gRPC path, the persons the call declares as its
/// subjects, and the encoded request; the encoded response or the status back.
#[derive(Clone)]
pub struct Caller {
    call: Arc<CallFn>,
}

impl Caller {
    /// A caller of its own, e.g. one that signs an envelope naming the subjects and calls through
    /// the gateway.
    pub fn new(
        call: impl Fn(
            &'static str,
            Vec<String>,
            Bytes,
        ) -> BoxFuture<'static, Result<Bytes, tonic::Status>>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        Self {
            call: Arc::new(call),
        }
    }

    /// Calls the registry directly on `channel`, the subjects in `x-shlyuz-subject-iin` as the
    /// gateway would set them.
    pub fn direct(channel: tonic::transport::Channel) -> Self {
        Self::new(move |path, subjects, body| {
            let channel = channel.clone();
            Box::pin(async move {
                let mut request = tonic::Request::new(body);
                let subjects = subjects.join(",");
                if let Ok(value) = subjects.parse() {
                    request
                        .metadata_mut()
                        .insert(shlyuz_kit::envelope::SUBJECT_IIN, value);
                }
                unary(channel, path, request).await
            })
        })
    }

    async fn call(
        &self,
        path: &'static str,
        subjects: &[&str],
        request: Bytes,
    ) -> Result<Bytes, tonic::Status> {
        let subjects = subjects.iter().map(|iin| iin.to_string()).collect();
        (self.call)(path, subjects, request).await
    }
}

/// One unary call of `path` with the raw codec on any gRPC transport.
pub async fn unary<T>(
    transport: T,
    path: &'static str,
    request: tonic::Request<Bytes>,
) -> Result<Bytes, tonic::Status>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: http_body::Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    let mut grpc = tonic::client::Grpc::new(transport);
    grpc.ready()
        .await
        .map_err(|error| tonic::Status::unavailable(format!("not ready: {}", error.into())))?;
    let path = http::uri::PathAndQuery::from_static(path);
    grpc.unary(request, path, RawCodec)
        .await
        .map(tonic::Response::into_inner)
}

/// What a `List…` page holds: each record encoded, and the next page token.
pub type Page = (Vec<Bytes>, String);

/// What a batch answer holds: the IINs answered, in answer order, with their record counts, and
/// the IINs reported as unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchAnswer {
    /// IINs with an entry, in the order of the answer.
    pub answered: Vec<String>,
    /// IINs listed as not found.
    pub not_found: Vec<String>,
}

type Build<A> = Box<dyn Fn(A) -> Bytes + Send + Sync>;
type Read<T> = Box<dyn Fn(&[u8]) -> Result<T, prost::DecodeError> + Send + Sync>;

enum Shape {
    Get(Build<String>),
    List {
        request: Build<(String, i32, String)>,
        page: Read<Page>,
    },
    Batch {
        request: Build<Vec<String>>,
        answer: Read<BatchAnswer>,
    },
}

/// One look-up method of a registry service, as the suite calls it.
pub struct Method {
    path: &'static str,
    kind: KindSpec,
    shape: Shape,
}

impl Method {
    /// `Get…(iin)`: one person; an unknown IIN is `NOT_FOUND` / `PERSON_NOT_FOUND`. `kind` is the
    /// record kind the method answers from (the suite picks its persons from it).
    pub fn get<Q: Message + 'static>(
        path: &'static str,
        kind: KindSpec,
        request: impl Fn(String) -> Q + Send + Sync + 'static,
    ) -> Self {
        Self {
            path,
            kind,
            shape: Shape::Get(Box::new(move |iin| request(iin).encode_to_vec().into())),
        }
    }

    /// `List…(iin, page_size, page_token)`: one person's records, paged; `page` reads a response
    /// into its records and next page token.
    pub fn list<Q: Message + 'static, R: Message + Default + 'static>(
        path: &'static str,
        kind: KindSpec,
        request: impl Fn(String, i32, String) -> Q + Send + Sync + 'static,
        page: impl Fn(R) -> Page + Send + Sync + 'static,
    ) -> Self {
        Self {
            path,
            kind,
            shape: Shape::List {
                request: Box::new(move |(iin, size, token)| {
                    request(iin, size, token).encode_to_vec().into()
                }),
                page: Box::new(move |bytes| R::decode(bytes).map(&page)),
            },
        }
    }

    /// `Batch…(iins)`: up to 500 persons; `answer` reads a response into the IINs it answers.
    pub fn batch<Q: Message + 'static, R: Message + Default + 'static>(
        path: &'static str,
        kind: KindSpec,
        request: impl Fn(Vec<String>) -> Q + Send + Sync + 'static,
        answer: impl Fn(R) -> BatchAnswer + Send + Sync + 'static,
    ) -> Self {
        Self {
            path,
            kind,
            shape: Shape::Batch {
                request: Box::new(move |iins| request(iins).encode_to_vec().into()),
                answer: Box::new(move |bytes| R::decode(bytes).map(&answer)),
            },
        }
    }

    /// The gRPC path.
    pub fn path(&self) -> &'static str {
        self.path
    }

    /// The record kind it answers from.
    pub fn kind(&self) -> KindSpec {
        self.kind
    }

    fn first_field(&self) -> &'static str {
        match self.shape {
            Shape::Batch { .. } => "iins[0]",
            _ => "iin",
        }
    }

    fn request_for(&self, iins: &[&str]) -> Bytes {
        let owned = || iins.iter().map(|iin| iin.to_string()).collect::<Vec<_>>();
        match &self.shape {
            Shape::Get(request) => request(iins[0].to_string()),
            Shape::List { request, .. } => request((iins[0].to_string(), 0, String::new())),
            Shape::Batch { request, .. } => request(owned()),
        }
    }
}

/// The persons one method is checked with.
#[derive(Debug, Clone)]
pub struct Persons {
    /// A person with as many records of the kind as the data has (at least one; two or more
    /// for paging to be walked).
    pub rich: String,
    /// Another person with at least one record.
    pub other: String,
}

/// The data the suite runs on: the persons of each kind, and a valid IIN the registry does not
/// know.
pub struct SuiteData {
    /// Persons per kind name.
    pub persons: std::collections::BTreeMap<&'static str, Persons>,
    /// A valid IIN with no record of any kind.
    pub unknown: String,
}

impl SuiteData {
    /// Picks the persons of every kind in `kinds` out of `tables` — each kind's rows as JSON
    /// objects (a serialized [`crate::records::Population`] has them by table name) — and an
    /// unknown IIN no row mentions. `None` when a kind has fewer than two persons with records.
    pub fn pick(
        tables: &serde_json::Map<String, serde_json::Value>,
        kinds: &[KindSpec],
        unknown: &str,
    ) -> Option<Self> {
        let mut persons = std::collections::BTreeMap::new();
        for kind in kinds {
            let rows = tables.get(kind.table)?.as_array()?;
            let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
            for row in rows {
                for owner in kind.owners {
                    if let Some(iin) = row.get(*owner).and_then(serde_json::Value::as_str)
                        && !iin.is_empty()
                    {
                        *counts.entry(iin).or_default() += 1;
                    }
                }
            }
            let mut ranked: Vec<(&str, usize)> = counts.into_iter().collect();
            ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            let [(rich, _), (other, _), ..] = ranked.as_slice() else {
                return None;
            };
            persons.insert(
                kind.name,
                Persons {
                    rich: rich.to_string(),
                    other: other.to_string(),
                },
            );
        }
        Some(Self {
            persons,
            unknown: unknown.to_string(),
        })
    }
}

/// What one run checked: a line per case, so a test can see the suite did not run empty.
#[derive(Debug, Default)]
pub struct Report {
    /// `path: case` per case passed.
    pub passed: Vec<String>,
    /// `path: case: what went wrong` per case failed.
    pub failed: Vec<String>,
}

impl Report {
    /// Panics listing every failed case.
    pub fn assert_passed(&self) {
        assert!(
            self.failed.is_empty(),
            "{} of {} conformance cases failed:\n{}",
            self.failed.len(),
            self.failed.len() + self.passed.len(),
            self.failed.join("\n")
        );
        assert!(!self.passed.is_empty(), "the conformance suite ran no case");
    }

    fn check(&mut self, method: &Method, case: &str, outcome: Result<(), String>) {
        match outcome {
            Ok(()) => self.passed.push(format!("{}: {case}", method.path)),
            Err(error) => self
                .failed
                .push(format!("{}: {case}: {error}", method.path)),
        }
    }
}

/// IINs that are not IINs, made from the valid `iin`, and what is wrong with each.
fn bad_iins(iin: &str) -> [(String, &'static str); 4] {
    let digits: Vec<u8> = iin.bytes().collect();
    let mut letter = digits.clone();
    letter[5] = b'a';
    let mut month = digits.clone();
    month[2..4].copy_from_slice(b"13");
    let mut check = digits.clone();
    check[11] = b'0' + (check[11] - b'0' + 1) % 10;
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap_or_default();
    [
        (iin[..11].to_string(), "too short"),
        (text(letter), "not digits"),
        (text(month), "impossible date of birth"),
        (text(check), "wrong check digit"),
    ]
}

fn expect_status(
    result: Result<Bytes, tonic::Status>,
    code: Code,
    reason: &str,
) -> Result<tonic::Status, String> {
    match result {
        Ok(_) => Err(format!("answered; expected {code:?} {reason}")),
        Err(status) => {
            let summary = summarize_status(&status);
            if summary.code == code && summary.reason == reason {
                Ok(status)
            } else {
                Err(format!(
                    "got {:?} {:?} ({}); expected {code:?} {reason}",
                    summary.code,
                    summary.reason,
                    status.message()
                ))
            }
        }
    }
}

/// Runs every case of the suite for each of `methods`.
pub async fn run(caller: &Caller, methods: &[Method], data: &SuiteData) -> Report {
    let mut report = Report::default();
    for method in methods {
        let Some(persons) = data.persons.get(method.kind.name) else {
            report.check(
                method,
                "data",
                Err(format!("no persons for {}", method.kind.name)),
            );
            continue;
        };
        check_bad_iins(caller, method, persons, &mut report).await;
        let outcome = check_subject(caller, method, persons).await;
        report.check(method, "a person outside the subjects", outcome);
        let outcome = check_unknown(caller, method, &data.unknown).await;
        report.check(method, "an unknown iin", outcome);
        match &method.shape {
            Shape::Get(_) => {
                let outcome = ask(caller, method, &persons.rich)
                    .await
                    .map(drop)
                    .map_err(|status| format!("{status:?}"));
                report.check(method, "a known person", outcome);
            }
            Shape::List { request, page } => {
                let outcome = check_paging(caller, method, request, page, persons).await;
                report.check(method, "paging", outcome);
            }
            Shape::Batch { request, answer } => {
                let outcome =
                    check_batch_order(caller, method, request, answer, persons, data).await;
                report.check(method, "batch order", outcome);
                let outcome = check_batch_limit(caller, method, request, persons).await;
                report.check(method, "more than 500 iins", outcome);
            }
        }
    }
    report
}

/// `method` asked about `iin` alone, declaring `iin` as the call's subject.
async fn ask(caller: &Caller, method: &Method, iin: &str) -> Result<Bytes, tonic::Status> {
    caller
        .call(method.path, &[iin], method.request_for(&[iin]))
        .await
}

async fn check_bad_iins(caller: &Caller, method: &Method, persons: &Persons, report: &mut Report) {
    for (bad, why) in bad_iins(&persons.rich) {
        let outcome = async {
            let status = expect_status(
                caller
                    .call(method.path, &[&persons.rich], method.request_for(&[&bad]))
                    .await,
                Code::InvalidArgument,
                shlyuz_kit::error::REASON_INVALID_ARGUMENT,
            )?;
            let fields = summarize_status(&status).fields;
            if fields == [method.first_field()] {
                Ok(())
            } else {
                Err(format!(
                    "names fields {fields:?}, not {}",
                    method.first_field()
                ))
            }
        }
        .await;
        report.check(method, &format!("a bad iin ({why})"), outcome);
    }
    if let Shape::Batch { request, .. } = &method.shape {
        let outcome = async {
            let [.., (bad, _)] = bad_iins(&persons.rich);
            let iins = vec![persons.rich.clone(), bad];
            let status = expect_status(
                caller
                    .call(method.path, &[&persons.rich], request(iins))
                    .await,
                Code::InvalidArgument,
                shlyuz_kit::error::REASON_INVALID_ARGUMENT,
            )?;
            let fields = summarize_status(&status).fields;
            if fields == ["iins[1]"] {
                Ok(())
            } else {
                Err(format!("names fields {fields:?}, not iins[1]"))
            }
        }
        .await;
        report.check(method, "a bad iin second in a batch", outcome);
    }
}

async fn check_subject(caller: &Caller, method: &Method, persons: &Persons) -> Result<(), String> {
    // The call declares `other` as its subject but asks about `rich`.
    let result = caller
        .call(
            method.path,
            &[&persons.other],
            method.request_for(&[&persons.rich]),
        )
        .await;
    expect_status(
        result,
        Code::PermissionDenied,
        shlyuz_kit::error::reasons::SUBJECT_MISMATCH,
    )
    .map(drop)
}

async fn check_unknown(caller: &Caller, method: &Method, unknown: &str) -> Result<(), String> {
    let result = ask(caller, method, unknown).await;
    match &method.shape {
        Shape::Get(_) => expect_status(
            result,
            Code::NotFound,
            shlyuz_kit::error::reasons::PERSON_NOT_FOUND,
        )
        .map(drop),
        Shape::List { page, .. } => {
            let bytes = result.map_err(|status| format!("{status:?}"))?;
            let (records, token) = page(&bytes).map_err(|error| error.to_string())?;
            if records.is_empty() && token.is_empty() {
                Ok(())
            } else {
                Err(format!("{} records, next page {token:?}", records.len()))
            }
        }
        Shape::Batch { answer, .. } => {
            let bytes = result.map_err(|status| format!("{status:?}"))?;
            let answer = answer(&bytes).map_err(|error| error.to_string())?;
            let entries = answer
                .answered
                .iter()
                .chain(&answer.not_found)
                .filter(|iin| *iin == unknown)
                .count();
            if entries == 1 {
                Ok(())
            } else {
                Err(format!("the unknown iin has {entries} entries: {answer:?}"))
            }
        }
    }
}

async fn check_paging(
    caller: &Caller,
    method: &Method,
    request: &Build<(String, i32, String)>,
    page: &Read<Page>,
    persons: &Persons,
) -> Result<(), String> {
    let rich = persons.rich.as_str();
    let fetch = |size: i32, token: String| async move {
        let bytes = caller
            .call(
                method.path,
                &[rich],
                request((rich.to_string(), size, token)),
            )
            .await
            .map_err(|status| format!("{status:?}"))?;
        page(&bytes).map_err(|error| error.to_string())
    };
    let (all, token) = fetch(1000, String::new()).await?;
    if all.len() < 2 {
        return Err(format!(
            "paging is checked with a person with two or more records; {rich} has {}",
            all.len()
        ));
    }
    if !token.is_empty() {
        return Err("one large page has a next page token".to_string());
    }
    let mut walked = Vec::new();
    let mut token = String::new();
    let mut first_token = String::new();
    loop {
        let (records, next) = fetch(1, token).await?;
        if records.len() > 1 {
            return Err(format!("a page of size 1 has {} records", records.len()));
        }
        walked.extend(records);
        if next.is_empty() {
            break;
        }
        if first_token.is_empty() {
            first_token = next.clone();
        }
        if walked.len() > all.len() {
            return Err("walking pages returns more records than one page".to_string());
        }
        token = next;
    }
    if walked != all {
        return Err(format!(
            "walking one record per page gave {} records, one large page {}",
            walked.len(),
            all.len()
        ));
    }
    if !first_token.is_empty() {
        // A token is bound to its person: replaying it for another is refused.
        let other = persons.other.as_str();
        let result = caller
            .call(
                method.path,
                &[other],
                request((other.to_string(), 1, first_token)),
            )
            .await;
        expect_status(
            result,
            Code::InvalidArgument,
            shlyuz_kit::error::REASON_INVALID_ARGUMENT,
        )
        .map_err(|error| format!("another person's page token: {error}"))?;
    }
    Ok(())
}

async fn check_batch_order(
    caller: &Caller,
    method: &Method,
    request: &Build<Vec<String>>,
    answer: &Read<BatchAnswer>,
    persons: &Persons,
    data: &SuiteData,
) -> Result<(), String> {
    let asked = [
        persons.other.as_str(),
        data.unknown.as_str(),
        persons.rich.as_str(),
    ];
    let bytes = caller
        .call(
            method.path,
            &asked,
            request(asked.iter().map(|iin| iin.to_string()).collect()),
        )
        .await
        .map_err(|status| format!("{status:?}"))?;
    let answer = answer(&bytes).map_err(|error| error.to_string())?;
    let in_request_order: Vec<&str> = asked
        .iter()
        .copied()
        .filter(|iin| answer.answered.iter().any(|answered| answered == iin))
        .collect();
    if answer.answered != in_request_order {
        return Err(format!("answered {:?}, asked {asked:?}", answer.answered));
    }
    for iin in asked {
        let entries = answer
            .answered
            .iter()
            .chain(&answer.not_found)
            .filter(|answered| *answered == iin)
            .count();
        if entries != 1 {
            return Err(format!("{iin} has {entries} entries: {answer:?}"));
        }
    }
    for iin in [&persons.rich, &persons.other] {
        if !answer.answered.contains(iin) {
            return Err(format!(
                "{iin}, who has records, is not answered: {answer:?}"
            ));
        }
    }
    Ok(())
}

async fn check_batch_limit(
    caller: &Caller,
    method: &Method,
    request: &Build<Vec<String>>,
    persons: &Persons,
) -> Result<(), String> {
    let iins = vec![persons.rich.clone(); 501];
    let result = caller
        .call(method.path, &[&persons.rich], request(iins))
        .await;
    expect_status(
        result,
        Code::InvalidArgument,
        shlyuz_kit::error::REASON_INVALID_ARGUMENT,
    )
    .map(drop)
}

/// A failure of an external registry, as the suite asks a mock upstream to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// Slower than the attempt timeout.
    Slow,
    /// Accepts the connection and drops it.
    Refused,
    /// Answers HTTP 400.
    ClientError,
    /// Answers HTTP 503.
    ServerError,
    /// Marks its answer incomplete.
    Partial,
    /// Answers something that is not JSON.
    Malformed,
    /// Adds a record about a person that was not asked about.
    Foreign,
}

impl UpstreamFailure {
    /// Every failure mode.
    pub const ALL: [UpstreamFailure; 7] = [
        UpstreamFailure::Slow,
        UpstreamFailure::Refused,
        UpstreamFailure::ClientError,
        UpstreamFailure::ServerError,
        UpstreamFailure::Partial,
        UpstreamFailure::Malformed,
        UpstreamFailure::Foreign,
    ];

    /// The status and reason the caller gets (docs/integrating-a-registry.md, the error table).
    pub fn expected(self) -> (Code, &'static str) {
        use crate::reasons as r;
        match self {
            UpstreamFailure::Slow => (Code::Unavailable, r::UPSTREAM_TIMEOUT),
            UpstreamFailure::Refused | UpstreamFailure::ServerError => {
                (Code::Unavailable, r::UPSTREAM_UNAVAILABLE)
            }
            UpstreamFailure::ClientError => (Code::FailedPrecondition, r::UPSTREAM_REFUSED),
            UpstreamFailure::Partial => (Code::DataLoss, r::UPSTREAM_PARTIAL),
            UpstreamFailure::Malformed | UpstreamFailure::Foreign => {
                (Code::DataLoss, r::UPSTREAM_MALFORMED)
            }
        }
    }
}

/// For each method whose kind an external registry serves (`upstream_kinds`), sets each
/// failure with `fail` (and `None` to heal it again) and checks the caller gets the status and
/// reason of [`UpstreamFailure::expected`], then a correct answer once the registry is healthy.
pub async fn run_faults(
    caller: &Caller,
    methods: &[Method],
    data: &SuiteData,
    upstream_kinds: &[&str],
    fail: &(dyn Fn(Option<UpstreamFailure>) + Send + Sync),
) -> Report {
    let mut report = Report::default();
    for method in methods {
        if !upstream_kinds.contains(&method.kind.name) {
            continue;
        }
        let Some(persons) = data.persons.get(method.kind.name) else {
            report.check(
                method,
                "data",
                Err(format!("no persons for {}", method.kind.name)),
            );
            continue;
        };
        for failure in UpstreamFailure::ALL {
            fail(Some(failure));
            let (code, reason) = failure.expected();
            let result = ask(caller, method, &persons.rich).await;
            let outcome = expect_status(result, code, reason).map(drop);
            report.check(method, &format!("upstream {failure:?}"), outcome);
            fail(None);
            let healed = ask(caller, method, &persons.rich)
                .await
                .map(drop)
                .map_err(|status| format!("after {failure:?}: {status:?}"));
            report.check(method, &format!("healthy after {failure:?}"), healed);
        }
    }
    report
}

/// The encoded records of a page.
fn encoded<M: Message>(records: &[M]) -> Vec<Bytes> {
    records
        .iter()
        .map(|record| Bytes::from(record.encode_to_vec()))
        .collect()
}

/// What a batch of `(iin, …)` entries and `not_found_iins` answers.
fn entries<'a>(iins: impl Iterator<Item = &'a String>, not_found: Vec<String>) -> BatchAnswer {
    BatchAnswer {
        answered: iins.cloned().collect(),
        not_found,
    }
}

/// The look-up methods of the registry services that ship, for [`run`]: one line each.
#[allow(clippy::needless_update)]
pub fn registry_methods() -> Vec<Method> {
    use crate::records::kinds;
    use shlyuz_proto::registry::v1 as pb;

    macro_rules! path {
        ($service:literal, $method:literal) => {
            concat!("/shlyuz.registry.v1.", $service, "/", $method)
        };
    }
    // `Get…(iin)`.
    macro_rules! get {
        ($service:literal, $method:literal, $kind:ident, $request:ident) => {
            Method::get(path!($service, $method), kinds::$kind.spec(), |iin| {
                pb::$request { iin }
            })
        };
    }
    // `List…(iin, page_size, page_token)` answering `$records` and `next_page_token`.
    macro_rules! list {
        ($service:literal, $method:literal, $kind:ident, $request:ident, $response:ident, $records:ident) => {
            Method::list(
                path!($service, $method),
                kinds::$kind.spec(),
                |iin, page_size, page_token| pb::$request {
                    iin,
                    page_size,
                    page_token,
                    ..Default::default()
                },
                |page: pb::$response| (encoded(&page.$records), page.next_page_token),
            )
        };
    }
    // `Batch…(iins)` answering one `$entries` item per person with its `iin`, and, where the
    // response has them, `not_found_iins`.
    macro_rules! batch {
        ($service:literal, $method:literal, $kind:ident, $request:ident, $response:ident, $entries:ident) => {
            Method::batch(
                path!($service, $method),
                kinds::$kind.spec(),
                |iins| pb::$request {
                    iins,
                    ..Default::default()
                },
                |answer: pb::$response| {
                    entries(answer.$entries.iter().map(|entry| &entry.iin), Vec::new())
                },
            )
        };
        ($service:literal, $method:literal, $kind:ident, $request:ident, $response:ident, $entries:ident, not_found) => {
            Method::batch(
                path!($service, $method),
                kinds::$kind.spec(),
                |iins| pb::$request { iins },
                |answer: pb::$response| {
                    entries(
                        answer.$entries.iter().map(|entry| &entry.iin),
                        answer.not_found_iins,
                    )
                },
            )
        };
    }

    vec![
        get!(
            "PersonRegistryService",
            "GetPerson",
            PERSONS,
            GetPersonRequest
        ),
        batch!(
            "PersonRegistryService",
            "BatchGetPersons",
            PERSONS,
            BatchGetPersonsRequest,
            BatchGetPersonsResponse,
            persons,
            not_found
        ),
        get!(
            "CivilRegistryService",
            "GetBirthRecord",
            PERSONS,
            GetBirthRecordRequest
        ),
        get!(
            "CivilRegistryService",
            "GetFamily",
            MARRIAGES,
            GetFamilyRequest
        ),
        batch!(
            "CivilRegistryService",
            "BatchGetFamilies",
            MARRIAGES,
            BatchGetFamiliesRequest,
            BatchGetFamiliesResponse,
            families,
            not_found
        ),
        list!(
            "RealEstateCadastreService",
            "ListRealEstateRights",
            REAL_ESTATE_RIGHTS,
            ListRealEstateRightsRequest,
            ListRealEstateRightsResponse,
            rights
        ),
        batch!(
            "RealEstateCadastreService",
            "BatchListRealEstateRights",
            REAL_ESTATE_RIGHTS,
            BatchListRealEstateRightsRequest,
            BatchListRealEstateRightsResponse,
            results
        ),
        list!(
            "StatePropertyRegistryService",
            "ListPrivatisationContracts",
            PRIVATISATION_CONTRACTS,
            ListPrivatisationContractsRequest,
            ListPrivatisationContractsResponse,
            contracts
        ),
        batch!(
            "StatePropertyRegistryService",
            "BatchListPrivatisationContracts",
            PRIVATISATION_CONTRACTS,
            BatchListPrivatisationContractsRequest,
            BatchListPrivatisationContractsResponse,
            results
        ),
        list!(
            "EquityRegistryService",
            "ListEquityContracts",
            EQUITY_CONTRACTS,
            ListEquityContractsRequest,
            ListEquityContractsResponse,
            contracts
        ),
        batch!(
            "EquityRegistryService",
            "BatchListEquityContracts",
            EQUITY_CONTRACTS,
            BatchListEquityContractsRequest,
            BatchListEquityContractsResponse,
            results
        ),
        get!(
            "MilitaryRegisterService",
            "GetMilitaryRegistration",
            MILITARY_REGISTRATIONS,
            GetMilitaryRegistrationRequest
        ),
        list!(
            "MilitaryRegisterService",
            "ListServiceRecord",
            SERVICE_PERIODS,
            ListServiceRecordRequest,
            ListServiceRecordResponse,
            periods
        ),
        list!(
            "MilitaryRegisterService",
            "ListServiceHousing",
            SERVICE_HOUSING,
            ListServiceHousingRequest,
            ListServiceHousingResponse,
            housing
        ),
        batch!(
            "MilitaryRegisterService",
            "BatchListServiceHousing",
            SERVICE_HOUSING,
            BatchListServiceHousingRequest,
            BatchListServiceHousingResponse,
            results
        ),
        list!(
            "MedicalRegistryService",
            "ListDispensaryRecords",
            DISPENSARY_RECORDS,
            ListDispensaryRecordsRequest,
            ListDispensaryRecordsResponse,
            records
        ),
        batch!(
            "MedicalRegistryService",
            "BatchListDispensaryRecords",
            DISPENSARY_RECORDS,
            BatchListDispensaryRecordsRequest,
            BatchListDispensaryRecordsResponse,
            results
        ),
        get!(
            "CriminalRecordsService",
            "GetCriminalRecord",
            CONVICTIONS,
            GetCriminalRecordRequest
        ),
        batch!(
            "CriminalRecordsService",
            "BatchGetCriminalRecords",
            CONVICTIONS,
            BatchGetCriminalRecordsRequest,
            BatchGetCriminalRecordsResponse,
            records,
            not_found
        ),
        get!("MobileCitizensService", "GetPhone", PHONES, GetPhoneRequest),
        batch!(
            "MobileCitizensService",
            "BatchGetPhones",
            PHONES,
            BatchGetPhonesRequest,
            BatchGetPhonesResponse,
            phones,
            not_found
        ),
    ]
}

/// Routes served on a loopback port without TLS, as the suite calls them directly; stops when
/// dropped.
pub struct LocalServer {
    /// A channel to the server.
    pub channel: tonic::transport::Channel,
    _trigger: shlyuz_kit::shutdown::ShutdownTrigger,
}

impl LocalServer {
    /// Serves `routes`.
    pub async fn start(routes: tonic::service::Routes) -> anyhow::Result<Self> {
        use shlyuz_kit::server::{GrpcServer, ServerSettings, Transport};
        let server = GrpcServer::bind(
            ServerSettings::loopback("registry", Transport::Plaintext),
            &shlyuz_kit::telemetry::MetricsRegistry::default(),
        )
        .await?;
        let address = server.local_addr()?;
        let (trigger, signal) = shlyuz_kit::shutdown::shutdown_channel();
        tokio::spawn(server.serve(routes, signal));
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))?
            .connect()
            .await?;
        Ok(Self {
            channel,
            _trigger: trigger,
        })
    }
}

/// A valid IIN that no row of `tables` mentions.
pub fn unknown_iin(tables: &serde_json::Value) -> String {
    let text = tables.to_string();
    let birth = time::Date::from_calendar_date(1931, time::Month::February, 3).expect("a date");
    (1..u16::MAX)
        .filter_map(|serial| {
            shlyuz_kit::iin::Iin::from_parts(birth, shlyuz_kit::iin::Sex::Female, serial)
        })
        .map(|iin| iin.as_str().to_string())
        .find(|iin| !text.contains(iin.as_str()))
        .expect("an iin nobody has")
}
