//! A mock external registry for tests (feature `testing`): [`MockUpstream`] serves every
//! endpoint of the same [`UpstreamSettings`] production reads, answering from tables of rows in
//! the shape the mapping describes, checking the configured authentication, and misbehaving on
//! demand ([`Fault`]). docs/upstream-contract.md is the contract it plays the other side of.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use serde_json::{Map, Value};

pub use crate::upstream::{EndpointMapping, EndpointMethod, UpstreamSettings};

/// The rows of one record kind the mock holds.
#[derive(Debug, Clone)]
pub struct MockTable {
    /// The record kind, as in `[endpoints.<kind>]`.
    pub kind: String,
    /// The columns naming the persons a row is about (`iin`; `mother_iin` and `father_iin`).
    pub owner_columns: Vec<String>,
    /// Each row a record serialized column → value.
    pub rows: Vec<Map<String, Value>>,
}

impl MockTable {
    /// A table of `rows` serialized with serde (the records' structs derive `Serialize`).
    pub fn from_rows<T: serde::Serialize>(kind: &str, owner_columns: &[&str], rows: &[T]) -> Self {
        let rows = rows
            .iter()
            .map(|row| match serde_json::to_value(row) {
                Ok(Value::Object(object)) => object,
                _ => panic!("a mock table row must serialize to a json object"),
            })
            .collect();
        Self {
            kind: kind.to_string(),
            owner_columns: owner_columns
                .iter()
                .map(|column| column.to_string())
                .collect(),
            rows,
        }
    }
}

/// How the mock answers a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Correctly.
    Ok,
    /// Correctly, after this long.
    Slow(Duration),
    /// Accepts the request, then drops the connection without answering.
    Refuse,
    /// This HTTP status with an empty body.
    Status(u16),
    /// Correctly, with the completeness flag `false` (the mapping needs a `complete_pointer`).
    Partial,
    /// Without the required columns (`required` and a sole owner column) in every record.
    MissingRequired,
    /// A body that is not JSON.
    Malformed,
    /// A number column as a string (or, without one, a text column as a number) in every record.
    WrongType,
    /// With one more record, about a person not asked about.
    Foreign,
}

/// Two valid IINs; a [`Fault::Foreign`] record is about whichever was not asked about.
const FOREIGN_IINS: [&str; 2] = ["850101399906", "900101300017"];

struct Faults {
    all: Fault,
    per_kind: HashMap<String, Fault>,
    queued: HashMap<String, VecDeque<Fault>>,
}

struct MockState {
    settings: UpstreamSettings,
    api_key: Option<(String, String)>,
    tables: HashMap<String, MockTable>,
    faults: Mutex<Faults>,
    requests: Mutex<HashMap<String, usize>>,
    last_headers: Mutex<Vec<(String, String)>>,
}

