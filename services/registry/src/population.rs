//! The deterministic synthetic population: the same `--population N --seed S` always gives the
//! same people, families and records, so demos, tests and benchmarks can name real IINs.
//! Households are generated one at a time (a head, maybe a spouse, maybe children), each person
//! then gets records of every registry at plausible rates.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shlyuz_kit::iin::{Iin, Sex};
use time::Date;

use crate::embedded::EmbeddedRegistry;
use crate::records::{
    ConvictionRecord, DispensaryRecordRow, EquityContractRecord, ImprisonmentRecord,
    MarriageRecord, MilitaryRegistrationRecord, PersonRecord, PhoneRecord, Population,
    PrivatisationContractRecord, RealEstateRightRecord, ServiceHousingRecord, ServicePeriodRecord,
};
use crate::reference::{
    ARTICLES, DEVELOPERS, DIAGNOSES, FOREIGN_COUNTRIES, INSTITUTIONS, KAZAKH_FEMALE_NAMES,
    KAZAKH_MALE_NAMES, KAZAKH_SURNAMES, MOBILE_PREFIXES, REGIONS, RUSSIAN_FEMALE_NAMES,
    RUSSIAN_MALE_NAMES, RUSSIAN_SURNAMES, Region, STREETS,
};

/// The day the population "is" on, fixed so that ages and statuses do not drift with the clock.
pub const REFERENCE_DATE: Date = time::macros::date!(2026 - 01 - 01);

/// Persons per generated chunk (one batch of INSERTs).
const CHUNK_PERSONS: usize = 20_000;

/// Villages used for rural addresses.
const VILLAGES: [&str; 8] = [
    "Ақсу ауылы",
    "Қарабұлақ ауылы",
    "Жаңаауыл ауылы",
    "Көктөбе ауылы",
    "Алғабас ауылы",
    "Шұбаркөл ауылы",
    "Үшқоңыр ауылы",
    "Талдыбұлақ ауылы",
];

/// Registry enum numbers, mirrored from the proto enums.
mod codes {
    pub const SEX_MALE: i64 = 1;
    pub const SEX_FEMALE: i64 = 2;
    pub const ALIVE: i64 = 1;
    pub const DEAD: i64 = 2;
    pub const MISSING: i64 = 3;
    pub const CAPACITY_FULL: i64 = 1;
    pub const CAPACITY_LIMITED: i64 = 2;
    pub const CAPACITY_INCAPABLE: i64 = 3;
    pub const RIGHT_OWNERSHIP: i64 = 1;
    pub const RIGHT_PERMANENT_USE_STATE_HOUSING: i64 = 2;
    pub const EQUITY_PARTICIPATION: i64 = 1;
    pub const EQUITY_ASSIGNMENT: i64 = 2;
    pub const CONSCRIPT: i64 = 2;
    pub const RESERVE: i64 = 3;
    pub const SERVING: i64 = 4;
    pub const REMOVED: i64 = 5;
}

/// What a seeding run did.
#[derive(Debug, Clone)]
pub struct SeedReport {
    /// Persons inserted.
    pub persons: usize,
    /// Records of every kind inserted, persons included.
    pub records: usize,
    /// Wall time.
    pub elapsed: Duration,
}

/// Replaces the registry data with the population of `population` persons generated from `seed`,
/// in one transaction (a failed run leaves the previous data in place).
pub async fn seed_population(
    registry: &EmbeddedRegistry,
    population: usize,
    seed: u64,
) -> anyhow::Result<SeedReport> {
    let started = Instant::now();
    // Generation runs on its own thread so that it overlaps with the database writes.
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Population>(2);
    let generator = tokio::task::spawn_blocking(move || {
        let mut generator = Generator::new(population, seed);
        loop {
            let mut chunk = Population::default();
            if !generator.fill_chunk(CHUNK_PERSONS, &mut chunk) {
                break;
            }
            if sender.blocking_send(chunk).is_err() {
                break;
            }
        }
    });
    let mut transaction = registry.database().pool().begin().await?;
    crate::embedded::clear_in(&mut transaction).await?;
    let mut persons = 0;
    let mut records = 0;
    while let Some(chunk) = receiver.recv().await {
        persons += chunk.persons.len();
        records += chunk.record_count();
        crate::embedded::insert_population_in(&mut transaction, &chunk).await?;
    }
    generator.await?;
    transaction.commit().await?;
    Ok(SeedReport {
        persons,
        records,
        elapsed: started.elapsed(),
    })
}

