//! A mock external registry for tests: an HTTP server driven by the same upstream file as
//! production. Given the file and the rows it holds, it serves every configured endpoint as the
//! mapping describes it — reads the asked IINs from the request field, keeps the rows about them,
//! renders each into the record shape of the mapping's `fields` pointers, puts the array at
//! `records_pointer` and `true` at `complete_pointer` — and fails on demand in each way a real
//! registry does ([`UpstreamFailure`]). It binds port 0 and keeps its listener; every answer
//! closes its connection, so a refused connection is seen by the next call.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use serde_json::{Map, Value};

use crate::conformance::UpstreamFailure;
use crate::upstream::{EndpointMapping, UpstreamSettings};

/// The rows of one kind the mock holds: each a record serialized `column → value`.
#[derive(Debug, Clone)]
pub struct MockTable {
    /// The kind's name (the endpoint key of the upstream file).
    pub kind: String,
    /// The columns that make a row about a person.
    pub owner_columns: Vec<String>,
    /// The rows.
    pub rows: Vec<Map<String, Value>>,
}

struct Shared {
    settings: UpstreamSettings,
    tables: BTreeMap<String, MockTable>,
    failure: Mutex<Option<UpstreamFailure>>,
    refuse: AtomicBool,
    requests: AtomicUsize,
}

/// A running mock registry; stops when dropped.
pub struct MockUpstream {
    shared: Arc<Shared>,
    base_url: String,
    upstream_toml: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A listener that drops every connection while the mock refuses them.
struct RefusingListener {
    inner: tokio::net::TcpListener,
    shared: Arc<Shared>,
}

impl axum::serve::Listener for RefusingListener {
    type Io = tokio::net::TcpStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, address)) => {
                    if self.shared.refuse.load(Ordering::SeqCst) {
                        drop(stream);
                        continue;
                    }
                    return (stream, address);
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

impl MockUpstream {
    /// Serves `tables` as the upstream file `upstream_toml` describes (its `base_url` is
    /// replaced by the mock's own).
    pub async fn start(upstream_toml: &str, tables: Vec<MockTable>) -> anyhow::Result<Self> {
        let settings: UpstreamSettings = toml::from_str(upstream_toml)?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let shared = Arc::new(Shared {
            settings,
            tables: tables
                .into_iter()
                .map(|table| (table.kind.clone(), table))
                .collect(),
            failure: Mutex::new(None),
            refuse: AtomicBool::new(false),
            requests: AtomicUsize::new(0),
        });
        let router = axum::Router::new()
            .fallback(answer)
            .with_state(shared.clone());
        let listener = RefusingListener {
            inner: listener,
            shared: shared.clone(),
        };
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        let mut document: toml::Table = toml::from_str(upstream_toml)?;
        document.insert(
            "base_url".to_string(),
            toml::Value::String(base_url.clone()),
        );
        Ok(Self {
            shared,
            base_url,
            upstream_toml: toml::to_string(&document)?,
            task,
        })
    }

    /// The mock's address, `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The upstream file pointing at the mock.
    pub fn upstream_toml(&self) -> &str {
        &self.upstream_toml
    }

    /// Writes [`MockUpstream::upstream_toml`] into `directory`, for `registry.upstream_file`.
    pub fn write_upstream_file(&self, directory: &Path) -> anyhow::Result<PathBuf> {
        let path = directory.join("upstream.toml");
        std::fs::write(&path, &self.upstream_toml)?;
        Ok(path)
    }

    /// Fails every answer from now on as `failure` says, or answers correctly again (`None`).
    pub fn fail(&self, failure: Option<UpstreamFailure>) {
        self.shared
            .refuse
            .store(failure == Some(UpstreamFailure::Refused), Ordering::SeqCst);
        *self.shared.failure.lock() = failure;
    }

    /// Requests received so far (connections refused are not requests).
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }
}

