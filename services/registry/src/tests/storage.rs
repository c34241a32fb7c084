//! The embedded backend on SQLite and PostgreSQL: seeding, fixtures, look-ups, atomic loads.

use crate::embedded::EmbeddedRegistry;
use crate::fixtures::{self, rules};
use crate::population::{generate, seed_population};
use crate::records::kinds;
use crate::source::RecordLookup as _;
use shlyuz_kit::db::Database;
use shlyuz_kit::iin::Iin;

async fn registry(database: Database) -> EmbeddedRegistry {
    database
        .migrate(&crate::MIGRATIONS)
        .await
        .expect("migrations");
    EmbeddedRegistry::new(database)
}

fn iin(text: &str) -> Iin {
    Iin::parse(text).expect("valid iin")
}

shlyuz_kit::storage_test!(
    seeding_stores_the_generated_population_exactly,
    |database: Database| async move {
        let registry = registry(database).await;
        let report = seed_population(&registry, 3_000, 42).await.expect("seed");
        assert_eq!(report.persons, 3_000);
        assert_eq!(registry.person_count().await.expect("count"), 3_000);

        let expected = generate(3_000, 42);
        let sample: Vec<Iin> = expected
            .persons
            .iter()
            .step_by(97)
            .map(|person| iin(&person.iin))
            .collect();
        let mut stored = registry
            .records(&kinds::PERSONS, &sample)
            .await
            .expect("persons");
        stored.sort_by(|left, right| left.iin.cmp(&right.iin));
        let mut wanted: Vec<_> = expected.persons.iter().step_by(97).cloned().collect();
        wanted.sort_by(|left, right| left.iin.cmp(&right.iin));
        assert_eq!(
            stored, wanted,
            "names with Kazakh letters, dates and codes round-trip"
        );

        let owner = expected.real_estate_rights.first().expect("a right");
        let rights = registry
            .records(&kinds::REAL_ESTATE_RIGHTS, &[iin(&owner.holder_iin)])
            .await
            .expect("rights");
        assert!(
            rights.contains(owner),
            "area and share (DOUBLE PRECISION) round-trip"
        );

        // Seeding again replaces the data instead of adding to it.
        seed_population(&registry, 1_000, 43)
            .await
            .expect("re-seed");
        assert_eq!(registry.person_count().await.expect("count"), 1_000);
    }
);

shlyuz_kit::storage_test!(
    fixture_families_and_records_are_found_by_every_member,
    |database: Database| async move {
        let registry = registry(database).await;
        let population = fixtures::parse(fixtures::RULES_FIXTURE).expect("fixture");
        fixtures::load(&registry, &population).await.expect("load");

        let wife = iin(rules::SERVICEMAN_CLEAN_SPOUSE);
        let marriages = registry
            .records(&kinds::MARRIAGES, std::slice::from_ref(&wife))
            .await
            .expect("marriages");
        assert_eq!(marriages.len(), 1);
        assert_eq!(marriages[0].husband_iin, rules::SERVICEMAN_CLEAN);

        let father = iin(rules::SERVICEMAN_CLEAN);
        let children = registry
            .records(&kinds::CHILDREN, &[father])
            .await
            .expect("children");
        let child_iins: Vec<&str> = children.iter().map(|child| child.iin.as_str()).collect();
        assert_eq!(child_iins, vec![rules::SERVICEMAN_CLEAN_CHILD]);

        let imprisoned = registry
            .records(
                &kinds::IMPRISONMENTS,
                &[iin(rules::SERVICEMAN_CHILD_IMPRISONED_CHILD)],
            )
            .await
            .expect("imprisonments");
        assert!(imprisoned[0].released_on.is_empty());

        let nobody = registry
            .records(&kinds::PHONES, &[iin(rules::NO_PHONE_PERSON)])
            .await
            .expect("phones");
        assert!(nobody.is_empty());
    }
);

shlyuz_kit::storage_test!(
    a_failed_load_leaves_nothing_behind,
    |database: Database| async move {
        let registry = registry(database).await;
        let mut population = fixtures::parse(fixtures::RULES_FIXTURE).expect("fixture");
        // The same phone row twice violates the primary key after the persons were inserted.
        let duplicate = population.phones[0].clone();
        population.phones.push(duplicate);
        assert!(fixtures::load(&registry, &population).await.is_err());
        assert_eq!(registry.person_count().await.expect("count"), 0);
    }
);