/// An external registry on a loopback port (0, kept for the mock's life), serving what its
/// [`UpstreamSettings`] describe; stops when dropped.
pub struct MockUpstream {
    address: SocketAddr,
    scheme: &'static str,
    state: Arc<MockState>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl MockUpstream {
    /// Serves `settings`' endpoints over plain HTTP from `tables`; the API key is read from
    /// the settings' key source as the registry reads it.
    pub async fn start(settings: UpstreamSettings, tables: Vec<MockTable>) -> anyhow::Result<Self> {
        Self::serve(settings, tables, None).await
    }

    /// [`MockUpstream::start`] with the settings given as the text of an upstream file.
    pub async fn start_toml(toml_text: &str, tables: Vec<MockTable>) -> anyhow::Result<Self> {
        let settings: UpstreamSettings = toml::from_str(toml_text)?;
        Self::start(settings, tables).await
    }

    /// [`MockUpstream::start`] over HTTPS with `tls` (its certificate, and a client verifier
    /// when mutual TLS is tested).
    pub async fn start_https(
        settings: UpstreamSettings,
        tables: Vec<MockTable>,
        tls: Arc<rustls::ServerConfig>,
    ) -> anyhow::Result<Self> {
        Self::serve(settings, tables, Some(tokio_rustls::TlsAcceptor::from(tls))).await
    }

    async fn serve(
        settings: UpstreamSettings,
        tables: Vec<MockTable>,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> anyhow::Result<Self> {
        let api_key = crate::upstream::api_key(&settings)?;
        let state = Arc::new(MockState {
            settings,
            api_key,
            tables: tables
                .into_iter()
                .map(|table| (table.kind.clone(), table))
                .collect(),
            faults: Mutex::new(Faults {
                all: Fault::Ok,
                per_kind: HashMap::new(),
                queued: HashMap::new(),
            }),
            requests: Mutex::new(HashMap::new()),
            last_headers: Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let server = tokio::spawn(accept_loop(listener, tls, state.clone()));
        Ok(Self {
            address,
            scheme,
            state,
            server,
        })
    }

    /// The address it listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The settings it was given, with `base_url` pointing at it.
    pub fn settings_for_me(&self) -> UpstreamSettings {
        UpstreamSettings {
            base_url: format!("{}://127.0.0.1:{}", self.scheme, self.address.port()),
            ..self.state.settings.clone()
        }
    }

    /// Writes [`MockUpstream::settings_for_me`] to `dir/upstream.toml`, a file for
    /// `registry.upstream_file`, and returns its path.
    pub fn write_settings(&self, dir: &Path) -> PathBuf {
        let path = dir.join("upstream.toml");
        let text = toml::to_string(&self.settings_for_me()).expect("upstream settings as toml");
        std::fs::write(&path, text).expect("write the upstream file");
        path
    }

    /// From now on every kind answers with `fault` (per-kind faults set before are dropped).
    pub fn set_fault_for_all(&self, fault: Fault) {
        let mut faults = self.state.faults.lock();
        faults.all = fault;
        faults.per_kind.clear();
    }

    /// From now on `kind` answers with `fault`.
    pub fn set_fault(&self, kind: &str, fault: Fault) {
        self.state
            .faults
            .lock()
            .per_kind
            .insert(kind.to_string(), fault);
    }

    /// The next requests for `kind` answer with these faults, one each, before the set one
    /// applies again (a registry failing twice, then recovering).
    pub fn queue_faults(&self, kind: &str, faults: impl IntoIterator<Item = Fault>) {
        self.state
            .faults
            .lock()
            .queued
            .entry(kind.to_string())
            .or_default()
            .extend(faults);
    }

    /// Requests received for `kind`'s endpoint.
    pub fn requests(&self, kind: &str) -> usize {
        self.state.requests.lock().get(kind).copied().unwrap_or(0)
    }

    /// The headers of the last request received, names lowercase.
    pub fn last_headers(&self) -> Vec<(String, String)> {
        self.state.last_headers.lock().clone()
    }

    /// The value of header `name` in the last request received.
    pub fn last_header(&self, name: &str) -> Option<String> {
        let name = name.to_ascii_lowercase();
        self.state
            .last_headers
            .lock()
            .iter()
            .find(|(header, _)| *header == name)
            .map(|(_, value)| value.clone())
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<MockState>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let state = state.clone();
                async move { answer(&state, request).await }
            });
            let http = hyper::server::conn::http1::Builder::new();
            match tls {
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        let _ = http.serve_connection(TokioIo::new(stream), service).await;
                    }
                }
                None => {
                    let _ = http.serve_connection(TokioIo::new(stream), service).await;
                }
            }
        });
    }
}

type MockResponse = Response<Full<Bytes>>;