#[cfg(test)]
/// Generates the whole population in memory (tests, small populations).
pub fn generate(population: usize, seed: u64) -> Population {
    let mut generator = Generator::new(population, seed);
    let mut all = Population::default();
    while generator.fill_chunk(usize::MAX, &mut all) {}
    all
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Ethnicity {
    Kazakh,
    Russian,
}

#[derive(Clone)]
struct Home {
    region: Region,
    locality_kato: String,
    locality_name: String,
    street_address: String,
}

/// The generator's state: one random stream and the serials already used per birth date and sex.
pub struct Generator {
    rng: StdRng,
    target: usize,
    generated: usize,
    serials: HashMap<(i32, bool), u16>,
    region_weights_total: u32,
    privatisations: u64,
}

impl Generator {
    /// A generator of `target` persons from `seed`.
    pub fn new(target: usize, seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            target,
            generated: 0,
            serials: HashMap::new(),
            region_weights_total: REGIONS.iter().map(|region| region.weight).sum(),
            privatisations: 0,
        }
    }

    /// Adds households to `out` until it holds `max_persons` more persons or the target is
    /// reached; `false` when nothing was left to generate.
    pub fn fill_chunk(&mut self, max_persons: usize, out: &mut Population) -> bool {
        if self.generated >= self.target {
            return false;
        }
        let chunk_end = self.generated.saturating_add(max_persons).min(self.target);
        while self.generated < chunk_end {
            self.household(chunk_end, out);
        }
        true
    }

    fn chance(&mut self, probability: f64) -> bool {
        self.rng.random_bool(probability)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.rng.random_range(0..items.len())]
    }

    fn uuid(&mut self) -> String {
        uuid::Builder::from_random_bytes(self.rng.random())
            .into_uuid()
            .to_string()
    }

    fn date_between(&mut self, from: Date, to: Date) -> Date {
        let start = from.to_julian_day();
        let end = to.to_julian_day().max(start);
        Date::from_julian_day(self.rng.random_range(start..=end)).unwrap_or(from)
    }

    fn years_after(date: Date, years: i32) -> Date {
        Date::from_julian_day(date.to_julian_day() + years * 365 + years / 4).unwrap_or(date)
    }

    fn birth_date_for_age(&mut self, age: i32) -> Date {
        let latest = Self::years_after(REFERENCE_DATE, -age);
        let earliest = Self::years_after(latest, -1);
        self.date_between(earliest, latest)
    }

    fn region(&mut self) -> Region {
        let mut ticket = self.rng.random_range(0..self.region_weights_total);
        for region in REGIONS {
            if ticket < region.weight {
                return region;
            }
            ticket -= region.weight;
        }
        REGIONS[0]
    }

    fn home(&mut self) -> Home {
        let region = self.region();
        let urban = region.kato.starts_with('7') || self.chance(0.6);
        let (locality_kato, locality_name) = if urban {
            (
                region.centre_kato.to_string(),
                region.centre_name.to_string(),
            )
        } else {
            let district = self.rng.random_range(20..60);
            let village = self.rng.random_range(0..VILLAGES.len());
            (
                format!("{}{district:02}{:02}100", &region.kato[..2], village + 30),
                VILLAGES[village].to_string(),
            )
        };
        let street = self.pick(&STREETS);
        let house = self.rng.random_range(1..200);
        let street_address = if urban {
            let flat = self.rng.random_range(1..180);
            format!("{street}, {house}-үй, {flat}-пәтер")
        } else {
            format!("{street}, {house}-үй")
        };
        Home {
            region,
            locality_kato,
            locality_name,
            street_address,
        }
    }

    fn iin(&mut self, birth_date: Date, sex: Sex) -> String {
        let key = (birth_date.to_julian_day(), sex == Sex::Male);
        loop {
            let serial = self.serials.entry(key).or_insert(0);
            *serial += 1;
            let candidate = *serial;
            if let Some(iin) = Iin::from_parts(birth_date, sex, candidate) {
                return iin.as_str().to_string();
            }
            if candidate >= 9_999 {
                // Every serial of this day is used: move the birth date by a day.
                let next = birth_date.next_day().unwrap_or(birth_date);
                return self.iin(next, sex);
            }
        }
    }

    fn surname(&mut self, ethnicity: Ethnicity) -> &'static str {
        match ethnicity {
            Ethnicity::Kazakh => self.pick(&KAZAKH_SURNAMES),
            Ethnicity::Russian => self.pick(&RUSSIAN_SURNAMES),
        }
    }

    fn male_name(&mut self, ethnicity: Ethnicity) -> &'static str {
        match ethnicity {
            Ethnicity::Kazakh => self.pick(&KAZAKH_MALE_NAMES),
            Ethnicity::Russian => self.pick(&RUSSIAN_MALE_NAMES).0,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn person(
        &mut self,
        ethnicity: Ethnicity,
        sex: Sex,
        age: i32,
        surname_stem: &str,
        father_name: &str,
        home: &Home,
        parents: (&str, &str),
    ) -> PersonRecord {
        let birth_date = self.birth_date_for_age(age);
        let iin = self.iin(birth_date, sex);
        let first_name = match (ethnicity, sex) {
            (Ethnicity::Kazakh, Sex::Male) => self.pick(&KAZAKH_MALE_NAMES),
            (Ethnicity::Kazakh, Sex::Female) => self.pick(&KAZAKH_FEMALE_NAMES),
            (Ethnicity::Russian, Sex::Male) => self.pick(&RUSSIAN_MALE_NAMES).0,
            (Ethnicity::Russian, Sex::Female) => self.pick(&RUSSIAN_FEMALE_NAMES),
        };
        let last_name = match sex {
            Sex::Male => surname_stem.to_string(),
            Sex::Female => format!("{surname_stem}а"),
        };
        let patronymic = match ethnicity {
            Ethnicity::Kazakh => match sex {
                Sex::Male => format!("{father_name}ұлы"),
                Sex::Female => format!("{father_name}қызы"),
            },
            Ethnicity::Russian => RUSSIAN_MALE_NAMES
                .iter()
                .find(|(name, _, _)| *name == father_name)
                .map(|(_, male, female)| match sex {
                    Sex::Male => male.to_string(),
                    Sex::Female => female.to_string(),
                })
                .unwrap_or_default(),
        };
        let (life_status, status_date) = if self.chance(0.012) {
            (codes::DEAD, self.recent_date(10))
        } else if self.chance(0.0005) {
            (codes::MISSING, self.recent_date(10))
        } else {
            (codes::ALIVE, String::new())
        };
        let citizenship = if self.chance(0.983) {
            "KZ".to_string()
        } else if self.chance(0.9) {
            self.pick(&FOREIGN_COUNTRIES).to_string()
        } else {
            String::new()
        };
        let residence_abroad_country = if age >= 18 && self.chance(0.01) {
            self.pick(&FOREIGN_COUNTRIES).to_string()
        } else {
            String::new()
        };
        let legal_capacity = if age >= 18 && self.chance(0.003) {
            codes::CAPACITY_INCAPABLE
        } else if age >= 18 && self.chance(0.001) {
            codes::CAPACITY_LIMITED
        } else {
            codes::CAPACITY_FULL
        };
        let document = self.rng.random_range(10_000_000..99_999_999_u32);
        let birth_place_kato = if self.chance(0.7) {
            home.region.centre_kato.to_string()
        } else {
            self.region().centre_kato.to_string()
        };
        PersonRecord {
            iin,
            last_name,
            first_name: first_name.to_string(),
            patronymic,
            birth_date: birth_date.to_string(),
            sex: match sex {
                Sex::Male => codes::SEX_MALE,
                Sex::Female => codes::SEX_FEMALE,
            },
            citizenship,
            life_status,
            status_date,
            legal_capacity,
            residence_abroad_country,
            region_kato: home.region.kato.to_string(),
            region_name: home.region.name.to_string(),
            locality_kato: home.locality_kato.clone(),
            locality_name: home.locality_name.clone(),
            street_address: home.street_address.clone(),
            identity_document_number: format!("0{document}"),
            birth_place_kato,
            mother_iin: parents.0.to_string(),
            father_iin: parents.1.to_string(),
        }
    }

    fn recent_date(&mut self, years: i32) -> String {
        let from = Self::years_after(REFERENCE_DATE, -years);
        self.date_between(from, REFERENCE_DATE).to_string()
    }

    fn date_in_years(&mut self, from_year: i32, to_year: i32) -> Date {
        let from =
            Date::from_calendar_date(from_year, time::Month::January, 1).unwrap_or(REFERENCE_DATE);
        let to = Date::from_calendar_date(to_year, time::Month::December, 31)
            .unwrap_or(REFERENCE_DATE)
            .min(REFERENCE_DATE);
        self.date_between(from, to)
    }

    fn household(&mut self, chunk_end: usize, out: &mut Population) {
        let home = self.home();
        let ethnicity = if self.chance(0.75) {
            Ethnicity::Kazakh
        } else {
            Ethnicity::Russian
        };
        let head_age = self.rng.random_range(18..80);
        let head_sex = if self.chance(0.5) {
            Sex::Male
        } else {
            Sex::Female
        };
        let surname = self.surname(ethnicity);
        let head_father = self.male_name(ethnicity);
        let head = self.person(
            ethnicity,
            head_sex,
            head_age,
            surname,
            head_father,
            &home,
            ("", ""),
        );
        self.generated += 1;

        let spouse = if head_age >= 20 && self.generated < chunk_end && self.chance(0.62) {
            let spouse_sex = match head_sex {
                Sex::Male => Sex::Female,
                Sex::Female => Sex::Male,
            };
            let spouse_age = (head_age + self.rng.random_range(-5..=5)).max(18);
            let spouse_father = self.male_name(ethnicity);
            let spouse = self.person(
                ethnicity,
                spouse_sex,
                spouse_age,
                surname,
                spouse_father,
                &home,
                ("", ""),
            );
            self.generated += 1;
            Some((spouse, spouse_age))
        } else {
            None
        };

        let (husband, wife, wife_age) = match (&spouse, head_sex) {
            (Some((spouse, spouse_age)), Sex::Male) => (Some(&head), Some(spouse), *spouse_age),
            (Some(spouse), Sex::Female) => (Some(&spouse.0), Some(&head), head_age),
            (None, Sex::Male) => (Some(&head), None, 0),
            (None, Sex::Female) => (None, Some(&head), head_age),
        };
        let mut children = Vec::new();
        let may_have_children = spouse.is_some() || (head_sex == Sex::Female && self.chance(0.25));
        if let (true, Some(mother)) = (may_have_children, wife) {
            let count = self.pick(&[0, 1, 1, 2, 2, 2, 3, 3, 4]);
            for _ in 0..count {
                if self.generated >= chunk_end {
                    break;
                }
                let child_age = wife_age - self.rng.random_range(20..38);
                if child_age < 0 {
                    continue;
                }
                let child_sex = if self.chance(0.51) {
                    Sex::Male
                } else {
                    Sex::Female
                };
                let father_name = match husband {
                    Some(father) => father.first_name.clone(),
                    None => self.male_name(ethnicity).to_string(),
                };
                let father_iin = husband.map(|father| father.iin.clone()).unwrap_or_default();
                let child_surname = husband
                    .map(|father| father.last_name.clone())
                    .unwrap_or_else(|| surname.to_string());
                let child = self.person(
                    ethnicity,
                    child_sex,
                    child_age,
                    &child_surname,
                    &father_name,
                    &home,
                    (&mother.iin, &father_iin),
                );
                self.generated += 1;
                children.push((child, child_age));
            }
        }

        if let (Some(husband), Some(wife)) = (husband, wife)
            && spouse.is_some()
        {
            {
                let younger = wife_age.min(head_age);
                let married_at = self.rng.random_range(18..=younger.clamp(18, 35));
                let registered_on = Self::years_after(REFERENCE_DATE, married_at - younger);
                let dissolved_on = if self.chance(0.08) {
                    self.date_between(registered_on, REFERENCE_DATE).to_string()
                } else {
                    String::new()
                };
                let marriage_id = self.uuid();
                out.marriages.push(MarriageRecord {
                    marriage_id,
                    husband_iin: husband.iin.clone(),
                    wife_iin: wife.iin.clone(),
                    registered_on: registered_on.to_string(),
                    dissolved_on,
                });
            }
        }

        // The dwelling: owned by the head (shared with the spouse), or state housing in use.
        let shared = spouse.is_some();
        let dwelling_owners: Vec<(String, i32)> = std::iter::once((head.iin.clone(), head_age))
            .chain(
                spouse
                    .iter()
                    .map(|(person, age)| (person.iin.clone(), *age)),
            )
            .collect();
        if self.chance(0.55) {
            let cadastral_number = self.cadastral_number(&home);
            let area = self.area();
            let registered_on = self.date_in_years(1995, 2025).to_string();
            for (iin, _) in &dwelling_owners {
                let right_id = self.uuid();
                out.real_estate_rights.push(RealEstateRightRecord {
                    right_id,
                    holder_iin: iin.clone(),
                    cadastral_number: cadastral_number.clone(),
                    right_type: codes::RIGHT_OWNERSHIP,
                    region_kato: home.region.kato.to_string(),
                    region_name: home.region.name.to_string(),
                    locality_kato: home.locality_kato.clone(),
                    locality_name: home.locality_name.clone(),
                    street_address: home.street_address.clone(),
                    area_m2: area,
                    share: if shared { 0.5 } else { 1.0 },
                    registered_on: registered_on.clone(),
                    terminated_on: String::new(),
                });
            }
            if head_age >= 45 && self.chance(0.35) {
                self.privatisations += 1;
                let contract_number = format!("ПР-{:08}", self.privatisations);
                let concluded_on = self.date_in_years(1992, 2000).to_string();
                out.privatisation_contracts
                    .push(PrivatisationContractRecord {
                        contract_number,
                        iin: head.iin.clone(),
                        region_kato: home.region.kato.to_string(),
                        region_name: home.region.name.to_string(),
                        locality_kato: home.locality_kato.clone(),
                        locality_name: home.locality_name.clone(),
                        street_address: home.street_address.clone(),
                        area_m2: area,
                        concluded_on,
                    });
            }
        } else if self.chance(0.03) {
            let cadastral_number = self.cadastral_number(&home);
            let right_id = self.uuid();
            let area = self.area();
            let registered_on = self.date_in_years(1998, 2025).to_string();
            out.real_estate_rights.push(RealEstateRightRecord {
                right_id,
                holder_iin: head.iin.clone(),
                cadastral_number,
                right_type: codes::RIGHT_PERMANENT_USE_STATE_HOUSING,
                region_kato: home.region.kato.to_string(),
                region_name: home.region.name.to_string(),
                locality_kato: home.locality_kato.clone(),
                locality_name: home.locality_name.clone(),
                street_address: home.street_address.clone(),
                area_m2: area,
                share: 1.0,
                registered_on,
                terminated_on: String::new(),
            });
        }

        let mut members = vec![(head, head_age)];
        members.extend(spouse);
        members.extend(children);
        for (person, age) in members {
            self.personal_records(&person, age, &home, out);
            out.persons.push(person);
        }
    }

    fn cadastral_number(&mut self, home: &Home) -> String {
        format!(
            "{}:{:03}:{:03}:{:04}",
            &home.region.kato[..2],
            self.rng.random_range(0..1000),
            self.rng.random_range(0..1000),
            self.rng.random_range(0..10_000)
        )
    }

    fn area(&mut self) -> f64 {
        f64::from(self.rng.random_range(280..1400_u32)) / 10.0
    }

    /// Equity, military, dispensary, criminal and phone records of one person.
    fn personal_records(
        &mut self,
        person: &PersonRecord,
        age: i32,
        home: &Home,
        out: &mut Population,
    ) {
        let iin = person.iin.clone();
        let male = person.sex == codes::SEX_MALE;
        let alive = person.life_status == codes::ALIVE;

        if alive && age >= 16 && self.chance(0.88) {
            let (prefix, operator) = self.pick(&MOBILE_PREFIXES);
            let number = self.rng.random_range(1_000_000..9_999_999_u32);
            out.phones.push(PhoneRecord {
                iin: iin.clone(),
                phone_number: format!("+7{prefix}{number}"),
                operator_name: operator.to_string(),
            });
        }

        if (25..=55).contains(&age) && self.chance(0.03) {
            let contract_number = self.uuid();
            let region = self.region();
            let kind = if self.chance(0.15) {
                codes::EQUITY_ASSIGNMENT
            } else {
                codes::EQUITY_PARTICIPATION
            };
            let terminated_on = if self.chance(0.1) {
                self.date_in_years(2023, 2025).to_string()
            } else {
                String::new()
            };
            let street = self.pick(&STREETS);
            let area = self.area();
            let registered_on = self.date_in_years(2016, 2025).to_string();
            out.equity_contracts.push(EquityContractRecord {
                contract_number,
                iin: iin.clone(),
                kind,
                developer_name: self.pick(&DEVELOPERS).to_string(),
                region_kato: region.kato.to_string(),
                region_name: region.name.to_string(),
                locality_kato: region.centre_kato.to_string(),
                locality_name: region.centre_name.to_string(),
                street_address: format!("{street}, {}-үй", self.rng.random_range(1..60)),
                area_m2: area,
                registered_on,
                terminated_on,
            });
        }

        self.military_records(&iin, male, age, home, out);

        if age >= 14 {
            for (index, probability) in [0.003, 0.004, 0.008, 0.007].into_iter().enumerate() {
                if self.chance(probability) {
                    let record_id = self.uuid();
                    let diagnosis = self.pick(DIAGNOSES[index]);
                    let registered = self.date_in_years(2005, 2025);
                    let deregistered_on = if self.chance(0.4) {
                        self.date_between(registered, REFERENCE_DATE).to_string()
                    } else {
                        String::new()
                    };
                    out.dispensary_records.push(DispensaryRecordRow {
                        record_id,
                        iin: iin.clone(),
                        dispensary: index as i64 + 1,
                        region_kato: home.region.kato.to_string(),
                        diagnosis_code: diagnosis.to_string(),
                        registered_on: registered.to_string(),
                        deregistered_on,
                    });
                }
            }
        }

        if age >= 18 && self.chance(if male { 0.04 } else { 0.008 }) {
            let convicted = self.date_in_years(2000, 2025);
            let conviction_id = self.uuid();
            let article = self.pick(&ARTICLES);
            let years = self.rng.random_range(1..8);
            let imprisoned = self.chance(0.35);
            let sentence = if imprisoned {
                format!("{years} жыл бас бостандығынан айыру")
            } else {
                format!("{years} жыл бас бостандығын шектеу")
            };
            let expunged =
                i64::from(convicted.year() + years + 3 < REFERENCE_DATE.year() && self.chance(0.8));
            out.convictions.push(ConvictionRecord {
                conviction_id,
                iin: iin.clone(),
                article: article.to_string(),
                court: format!("{} аудандық соты", home.locality_name),
                sentence,
                convicted_on: convicted.to_string(),
                expunged,
            });
            if imprisoned {
                let release = Self::years_after(convicted, years);
                let released_on = if release > REFERENCE_DATE {
                    String::new()
                } else {
                    release.to_string()
                };
                let imprisonment_id = self.uuid();
                out.imprisonments.push(ImprisonmentRecord {
                    imprisonment_id,
                    iin,
                    institution: self.pick(&INSTITUTIONS).to_string(),
                    started_on: convicted.to_string(),
                    released_on,
                });
            }
        }
    }

    fn military_records(
        &mut self,
        iin: &str,
        male: bool,
        age: i32,
        home: &Home,
        out: &mut Population,
    ) {
        let fitness = self.pick(&["А", "А", "Б", "Б", "В", "Г", "Д"]);
        let (status, rank) = match (male, age) {
            (true, 17..=27) if self.chance(0.03) => (codes::SERVING, "қатардағы жауынгер"),
            (true, 17..=27) => (codes::CONSCRIPT, ""),
            (true, 28..=45) if self.chance(0.04) => (
                codes::SERVING,
                self.pick(&["сержант", "старшина", "лейтенант", "капитан", "майор"]),
            ),
            (true, 28..=50) if self.chance(0.9) => (
                codes::RESERVE,
                self.pick(&["қатардағы", "сержант", "лейтенант"]),
            ),
            (true, 28..) => (codes::REMOVED, ""),
            (false, 20..=45) if self.chance(0.03) => (codes::RESERVE, ""),
            _ => return,
        };
        out.military_registrations.push(MilitaryRegistrationRecord {
            iin: iin.to_string(),
            status,
            office_kato: home.region.kato.to_string(),
            fitness_category: fitness.to_string(),
            military_rank: rank.to_string(),
        });
        // Career servicemen: one to three duty stations; at earlier ones, sometimes service housing.
        let career = status == codes::SERVING && age >= 24
            || status == codes::RESERVE && age >= 35 && self.chance(0.05);
        if !career {
            return;
        }
        let stations = self.rng.random_range(1..=3);
        let mut start = Self::years_after(REFERENCE_DATE, 20 - age);
        for station in 0..stations {
            let last = station + 1 == stations;
            let region = if last { home.region } else { self.region() };
            let length_years = self.rng.random_range(2..6);
            let end = Self::years_after(start, length_years).min(REFERENCE_DATE);
            let ended_on = if last && status == codes::SERVING {
                String::new()
            } else {
                end.to_string()
            };
            let period_id = self.uuid();
            out.service_periods.push(ServicePeriodRecord {
                period_id,
                iin: iin.to_string(),
                unit: format!("{} әскери бөлімі", self.rng.random_range(10_000..99_999)),
                locality_kato: region.centre_kato.to_string(),
                position: self
                    .pick(&[
                        "атқыштар бөлімшесінің командирі",
                        "жүргізуші",
                        "байланысшы",
                        "взвод командирі",
                    ])
                    .to_string(),
                started_on: start.to_string(),
                ended_on: ended_on.clone(),
            });
            if !last && self.chance(0.35) {
                let housing_id = self.uuid();
                let street = self.pick(&STREETS);
                let area = self.area();
                out.service_housing.push(ServiceHousingRecord {
                    housing_id,
                    iin: iin.to_string(),
                    region_kato: region.kato.to_string(),
                    region_name: region.name.to_string(),
                    locality_kato: region.centre_kato.to_string(),
                    locality_name: region.centre_name.to_string(),
                    street_address: format!(
                        "{street}, {}-үй, {}-пәтер",
                        self.rng.random_range(1..90),
                        self.rng.random_range(1..120)
                    ),
                    area_m2: area,
                    started_on: start.to_string(),
                    ended_on,
                });
            }
            start = end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_population() {
        let first = generate(2_000, 7);
        let second = generate(2_000, 7);
        assert_eq!(first, second);
        let other = generate(2_000, 8);
        assert_ne!(first.persons, other.persons);
    }

    #[test]
    fn every_person_has_a_valid_unique_iin_and_family_links_resolve() {
        let population = generate(5_000, 1);
        assert_eq!(population.persons.len(), 5_000);
        let mut iins = std::collections::HashSet::new();
        for person in &population.persons {
            assert!(Iin::parse(&person.iin).is_ok(), "invalid {}", person.iin);
            assert!(iins.insert(person.iin.clone()), "duplicate {}", person.iin);
        }
        for person in &population.persons {
            for parent in [&person.mother_iin, &person.father_iin] {
                assert!(parent.is_empty() || iins.contains(parent));
            }
        }
        for marriage in &population.marriages {
            assert!(iins.contains(&marriage.husband_iin) && iins.contains(&marriage.wife_iin));
        }
        let with_parents = population
            .persons
            .iter()
            .filter(|person| !person.mother_iin.is_empty())
            .count();
        assert!(
            with_parents > 500,
            "children linked to mothers: {with_parents}"
        );
        assert!(population.marriages.len() > 500);
        let kazakh_letters = population.persons.iter().any(|person| {
            person
                .first_name
                .chars()
                .any(|letter| "ӘҒҚҢӨҰҮҺІәғқңөұүһі".contains(letter))
        });
        assert!(kazakh_letters);
    }

    #[test]
    fn every_registry_gets_records_at_plausible_rates() {
        let population = generate(20_000, 3);
        let rate = |count: usize| count as f64 / 20_000.0;
        assert!(rate(population.phones.len()) > 0.5);
        assert!(rate(population.real_estate_rights.len()) > 0.2);
        assert!(!population.privatisation_contracts.is_empty());
        assert!(!population.equity_contracts.is_empty());
        assert!(!population.service_housing.is_empty());
        assert!(!population.dispensary_records.is_empty());
        assert!(!population.convictions.is_empty());
        assert!(
            population
                .imprisonments
                .iter()
                .any(|stay| stay.released_on.is_empty())
        );
        let count = |status: i64| {
            population
                .persons
                .iter()
                .filter(|p| p.life_status == status)
                .count()
        };
        assert!(count(codes::DEAD) > 0 && count(codes::DEAD) < 1_000);
        assert!(
            population
                .persons
                .iter()
                .any(|p| p.legal_capacity == codes::CAPACITY_INCAPABLE)
        );
        assert!(
            population
                .persons
                .iter()
                .any(|p| !p.residence_abroad_country.is_empty())
        );
        assert!(
            population
                .real_estate_rights
                .iter()
                .any(|right| right.right_type == codes::RIGHT_PERMANENT_USE_STATE_HOUSING)
        );
    }
}
