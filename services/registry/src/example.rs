//! The example adapter of docs/integrating-a-registry.md: a registry of vehicles by owner, added
//! by following the guide step by step, and kept in the tests — it is compiled only for them (and
//! the `testing` feature), its proto lives in `example/`, and the shipped directory has no route
//! to it. The conformance suite runs it on SQLite, PostgreSQL, a mock upstream and through the
//! gateway (tests/registry_adapter.rs), exactly as a real adapter's tests do.
//!
//! A real adapter puts the same pieces in the places the guide names: the proto in
//! `proto/shlyuz/registry/v1/`, the record and its kind in `records.rs`, the table in a numbered
//! migration, the service in `grpc/`.

use std::sync::Arc;

use shlyuz_kit::db::{Database, Dialect};
use shlyuz_kit::error::ApiError;
use tonic::{Request, Response, Status};

use crate::conformance::{BatchAnswer, Method, SuiteData};
use crate::embedded::EmbeddedRegistry;
use crate::grpc::{group_by_iin, paginate, subject_iin, subject_iins};
use crate::records::{Kind, kinds::KIND_NAMES, table_row};
use crate::source::{RecordLookup as _, RegistrySource};
use crate::upstream::{UpstreamRegistry, UpstreamSettings};

/// The generated messages and server of `shlyuz.example.v1`.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("shlyuz.example.v1");
}

// Step 2.1: the record type.
table_row! {
    /// A vehicle registered to a person.
    VehicleRecord, table = "vehicles", iin = owner_iin, order = vin, {
        /// Vehicle identification number.
        vin: String,
        /// IIN of the owner.
        owner_iin: String,
        /// Registration plate.
        plate: String,
        /// Make and model.
        model: String,
        /// Year of manufacture.
        year: i64,
        /// Date of registration.
        registered_on: String,
    }
}

/// Step 2.1: the record kind — vehicles by their owner's IIN; the endpoint name of an upstream.
pub const VEHICLES: Kind<VehicleRecord> = Kind::new("vehicles", &["owner_iin"]);

/// Step 2.2: the migration, per dialect (a real adapter adds numbered files to `migrations/`).
pub fn migration(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => {
            "CREATE TABLE vehicles (vin TEXT PRIMARY KEY, owner_iin TEXT NOT NULL, \
             plate TEXT NOT NULL, model TEXT NOT NULL, year BIGINT NOT NULL, \
             registered_on TEXT NOT NULL);
             CREATE INDEX vehicles_owner_iin ON vehicles (owner_iin);"
        }
        Dialect::Postgres => {
            "CREATE TABLE vehicles (vin TEXT PRIMARY KEY, owner_iin TEXT NOT NULL, \
             plate TEXT NOT NULL, model TEXT NOT NULL, year BIGINT NOT NULL, \
             registered_on TEXT NOT NULL);
             CREATE INDEX vehicles_owner_iin ON vehicles (owner_iin);"
        }
    }
}

/// Creates the example's table in `database` (migrated with the registry's migrations) and
/// stores `vehicles`.
pub async fn install(database: &Database, vehicles: &[VehicleRecord]) -> anyhow::Result<()> {
    let mut transaction = database.pool().begin().await?;
    sqlx::raw_sql(migration(database.dialect()))
        .execute(&mut *transaction)
        .await?;
    crate::embedded::insert_rows(&mut transaction, vehicles).await?;
    transaction.commit().await?;
    Ok(())
}

/// Vehicles for the conformance suite: three for `rich`, one for `other`, and one each for
/// `more`.
pub fn sample_vehicles(rich: &str, other: &str, more: &[&str]) -> Vec<VehicleRecord> {
    let owners = [rich, rich, rich, other]
        .into_iter()
        .chain(more.iter().copied());
    owners
        .enumerate()
        .map(|(index, owner)| VehicleRecord {
            vin: format!("XTA21099{index:09}"),
            owner_iin: owner.to_string(),
            plate: format!("{:03}ABC01", index % 1000),
            model: ["Lada Granta", "Toyota Camry", "Hyundai Accent"][index % 3].to_string(),
            year: 2000 + (index % 25) as i64,
            registered_on: format!("2020-{:02}-15", index % 12 + 1),
        })
        .collect()
}