async fn answer(State(shared): State<Arc<Shared>>, uri: Uri, body: Bytes) -> Response {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let failure = *shared.failure.lock();
    let close = [(header::CONNECTION, "close")];
    let path = uri.path().trim_start_matches('/');
    // The mock's base URL has no path: a request's path is the endpoint's.
    let Some((kind, mapping)) = shared
        .settings
        .endpoints
        .iter()
        .find(|(_, mapping)| mapping.path.trim_start_matches('/') == path)
    else {
        return (StatusCode::NOT_FOUND, close, "no such endpoint").into_response();
    };
    match failure {
        Some(UpstreamFailure::Slow) => {
            tokio::time::sleep(Duration::from_millis(shared.settings.timeout_ms + 500)).await;
        }
        Some(UpstreamFailure::ClientError) => {
            return (StatusCode::BAD_REQUEST, close, "bad request").into_response();
        }
        Some(UpstreamFailure::ServerError) => {
            return (StatusCode::SERVICE_UNAVAILABLE, close, "maintenance").into_response();
        }
        Some(UpstreamFailure::Malformed) => {
            return (StatusCode::OK, close, "<html>not json</html>").into_response();
        }
        _ => {}
    }
    let asked: Vec<String> = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|request| request.get(&mapping.request_field).cloned())
        .and_then(|iins| serde_json::from_value(iins).ok())
        .unwrap_or_default();
    let Some(table) = shared.tables.get(kind) else {
        return (StatusCode::OK, close, render(mapping, Vec::new(), true)).into_response();
    };
    let mut records: Vec<Value> = table
        .rows
        .iter()
        .filter(|row| {
            table.owner_columns.iter().any(|column| {
                row.get(column)
                    .and_then(Value::as_str)
                    .is_some_and(|iin| asked.iter().any(|asked| asked == iin))
            })
        })
        .map(|row| record(mapping, row))
        .collect();
    if failure == Some(UpstreamFailure::Foreign)
        && let Some(row) = table.rows.first()
    {
        let mut stranger = row.clone();
        for column in &table.owner_columns {
            stranger.insert(column.clone(), Value::String("000000000000".to_string()));
        }
        records.push(record(mapping, &stranger));
    }
    let complete = failure != Some(UpstreamFailure::Partial);
    if !complete && mapping.complete_pointer.is_none() {
        // No completeness flag to lower: drop a required column instead.
        for record in &mut records {
            if let (Some(object), Some(column)) =
                (record.as_object_mut(), table.owner_columns.first())
            {
                object.remove(column);
            }
        }
    }
    (StatusCode::OK, close, render(mapping, records, complete)).into_response()
}

/// A row in the shape the mapping reads: each column at its pointer.
fn record(mapping: &EndpointMapping, row: &Map<String, Value>) -> Value {
    let mut record = Value::Object(Map::new());
    for (column, value) in row {
        let pointer = mapping
            .fields
            .get(column)
            .cloned()
            .unwrap_or_else(|| format!("/{column}"));
        put(&mut record, &pointer, value.clone());
    }
    record
}

/// The answer: `records` at `records_pointer`, `complete` at `complete_pointer`.
fn render(mapping: &EndpointMapping, records: Vec<Value>, complete: bool) -> String {
    let records = Value::Array(records);
    let mut answer = if mapping.records_pointer.is_empty() {
        records
    } else {
        let mut answer = Value::Object(Map::new());
        put(&mut answer, &mapping.records_pointer, records);
        answer
    };
    if let Some(pointer) = &mapping.complete_pointer {
        put(&mut answer, pointer, Value::Bool(complete));
    }
    answer.to_string()
}

/// Sets `value` at the JSON pointer `pointer`, making the objects on the way.
fn put(target: &mut Value, pointer: &str, value: Value) {
    let mut current = target;
    let parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
    for (index, part) in parts.iter().enumerate() {
        let Some(object) = current.as_object_mut() else {
            return;
        };
        if index + 1 == parts.len() {
            object.insert((*part).to_string(), value);
            return;
        }
        current = object
            .entry((*part).to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
}
