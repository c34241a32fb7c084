//! The records the registries hold, one struct per table row: what the embedded backend stores,
//! what fixture files and the population generator produce, and what every backend returns.
//! Dates are `YYYY-MM-DD` text (empty when absent); enums are the proto enum numbers.

use sqlx::any::AnyRow;

/// A row type stored in one table of the embedded backend.
pub trait TableRow:
    Sized + Send + Unpin + 'static + serde::de::DeserializeOwned + serde::Serialize
{
    /// Table name.
    const TABLE: &'static str;
    /// Columns, in field order.
    const COLUMNS: &'static [&'static str];
    /// Column that orders one person's rows (primary key or date).
    const ORDER_COLUMN: &'static str;
    /// Appends `(v1, v2, …)` with every column as an SQL literal, for bulk loading.
    fn write_values(&self, out: &mut String);
    /// Reads a row selected with [`TableRow::COLUMNS`].
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error>;
    /// The IIN the row belongs to.
    fn iin(&self) -> &str;
}

/// A value written as an SQL literal by the bulk loader (valid in SQLite and PostgreSQL).
pub trait SqlLiteral {
    /// Appends the literal.
    fn write_literal(&self, out: &mut String);
}

impl SqlLiteral for String {
    fn write_literal(&self, out: &mut String) {
        out.push('\'');
        for character in self.chars() {
            match character {
                '\'' => out.push_str("''"),
                // Neither database stores NUL in TEXT; the generator never produces it.
                '\0' => {}
                other => out.push(other),
            }
        }
        out.push('\'');
    }
}

impl SqlLiteral for i64 {
    fn write_literal(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = write!(out, "{self}");
    }
}

impl SqlLiteral for f64 {
    fn write_literal(&self, out: &mut String) {
        use std::fmt::Write as _;
        let value = if self.is_finite() { *self } else { 0.0 };
        let _ = write!(out, "{value:?}");
    }
}

