//! The seed-002 review rules against an in-memory registry, on SQLite and PostgreSQL.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use crate::Housing;
use crate::norm::AreaNorm;
use crate::register::{NewDwelling, NewRegistrant};
use crate::review::{LookupFailed, PersonFacts, RegistryChecks, ReviewSettings};
use shlyuz_kit::clock::ManualClock;
use shlyuz_kit::db::Database;
use shlyuz_kit::error::ApiError;
use shlyuz_proto::housing::v1 as pb;
use time::macros::datetime;

const ASTANA: &str = "711000000";
const ALMATY: &str = "751000000";

/// Registries held in memory; records which IINs each step was asked about.
#[derive(Default)]
struct MemoryRegistries {
    families: HashMap<String, Vec<String>>,
    privatisation: HashSet<String>,
    equity: HashSet<String>,
    earlier_housing: HashSet<String>,
    permanent_use: HashSet<(String, String)>,
    persons: HashMap<String, PersonFacts>,
    imprisoned: HashSet<String>,
    fail: bool,
    asked: Mutex<Vec<(&'static str, Vec<String>)>>,
}

impl MemoryRegistries {
    fn ask(&self, step: &'static str, iins: &[String]) -> Result<(), LookupFailed> {
        self.asked.lock().expect("lock").push((step, iins.to_vec()));
        if self.fail {
            return Err(LookupFailed {
                registry: step.to_string(),
                message: "registry down".to_string(),
            });
        }
        Ok(())
    }

    fn hits(
        &self,
        step: &'static str,
        iins: &[String],
        set: &HashSet<String>,
    ) -> Result<HashSet<String>, LookupFailed> {
        self.ask(step, iins)?;
        Ok(iins
            .iter()
            .filter(|iin| set.contains(*iin))
            .cloned()
            .collect())
    }

