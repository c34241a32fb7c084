//! The deterministic synthetic population: the same `--population N --seed S` always gives the
//! same people, families and records, so demos, tests and benchmarks can name real IINs.
//! Households are generated one at a time (a head, maybe a spouse, maybe children), each person
//! then gets records of every registry at plausible rates. The persons and each registry draw from
//! their own random stream, seeded from the seed and the stream's name: a registry's records
//! depend only on the seed, the persons and its own stream, so adding a registry (or changing how
//! one draws) leaves every other registry's records as they were.

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
    generate_with_probe(population, seed, None)
}

#[cfg(test)]
/// [`generate`], with `probe` drawing once before each person's registry records.
fn generate_with_probe(population: usize, seed: u64, probe: Option<Probe>) -> Population {
    let mut generator = Generator::new(population, seed);
    generator.probe = probe;
    let mut all = Population::default();
    while generator.fill_chunk(usize::MAX, &mut all) {}
    all
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Ethnicity {
    Kazakh,
    Russian,
}

/// One household's persons, each with their age, and their home.
struct Household {
    home: Home,
    head: (PersonRecord, i32),
    spouse: Option<(PersonRecord, i32)>,
    children: Vec<(PersonRecord, i32)>,
}

#[derive(Clone)]
struct Home {
    region: Region,
    locality_kato: String,
    locality_name: String,
    street_address: String,
    tenure: Tenure,
}

/// How a household holds its dwelling: a fact about the household (drawn with the persons), which
/// the cadastre and the state property registry both record.
#[derive(Clone, Copy)]
enum Tenure {
    /// Owned by the head (shared with the spouse).
    Owned { area_m2: f64 },
    /// State housing in permanent use.
    StateHousing { area_m2: f64 },
    /// Rented, or lived in with relatives: in no registry.
    Unregistered,
}

/// The sum of the regions' population weights, which [`Stream::region`] draws against.
const REGION_WEIGHTS_TOTAL: u32 = {
    let mut total = 0;
    let mut index = 0;
    while index < REGIONS.len() {
        total += REGIONS[index].weight;
        index += 1;
    }
    total
};

/// One random stream: the persons' own, or one registry's. Each is seeded from the population's
/// seed and the stream's name, so draws added to one stream never move another's.
struct Stream {
    rng: StdRng,
}

impl Stream {
    /// The stream called `name` of the population generated from `seed`.
    fn new(seed: u64, name: &str) -> Self {
        let mut input = seed.to_le_bytes().to_vec();
        input.extend_from_slice(name.as_bytes());
        let digest = ring::digest::digest(&ring::digest::SHA256, &input);
        let mut stream_seed = [0_u8; 32];
        stream_seed.copy_from_slice(digest.as_ref());
        Self {
            rng: StdRng::from_seed(stream_seed),
        }
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

    fn birth_date_for_age(&mut self, age: i32) -> Date {
        let latest = years_after(REFERENCE_DATE, -age);
        let earliest = years_after(latest, -1);
        self.date_between(earliest, latest)
    }

    fn region(&mut self) -> Region {
        let mut ticket = self.rng.random_range(0..REGION_WEIGHTS_TOTAL);
        for region in REGIONS {
            if ticket < region.weight {
                return region;
            }
            ticket -= region.weight;
        }
        REGIONS[0]
    }

    fn recent_date(&mut self, years: i32) -> String {
        let from = years_after(REFERENCE_DATE, -years);
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
}

fn years_after(date: Date, years: i32) -> Date {
    Date::from_julian_day(date.to_julian_day() + years * 365 + years / 4).unwrap_or(date)
}

/// The generator's random streams: one for the persons and their households, one per registry.
/// A registry's records depend only on the seed, the persons and its own stream, so a registry
/// added here (with a new name) leaves every other registry's records as they were.
struct Streams {
    persons: Stream,
    civil: Stream,
    cadastre: Stream,
    state_property: Stream,
    equity: Stream,
    military: Stream,
    medical: Stream,
    criminal: Stream,
    mobile: Stream,
}

impl Streams {
    fn new(seed: u64) -> Self {
        Self {
            persons: Stream::new(seed, "persons"),
            civil: Stream::new(seed, "civil-registry"),
            cadastre: Stream::new(seed, "real-estate-cadastre"),
            state_property: Stream::new(seed, "state-property-registry"),
            equity: Stream::new(seed, "equity-registry"),
            military: Stream::new(seed, "military-register"),
            medical: Stream::new(seed, "medical-registry"),
            criminal: Stream::new(seed, "criminal-records"),
            mobile: Stream::new(seed, "mobile-citizens"),
        }
    }
}

/// Draws a test adds once per generated person, to show what they do (and do not) move.
#[cfg(test)]
type Probe = Box<dyn FnMut(&mut Streams) + Send>;

/// The generator's state: the random streams and the serials already used per birth date and sex.
pub struct Generator {
    streams: Streams,
    target: usize,
    generated: usize,
    serials: HashMap<(i32, bool), u16>,
    privatisations: u64,
    #[cfg(test)]
    probe: Option<Probe>,
}

impl Generator {
    /// A generator of `target` persons from `seed`.
    pub fn new(target: usize, seed: u64) -> Self {
        Self {
            streams: Streams::new(seed),
            target,
            generated: 0,
            serials: HashMap::new(),
            privatisations: 0,
            #[cfg(test)]
            probe: None,
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

    fn household(&mut self, chunk_end: usize, out: &mut Population) {
        let Household {
            home,
            head,
            spouse,
            children,
        } = self.household_members(chunk_end);
        let spouse_person = spouse.as_ref().map(|(person, _)| person);
        marriage_records(&mut self.streams.civil, &head, spouse.as_ref(), out);
        dwelling_records(
            &mut self.streams.cadastre,
            &home,
            &head.0,
            spouse_person,
            out,
        );
        privatisation_records(
            &mut self.streams.state_property,
            &mut self.privatisations,
            &home,
            &head,
            out,
        );
        let members = std::iter::once(head).chain(spouse).chain(children);
        for (person, age) in members {
            #[cfg(test)]
            if let Some(probe) = self.probe.as_mut() {
                probe(&mut self.streams);
            }
            let iin = person.iin.as_str();
            let male = person.sex == codes::SEX_MALE;
            let alive = person.life_status == codes::ALIVE;
            phone_records(&mut self.streams.mobile, iin, alive, age, out);
            equity_records(&mut self.streams.equity, iin, age, out);
            military_records(&mut self.streams.military, iin, male, age, &home, out);
            dispensary_records(&mut self.streams.medical, iin, age, &home, out);
            criminal_records(&mut self.streams.criminal, iin, male, age, &home, out);
            out.persons.push(person);
        }
    }

    /// The persons of one household, from the persons' stream alone.
    fn household_members(&mut self, chunk_end: usize) -> Household {
        let home = self.home();
        let ethnicity = if self.streams.persons.chance(0.75) {
            Ethnicity::Kazakh
        } else {
            Ethnicity::Russian
        };
        let head_age = self.streams.persons.rng.random_range(18..80);
        let head_sex = if self.streams.persons.chance(0.5) {
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

        let spouse =
            if head_age >= 20 && self.generated < chunk_end && self.streams.persons.chance(0.62) {
                let spouse_sex = match head_sex {
                    Sex::Male => Sex::Female,
                    Sex::Female => Sex::Male,
                };
                let spouse_age = (head_age + self.streams.persons.rng.random_range(-5..=5)).max(18);
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
        let may_have_children =
            spouse.is_some() || (head_sex == Sex::Female && self.streams.persons.chance(0.25));
        if let (true, Some(mother)) = (may_have_children, wife) {
            let count = self.streams.persons.pick(&[0, 1, 1, 2, 2, 2, 3, 3, 4]);
            for _ in 0..count {
                if self.generated >= chunk_end {
                    break;
                }
                let child_age = wife_age - self.streams.persons.rng.random_range(20..38);
                if child_age < 0 {
                    continue;
                }
                let child_sex = if self.streams.persons.chance(0.51) {
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

        Household {
            home,
            head: (head, head_age),
            spouse,
            children,
        }
    }

    fn home(&mut self) -> Home {
        let stream = &mut self.streams.persons;
        let region = stream.region();
        let urban = region.kato.starts_with('7') || stream.chance(0.6);
        let (locality_kato, locality_name) = if urban {
            (
                region.centre_kato.to_string(),
                region.centre_name.to_string(),
            )
        } else {
            let district = stream.rng.random_range(20..60);
            let village = stream.rng.random_range(0..VILLAGES.len());
            (
                format!("{}{district:02}{:02}100", &region.kato[..2], village + 30),
                VILLAGES[village].to_string(),
            )
        };
        let street = stream.pick(&STREETS);
        let house = stream.rng.random_range(1..200);
        let street_address = if urban {
            let flat = stream.rng.random_range(1..180);
            format!("{street}, {house}-үй, {flat}-пәтер")
        } else {
            format!("{street}, {house}-үй")
        };
        let tenure = if stream.chance(0.55) {
            Tenure::Owned {
                area_m2: stream.area(),
            }
        } else if stream.chance(0.03) {
            Tenure::StateHousing {
                area_m2: stream.area(),
            }
        } else {
            Tenure::Unregistered
        };
        Home {
            region,
            locality_kato,
            locality_name,
            street_address,
            tenure,
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
            Ethnicity::Kazakh => self.streams.persons.pick(&KAZAKH_SURNAMES),
            Ethnicity::Russian => self.streams.persons.pick(&RUSSIAN_SURNAMES),
        }
    }

    fn male_name(&mut self, ethnicity: Ethnicity) -> &'static str {
        match ethnicity {
            Ethnicity::Kazakh => self.streams.persons.pick(&KAZAKH_MALE_NAMES),
            Ethnicity::Russian => self.streams.persons.pick(&RUSSIAN_MALE_NAMES).0,
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
        let birth_date = self.streams.persons.birth_date_for_age(age);
        let iin = self.iin(birth_date, sex);
        let stream = &mut self.streams.persons;
        let first_name = match (ethnicity, sex) {
            (Ethnicity::Kazakh, Sex::Male) => stream.pick(&KAZAKH_MALE_NAMES),
            (Ethnicity::Kazakh, Sex::Female) => stream.pick(&KAZAKH_FEMALE_NAMES),
            (Ethnicity::Russian, Sex::Male) => stream.pick(&RUSSIAN_MALE_NAMES).0,
            (Ethnicity::Russian, Sex::Female) => stream.pick(&RUSSIAN_FEMALE_NAMES),
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
        let (life_status, status_date) = if stream.chance(0.012) {
            (codes::DEAD, stream.recent_date(10))
        } else if stream.chance(0.0005) {
            (codes::MISSING, stream.recent_date(10))
        } else {
            (codes::ALIVE, String::new())
        };
        let citizenship = if stream.chance(0.983) {
            "KZ".to_string()
        } else if stream.chance(0.9) {
            stream.pick(&FOREIGN_COUNTRIES).to_string()
        } else {
            String::new()
        };
        let residence_abroad_country = if age >= 18 && stream.chance(0.01) {
            stream.pick(&FOREIGN_COUNTRIES).to_string()
        } else {
            String::new()
        };
        let legal_capacity = if age >= 18 && stream.chance(0.003) {
            codes::CAPACITY_INCAPABLE
        } else if age >= 18 && stream.chance(0.001) {
            codes::CAPACITY_LIMITED
        } else {
            codes::CAPACITY_FULL
        };
        let document = stream.rng.random_range(10_000_000..99_999_999_u32);
        let birth_place_kato = if stream.chance(0.7) {
            home.region.centre_kato.to_string()
        } else {
            stream.region().centre_kato.to_string()
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
}

/// The civil registry: the marriage of the head and the spouse.
fn marriage_records(
    stream: &mut Stream,
    head: &(PersonRecord, i32),
    spouse: Option<&(PersonRecord, i32)>,
    out: &mut Population,
) {
    let Some((spouse, spouse_age)) = spouse else {
        return;
    };
    let (head, head_age) = head;
    let (husband, wife) = if head.sex == codes::SEX_MALE {
        (head, spouse)
    } else {
        (spouse, head)
    };
    let younger = (*head_age).min(*spouse_age);
    let married_at = stream.rng.random_range(18..=younger.clamp(18, 35));
    let registered_on = years_after(REFERENCE_DATE, married_at - younger);
    let dissolved_on = if stream.chance(0.08) {
        stream
            .date_between(registered_on, REFERENCE_DATE)
            .to_string()
    } else {
        String::new()
    };
    let marriage_id = stream.uuid();
    out.marriages.push(MarriageRecord {
        marriage_id,
        husband_iin: husband.iin.clone(),
        wife_iin: wife.iin.clone(),
        registered_on: registered_on.to_string(),
        dissolved_on,
    });
}

/// The real-estate cadastre: the rights to the household's dwelling.
fn dwelling_records(
    stream: &mut Stream,
    home: &Home,
    head: &PersonRecord,
    spouse: Option<&PersonRecord>,
    out: &mut Population,
) {
    let right = |right_id: String,
                 holder: &PersonRecord,
                 cadastral_number: &str,
                 right_type: i64,
                 area_m2: f64,
                 share: f64,
                 registered_on: &str| RealEstateRightRecord {
        right_id,
        holder_iin: holder.iin.clone(),
        cadastral_number: cadastral_number.to_string(),
        right_type,
        region_kato: home.region.kato.to_string(),
        region_name: home.region.name.to_string(),
        locality_kato: home.locality_kato.clone(),
        locality_name: home.locality_name.clone(),
        street_address: home.street_address.clone(),
        area_m2,
        share,
        registered_on: registered_on.to_string(),
        terminated_on: String::new(),
    };
    match home.tenure {
        Tenure::Owned { area_m2 } => {
            let cadastral_number = stream.cadastral_number(home);
            let registered_on = stream.date_in_years(1995, 2025).to_string();
            let share = if spouse.is_some() { 0.5 } else { 1.0 };
            for owner in std::iter::once(head).chain(spouse) {
                let right_id = stream.uuid();
                out.real_estate_rights.push(right(
                    right_id,
                    owner,
                    &cadastral_number,
                    codes::RIGHT_OWNERSHIP,
                    area_m2,
                    share,
                    &registered_on,
                ));
            }
        }
        Tenure::StateHousing { area_m2 } => {
            let cadastral_number = stream.cadastral_number(home);
            let right_id = stream.uuid();
            let registered_on = stream.date_in_years(1998, 2025).to_string();
            out.real_estate_rights.push(right(
                right_id,
                head,
                &cadastral_number,
                codes::RIGHT_PERMANENT_USE_STATE_HOUSING,
                area_m2,
                1.0,
                &registered_on,
            ));
        }
        Tenure::Unregistered => {}
    }
}

/// The state property registry: the privatisation contract of an owned dwelling, for heads old
/// enough to have privatised it (1992–2000).
fn privatisation_records(
    stream: &mut Stream,
    privatisations: &mut u64,
    home: &Home,
    head: &(PersonRecord, i32),
    out: &mut Population,
) {
    let (head, head_age) = head;
    let Tenure::Owned { area_m2: area } = home.tenure else {
        return;
    };
    if *head_age < 45 || !stream.chance(0.35) {
        return;
    }
    *privatisations += 1;
    let contract_number = format!("ПР-{:08}", *privatisations);
    let concluded_on = stream.date_in_years(1992, 2000).to_string();
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

/// Mobile citizens: the phone linked to a living adult's e-gov account.
fn phone_records(stream: &mut Stream, iin: &str, alive: bool, age: i32, out: &mut Population) {
    if !alive || age < 16 || !stream.chance(0.88) {
        return;
    }
    let (prefix, operator) = stream.pick(&MOBILE_PREFIXES);
    let number = stream.rng.random_range(1_000_000..9_999_999_u32);
    out.phones.push(PhoneRecord {
        iin: iin.to_string(),
        phone_number: format!("+7{prefix}{number}"),
        operator_name: operator.to_string(),
    });
}

/// The equity registry: a shared-construction contract.
fn equity_records(stream: &mut Stream, iin: &str, age: i32, out: &mut Population) {
    if !(25..=55).contains(&age) || !stream.chance(0.03) {
        return;
    }
    let contract_number = stream.uuid();
    let region = stream.region();
    let kind = if stream.chance(0.15) {
        codes::EQUITY_ASSIGNMENT
    } else {
        codes::EQUITY_PARTICIPATION
    };
    let terminated_on = if stream.chance(0.1) {
        stream.date_in_years(2023, 2025).to_string()
    } else {
        String::new()
    };
    let street = stream.pick(&STREETS);
    let area = stream.area();
    let registered_on = stream.date_in_years(2016, 2025).to_string();
    out.equity_contracts.push(EquityContractRecord {
        contract_number,
        iin: iin.to_string(),
        kind,
        developer_name: stream.pick(&DEVELOPERS).to_string(),
        region_kato: region.kato.to_string(),
        region_name: region.name.to_string(),
        locality_kato: region.centre_kato.to_string(),
        locality_name: region.centre_name.to_string(),
        street_address: format!("{street}, {}-үй", stream.rng.random_range(1..60)),
        area_m2: area,
        registered_on,
        terminated_on,
    });
}

/// The military register: the registration and, for career servicemen, duty stations and
/// service housing.
fn military_records(
    stream: &mut Stream,
    iin: &str,
    male: bool,
    age: i32,
    home: &Home,
    out: &mut Population,
) {
    let fitness = stream.pick(&["А", "А", "Б", "Б", "В", "Г", "Д"]);
    let (status, rank) = match (male, age) {
        (true, 17..=27) if stream.chance(0.03) => (codes::SERVING, "қатардағы жауынгер"),
        (true, 17..=27) => (codes::CONSCRIPT, ""),
        (true, 28..=45) if stream.chance(0.04) => (
            codes::SERVING,
            stream.pick(&["сержант", "старшина", "лейтенант", "капитан", "майор"]),
        ),
        (true, 28..=50) if stream.chance(0.9) => (
            codes::RESERVE,
            stream.pick(&["қатардағы", "сержант", "лейтенант"]),
        ),
        (true, 28..) => (codes::REMOVED, ""),
        (false, 20..=45) if stream.chance(0.03) => (codes::RESERVE, ""),
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
        || status == codes::RESERVE && age >= 35 && stream.chance(0.05);
    if !career {
        return;
    }
    let stations = stream.rng.random_range(1..=3);
    let mut start = years_after(REFERENCE_DATE, 20 - age);
    for station in 0..stations {
        let last = station + 1 == stations;
        let region = if last { home.region } else { stream.region() };
        let length_years = stream.rng.random_range(2..6);
        let end = years_after(start, length_years).min(REFERENCE_DATE);
        let ended_on = if last && status == codes::SERVING {
            String::new()
        } else {
            end.to_string()
        };
        let period_id = stream.uuid();
        out.service_periods.push(ServicePeriodRecord {
            period_id,
            iin: iin.to_string(),
            unit: format!("{} әскери бөлімі", stream.rng.random_range(10_000..99_999)),
            locality_kato: region.centre_kato.to_string(),
            position: stream
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
        if !last && stream.chance(0.35) {
            let housing_id = stream.uuid();
            let street = stream.pick(&STREETS);
            let area = stream.area();
            out.service_housing.push(ServiceHousingRecord {
                housing_id,
                iin: iin.to_string(),
                region_kato: region.kato.to_string(),
                region_name: region.name.to_string(),
                locality_kato: region.centre_kato.to_string(),
                locality_name: region.centre_name.to_string(),
                street_address: format!(
                    "{street}, {}-үй, {}-пәтер",
                    stream.rng.random_range(1..90),
                    stream.rng.random_range(1..120)
                ),
                area_m2: area,
                started_on: start.to_string(),
                ended_on,
            });
        }
        start = end;
    }
}

/// The medical registry: dispensary registrations (one chance per dispensary).
fn dispensary_records(stream: &mut Stream, iin: &str, age: i32, home: &Home, out: &mut Population) {
    if age < 14 {
        return;
    }
    for (index, probability) in [0.003, 0.004, 0.008, 0.007].into_iter().enumerate() {
        if stream.chance(probability) {
            let record_id = stream.uuid();
            let diagnosis = stream.pick(DIAGNOSES[index]);
            let registered = stream.date_in_years(2005, 2025);
            let deregistered_on = if stream.chance(0.4) {
                stream.date_between(registered, REFERENCE_DATE).to_string()
            } else {
                String::new()
            };
            out.dispensary_records.push(DispensaryRecordRow {
                record_id,
                iin: iin.to_string(),
                dispensary: index as i64 + 1,
                region_kato: home.region.kato.to_string(),
                diagnosis_code: diagnosis.to_string(),
                registered_on: registered.to_string(),
                deregistered_on,
            });
        }
    }
}

/// Criminal records: a conviction, and the imprisonment it may have led to.
fn criminal_records(
    stream: &mut Stream,
    iin: &str,
    male: bool,
    age: i32,
    home: &Home,
    out: &mut Population,
) {
    if age < 18 || !stream.chance(if male { 0.04 } else { 0.008 }) {
        return;
    }
    let convicted = stream.date_in_years(2000, 2025);
    let conviction_id = stream.uuid();
    let article = stream.pick(&ARTICLES);
    let years = stream.rng.random_range(1..8);
    let imprisoned = stream.chance(0.35);
    let sentence = if imprisoned {
        format!("{years} жыл бас бостандығынан айыру")
    } else {
        format!("{years} жыл бас бостандығын шектеу")
    };
    let expunged =
        i64::from(convicted.year() + years + 3 < REFERENCE_DATE.year() && stream.chance(0.8));
    out.convictions.push(ConvictionRecord {
        conviction_id,
        iin: iin.to_string(),
        article: article.to_string(),
        court: format!("{} аудандық соты", home.locality_name),
        sentence,
        convicted_on: convicted.to_string(),
        expunged,
    });
    if imprisoned {
        let release = years_after(convicted, years);
        let released_on = if release > REFERENCE_DATE {
            String::new()
        } else {
            release.to_string()
        };
        let imprisonment_id = stream.uuid();
        out.imprisonments.push(ImprisonmentRecord {
            imprisonment_id,
            iin: iin.to_string(),
            institution: stream.pick(&INSTITUTIONS).to_string(),
            started_on: convicted.to_string(),
            released_on,
        });
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

    /// Each registry's stream, and the tables its draws fill.
    type RegistryStream = (
        &'static str,
        fn(&mut Streams) -> &mut Stream,
        fn(&Population) -> Population,
    );

    const REGISTRY_STREAMS: [RegistryStream; 8] = [
        (
            "civil",
            |streams| &mut streams.civil,
            |all| Population {
                marriages: all.marriages.clone(),
                ..Population::default()
            },
        ),
        (
            "cadastre",
            |streams| &mut streams.cadastre,
            |all| Population {
                real_estate_rights: all.real_estate_rights.clone(),
                ..Population::default()
            },
        ),
        (
            "state property",
            |streams| &mut streams.state_property,
            |all| Population {
                privatisation_contracts: all.privatisation_contracts.clone(),
                ..Population::default()
            },
        ),
        (
            "equity",
            |streams| &mut streams.equity,
            |all| Population {
                equity_contracts: all.equity_contracts.clone(),
                ..Population::default()
            },
        ),
        (
            "military",
            |streams| &mut streams.military,
            |all| Population {
                military_registrations: all.military_registrations.clone(),
                service_periods: all.service_periods.clone(),
                service_housing: all.service_housing.clone(),
                ..Population::default()
            },
        ),
        (
            "medical",
            |streams| &mut streams.medical,
            |all| Population {
                dispensary_records: all.dispensary_records.clone(),
                ..Population::default()
            },
        ),
        (
            "criminal",
            |streams| &mut streams.criminal,
            |all| Population {
                convictions: all.convictions.clone(),
                imprisonments: all.imprisonments.clone(),
                ..Population::default()
            },
        ),
        (
            "mobile",
            |streams| &mut streams.mobile,
            |all| Population {
                phones: all.phones.clone(),
                ..Population::default()
            },
        ),
    ];

    #[test]
    fn a_new_registrys_draws_leave_every_other_record_as_it_was() {
        let before = generate(3_000, 11);
        // A registry added to the generator: its own stream, drawn for every person.
        let mut vehicles = Stream::new(11, "vehicle-registry");
        let with_vehicles = generate_with_probe(
            3_000,
            11,
            Some(Box::new(move |_streams| {
                if vehicles.chance(0.3) {
                    let _vin = vehicles.uuid();
                }
            })),
        );
        assert_eq!(before, with_vehicles);
    }

    #[test]
    fn draws_on_one_registrys_stream_move_only_that_registrys_records() {
        let before = generate(3_000, 11);
        for (name, stream_of, tables_of) in REGISTRY_STREAMS {
            let after = generate_with_probe(
                3_000,
                11,
                Some(Box::new(move |streams| {
                    let _extra: u64 = stream_of(streams).rng.random();
                })),
            );
            assert_eq!(before.persons, after.persons, "persons moved with {name}");
            assert_ne!(
                tables_of(&before),
                tables_of(&after),
                "{name}: its own records should depend on its stream"
            );
            for (other, _, other_tables_of) in REGISTRY_STREAMS {
                if other != name {
                    assert_eq!(
                        other_tables_of(&before),
                        other_tables_of(&after),
                        "{other} records moved with draws on the {name} stream"
                    );
                }
            }
        }
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