/// A migrated, empty `database` prepared for the suite: the registry's migrations, the example's
/// table, and [`sample_vehicles`] of three fixture people; the vehicles stored and the suite's
/// data picked from them.
pub async fn prepare(database: &Database) -> anyhow::Result<(Vec<VehicleRecord>, SuiteData)> {
    use shlyuz_kit::fixture_people as people;
    database.migrate(&crate::MIGRATIONS).await?;
    let vehicles = sample_vehicles(
        people::SERVICEMAN_CLEAN.iin,
        people::SERVICEMAN_CLEAN_SPOUSE.iin,
        &[people::CLEAN_CANDIDATE.iin],
    );
    install(database, &vehicles).await?;
    let tables = serde_json::json!({ "vehicles": rows(&vehicles) });
    let unknown = crate::conformance::unknown_iin(&tables);
    let Some(data) = SuiteData::pick(
        tables.as_object().unwrap_or(&serde_json::Map::new()),
        &[VEHICLES.spec()],
        &unknown,
    ) else {
        anyhow::bail!("the sample has fewer than two owners");
    };
    Ok((vehicles, data))
}

/// Step 7: the upstream file of the vehicle registry's HTTP API, as a deployment writes it (the
/// tests point `base_url` at a mock; short timeouts so the failure cases run quickly).
pub const UPSTREAM_TOML: &str = r#"
base_url = "https://vehicles.example.gov.kz/api/v1"
timeout_ms = 300
connect_timeout_ms = 300
max_attempts = 2
initial_backoff_ms = 10
breaker_failures = 1000
breaker_open_ms = 1000

[endpoints.vehicles]
path = "vehicles/search"
request_field = "ownerIins"
records_pointer = "/data/items"
complete_pointer = "/complete"
required = ["plate"]
fields = { vin = "/id", owner_iin = "/owner/iin", plate = "/registration/plate" }
"#;

/// A mock of the vehicle registry's API holding `vehicles`, driven by [`UPSTREAM_TOML`].
pub async fn mock_upstream(
    vehicles: &[VehicleRecord],
) -> anyhow::Result<crate::testing::MockUpstream> {
    let kind = VEHICLES.spec();
    crate::testing::MockUpstream::start_toml(
        UPSTREAM_TOML,
        vec![crate::testing::MockTable::from_rows(
            kind.name,
            kind.owners,
            vehicles,
        )],
    )
    .await
}

/// [`prepare`] for an external registry: the sample's vehicles held by a mock of the registry's
/// API and not by the tables (so every answer is the mock's), and its upstream file written into
/// `directory`.
pub async fn prepare_upstream(
    database: &Database,
    directory: &std::path::Path,
) -> anyhow::Result<(crate::testing::MockUpstream, std::path::PathBuf, SuiteData)> {
    let (vehicles, data) = prepare(database).await?;
    sqlx::query("DELETE FROM vehicles")
        .execute(database.pool())
        .await?;
    let mock = mock_upstream(&vehicles).await?;
    let file = mock.write_settings(directory);
    Ok((mock, file, data))
}

/// The example's rows as `column → value` objects, e.g. for a mock upstream's table.
pub fn rows(vehicles: &[VehicleRecord]) -> Vec<serde_json::Map<String, serde_json::Value>> {
    vehicles
        .iter()
        .filter_map(|vehicle| match serde_json::to_value(vehicle) {
            Ok(serde_json::Value::Object(object)) => Some(object),
            _ => None,
        })
        .collect()
}