fn status_only(status: StatusCode) -> MockResponse {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

fn json_body(body: String) -> MockResponse {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

/// Answers one request; `Err` drops the connection without an answer ([`Fault::Refuse`]).
async fn answer(
    state: &MockState,
    request: Request<Incoming>,
) -> Result<MockResponse, std::io::Error> {
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_string(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    *state.last_headers.lock() = headers.clone();
    let method = request.method().clone();
    let path = request.uri().path().trim_start_matches('/').to_string();
    let body = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Ok(status_only(StatusCode::BAD_REQUEST)),
    };
    let Some((kind, mapping, path_iin)) = endpoint_for(&state.settings, &method, &path) else {
        return Ok(status_only(StatusCode::NOT_FOUND));
    };
    *state.requests.lock().entry(kind.clone()).or_default() += 1;
    if !authenticated(state, &headers) {
        return Ok(status_only(StatusCode::UNAUTHORIZED));
    }
    let fault = {
        let mut faults = state.faults.lock();
        let queued = faults.queued.get_mut(&kind).and_then(VecDeque::pop_front);
        queued
            .or_else(|| faults.per_kind.get(&kind).cloned())
            .unwrap_or_else(|| faults.all.clone())
    };
    match &fault {
        Fault::Refuse => {
            return Err(std::io::Error::other("the mock refuses this request"));
        }
        Fault::Status(code) => {
            let status = StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return Ok(status_only(status));
        }
        Fault::Malformed => return Ok(json_body("<html>502 Bad Gateway</html>".to_string())),
        Fault::Slow(delay) => tokio::time::sleep(*delay).await,
        Fault::Ok | Fault::Partial | Fault::MissingRequired | Fault::WrongType | Fault::Foreign => {
        }
    }
    let asked: HashSet<String> = match path_iin {
        Some(iin) => HashSet::from([iin]),
        None => serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|value| value.get(&mapping.request_field).cloned())
            .and_then(|value| serde_json::from_value(value).ok())
            .unwrap_or_default(),
    };
    let table = state.tables.get(&kind);
    let owner_columns: Vec<String> = table
        .map(|table| table.owner_columns.clone())
        .unwrap_or_default();
    let mut rows: Vec<Map<String, Value>> = table
        .map(|table| {
            table
                .rows
                .iter()
                .filter(|row| is_about(row, &owner_columns, &asked))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    if mapping.method == EndpointMethod::Get && rows.is_empty() && fault != Fault::Foreign {
        let status =
            StatusCode::from_u16(mapping.not_found_status()).unwrap_or(StatusCode::NOT_FOUND);
        return Ok(status_only(status));
    }
    match fault {
        Fault::MissingRequired => {
            for row in &mut rows {
                for column in &mapping.required {
                    row.remove(column);
                }
                if let [owner] = owner_columns.as_slice() {
                    row.remove(owner);
                }
            }
        }
        Fault::WrongType => rows.iter_mut().for_each(mistype),
        Fault::Foreign => {
            let foreign_iin = FOREIGN_IINS
                .iter()
                .find(|iin| !asked.contains(**iin))
                .copied()
                .unwrap_or(FOREIGN_IINS[0]);
            let mut foreign = table
                .and_then(|table| table.rows.first().cloned())
                .unwrap_or_default();
            for column in &owner_columns {
                foreign.insert(column.clone(), Value::from(foreign_iin));
            }
            rows.push(foreign);
        }
        _ => {}
    }
    let records: Vec<Value> = rows.iter().map(|row| render(row, mapping)).collect();
    let mut answer = Value::Object(Map::new());
    set_pointer(&mut answer, &mapping.records_pointer, Value::Array(records));
    if let Some(pointer) = &mapping.complete_pointer {
        set_pointer(&mut answer, pointer, Value::Bool(fault != Fault::Partial));
    }
    Ok(json_body(answer.to_string()))
}

/// The endpoint a request is for: its kind, mapping and, for a `get`, the IIN in the path.
fn endpoint_for<'a>(
    settings: &'a UpstreamSettings,
    method: &Method,
    path: &str,
) -> Option<(String, &'a EndpointMapping, Option<String>)> {
    settings.endpoints.iter().find_map(|(kind, mapping)| {
        let pattern = mapping.path.trim_start_matches('/');
        match mapping.method {
            EndpointMethod::Post if method == Method::POST && pattern == path => {
                Some((kind.clone(), mapping, None))
            }
            EndpointMethod::Get if method == Method::GET => {
                let (prefix, suffix) = pattern.split_once("{iin}")?;
                let iin = path.strip_prefix(prefix)?.strip_suffix(suffix)?;
                (!iin.is_empty() && !iin.contains('/'))
                    .then(|| (kind.clone(), mapping, Some(iin.to_string())))
            }
            _ => None,
        }
    })
}

fn authenticated(state: &MockState, headers: &[(String, String)]) -> bool {
    let has = |name: &str, expected: &str| {
        let name = name.to_ascii_lowercase();
        headers
            .iter()
            .any(|(header, value)| *header == name && value == expected)
    };
    let key_ok = state
        .api_key
        .as_ref()
        .is_none_or(|(header, key)| has(header, key));
    key_ok
        && state
            .settings
            .headers
            .iter()
            .all(|(name, value)| has(name, value))
}

fn is_about(row: &Map<String, Value>, owner_columns: &[String], asked: &HashSet<String>) -> bool {
    owner_columns.iter().any(|column| {
        row.get(column)
            .and_then(Value::as_str)
            .is_some_and(|iin| asked.contains(iin))
    })
}

/// Gives one column the wrong JSON type: a number as a string, or else a string as a number.
fn mistype(row: &mut Map<String, Value>) {
    if let Some((_, value)) = row.iter_mut().find(|(_, value)| value.is_number()) {
        *value = Value::String(value.to_string());
    } else if let Some((_, value)) = row.iter_mut().find(|(_, value)| value.is_string()) {
        *value = Value::from(1);
    }
}

/// A row in the external registry's shape: each column at its `fields` pointer (`/<column>`
/// when not listed), nested objects created along the way.
fn render(row: &Map<String, Value>, mapping: &EndpointMapping) -> Value {
    let mut record = Value::Object(Map::new());
    for (column, value) in row {
        let pointer = mapping
            .fields
            .get(column)
            .cloned()
            .unwrap_or_else(|| format!("/{column}"));
        set_pointer(&mut record, &pointer, value.clone());
    }
    record
}

/// Puts `value` at JSON pointer `pointer` in `target` (empty: replaces it), creating objects.
fn set_pointer(target: &mut Value, pointer: &str, value: Value) {
    if pointer.is_empty() {
        *target = value;
        return;
    }
    let tokens: Vec<String> = pointer
        .split('/')
        .skip(1)
        .map(|token| token.replace("~1", "/").replace("~0", "~"))
        .collect();
    let mut current = target;
    for (index, token) in tokens.iter().enumerate() {
        if !current.is_object() {
            *current = Value::Object(Map::new());
        }
        let Value::Object(object) = current else {
            return;
        };
        if index + 1 == tokens.len() {
            object.insert(token.clone(), value);
            return;
        }
        current = object
            .entry(token.clone())
            .or_insert(Value::Object(Map::new()));
    }
}

impl From<Option<crate::conformance::UpstreamFailure>> for Fault {
    /// The fault that makes the mock fail as the conformance suite asks (`None`: answer
    /// correctly); slow is a second, longer than any test's attempt timeout.
    fn from(failure: Option<crate::conformance::UpstreamFailure>) -> Self {
        use crate::conformance::UpstreamFailure as F;
        match failure {
            None => Fault::Ok,
            Some(F::Slow) => Fault::Slow(Duration::from_secs(1)),
            Some(F::Refused) => Fault::Refuse,
            Some(F::ClientError) => Fault::Status(400),
            Some(F::ServerError) => Fault::Status(503),
            Some(F::Partial) => Fault::Partial,
            Some(F::Malformed) => Fault::Malformed,
            Some(F::Foreign) => Fault::Foreign,
        }
    }
}