macro_rules! table_row {
    (
        $(#[$struct_meta:meta])*
        $name:ident, table = $table:literal, iin = $iin:ident, order = $order:ident,
        { $( $(#[$field_meta:meta])* $field:ident : $ty:ty ),* $(,)? }
    ) => {
        $(#[$struct_meta])*
        #[derive(Debug, Clone, PartialEq, Default, serde::Deserialize, serde::Serialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct $name {
            $( $(#[$field_meta])* pub $field: $ty, )*
        }

        impl $crate::records::TableRow for $name {
            const TABLE: &'static str = $table;
            const COLUMNS: &'static [&'static str] = &[$(stringify!($field)),*];
            const ORDER_COLUMN: &'static str = stringify!($order);

            fn write_values(&self, out: &mut String) {
                out.push('(');
                let mut first = true;
                $(
                    if !first {
                        out.push_str(", ");
                    }
                    first = false;
                    $crate::records::SqlLiteral::write_literal(&self.$field, out);
                )*
                let _ = first;
                out.push(')');
            }

            fn from_row(row: &sqlx::any::AnyRow) -> Result<Self, sqlx::Error> {
                use sqlx::Row as _;
                Ok(Self { $( $field: row.try_get(stringify!($field))?, )* })
            }

            fn iin(&self) -> &str {
                &self.$iin
            }
        }
    };
}
#[cfg(any(test, feature = "testing"))]
pub(crate) use table_row;

table_row! {
    /// A person of the individuals database (ГБД ФЛ) with the birth record of civil registration.
    PersonRecord, table = "persons", iin = iin, order = iin, {
        /// IIN.
        iin: String,
        /// Surname.
        last_name: String,
        /// Given name.
        first_name: String,
        /// Patronymic or empty.
        patronymic: String,
        /// Date of birth.
        birth_date: String,
        /// `Sex` enum number.
        sex: i64,
        /// ISO 3166-1 alpha-2 citizenship, empty when stateless.
        citizenship: String,
        /// `LifeStatus` enum number.
        life_status: i64,
        /// Date of death or of the missing-person decision.
        status_date: String,
        /// `LegalCapacity` enum number.
        legal_capacity: i64,
        /// Country of permanent residence abroad, or empty.
        residence_abroad_country: String,
        /// KATO of the region of the registered address.
        region_kato: String,
        /// Region name.
        region_name: String,
        /// KATO of the locality.
        locality_kato: String,
        /// Locality name.
        locality_name: String,
        /// Street, house, flat.
        street_address: String,
        /// Identity document number.
        identity_document_number: String,
        /// KATO of the place of birth.
        birth_place_kato: String,
        /// Mother's IIN or empty.
        mother_iin: String,
        /// Father's IIN or empty.
        father_iin: String,
    }
}

table_row! {
    /// A marriage act record (and its divorce).
    MarriageRecord, table = "marriages", iin = husband_iin, order = registered_on, {
        /// Act record id.
        marriage_id: String,
        /// Husband.
        husband_iin: String,
        /// Wife.
        wife_iin: String,
        /// Date registered.
        registered_on: String,
        /// Date dissolved or empty.
        dissolved_on: String,
    }
}

table_row! {
    /// A right registered in the real-estate cadastre.
    RealEstateRightRecord, table = "real_estate_rights", iin = holder_iin, order = right_id, {
        /// Registration id.
        right_id: String,
        /// Holder.
        holder_iin: String,
        /// Cadastral number.
        cadastral_number: String,
        /// `RightType` enum number.
        right_type: i64,
        /// Region KATO.
        region_kato: String,
        /// Region name.
        region_name: String,
        /// Locality KATO.
        locality_kato: String,
        /// Locality name.
        locality_name: String,
        /// Street, house, flat.
        street_address: String,
        /// Area, m².
        area_m2: f64,
        /// Holder's share.
        share: f64,
        /// Date registered.
        registered_on: String,
        /// Date terminated or empty.
        terminated_on: String,
    }
}

table_row! {
    /// A housing privatisation contract of the State Property Register.
    PrivatisationContractRecord, table = "privatisation_contracts", iin = iin, order = contract_number, {
        /// Contract number.
        contract_number: String,
        /// Who privatised.
        iin: String,
        /// Region KATO.
        region_kato: String,
        /// Region name.
        region_name: String,
        /// Locality KATO.
        locality_kato: String,
        /// Locality name.
        locality_name: String,
        /// Street, house, flat.
        street_address: String,
        /// Area, m².
        area_m2: f64,
        /// Date concluded.
        concluded_on: String,
    }
}

table_row! {
    /// A shared-participation contract of Қазтізілім.
    EquityContractRecord, table = "equity_contracts", iin = iin, order = contract_number, {
        /// Registration number.
        contract_number: String,
        /// Participant.
        iin: String,
        /// `EquityContractKind` enum number.
        kind: i64,
        /// Developer.
        developer_name: String,
        /// Region KATO.
        region_kato: String,
        /// Region name.
        region_name: String,
        /// Locality KATO.
        locality_kato: String,
        /// Locality name.
        locality_name: String,
        /// Street, house, flat.
        street_address: String,
        /// Area, m².
        area_m2: f64,
        /// Date registered.
        registered_on: String,
        /// Date terminated or empty.
        terminated_on: String,
    }
}

table_row! {
    /// A person's entry on the military register.
    MilitaryRegistrationRecord, table = "military_registrations", iin = iin, order = iin, {
        /// IIN.
        iin: String,
        /// `RegistrationStatus` enum number.
        status: i64,
        /// KATO of the Defence Affairs Department.
        office_kato: String,
        /// Fitness category.
        fitness_category: String,
        /// Rank.
        military_rank: String,
    }
}

table_row! {
    /// A period of military service.
    ServicePeriodRecord, table = "service_periods", iin = iin, order = started_on, {
        /// Record id.
        period_id: String,
        /// IIN.
        iin: String,
        /// Military unit.
        unit: String,
        /// KATO of the duty station.
        locality_kato: String,
        /// Position.
        position: String,
        /// First day.
        started_on: String,
        /// Last day or empty.
        ended_on: String,
    }
}

table_row! {
    /// Service housing received at a duty station.
    ServiceHousingRecord, table = "service_housing", iin = iin, order = started_on, {
        /// Record id.
        housing_id: String,
        /// IIN.
        iin: String,
        /// Region KATO.
        region_kato: String,
        /// Region name.
        region_name: String,
        /// Locality KATO.
        locality_kato: String,
        /// Locality name.
        locality_name: String,
        /// Street, house, flat.
        street_address: String,
        /// Area, m².
        area_m2: f64,
        /// Lease start.
        started_on: String,
        /// Hand-back date or empty.
        ended_on: String,
    }
}

table_row! {
    /// A registration at a dispensary.
    DispensaryRecordRow, table = "dispensary_records", iin = iin, order = record_id, {
        /// Record id.
        record_id: String,
        /// IIN.
        iin: String,
        /// `Dispensary` enum number.
        dispensary: i64,
        /// Region KATO.
        region_kato: String,
        /// ICD-10 code.
        diagnosis_code: String,
        /// Date registered.
        registered_on: String,
        /// Date deregistered or empty.
        deregistered_on: String,
    }
}

table_row! {
    /// A conviction.
    ConvictionRecord, table = "convictions", iin = iin, order = convicted_on, {
        /// Record id.
        conviction_id: String,
        /// IIN.
        iin: String,
        /// Article of the Criminal Code.
        article: String,
        /// Court.
        court: String,
        /// Sentence.
        sentence: String,
        /// Verdict date.
        convicted_on: String,
        /// 1 when expunged.
        expunged: i64,
    }
}

table_row! {
    /// A stay in a place of deprivation of liberty.
    ImprisonmentRecord, table = "imprisonments", iin = iin, order = started_on, {
        /// Record id.
        imprisonment_id: String,
        /// IIN.
        iin: String,
        /// Institution.
        institution: String,
        /// First day.
        started_on: String,
        /// Release date or empty.
        released_on: String,
    }
}

table_row! {
    /// A phone linked to an e-gov account.
    PhoneRecord, table = "phones", iin = iin, order = iin, {
        /// IIN.
        iin: String,
        /// E.164 number.
        phone_number: String,
        /// Operator.
        operator_name: String,
    }
}

/// One kind of record the registries are asked for: the rows of `T` whose owner columns hold one
/// of the asked IINs. Several kinds may share a row type (persons by their own IIN, children by a
/// parent's); an upstream file configures one endpoint per kind, by name.
pub struct Kind<T> {
    name: &'static str,
    owners: &'static [&'static str],
    rows: std::marker::PhantomData<fn() -> T>,
}

impl<T: TableRow> Kind<T> {
    /// The kind `name`, owned through `owners` (TEXT columns holding IINs).
    pub const fn new(name: &'static str, owners: &'static [&'static str]) -> Self {
        Self {
            name,
            owners,
            rows: std::marker::PhantomData,
        }
    }

    /// What a backend needs to know of the kind, without its row type.
    pub fn spec(&self) -> KindSpec {
        KindSpec {
            name: self.name,
            owners: self.owners,
            table: T::TABLE,
            columns: T::COLUMNS,
            order_column: T::ORDER_COLUMN,
        }
    }
}

/// A record kind as the backends see it: names only, no row type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindSpec {
    /// The kind's name, the key of its upstream endpoint.
    pub name: &'static str,
    /// Columns holding the IIN of a person the record is about; a record belongs to the asked
    /// persons when one of these holds an asked IIN.
    pub owners: &'static [&'static str],
    /// The embedded table.
    pub table: &'static str,
    /// The row's columns, in field order.
    pub columns: &'static [&'static str],
    /// Column that orders one person's rows.
    pub order_column: &'static str,
}

/// Declares the record kinds and [`KIND_NAMES`]: one line per kind, the only place a kind is named.
macro_rules! record_kinds {
    ($( $(#[$meta:meta])* $constant:ident: $row:ty = $name:literal, owners = [$($owner:literal),+ $(,)?]; )*) => {
        $( $(#[$meta])* pub const $constant: Kind<$row> = Kind::new($name, &[$($owner),+]); )*
        /// Every record kind the registry serves, by name: the endpoints an upstream file may name.
        pub const KIND_NAMES: &[&str] = &[$($name),*];
    };
}

/// The record kinds.
pub mod kinds {
    use super::*;

    record_kinds! {
        /// Persons (ГБД ФЛ) by their IIN.
        PERSONS: PersonRecord = "persons", owners = ["iin"];
        /// Persons whose mother or father is an asked IIN (АХАЖ birth records).
        CHILDREN: PersonRecord = "children", owners = ["mother_iin", "father_iin"];
        /// Marriages where either spouse is an asked IIN.
        MARRIAGES: MarriageRecord = "marriages", owners = ["husband_iin", "wife_iin"];
        /// Cadastre rights held by the asked IINs.
        REAL_ESTATE_RIGHTS: RealEstateRightRecord = "real_estate_rights", owners = ["holder_iin"];
        /// Privatisation contracts.
        PRIVATISATION_CONTRACTS: PrivatisationContractRecord = "privatisation_contracts", owners = ["iin"];
        /// Equity contracts.
        EQUITY_CONTRACTS: EquityContractRecord = "equity_contracts", owners = ["iin"];
        /// Military-register entries.
        MILITARY_REGISTRATIONS: MilitaryRegistrationRecord = "military_registrations", owners = ["iin"];
        /// Service periods.
        SERVICE_PERIODS: ServicePeriodRecord = "service_periods", owners = ["iin"];
        /// Service housing.
        SERVICE_HOUSING: ServiceHousingRecord = "service_housing", owners = ["iin"];
        /// Dispensary records.
        DISPENSARY_RECORDS: DispensaryRecordRow = "dispensary_records", owners = ["iin"];
        /// Convictions.
        CONVICTIONS: ConvictionRecord = "convictions", owners = ["iin"];
        /// Imprisonments.
        IMPRISONMENTS: ImprisonmentRecord = "imprisonments", owners = ["iin"];
        /// Phones linked to e-gov accounts.
        PHONES: PhoneRecord = "phones", owners = ["iin"];
    }
}

/// Declares [`Population`] (every record of a population, one field per table), its
/// `record_count`, [`DATA_TABLES`] and the bulk insert of a population: one line per table.
macro_rules! population {
    ($( $(#[$meta:meta])* $field:ident: $row:ty, )*) => {
        /// Every record of a population (generated, or read from a fixture file).
        #[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct Population {
            $( $(#[$meta])* pub $field: Vec<$row>, )*
        }

        impl Population {
            /// Number of records of every kind.
            pub fn record_count(&self) -> usize {
                0 $( + self.$field.len() )*
            }

            /// Inserts every record on `connection` (inside the caller's transaction).
            pub async fn insert_in(
                &self,
                connection: &mut sqlx::AnyConnection,
            ) -> Result<(), sqlx::Error> {
                $( crate::embedded::insert_rows(connection, &self.$field).await?; )*
                Ok(())
            }
        }

        /// Every table of registry data, for clearing before a re-seed.
        pub const DATA_TABLES: &[&str] = &[$( <$row as TableRow>::TABLE ),*];
    };
}

population! {
    /// Persons.
    persons: PersonRecord,
    /// Marriages.
    marriages: MarriageRecord,
    /// Cadastre rights.
    real_estate_rights: RealEstateRightRecord,
    /// Privatisation contracts.
    privatisation_contracts: PrivatisationContractRecord,
    /// Equity contracts.
    equity_contracts: EquityContractRecord,
    /// Military registrations.
    military_registrations: MilitaryRegistrationRecord,
    /// Service periods.
    service_periods: ServicePeriodRecord,
    /// Service housing.
    service_housing: ServiceHousingRecord,
    /// Dispensary records.
    dispensary_records: DispensaryRecordRow,
    /// Convictions.
    convictions: ConvictionRecord,
    /// Imprisonments.
    imprisonments: ImprisonmentRecord,
    /// Phones.
    phones: PhoneRecord,
}
