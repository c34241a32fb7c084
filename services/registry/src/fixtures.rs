//! Fixture files: small hand-picked populations in TOML (the [`Population`] layout), for tests
//! and demos that need a person who exercises one rule.

use std::path::Path;

use anyhow::Context;

use crate::embedded::EmbeddedRegistry;
use crate::records::Population;

/// The fixture shipped with the crate: one person per housing-review and recruitment rule.
pub const RULES_FIXTURE: &str = include_str!("../fixtures/rules.toml");

/// Parses a fixture text.
pub fn parse(text: &str) -> anyhow::Result<Population> {
    toml::from_str(text).context("fixture is not a valid population file")
}

/// Reads a fixture file.
pub fn read(path: &Path) -> anyhow::Result<Population> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read fixture {}", path.display()))?;
    parse(&text).with_context(|| format!("fixture {}", path.display()))
}

/// Adds a fixture's records to the registry, all or nothing.
pub async fn load(registry: &EmbeddedRegistry, population: &Population) -> anyhow::Result<()> {
    registry
        .insert_population(population)
        .await
        .context("cannot insert fixture records")
}

/// The IINs of [`RULES_FIXTURE`], named by the rule each person exercises. The people themselves
/// (IIN, name, phone) are defined once in [`shlyuz_kit::fixture_people`].
#[cfg(test)]
pub mod rules {
    use shlyuz_kit::fixture_people as people;

    /// IIN of [`people::CLEAN_CANDIDATE`].
    pub const CLEAN_CANDIDATE: &str = people::CLEAN_CANDIDATE.iin;
    /// IIN of [`people::CONVICTED_CANDIDATE`].
    pub const CONVICTED_CANDIDATE: &str = people::CONVICTED_CANDIDATE.iin;
    /// IIN of [`people::NO_PHONE_PERSON`].
    pub const NO_PHONE_PERSON: &str = people::NO_PHONE_PERSON.iin;
    /// IIN of [`people::SERVICEMAN_CLEAN`].
    pub const SERVICEMAN_CLEAN: &str = people::SERVICEMAN_CLEAN.iin;
    /// IIN of [`people::SERVICEMAN_CLEAN_SPOUSE`].
    pub const SERVICEMAN_CLEAN_SPOUSE: &str = people::SERVICEMAN_CLEAN_SPOUSE.iin;
    /// IIN of [`people::SERVICEMAN_CLEAN_CHILD`].
    pub const SERVICEMAN_CLEAN_CHILD: &str = people::SERVICEMAN_CLEAN_CHILD.iin;
    /// IIN of [`people::SERVICEMAN_EARLIER_HOUSING`].
    pub const SERVICEMAN_EARLIER_HOUSING: &str = people::SERVICEMAN_EARLIER_HOUSING.iin;
    /// IIN of [`people::SERVICEMAN_SPOUSE_MISSING_SPOUSE`].
    pub const SERVICEMAN_SPOUSE_MISSING_SPOUSE: &str = people::SERVICEMAN_SPOUSE_MISSING_SPOUSE.iin;
    /// IIN of [`people::SERVICEMAN_CHILD_IMPRISONED`].
    pub const SERVICEMAN_CHILD_IMPRISONED: &str = people::SERVICEMAN_CHILD_IMPRISONED.iin;
    /// IIN of [`people::SERVICEMAN_CHILD_IMPRISONED_CHILD`].
    pub const SERVICEMAN_CHILD_IMPRISONED_CHILD: &str =
        people::SERVICEMAN_CHILD_IMPRISONED_CHILD.iin;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rules_fixture_parses_and_every_iin_is_valid() {
        let population = parse(RULES_FIXTURE).expect("fixture");
        assert_eq!(
            population.persons.len(),
            shlyuz_kit::fixture_people::ALL.len()
        );
        for person in &population.persons {
            assert!(
                shlyuz_kit::iin::Iin::parse(&person.iin).is_ok(),
                "{}",
                person.iin
            );
        }
        assert!(population.persons.iter().any(|person| person.iin
            == rules::SERVICEMAN_SPOUSE_MISSING_SPOUSE
            && person.life_status == 3));
    }

    #[test]
    fn the_rules_fixture_holds_the_kits_people_with_their_names_and_phones() {
        let population = parse(RULES_FIXTURE).expect("fixture");
        let people = shlyuz_kit::fixture_people::ALL;
        assert_eq!(population.persons.len(), people.len());
        for person in people {
            let record = population
                .persons
                .iter()
                .find(|record| record.iin == person.iin)
                .unwrap_or_else(|| panic!("{} is not in the fixture", person.iin));
            let full_name = format!(
                "{} {} {}",
                record.last_name, record.first_name, record.patronymic
            );
            assert_eq!(full_name.trim(), person.full_name, "{}", person.iin);
            let phone = population
                .phones
                .iter()
                .find(|phone| phone.iin == person.iin)
                .map(|phone| phone.phone_number.as_str());
            assert_eq!(phone, person.phone, "{}", person.iin);
        }
    }

    #[test]
    fn an_unknown_column_in_a_fixture_is_refused() {
        let error =
            parse("[[persons]]\niin = \"980512391010\"\nshoe_size = 42\n").expect_err("unknown");
        assert!(format!("{error:#}").contains("shoe_size"));
    }
}