/// The backend, as `registry.upstream_file` chooses it: the embedded tables of `database`, or
/// the external registry the upstream file describes, falling back to the tables for kinds it
/// has no endpoint for.
pub fn source(
    database: Database,
    upstream_file: Option<&std::path::Path>,
) -> anyhow::Result<Arc<dyn RegistrySource>> {
    let embedded: Arc<dyn RegistrySource> = Arc::new(EmbeddedRegistry::new(database));
    let Some(path) = upstream_file else {
        return Ok(embedded);
    };
    let settings = UpstreamSettings::from_toml_file(path)?;
    let mut kinds = KIND_NAMES.to_vec();
    kinds.push(VEHICLES.spec().name);
    Ok(Arc::new(UpstreamRegistry::with_kinds(
        settings,
        Some(embedded),
        &kinds,
    )?))
}

/// Step 3: the gRPC service over a source.
#[derive(Clone)]
pub struct VehicleRegistry {
    source: Arc<dyn RegistrySource>,
}

impl VehicleRegistry {
    /// The service over `source`.
    pub fn new(source: Arc<dyn RegistrySource>) -> Self {
        Self { source }
    }

    /// Its routes.
    pub fn routes(self) -> tonic::service::Routes {
        tonic::service::Routes::new(
            pb::vehicle_registry_service_server::VehicleRegistryServiceServer::new(self),
        )
    }
}

fn vehicle(record: VehicleRecord) -> pb::Vehicle {
    pb::Vehicle {
        vin: record.vin,
        owner_iin: record.owner_iin,
        plate: record.plate,
        model: record.model,
        year: record.year,
        registered_on: record.registered_on,
    }
}

#[tonic::async_trait]
impl pb::vehicle_registry_service_server::VehicleRegistryService for VehicleRegistry {
    async fn list_vehicles(
        &self,
        request: Request<pb::ListVehiclesRequest>,
    ) -> Result<Response<pb::ListVehiclesResponse>, Status> {
        let iin = subject_iin(&request, &request.get_ref().iin)?;
        let message = request.get_ref();
        let records = self
            .source
            .records(&VEHICLES, std::slice::from_ref(&iin))
            .await
            .map_err(ApiError::from)?;
        let (page, next_page_token) = paginate(
            records,
            |record| record.vin.clone(),
            &format!("vehicles/{}", iin.as_str()),
            message.page_size,
            &message.page_token,
        )?;
        Ok(Response::new(pb::ListVehiclesResponse {
            vehicles: page.into_iter().map(vehicle).collect(),
            next_page_token,
        }))
    }

    async fn batch_list_vehicles(
        &self,
        request: Request<pb::BatchListVehiclesRequest>,
    ) -> Result<Response<pb::BatchListVehiclesResponse>, Status> {
        let iins = subject_iins(&request, &request.get_ref().iins)?;
        let records = self
            .source
            .records(&VEHICLES, &iins)
            .await
            .map_err(ApiError::from)?;
        let results = group_by_iin(&iins, records)
            .into_iter()
            .map(|(iin, vehicles)| pb::PersonVehicles {
                iin,
                vehicles: vehicles.into_iter().map(vehicle).collect(),
            })
            .collect();
        Ok(Response::new(pb::BatchListVehiclesResponse { results }))
    }
}

/// Step 7: the methods, as the conformance suite calls them.
pub fn methods() -> Vec<Method> {
    vec![
        Method::list(
            "/shlyuz.example.v1.VehicleRegistryService/ListVehicles",
            VEHICLES.spec(),
            |iin, page_size, page_token| pb::ListVehiclesRequest {
                iin,
                page_size,
                page_token,
            },
            |page: pb::ListVehiclesResponse| {
                (
                    page.vehicles
                        .iter()
                        .map(|vehicle| prost::Message::encode_to_vec(vehicle).into())
                        .collect(),
                    page.next_page_token,
                )
            },
        ),
        Method::batch(
            "/shlyuz.example.v1.VehicleRegistryService/BatchListVehicles",
            VEHICLES.spec(),
            |iins| pb::BatchListVehiclesRequest { iins },
            |answer: pb::BatchListVehiclesResponse| BatchAnswer {
                answered: answer.results.into_iter().map(|entry| entry.iin).collect(),
                not_found: Vec::new(),
            },
        ),
    ]
}
