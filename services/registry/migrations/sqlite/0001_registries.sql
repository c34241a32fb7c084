-- Embedded backend of the state-registry adapters: one table per registry record type.
-- Dates are TEXT `YYYY-MM-DD` ('' when absent), flags and enums BIGINT.

CREATE TABLE persons (
    iin TEXT PRIMARY KEY,
    last_name TEXT NOT NULL,
    first_name TEXT NOT NULL,
    patronymic TEXT NOT NULL,
    birth_date TEXT NOT NULL,
    sex BIGINT NOT NULL,
    citizenship TEXT NOT NULL,
    life_status BIGINT NOT NULL,
    status_date TEXT NOT NULL,
    legal_capacity BIGINT NOT NULL,
    residence_abroad_country TEXT NOT NULL,
    region_kato TEXT NOT NULL,
    region_name TEXT NOT NULL,
    locality_kato TEXT NOT NULL,
    locality_name TEXT NOT NULL,
    street_address TEXT NOT NULL,
    identity_document_number TEXT NOT NULL,
    birth_place_kato TEXT NOT NULL,
    mother_iin TEXT NOT NULL,
    father_iin TEXT NOT NULL
);
CREATE INDEX persons_mother ON persons (mother_iin);
CREATE INDEX persons_father ON persons (father_iin);

CREATE TABLE marriages (
    marriage_id TEXT PRIMARY KEY,
    husband_iin TEXT NOT NULL,
    wife_iin TEXT NOT NULL,
    registered_on TEXT NOT NULL,
    dissolved_on TEXT NOT NULL
);
CREATE INDEX marriages_husband ON marriages (husband_iin);
CREATE INDEX marriages_wife ON marriages (wife_iin);

CREATE TABLE real_estate_rights (
    right_id TEXT PRIMARY KEY,
    holder_iin TEXT NOT NULL,
    cadastral_number TEXT NOT NULL,
    right_type BIGINT NOT NULL,
    region_kato TEXT NOT NULL,
    region_name TEXT NOT NULL,
    locality_kato TEXT NOT NULL,
    locality_name TEXT NOT NULL,
    street_address TEXT NOT NULL,
    area_m2 DOUBLE PRECISION NOT NULL,
    share DOUBLE PRECISION NOT NULL,
    registered_on TEXT NOT NULL,
    terminated_on TEXT NOT NULL
);
CREATE INDEX real_estate_rights_holder ON real_estate_rights (holder_iin);

CREATE TABLE privatisation_contracts (
    contract_number TEXT PRIMARY KEY,
    iin TEXT NOT NULL,
    region_kato TEXT NOT NULL,
    region_name TEXT NOT NULL,
    locality_kato TEXT NOT NULL,
    locality_name TEXT NOT NULL,
    street_address TEXT NOT NULL,
    area_m2 DOUBLE PRECISION NOT NULL,
    concluded_on TEXT NOT NULL
);
CREATE INDEX privatisation_contracts_iin ON privatisation_contracts (iin);

CREATE TABLE equity_contracts (
    contract_number TEXT PRIMARY KEY,
    iin TEXT NOT NULL,
    kind BIGINT NOT NULL,
    developer_name TEXT NOT NULL,
    region_kato TEXT NOT NULL,
    region_name TEXT NOT NULL,
    locality_kato TEXT NOT NULL,
    locality_name TEXT NOT NULL,
    street_address TEXT NOT NULL,
    area_m2 DOUBLE PRECISION NOT NULL,
    registered_on TEXT NOT NULL,
    terminated_on TEXT NOT NULL
);
CREATE INDEX equity_contracts_iin ON equity_contracts (iin);

CREATE TABLE military_registrations (
    iin TEXT PRIMARY KEY,
    status BIGINT NOT NULL,
    office_kato TEXT NOT NULL,
    fitness_category TEXT NOT NULL,
    military_rank TEXT NOT NULL
);

CREATE TABLE service_periods (
    period_id TEXT PRIMARY KEY,
    iin TEXT NOT NULL,
    unit TEXT NOT NULL,
    locality_kato TEXT NOT NULL,
    position TEXT NOT NULL,
    started_on TEXT NOT NULL,
    ended_on TEXT NOT NULL
);
CREATE INDEX service_periods_iin ON service_periods (iin);

CREATE TABLE service_housing (
    housing_id TEXT PRIMARY KEY,
    iin TEXT NOT NULL,
    region_kato TEXT NOT NULL,
    region_name TEXT NOT NULL,
    locality_kato TEXT NOT NULL,
    locality_name TEXT NOT NULL,
    street_address TEXT NOT NULL,
    area_m2 DOUBLE PRECISION NOT NULL,
    started_on TEXT NOT NULL,
    ended_on TEXT NOT NULL
);
CREATE INDEX service_housing_iin ON service_housing (iin);

CREATE TABLE dispensary_records (
    record_id TEXT PRIMARY KEY,
    iin TEXT NOT NULL,
    dispensary BIGINT NOT NULL,
    region_kato TEXT NOT NULL,
    diagnosis_code TEXT NOT NULL,
    registered_on TEXT NOT NULL,
    deregistered_on TEXT NOT NULL
);
CREATE INDEX dispensary_records_iin ON dispensary_records (iin);

CREATE TABLE convictions (
    conviction_id TEXT PRIMARY KEY,
    iin TEXT NOT NULL,
    article TEXT NOT NULL,
    court TEXT NOT NULL,
    sentence TEXT NOT NULL,
    convicted_on TEXT NOT NULL,
    expunged BIGINT NOT NULL
);
CREATE INDEX convictions_iin ON convictions (iin);

CREATE TABLE imprisonments (
    imprisonment_id TEXT PRIMARY KEY,
    iin TEXT NOT NULL,
    institution TEXT NOT NULL,
    started_on TEXT NOT NULL,
    released_on TEXT NOT NULL
);
CREATE INDEX imprisonments_iin ON imprisonments (iin);

CREATE TABLE phones (
    iin TEXT PRIMARY KEY,
    phone_number TEXT NOT NULL,
    operator_name TEXT NOT NULL
);