    fn asked_in(&self, step: &str) -> HashSet<String> {
        self.asked
            .lock()
            .expect("lock")
            .iter()
            .filter(|(asked_step, _)| *asked_step == step)
            .flat_map(|(_, iins)| iins.clone())
            .collect()
    }
}

impl RegistryChecks for MemoryRegistries {
    async fn families(
        &self,
        iins: &[String],
    ) -> Result<HashMap<String, Vec<String>>, LookupFailed> {
        self.ask("families", iins)?;
        Ok(iins
            .iter()
            .filter_map(|iin| {
                self.families
                    .get(iin)
                    .map(|members| (iin.clone(), members.clone()))
            })
            .collect())
    }
    async fn with_privatisation_contract(
        &self,
        iins: &[String],
    ) -> Result<HashSet<String>, LookupFailed> {
        self.hits("privatisation", iins, &self.privatisation)
    }
    async fn with_equity_contract(&self, iins: &[String]) -> Result<HashSet<String>, LookupFailed> {
        self.hits("equity", iins, &self.equity)
    }
    async fn with_earlier_service_housing(
        &self,
        iins: &[String],
    ) -> Result<HashSet<String>, LookupFailed> {
        self.hits("earlier_housing", iins, &self.earlier_housing)
    }
    async fn with_permanent_use_in(
        &self,
        iins: &[String],
        locality_kato: &str,
    ) -> Result<HashSet<String>, LookupFailed> {
        self.ask("permanent_use", iins)?;
        Ok(iins
            .iter()
            .filter(|iin| {
                self.permanent_use
                    .contains(&((*iin).clone(), locality_kato.to_string()))
            })
            .cloned()
            .collect())
    }
    async fn persons(&self, iins: &[String]) -> Result<HashMap<String, PersonFacts>, LookupFailed> {
        self.ask("persons", iins)?;
        Ok(iins
            .iter()
            .map(|iin| (iin.clone(), self.persons.get(iin).copied().unwrap_or(CLEAN)))
            .collect())
    }
    async fn imprisoned(&self, iins: &[String]) -> Result<HashSet<String>, LookupFailed> {
        self.hits("imprisoned", iins, &self.imprisoned)
    }
}

const CLEAN: PersonFacts = PersonFacts {
    missing_or_dead: false,
    citizen: true,
    residence_abroad: false,
    incapable: false,
};

fn person(name: &str) -> String {
    // Synthetic IINs: twelve digits are enough for the in-memory registry and the register
    // validates the check digit, so build valid ones.
    let serial: u16 = name.bytes().map(u16::from).sum::<u16>() * 7 % 9000 + 1;
    (serial..9999)
        .find_map(|candidate| {
            shlyuz_kit::iin::Iin::from_parts(
                time::macros::date!(1988 - 05 - 05),
                shlyuz_kit::iin::Sex::Female,
                candidate,
            )
        })
        .expect("iin")
        .as_str()
        .to_string()
}

async fn setup(database: &Database) -> Housing {
    database.migrate(&crate::MIGRATIONS).await.expect("migrate");
    let clock = ManualClock::new(datetime!(2026-03-02 09:00 UTC));
    Housing::new(database.clone(), clock.shared(), AreaNorm::default())
}

async fn register(housing: &Housing, iin: &str, minute: i64, locality: &str) {
    housing
        .add_registrant(NewRegistrant {
            iin: iin.to_string(),
            full_name: "Абенова Динара".into(),
            phone: format!("+7701{:07}", minute),
            reported_at_ms: 1_700_000_000_000 + minute * 60_000,
            locality_kato: locality.to_string(),
            family_size: 1,
        })
        .await
        .expect("register");
}

async fn status(housing: &Housing, iin: &str) -> (pb::RegistrantStatus, pb::RemovalReason, i32) {
    let registrant = housing.get_registrant(iin).await.expect("get");
    (
        registrant.status(),
        registrant.removal_reason(),
        registrant.family_size,
    )
}

shlyuz_kit::storage_test!(
    each_check_removes_with_its_reason_in_the_seed_order,
    |database: Database| async move {
        let housing = setup(&database).await;
        let names = [
            "clean",
            "privatised",
            "equity",
            "earlier",
            "perm_here",
            "perm_elsewhere",
            "dead_child",
            "foreigner",
            "abroad",
            "incapable",
            "spouse_jailed",
        ];
        let iins: HashMap<&str, String> = names.iter().map(|name| (*name, person(name))).collect();
        let distinct: HashSet<&String> = iins.values().collect();
        assert_eq!(distinct.len(), names.len(), "test IINs collide");
        for (minute, name) in names.iter().enumerate() {
            register(&housing, &iins[name], minute as i64, ASTANA).await;
        }
        let member = |tag: &str| person(&format!("member-{tag}"));

        let mut registries = MemoryRegistries::default();
        registries.families.insert(
            iins["clean"].clone(),
            vec![member("clean-spouse"), member("clean-child")],
        );
        registries.families.insert(
            iins["privatised"].clone(),
            vec![member("privatised-spouse")],
        );
        registries.privatisation.insert(member("privatised-spouse"));
        // Both an equity contract and imprisonment: the earlier check in the seed's order wins.
        registries.equity.insert(iins["equity"].clone());
        registries.imprisoned.insert(iins["equity"].clone());
        registries.earlier_housing.insert(iins["earlier"].clone());
        registries
            .permanent_use
            .insert((iins["perm_here"].clone(), ASTANA.to_string()));
        registries
            .permanent_use
            .insert((iins["perm_elsewhere"].clone(), ALMATY.to_string()));
        registries
            .families
            .insert(iins["dead_child"].clone(), vec![member("dead")]);
        registries.persons.insert(
            member("dead"),
            PersonFacts {
                missing_or_dead: true,
                ..CLEAN
            },
        );
        registries.persons.insert(
            iins["foreigner"].clone(),
            PersonFacts {
                citizen: false,
                ..CLEAN
            },
        );
        registries.persons.insert(
            iins["abroad"].clone(),
            PersonFacts {
                residence_abroad: true,
                ..CLEAN
            },
        );
        registries.persons.insert(
            iins["incapable"].clone(),
            PersonFacts {
                incapable: true,
                ..CLEAN
            },
        );
        registries
            .families
            .insert(iins["spouse_jailed"].clone(), vec![member("jailed")]);
        registries.imprisoned.insert(member("jailed"));

        let report = housing
            .run_review(
                &registries,
                ReviewSettings {
                    persons_per_chunk: 4,
                    concurrency: 2,
                },
            )
            .await
            .expect("review");
        assert_eq!(report.persons_checked, 11);
        assert_eq!(report.persons_removed, 9);
        assert_eq!(report.persons_not_checked, 0);

        use pb::RegistrantStatus::{Active, Removed};
        use pb::RemovalReason as R;
        assert_eq!(
            status(&housing, &iins["clean"]).await,
            (Active, R::Unspecified, 3)
        );
        assert_eq!(
            status(&housing, &iins["perm_elsewhere"]).await,
            (Active, R::Unspecified, 1)
        );
        let expected = [
            ("privatised", R::PrivatisationContract),
            ("equity", R::EquityContract),
            ("earlier", R::EarlierServiceHousing),
            ("perm_here", R::PermanentUseInLocality),
            ("dead_child", R::MissingOrDead),
            ("foreigner", R::NotACitizen),
            ("abroad", R::ResidenceAbroad),
            ("incapable", R::Incapable),
            ("spouse_jailed", R::Imprisoned),
        ];
        for (name, reason) in expected {
            assert_eq!(status(&housing, &iins[name]).await.0, Removed, "{name}");
            assert_eq!(status(&housing, &iins[name]).await.1, reason, "{name}");
        }
        // A person removed at one step is not asked about at the next.
        assert!(!registries.asked_in("equity").contains(&iins["privatised"]));
        assert!(
            registries
                .asked_in("privatisation")
                .contains(&member("privatised-spouse"))
        );
        assert!(!registries.asked_in("persons").contains(&iins["perm_here"]));

        let by_reason: HashMap<i32, i64> = report
            .removals_by_reason
            .iter()
            .map(|count| (count.reason, count.count))
            .collect();
        assert_eq!(by_reason.len(), 9);
        assert!(by_reason.values().all(|count| *count == 1));

        let imprisoned = housing
            .list_removals(&pb::ListRemovalsRequest {
                reason: R::Imprisoned as i32,
                ..Default::default()
            })
            .await
            .expect("removals");
        assert_eq!(imprisoned.removals.len(), 1);
        assert_eq!(imprisoned.removals[0].iin, iins["spouse_jailed"]);
        assert_eq!(imprisoned.removals[0].review_id, report.id);

        let notices: Vec<(String, String, String)> =
            sqlx::query_as("SELECT channel, iin, body FROM outbox ORDER BY id")
                .fetch_all(database.pool())
                .await
                .expect("outbox");
        assert_eq!(notices.len(), 9);
        assert!(notices.iter().all(|(channel, _, body)| channel == "CABINET"
            && body.starts_with("Құрметті көрсетілетін қызметті алушы!")));
        let privatised_notice = notices
            .iter()
            .find(|(_, iin, _)| *iin == iins["privatised"])
            .expect("notice");
        assert!(
            privatised_notice
                .2
                .contains("тұрғынжайды жекешелендіру туралы шарт анықталды")
        );

        let again = housing.get_review(&report.id).await.expect("get review");
        assert_eq!(again.persons_removed, 9);
        let runs = housing
            .list_reviews(&pb::ListReviewsRequest::default())
            .await
            .expect("runs");
        assert_eq!(runs.reviews.len(), 1);
    }
);

shlyuz_kit::storage_test!(
    an_unavailable_registry_removes_nobody,
    |database: Database| async move {
        let housing = setup(&database).await;
        let iin = person("anyone");
        register(&housing, &iin, 1, ASTANA).await;
        let registries = MemoryRegistries {
            fail: true,
            ..Default::default()
        };
        let report = housing
            .run_review(&registries, ReviewSettings::default())
            .await
            .expect("review");
        assert_eq!(report.persons_checked, 0);
        assert_eq!(report.persons_not_checked, 1);
        assert_eq!(report.persons_removed, 0);
        assert_eq!(status(&housing, &iin).await.0, pb::RegistrantStatus::Active);
    }
);

shlyuz_kit::storage_test!(
    removal_withdraws_an_open_offer,
    |database: Database| async move {
        let housing = setup(&database).await;
        let iin = person("offered");
        register(&housing, &iin, 1, ASTANA).await;
        let flat = housing
            .add_dwelling(NewDwelling {
                address: "ул. Бейбитшилик, 4".into(),
                locality_kato: ASTANA.into(),
                rooms: 1,
                total_area_m2: 33.0,
            })
            .await
            .expect("dwelling");
        let offer = housing
            .run_allocation_round()
            .await
            .expect("round")
            .offers_made
            .remove(0);
        let mut registries = MemoryRegistries::default();
        registries.equity.insert(iin.clone());
        housing
            .run_review(&registries, ReviewSettings::default())
            .await
            .expect("review");

        assert_eq!(
            housing
                .get_dwelling(&flat.id)
                .await
                .expect("dwelling")
                .status(),
            pb::DwellingStatus::Free
        );
        let withdrawn = housing
            .list_offers(&pb::ListOffersRequest {
                status: pb::OfferStatus::Withdrawn as i32,
                ..Default::default()
            })
            .await
            .expect("offers");
        assert_eq!(withdrawn.offers.len(), 1);
        assert_eq!(withdrawn.offers[0].id, offer.id);
        let late = housing
            .record_reply(&offer.id, 6521, "+77010000001")
            .await
            .map_err(ApiError::from)
            .unwrap_err();
        assert_eq!(late.reason(), "OFFER_WITHDRAWN");
    }
);
