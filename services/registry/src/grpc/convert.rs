//! Records to wire messages.

use shlyuz_proto::registry::v1 as pb;

use crate::records::{
    ConvictionRecord, DispensaryRecordRow, EquityContractRecord, ImprisonmentRecord,
    MarriageRecord, MilitaryRegistrationRecord, PersonRecord, PhoneRecord,
    PrivatisationContractRecord, RealEstateRightRecord, ServiceHousingRecord, ServicePeriodRecord,
};

fn enum_value(value: i64) -> i32 {
    i32::try_from(value).unwrap_or(0)
}

fn address(
    region_kato: &str,
    region_name: &str,
    locality_kato: &str,
    locality_name: &str,
    street_address: &str,
) -> pb::Address {
    pb::Address {
        region_kato: region_kato.to_string(),
        region_name: region_name.to_string(),
        locality_kato: locality_kato.to_string(),
        locality_name: locality_name.to_string(),
        street_address: street_address.to_string(),
    }
}

pub(crate) fn person(record: PersonRecord) -> pb::Person {
    let registered_address = address(
        &record.region_kato,
        &record.region_name,
        &record.locality_kato,
        &record.locality_name,
        &record.street_address,
    );
    pb::Person {
        iin: record.iin,
        last_name: record.last_name,
        first_name: record.first_name,
        patronymic: record.patronymic,
        birth_date: record.birth_date,
        sex: enum_value(record.sex),
        citizenship: record.citizenship,
        life_status: enum_value(record.life_status),
        status_date: record.status_date,
        legal_capacity: enum_value(record.legal_capacity),
        residence_abroad_country: record.residence_abroad_country,
        registered_address: Some(registered_address),
        identity_document_number: record.identity_document_number,
    }
}

pub(crate) fn birth_record(record: &PersonRecord) -> pb::BirthRecord {
    pb::BirthRecord {
        iin: record.iin.clone(),
        birth_date: record.birth_date.clone(),
        birth_place_kato: record.birth_place_kato.clone(),
        mother_iin: record.mother_iin.clone(),
        father_iin: record.father_iin.clone(),
    }
}

pub(crate) fn marriage(record: &MarriageRecord, of_iin: &str) -> pb::Marriage {
    let spouse_iin = if record.husband_iin == of_iin {
        record.wife_iin.clone()
    } else {
        record.husband_iin.clone()
    };
    pb::Marriage {
        marriage_id: record.marriage_id.clone(),
        spouse_iin,
        registered_on: record.registered_on.clone(),
        dissolved_on: record.dissolved_on.clone(),
    }
}

pub(crate) fn real_estate_right(record: RealEstateRightRecord) -> pb::RealEstateRight {
    pb::RealEstateRight {
        address: Some(address(
            &record.region_kato,
            &record.region_name,
            &record.locality_kato,
            &record.locality_name,
            &record.street_address,
        )),
        right_id: record.right_id,
        holder_iin: record.holder_iin,
        cadastral_number: record.cadastral_number,
        right_type: enum_value(record.right_type),
        area_m2: record.area_m2,
        share: record.share,
        registered_on: record.registered_on,
        terminated_on: record.terminated_on,
    }
}

pub(crate) fn privatisation_contract(
    record: PrivatisationContractRecord,
) -> pb::PrivatisationContract {
    pb::PrivatisationContract {
        address: Some(address(
            &record.region_kato,
            &record.region_name,
            &record.locality_kato,
            &record.locality_name,
            &record.street_address,
        )),
        contract_number: record.contract_number,
        iin: record.iin,
        area_m2: record.area_m2,
        concluded_on: record.concluded_on,
    }
}

pub(crate) fn equity_contract(record: EquityContractRecord) -> pb::EquityContract {
    pb::EquityContract {
        address: Some(address(
            &record.region_kato,
            &record.region_name,
            &record.locality_kato,
            &record.locality_name,
            &record.street_address,
        )),
        contract_number: record.contract_number,
        iin: record.iin,
        kind: enum_value(record.kind),
        developer_name: record.developer_name,
        area_m2: record.area_m2,
        registered_on: record.registered_on,
        terminated_on: record.terminated_on,
    }
}

pub(crate) fn military_registration(
    record: MilitaryRegistrationRecord,
) -> pb::MilitaryRegistration {
    pb::MilitaryRegistration {
        iin: record.iin,
        status: enum_value(record.status),
        office_kato: record.office_kato,
        fitness_category: record.fitness_category,
        rank: record.military_rank,
    }
}

pub(crate) fn service_period(record: ServicePeriodRecord) -> pb::ServicePeriod {
    pb::ServicePeriod {
        iin: record.iin,
        unit: record.unit,
        locality_kato: record.locality_kato,
        position: record.position,
        started_on: record.started_on,
        ended_on: record.ended_on,
    }
}

pub(crate) fn service_housing(record: ServiceHousingRecord) -> pb::ServiceHousing {
    pb::ServiceHousing {
        address: Some(address(
            &record.region_kato,
            &record.region_name,
            &record.locality_kato,
            &record.locality_name,
            &record.street_address,
        )),
        housing_id: record.housing_id,
        iin: record.iin,
        area_m2: record.area_m2,
        started_on: record.started_on,
        ended_on: record.ended_on,
    }
}

pub(crate) fn dispensary_record(record: DispensaryRecordRow) -> pb::DispensaryRecord {
    pb::DispensaryRecord {
        record_id: record.record_id,
        iin: record.iin,
        dispensary: enum_value(record.dispensary),
        region_kato: record.region_kato,
        diagnosis_code: record.diagnosis_code,
        registered_on: record.registered_on,
        deregistered_on: record.deregistered_on,
    }
}

pub(crate) fn conviction(record: ConvictionRecord) -> pb::Conviction {
    pb::Conviction {
        conviction_id: record.conviction_id,
        article: record.article,
        court: record.court,
        sentence: record.sentence,
        convicted_on: record.convicted_on,
        expunged: record.expunged != 0,
    }
}

pub(crate) fn imprisonment(record: ImprisonmentRecord) -> pb::Imprisonment {
    pb::Imprisonment {
        imprisonment_id: record.imprisonment_id,
        institution: record.institution,
        started_on: record.started_on,
        released_on: record.released_on,
    }
}

pub(crate) fn phone(record: PhoneRecord) -> pb::Phone {
    pb::Phone {
        iin: record.iin,
        phone_number: record.phone_number,
        operator_name: record.operator_name,
    }
}
