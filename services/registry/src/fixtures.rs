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

/// The IINs of [`RULES_FIXTURE`], named by the rule each person exercises.
pub mod rules {
    /// Қасымов Ерлан Серікұлы.
    pub const CLEAN_CANDIDATE: &str = "980512391010";
    /// Омаров Дәурен Асқарұлы.
    pub const NARCOLOGICAL_CANDIDATE: &str = "990203391021";
    /// Петров Игорь Сергеевич.
    pub const CONVICTED_CANDIDATE: &str = "971120391035";
    /// Жұмабаева Әйгерім Нұрланқызы.
    pub const NO_PHONE_PERSON: &str = "010714691046";
    /// Тоқаев Ғалым Бауыржанұлы.
    pub const SERVICEMAN_CLEAN: &str = "900315391113";
    /// Тоқаева Ұлжан Маратқызы.
    pub const SERVICEMAN_CLEAN_SPOUSE: &str = "920809491129";
    /// Тоқаев Әлихан Ғалымұлы.
    pub const SERVICEMAN_CLEAN_CHILD: &str = "180125591130";
    /// Сәрсенбаев Қайрат Төлегенұлы.
    pub const SERVICEMAN_PRIVATISED: &str = "800404391215";
    /// Есенов Нұрлан Бекұлы.
    pub const SERVICEMAN_EQUITY: &str = "880630391229";
    /// Мұқанов Асқар Жандосұлы.
    pub const SERVICEMAN_EARLIER_HOUSING: &str = "851201391233";
    /// Иванов Алексей Николаевич.
    pub const SERVICEMAN_SPOUSE_STATE_HOUSING: &str = "870917391247";
    /// Иванова Ольга Викторовна.
    pub const SERVICEMAN_SPOUSE_STATE_HOUSING_SPOUSE: &str = "891002491255";
    /// Байжанов Бекзат Ерланұлы.
    pub const SERVICEMAN_SPOUSE_MISSING: &str = "860211391267";
    /// Байжанова Гүлнар Серікқызы.
    pub const SERVICEMAN_SPOUSE_MISSING_SPOUSE: &str = "880505491275";
    /// Волков Дмитрий Олегович.
    pub const SERVICEMAN_FOREIGN_CITIZEN: &str = "910119391289";
    /// Ұзақбаев Санжар Талғатұлы.
    pub const SERVICEMAN_RESIDENT_ABROAD: &str = "890707391299";
    /// Өтегенов Мейрамбек Ілиясұлы.
    pub const SERVICEMAN_INCAPABLE: &str = "841111391301";
    /// Ахметов Дархан Мұратұлы.
    pub const SERVICEMAN_CHILD_IMPRISONED: &str = "700303391314";
    /// Ахметов Айбек Дарханұлы.
    pub const SERVICEMAN_CHILD_IMPRISONED_CHILD: &str = "020606591321";
    /// Қуанышев Өмірзақ Үмбетәліұлы.
    pub const DEAD_PERSON: &str = "500101391334";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rules_fixture_parses_and_every_iin_is_valid() {
        let population = parse(RULES_FIXTURE).expect("fixture");
        assert_eq!(population.persons.len(), 20);
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
    fn an_unknown_column_in_a_fixture_is_refused() {
        let error =
            parse("[[persons]]\niin = \"980512391010\"\nshoe_size = 42\n").expect_err("unknown");
        assert!(format!("{error:#}").contains("shoe_size"));
    }
}
