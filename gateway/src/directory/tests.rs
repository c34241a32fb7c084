//! Loading, validation and lookups of the directory, and the default directory.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use shlyuz_kit::pki::{DevPki, VerifyingKey};

use super::test_fixture::{Fixture, VALID_DIRECTORY, edited};
use super::*;

fn set(items: &[&str]) -> HashSet<String> {
    items.iter().map(|item| item.to_string()).collect()
}

#[test]
fn valid_directory_compiles_into_lookups() {
    let fixture = Fixture::new();
    let directory = fixture.compile(VALID_DIRECTORY).unwrap();

    assert_eq!(
        *directory.settings(),
        Settings {
            max_request_bytes: 1_048_576,
            max_response_bytes: 2_097_152,
            default_timeout: Duration::from_millis(8000),
            replay_window: Duration::from_secs(120),
        }
    );

    let intake = directory.participant("intake").unwrap();
    assert_eq!(intake.name, "Intake");
    assert_eq!(
        intake.quota,
        Some(Quota {
            rate_per_second: 50.0,
            burst: 100
        })
    );
    assert!(!intake.assert_roles);
    assert_eq!(intake.certificate_sha256, None);
    let intake_files = fixture.pki.participant("intake").unwrap();
    assert_eq!(
        intake.signing_key,
        VerifyingKey::from_pem_file(&intake_files.signing_public_key).unwrap()
    );
    let registry = directory.participant("registry").unwrap();
    assert!(registry.assert_roles);
    assert_eq!(registry.quota, None);
    let registry_cert =
        shlyuz_kit::pki::load_certs(&fixture.pki.participant("registry").unwrap().tls_cert)
            .unwrap();
    let expected_sha256 = ring::digest::digest(&ring::digest::SHA256, registry_cert[0].as_ref());
    assert_eq!(
        registry.certificate_sha256.map(|hash| hash.to_vec()),
        Some(expected_sha256.as_ref().to_vec())
    );
    assert!(directory.participant("nobody").is_none());

    let person = directory
        .route("shlyuz.registry.v1.PersonRegistryService")
        .unwrap();
    assert_eq!(person.upstream, "127.0.0.1:7001");
    assert_eq!(person.upstream_server_name, "registry");
    assert_eq!(person.timeout, Duration::from_millis(5000));
    assert!(person.personal_data);
    assert!(!person.is_local());
    assert_eq!(
        person.idempotent_methods,
        set(&["GetPerson", "BatchGetPersons"])
    );
    assert_eq!(person.client_streaming_methods, set(&["StreamPeople"]));
    assert_eq!(
        person.methods,
        vec!["GetPerson", "BatchGetPersons", "StreamPeople"]
    );
    assert_eq!(person.max_request_bytes, 1024);
    assert_eq!(person.max_response_bytes, 2_097_152);
    assert_eq!(
        person.breaker,
        BreakerSettings {
            failure_threshold: 7,
            open_for: Duration::from_millis(9000)
        }
    );
    assert_eq!(
        person.retry,
        RetrySettings {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(20)
        }
    );

    let civil = directory
        .route("shlyuz.registry.v1.CivilRegistryService")
        .unwrap();
    assert_eq!(civil.upstream, "civil.registry.svc:7443");
    assert_eq!(civil.upstream_server_name, "civil.registry.svc");
    assert_eq!(
        civil.timeout,
        Duration::from_millis(8000),
        "the settings' default timeout"
    );
    assert_eq!(civil.max_request_bytes, 1_048_576);
    assert_eq!(civil.breaker, BreakerSettings::default());
    assert_eq!(civil.retry, RetrySettings::default());
    assert_eq!(civil.methods, vec!["GetFamily".to_string()]);

    let local = directory
        .route("shlyuz.gateway.v1.DirectoryService")
        .unwrap();
    assert!(local.is_local());
    assert_eq!(local.upstream, LOCAL_UPSTREAM);
    assert_eq!(local.upstream_server_name, "");
    assert!(directory.route("shlyuz.registry.v1.Unknown").is_none());

    let participant_ids: Vec<&str> = directory
        .participants()
        .map(|participant| participant.id.as_str())
        .collect();
    assert_eq!(participant_ids, vec!["intake", "ops", "registry"]);
    let route_names: Vec<&str> = directory
        .routes()
        .map(|route| route.service.as_str())
        .collect();
    assert_eq!(
        route_names,
        vec![
            "shlyuz.gateway.v1.DirectoryService",
            "shlyuz.registry.v1.CivilRegistryService",
            "shlyuz.registry.v1.PersonRegistryService",
        ]
    );
    let purpose_codes: Vec<&str> = directory
        .purposes()
        .map(|purpose| purpose.code.as_str())
        .collect();
    assert_eq!(purpose_codes, vec!["MILITARY_RECRUITMENT", "OPERATIONS"]);
}

#[test]
fn method_specific_rule_wins_over_wildcard() {
    let fixture = Fixture::new();
    let directory = fixture.compile(VALID_DIRECTORY).unwrap();
    let person = "shlyuz.registry.v1.PersonRegistryService";

    let specific = directory.rule("intake", person, "GetPerson").unwrap();
    assert_eq!(
        *specific,
        AccessRule {
            purposes: set(&["MILITARY_RECRUITMENT"]),
            consent_required: true,
        }
    );
    let wildcard = directory.rule("intake", person, "BatchGetPersons").unwrap();
    assert_eq!(
        *wildcard,
        AccessRule {
            purposes: set(&["MILITARY_RECRUITMENT", "OPERATIONS"]),
            consent_required: false,
        }
    );
    // `*` covers methods the service does not list too: the upstream answers UNIMPLEMENTED.
    assert!(directory.rule("intake", person, "SomethingNew").is_some());

    let directory_service = "shlyuz.gateway.v1.DirectoryService";
    assert!(
        directory
            .rule("ops", directory_service, "ListServices")
            .is_some()
    );
    assert!(
        directory
            .rule("ops", directory_service, "ListParticipants")
            .is_none()
    );
    assert!(directory.rule("ops", person, "GetPerson").is_none());
    assert!(directory.rule("registry", person, "GetPerson").is_none());
    assert!(directory.rule("nobody", person, "GetPerson").is_none());
}

#[test]
fn allowed_methods_expand_wildcards_and_are_sorted() {
    let fixture = Fixture::new();
    let directory = fixture.compile(VALID_DIRECTORY).unwrap();
    let allowed_method =
        |service: &str, method: &str, purposes: &[&str], consent_required: bool| AllowedMethod {
            service: service.to_string(),
            method: method.to_string(),
            purposes: purposes.iter().map(|purpose| purpose.to_string()).collect(),
            consent_required,
        };
    let person = "shlyuz.registry.v1.PersonRegistryService";
    assert_eq!(
        directory.allowed_methods("intake"),
        vec![
            allowed_method(
                person,
                "BatchGetPersons",
                &["MILITARY_RECRUITMENT", "OPERATIONS"],
                false
            ),
            allowed_method(person, "GetPerson", &["MILITARY_RECRUITMENT"], true),
            allowed_method(
                person,
                "StreamPeople",
                &["MILITARY_RECRUITMENT", "OPERATIONS"],
                false
            ),
        ]
    );
    assert_eq!(
        directory.allowed_methods("ops"),
        vec![
            allowed_method(
                "shlyuz.gateway.v1.DirectoryService",
                "ListServices",
                &[],
                false
            ),
            // A `*` rule grants the methods the service lists, and only those.
            allowed_method(
                "shlyuz.registry.v1.CivilRegistryService",
                "GetFamily",
                &[],
                false
            ),
        ]
    );
    assert!(directory.allowed_methods("registry").is_empty());
    assert!(directory.allowed_methods("nobody").is_empty());
}

#[test]
fn settings_default_when_absent() {
    let fixture = Fixture::new();
    let without_settings = edited(
        VALID_DIRECTORY,
        "[settings]\nmax_request_bytes = 1048576\nmax_response_bytes = 2097152\ndefault_timeout_ms = 8000\nreplay_window_secs = 120\n",
        "",
    );
    let directory = fixture.compile(&without_settings).unwrap();
    assert_eq!(*directory.settings(), Settings::default());
    assert_eq!(directory.settings().replay_window, Duration::from_secs(300));
    let civil = directory
        .route("shlyuz.registry.v1.CivilRegistryService")
        .unwrap();
    assert_eq!(civil.timeout, Duration::from_secs(10));
    assert_eq!(civil.max_response_bytes, 4 * 1024 * 1024);
}

#[test]
fn relative_key_paths_resolve_against_the_file_folder() {
    let fixture = Fixture::new();
    let path = fixture.write_directory(VALID_DIRECTORY);
    // The process's working directory is not the fixture folder, so only the file's folder can
    // make `pki/intake/signing.pub` resolve.
    assert_ne!(std::env::current_dir().unwrap(), fixture.path());
    let directory = Directory::load(&path, &Fixture::targets()).unwrap();
    let intake_files = fixture.pki.participant("intake").unwrap();
    assert_eq!(
        directory.participant("intake").unwrap().signing_key,
        VerifyingKey::from_pem_file(&intake_files.signing_public_key).unwrap()
    );
    assert_eq!(directory.source_file(), Some(path.as_path()));

    // Absolute paths are taken as they are.
    let absolute = edited(
        VALID_DIRECTORY,
        "signing_public_key = \"pki/intake/signing.pub\"",
        &format!(
            "signing_public_key = {:?}",
            intake_files.signing_public_key.display().to_string()
        ),
    );
    let elsewhere = tempfile::tempdir().unwrap();
    let moved_directory =
        Directory::from_toml_str(&absolute, elsewhere.path(), &Fixture::targets());
    let problems = moved_directory.unwrap_err().problems();
    assert!(
        problems
            .iter()
            .all(|problem| !problem.starts_with("participants[0].")),
        "{problems:?}"
    );
}

#[test]
fn missing_file_is_a_read_error_naming_the_file() {
    let fixture = Fixture::new();
    let missing = fixture.path().join("absent.toml");
    let error = Directory::load(&missing, &Fixture::targets()).unwrap_err();
    assert!(matches!(error, DirectoryError::Read { .. }), "{error:?}");
    assert!(error.to_string().contains("absent.toml"), "{error}");
}

#[test]
fn syntax_errors_name_the_key() {
    let fixture = Fixture::new();
    let unknown_key = edited(VALID_DIRECTORY, "name = \"Intake\"", "nmae = \"Intake\"");
    let unknown_key_error = fixture.compile(&unknown_key).unwrap_err();
    assert!(
        matches!(unknown_key_error, DirectoryError::Syntax { .. }),
        "{unknown_key_error:?}"
    );
    assert!(
        unknown_key_error.to_string().contains("nmae"),
        "{unknown_key_error}"
    );

    let wrong_type = edited(
        VALID_DIRECTORY,
        "personal_data = true",
        "personal_data = \"yes\"",
    );
    let wrong_type_error = fixture.compile(&wrong_type).unwrap_err();
    assert!(
        matches!(wrong_type_error, DirectoryError::Syntax { .. }),
        "{wrong_type_error:?}"
    );
    assert!(
        wrong_type_error.to_string().contains("personal_data"),
        "{wrong_type_error}"
    );

    let not_toml = fixture.compile("[[participants]\nid = ").unwrap_err();
    assert!(
        matches!(not_toml, DirectoryError::Syntax { .. }),
        "{not_toml:?}"
    );
}

/// One invalid variation of [`VALID_DIRECTORY`] and a problem it must produce.
struct Case {
    original: &'static str,
    replacement: &'static str,
    /// The problem starts with the entry and key, e.g. `rules[3].purposes: `.
    location: &'static str,
    /// And contains this.
    message: &'static str,
}

const fn case(
    original: &'static str,
    replacement: &'static str,
    location: &'static str,
    message: &'static str,
) -> Case {
    Case {
        original,
        replacement,
        location,
        message,
    }
}

fn validation_cases() -> Vec<Case> {
    vec![
        // settings
        case(
            "default_timeout_ms = 8000",
            "default_timeout_ms = 0",
            "settings.default_timeout_ms",
            "must be positive, got 0",
        ),
        case(
            "max_request_bytes = 1048576",
            "max_request_bytes = -1",
            "settings.max_request_bytes",
            "must be positive, got -1",
        ),
        case(
            "max_response_bytes = 2097152",
            "max_response_bytes = 5000000000",
            "settings.max_response_bytes",
            "must be at most 4294967295",
        ),
        case(
            "replay_window_secs = 120",
            "replay_window_secs = 0",
            "settings.replay_window_secs",
            "must be positive",
        ),
        // participants
        case(
            "id = \"intake\"",
            "id = \"Intake_1\"",
            "participants[0].id",
            "participant id \"Intake_1\" must contain only a-z, 0-9 and '-'",
        ),
        case(
            "id = \"intake\"",
            "id = \"-intake\"",
            "participants[0].id",
            "must not start or end with '-'",
        ),
        case(
            "id = \"registry\"",
            "id = \"intake\"",
            "participants[1].id",
            "participant \"intake\" is already declared by participants[0]",
        ),
        case("id = \"ops\"\n", "\n", "participants[2].id", "is required"),
        case(
            "name = \"Intake\"",
            "",
            "participants[0].name",
            "is required",
        ),
        case(
            "name = \"Intake\"",
            "name = \" \"",
            "participants[0].name",
            "must not be empty",
        ),
        case(
            "signing_public_key = \"pki/intake/signing.pub\"",
            "",
            "participants[0].signing_public_key",
            "is required",
        ),
        case(
            "signing_public_key = \"pki/intake/signing.pub\"",
            "signing_public_key = \"pki/nobody/signing.pub\"",
            "participants[0].signing_public_key",
            "pki/nobody/signing.pub does not exist",
        ),
        case(
            "signing_public_key = \"pki/intake/signing.pub\"",
            "signing_public_key = \"pki/intake/tls.pem\"",
            "participants[0].signing_public_key",
            "pki/intake/tls.pem",
        ),
        case(
            "certificate = \"pki/registry/tls.pem\"",
            "certificate = \"pki/intake/tls.pem\"",
            "participants[1].certificate",
            "belongs to participant \"intake\", not \"registry\"",
        ),
        case(
            "certificate = \"pki/registry/tls.pem\"",
            "certificate = \"pki/registry/missing.pem\"",
            "participants[1].certificate",
            "pki/registry/missing.pem does not exist",
        ),
        case(
            "certificate = \"pki/registry/tls.pem\"",
            "certificate = \"pki/registry/signing.pub\"",
            "participants[1].certificate",
            "no PEM certificate found",
        ),
        case(
            "rate_per_second = 50.0",
            "rate_per_second = 0.0",
            "participants[0].quota.rate_per_second",
            "must be a positive number, got 0",
        ),
        case(
            "rate_per_second = 50.0",
            "rate_per_second = -3",
            "participants[0].quota.rate_per_second",
            "must be a positive number, got -3",
        ),
        case(
            "rate_per_second = 50.0, ",
            "",
            "participants[0].quota.rate_per_second",
            "is required",
        ),
        case(
            "burst = 100",
            "burst = 0",
            "participants[0].quota.burst",
            "must be between 1 and 4294967295, got 0",
        ),
        // purposes
        case(
            "code = \"OPERATIONS\"",
            "code = \"MILITARY_RECRUITMENT\"",
            "purposes[1].code",
            "purpose \"MILITARY_RECRUITMENT\" is already declared by purposes[0]",
        ),
        case(
            "code = \"OPERATIONS\"",
            "code = \"OPS-1\"",
            "purposes[1].code",
            "must be 1 to 64 characters of A-Z, a-z, 0-9 and _",
        ),
        case(
            "code = \"OPERATIONS\"",
            "description = \"ops\"",
            "purposes[1].code",
            "is required",
        ),
        // services
        case(
            "name = \"shlyuz.registry.v1.CivilRegistryService\"",
            "name = \"CivilRegistryService\"",
            "services[1].name",
            "is not a fully qualified gRPC service name",
        ),
        case(
            "name = \"shlyuz.registry.v1.CivilRegistryService\"",
            "name = \"shlyuz.registry.v1/Civil\"",
            "services[1].name",
            "is not a fully qualified gRPC service name",
        ),
        case(
            "name = \"shlyuz.registry.v1.CivilRegistryService\"",
            "name = \"shlyuz.registry.v1.PersonRegistryService\"",
            "services[1].name",
            "service \"shlyuz.registry.v1.PersonRegistryService\" is already declared by services[0]",
        ),
        case(
            "upstream = \"target:registry\"",
            "",
            "services[0].upstream",
            "is required",
        ),
        case(
            "upstream = \"target:registry\"",
            "upstream = \"target:housing\"",
            "services[0].upstream",
            "target \"housing\" is not known (known targets: registry)",
        ),
        case(
            "upstream = \"target:registry\"",
            "upstream = \"target:\"",
            "services[0].upstream",
            "a target name is required",
        ),
        case(
            "upstream = \"civil.registry.svc:7443\"",
            "upstream = \"https://civil.registry.svc:7443\"",
            "services[1].upstream",
            "is not host:port, target:<name> or \"local\"",
        ),
        case(
            "upstream = \"civil.registry.svc:7443\"",
            "upstream = \"civil.registry.svc\"",
            "services[1].upstream",
            "is not host:port",
        ),
        case(
            "upstream = \"civil.registry.svc:7443\"",
            "upstream = \"civil.registry.svc:0\"",
            "services[1].upstream",
            "port \"0\"",
        ),
        case(
            "upstream = \"local\"",
            "upstream = \"local\"\nupstream_server_name = \"gateway\"",
            "services[2].upstream_server_name",
            "served by the gateway itself",
        ),
        case(
            "timeout_ms = 5000",
            "timeout_ms = 0",
            "services[0].timeout_ms",
            "must be positive, got 0",
        ),
        case(
            "personal_data = true",
            "",
            "services[0].personal_data",
            "is required",
        ),
        case(
            "idempotent_methods = [\"GetPerson\", \"BatchGetPersons\"]",
            "idempotent_methods = [\"GetPerson\", \"DeletePerson\"]",
            "services[0].idempotent_methods",
            "method \"DeletePerson\" is not in the service's methods",
        ),
        case(
            "client_streaming_methods = [\"StreamPeople\"]",
            "client_streaming_methods = [\"UploadPeople\"]",
            "services[0].client_streaming_methods",
            "method \"UploadPeople\" is not in the service's methods",
        ),
        case(
            "client_streaming_methods = [\"StreamPeople\"]",
            "client_streaming_methods = [\"StreamPeople\"]\nserver_streaming_methods = [\"WatchPeople\"]",
            "services[0].server_streaming_methods",
            "method \"WatchPeople\" is not in the service's methods",
        ),
        case(
            "methods = [\"GetFamily\"]",
            "",
            "services[1].methods",
            "must list every method the gateway forwards",
        ),
        case(
            "methods = [\"GetPerson\", \"BatchGetPersons\", \"StreamPeople\"]",
            "methods = [\"GetPerson\", \"BatchGetPersons\", \"StreamPeople\", \"GetPerson\"]",
            "services[0].methods",
            "method \"GetPerson\" is listed twice",
        ),
        case(
            "methods = [\"GetPerson\", \"BatchGetPersons\", \"StreamPeople\"]",
            "methods = [\"GetPerson\", \"BatchGetPersons\", \"StreamPeople\", \"Get Person\"]",
            "services[0].methods",
            "\"Get Person\" is not a gRPC method name",
        ),
        case(
            "max_request_bytes = 1024",
            "max_request_bytes = 0",
            "services[0].max_request_bytes",
            "must be positive, got 0",
        ),
        case(
            "failure_threshold = 7",
            "failure_threshold = 0",
            "services[0].breaker.failure_threshold",
            "must be positive, got 0",
        ),
        case(
            "open_ms = 9000",
            "open_ms = -1",
            "services[0].breaker.open_ms",
            "must be positive, got -1",
        ),
        case(
            "max_attempts = 4",
            "max_attempts = 0",
            "services[0].retry.max_attempts",
            "must be positive, got 0",
        ),
        case(
            "initial_backoff_ms = 20",
            "initial_backoff_ms = 0",
            "services[0].retry.initial_backoff_ms",
            "must be positive, got 0",
        ),
    ]
}

/// A rule appended to the fixture (which has four): the problem is about `rules[4]`.
struct RuleCase {
    lines: &'static [&'static str],
    location: &'static str,
    message: &'static str,
}

const PERSON_SERVICE_LINE: &str = r#"service = "shlyuz.registry.v1.PersonRegistryService""#;

fn rule_cases() -> Vec<RuleCase> {
    vec![
        RuleCase {
            lines: &[
                r#"participant = "sdu""#,
                r#"service = "shlyuz.gateway.v1.DirectoryService""#,
                r#"methods = ["*"]"#,
            ],
            location: "rules[4].participant",
            message: "participant \"sdu\" is not declared",
        },
        RuleCase {
            lines: &[
                r#"service = "shlyuz.gateway.v1.DirectoryService""#,
                r#"methods = ["*"]"#,
            ],
            location: "rules[4].participant",
            message: "is required",
        },
        RuleCase {
            lines: &[
                r#"participant = "ops""#,
                r#"service = "shlyuz.housing.v1.HousingService""#,
                r#"methods = ["*"]"#,
            ],
            location: "rules[4].service",
            message: "service \"shlyuz.housing.v1.HousingService\" is not declared",
        },
        RuleCase {
            lines: &[r#"participant = "ops""#, r#"methods = ["*"]"#],
            location: "rules[4].service",
            message: "is required",
        },
        RuleCase {
            lines: &[
                r#"participant = "registry""#,
                PERSON_SERVICE_LINE,
                r#"methods = ["GetPerson"]"#,
                r#"purposes = ["X"]"#,
            ],
            location: "rules[4].purposes",
            message: "purpose \"X\" is not declared",
        },
        RuleCase {
            lines: &[
                r#"participant = "registry""#,
                PERSON_SERVICE_LINE,
                r#"methods = ["GetPerson"]"#,
                r#"purposes = ["OPERATIONS", "OPERATIONS"]"#,
            ],
            location: "rules[4].purposes",
            message: "purpose \"OPERATIONS\" is listed twice",
        },
        RuleCase {
            lines: &[
                r#"participant = "registry""#,
                PERSON_SERVICE_LINE,
                r#"methods = ["GetPerson"]"#,
            ],
            location: "rules[4].purposes",
            message: "must name at least one purpose because service shlyuz.registry.v1.PersonRegistryService carries personal data",
        },
        RuleCase {
            lines: &[
                r#"participant = "registry""#,
                r#"service = "shlyuz.registry.v1.CivilRegistryService""#,
                r#"methods = ["*"]"#,
                "consent_required = true",
            ],
            location: "rules[4].consent_required",
            message: "carries no personal data",
        },
        RuleCase {
            lines: &[
                r#"participant = "registry""#,
                PERSON_SERVICE_LINE,
                r#"methods = ["DeletePerson"]"#,
                r#"purposes = ["OPERATIONS"]"#,
            ],
            location: "rules[4].methods",
            message: "method \"DeletePerson\" is not in the service's methods",
        },
        RuleCase {
            lines: &[
                r#"participant = "registry""#,
                PERSON_SERVICE_LINE,
                "methods = []",
                r#"purposes = ["OPERATIONS"]"#,
            ],
            location: "rules[4].methods",
            message: "must not be empty",
        },
        RuleCase {
            lines: &[
                r#"participant = "registry""#,
                PERSON_SERVICE_LINE,
                r#"purposes = ["OPERATIONS"]"#,
            ],
            location: "rules[4].methods",
            message: "is required",
        },
        RuleCase {
            lines: &[
                r#"participant = "registry""#,
                PERSON_SERVICE_LINE,
                r#"methods = ["*", "GetPerson"]"#,
                r#"purposes = ["OPERATIONS"]"#,
            ],
            location: "rules[4].methods",
            message: "cannot be combined with method names",
        },
        RuleCase {
            lines: &[
                r#"participant = "intake""#,
                PERSON_SERVICE_LINE,
                r#"methods = ["GetPerson"]"#,
                r#"purposes = ["OPERATIONS"]"#,
            ],
            location: "rules[4].methods",
            message: "participant \"intake\" already has a rule for shlyuz.registry.v1.PersonRegistryService/GetPerson in rules[1]",
        },
        RuleCase {
            lines: &[
                r#"participant = "ops""#,
                r#"service = "shlyuz.registry.v1.CivilRegistryService""#,
                r#"methods = ["*"]"#,
            ],
            location: "rules[4].methods",
            message: "already has a rule for shlyuz.registry.v1.CivilRegistryService/* in rules[2]",
        },
    ]
}

#[test]
fn every_validation_problem_names_the_entry_and_key() {
    let fixture = Fixture::new();
    let mut failures = Vec::new();
    let edits = validation_cases().into_iter().map(|case| {
        (
            edited(VALID_DIRECTORY, case.original, case.replacement),
            case.location,
            case.message,
        )
    });
    let appended_rules = rule_cases().into_iter().map(|case| {
        let text = format!("{VALID_DIRECTORY}\n[[rules]]\n{}\n", case.lines.join("\n"));
        (text, case.location, case.message)
    });
    for (text, location, message) in edits.chain(appended_rules) {
        let problems = match fixture.compile(&text) {
            Err(DirectoryError::Invalid { problems }) => problems,
            other => {
                failures.push(format!(
                    "{location} ({message}): expected problems, got {other:?}"
                ));
                continue;
            }
        };
        let prefix = format!("{location}: ");
        let found = problems
            .iter()
            .any(|problem| problem.starts_with(&prefix) && problem.contains(message));
        if !found {
            failures.push(format!("{location} ({message}): not among {problems:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn all_problems_are_collected_not_just_the_first() {
    let fixture = Fixture::new();
    let with_three_problems = edited(
        &edited(
            &edited(
                VALID_DIRECTORY,
                "default_timeout_ms = 8000",
                "default_timeout_ms = 0",
            ),
            "name = \"Operations\"",
            "",
        ),
        "upstream = \"target:registry\"",
        "upstream = \"target:housing\"",
    );
    let problems = fixture.problems(&with_three_problems);
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(
        problems[0].starts_with("settings.default_timeout_ms: "),
        "{problems:?}"
    );
    assert!(
        problems[1].starts_with("participants[2].name: "),
        "{problems:?}"
    );
    assert!(
        problems[2].starts_with("services[0].upstream: "),
        "{problems:?}"
    );

    let error = fixture.compile(&with_three_problems).unwrap_err();
    assert_eq!(error.problems(), problems);
    assert!(
        error
            .to_string()
            .starts_with("directory has 3 problem(s): settings.default_timeout_ms"),
        "{error}"
    );
}

#[test]
fn a_failing_entry_does_not_cascade_into_rules() {
    let fixture = Fixture::new();
    // The participant's key is broken, but it is still declared: rules naming it are not blamed.
    let broken_key = edited(
        VALID_DIRECTORY,
        "signing_public_key = \"pki/ops/signing.pub\"",
        "signing_public_key = \"pki/ops/missing.pub\"",
    );
    let problems = fixture.problems(&broken_key);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("participants[2].signing_public_key: "),
        "{problems:?}"
    );
}

#[test]
fn unresolvable_target_without_resolver() {
    let fixture = Fixture::new();
    let error = Directory::from_toml_str(VALID_DIRECTORY, fixture.path(), &TargetResolver::none())
        .unwrap_err();
    let problems = error.problems();
    assert_eq!(
        problems,
        vec![
            "services[0].upstream: target \"registry\" is not known (no targets are known in this deployment; use host:port)"
                .to_string()
        ]
    );
}

#[test]
fn ipv6_upstream_uses_the_address_as_server_name() {
    let fixture = Fixture::new();
    let ipv6 = edited(
        VALID_DIRECTORY,
        "upstream = \"civil.registry.svc:7443\"",
        "upstream = \"[::1]:7443\"",
    );
    let directory = fixture.compile(&ipv6).unwrap();
    let civil = directory
        .route("shlyuz.registry.v1.CivilRegistryService")
        .unwrap();
    assert_eq!(civil.upstream, "[::1]:7443");
    assert_eq!(civil.upstream_server_name, "::1");

    let explicit = edited(
        VALID_DIRECTORY,
        "upstream = \"civil.registry.svc:7443\"",
        "upstream = \"10.1.2.3:7443\"\nupstream_server_name = \"civil-registry\"",
    );
    let explicit_directory = fixture.compile(&explicit).unwrap();
    let explicit_civil = explicit_directory
        .route("shlyuz.registry.v1.CivilRegistryService")
        .unwrap();
    assert_eq!(explicit_civil.upstream_server_name, "civil-registry");
}

#[test]
fn an_empty_file_is_an_empty_directory() {
    let fixture = Fixture::new();
    let directory = fixture.compile("").unwrap();
    assert_eq!(directory.participants().count(), 0);
    assert_eq!(directory.routes().count(), 0);
    assert_eq!(*directory.settings(), Settings::default());
}

#[test]
fn debug_output_is_a_summary() {
    let fixture = Fixture::new();
    let directory = fixture.compile(VALID_DIRECTORY).unwrap();
    let debug = format!("{directory:?}");
    assert!(
        debug.contains("participants: [\"intake\", \"ops\", \"registry\"]"),
        "{debug}"
    );
    assert!(debug.contains("method_rules: 4"), "{debug}");
}

const DEFAULT_PARTICIPANTS: [&str; 8] = [
    "gateway",
    "registry",
    "notify",
    "intake",
    "housing",
    "jauynger-portal",
    "sdu",
    "ops",
];

/// Proto packages whose services the default directory does not route: the gateway tests' echo
/// upstream and the test clock of `shlyuz up --test-clock`.
const UNROUTED_PACKAGES: [&str; 2] = ["shlyuz.echo.v1", "shlyuz.testing.v1"];

/// Every gRPC service of the Shlyuz protos (`package.Service`), with its package and methods.
fn proto_services() -> HashMap<String, (String, HashSet<String>)> {
    use prost::Message;
    let descriptors =
        prost_types::FileDescriptorSet::decode(shlyuz_proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut services = HashMap::new();
    for file in &descriptors.file {
        for service in &file.service {
            let methods = service
                .method
                .iter()
                .map(|method| method.name().to_string())
                .collect();
            services.insert(
                format!("{}.{}", file.package(), service.name()),
                (file.package().to_string(), methods),
            );
        }
    }
    services
}

/// The default directory routes every service of the protos (but [`UNROUTED_PACKAGES`]), each to
/// where its package is served — `shlyuz.gateway.v1` locally, `shlyuz.<target>.v1` to that
/// target — and lists only methods the service has. Derived rather than counted, so a service
/// added to a proto and routed in the default directory needs no change here.
fn assert_routes_match_the_protos(directory: &Directory, targets: &TargetResolver) {
    let protos = proto_services();
    for (service, (package, _)) in &protos {
        if UNROUTED_PACKAGES.contains(&package.as_str()) {
            assert!(directory.route(service).is_none(), "{service} is test-only");
        } else {
            assert!(
                directory.route(service).is_some(),
                "{service} is in the protos but has no [[services]] route in default-directory.toml"
            );
        }
    }
    for route in directory.routes() {
        let Some((package, methods)) = protos.get(&route.service) else {
            panic!("{} is routed but is in no proto", route.service);
        };
        for method in &route.methods {
            assert!(
                methods.contains(method),
                "{}/{method} is listed but the proto has no such method",
                route.service
            );
        }
        let target = package
            .strip_prefix("shlyuz.")
            .and_then(|rest| rest.strip_suffix(".v1"))
            .unwrap();
        if target == "gateway" {
            assert!(route.is_local(), "{} is the gateway's own", route.service);
        } else {
            assert_eq!(
                Some(route.upstream.as_str()),
                targets.resolve(target),
                "{} goes to target:{target}",
                route.service
            );
        }
    }
}

#[test]
fn default_directory_loads_against_a_dev_pki() {
    let data_dir = tempfile::tempdir().unwrap();
    DevPki::ensure(&data_dir.path().join("pki"), &DEFAULT_PARTICIPANTS).unwrap();
    let path = write_default_if_missing(data_dir.path()).unwrap();
    assert_eq!(path, data_dir.path().join("gateway-directory.toml"));

    // The service routes name `target:<service>`, which `shlyuz up` resolves.
    let targets = TargetResolver::new(HashMap::from([
        ("registry".to_string(), "127.0.0.1:50052".to_string()),
        ("notify".to_string(), "127.0.0.1:50053".to_string()),
        ("intake".to_string(), "127.0.0.1:50054".to_string()),
        ("housing".to_string(), "127.0.0.1:50055".to_string()),
    ]));
    let directory = Directory::load(&path, &targets).unwrap();
    let mut expected_ids = DEFAULT_PARTICIPANTS.to_vec();
    expected_ids.sort_unstable();
    let participant_ids: Vec<&str> = directory
        .participants()
        .map(|participant| participant.id.as_str())
        .collect();
    assert_eq!(participant_ids, expected_ids);
    assert_eq!(
        directory.participant("jauynger-portal").unwrap().name,
        "Jauynger.gov.kz portal"
    );
    assert_eq!(
        directory.participant("sdu").unwrap().name,
        "Smart Data Ukimet"
    );
    assert_eq!(directory.participant("ops").unwrap().name, "Operations");
    let purpose_codes: HashSet<&str> = directory
        .purposes()
        .map(|purpose| purpose.code.as_str())
        .collect();
    assert_eq!(
        purpose_codes,
        HashSet::from([
            "MILITARY_RECRUITMENT",
            "HOUSING_ALLOCATION",
            "HOUSING_REGISTER_REVIEW",
            "CITIZEN_NOTIFICATION",
            "PERSONAL_DATA_CONSENT",
            "SUBJECT_ACCESS_REPORT",
            "DIGITAL_SIGNATURE",
            "OPERATIONS",
        ])
    );
    assert_routes_match_the_protos(&directory, &targets);
    assert!(
        directory
            .participant("jauynger-portal")
            .unwrap()
            .assert_roles
    );
    assert!(directory.participant("sdu").unwrap().assert_roles);
    assert!(!directory.participant("housing").unwrap().assert_roles);
    let housing_review = directory
        .rule(
            "housing",
            "shlyuz.registry.v1.StatePropertyRegistryService",
            "BatchListPrivatisationContracts",
        )
        .unwrap();
    assert!(housing_review.purposes.contains("HOUSING_REGISTER_REVIEW"));
    let async_channel = "shlyuz.gateway.v1.AsyncChannelService";
    for participant in DEFAULT_PARTICIPANTS
        .iter()
        .filter(|participant| **participant != "gateway")
    {
        assert!(
            directory
                .rule(participant, async_channel, "SendMessage")
                .is_some(),
            "{participant} may use the async channel"
        );
    }
    assert!(
        directory
            .participant("housing")
            .unwrap()
            .accepts_messages_from("notify")
    );
    assert!(
        !directory
            .participant("housing")
            .unwrap()
            .accepts_messages_from("sdu")
    );

    let directory_service = "shlyuz.gateway.v1.DirectoryService";
    let message_log = "shlyuz.gateway.v1.MessageLogService";
    let access_log = "shlyuz.gateway.v1.AccessLogService";
    for participant in DEFAULT_PARTICIPANTS {
        assert!(
            directory
                .rule(participant, directory_service, "ListAllowedMethods")
                .is_some(),
            "{participant} may read the directory"
        );
        let may_audit = participant == "ops";
        assert_eq!(
            directory
                .rule(participant, message_log, "VerifyChain")
                .is_some(),
            may_audit,
            "{participant}"
        );
    }
    let portal_rule = directory
        .rule("jauynger-portal", access_log, "ListSubjectAccess")
        .unwrap();
    assert_eq!(portal_rule.purposes, set(&["SUBJECT_ACCESS_REPORT"]));
    assert!(!portal_rule.consent_required);
    assert!(directory.route(access_log).unwrap().personal_data);
    assert!(
        directory
            .rule("ops", access_log, "ListSubjectAccess")
            .is_some()
    );
    assert!(
        directory
            .rule("sdu", access_log, "ListSubjectAccess")
            .is_none()
    );
}

#[test]
fn default_directory_is_never_overwritten() {
    let data_dir = tempfile::tempdir().unwrap();
    let path = data_dir.path().join("gateway-directory.toml");
    std::fs::write(&path, "# edited by the operator\n").unwrap();

    let returned = write_default_if_missing(data_dir.path()).unwrap();

    assert_eq!(returned, path);
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "# edited by the operator\n"
    );
    let leftovers: Vec<String> = std::fs::read_dir(data_dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(leftovers, vec!["gateway-directory.toml".to_string()]);
}

#[test]
fn default_directory_is_written_into_a_new_data_dir() {
    let parent = tempfile::tempdir().unwrap();
    let data_dir = parent.path().join("var");
    let path = write_default_if_missing(&data_dir).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), DEFAULT_DIRECTORY);
    let entries = std::fs::read_dir(&data_dir).unwrap().count();
    assert_eq!(entries, 1, "no temporary file is left behind");
}

#[test]
fn the_documented_example_is_valid() {
    let documentation = include_str!("../../../docs/gateway-directory.md");
    let example_start = documentation.find("## A complete example").unwrap();
    let example = &documentation[example_start..];
    let toml_start = example.find("```toml\n").unwrap() + "```toml\n".len();
    let toml_length = example[toml_start..].find("```").unwrap();
    let example_toml = &example[toml_start..toml_start + toml_length];

    let data_dir = tempfile::tempdir().unwrap();
    DevPki::ensure(
        &data_dir.path().join("pki"),
        &["jauynger-portal", "intake", "ops"],
    )
    .unwrap();
    let directory =
        Directory::from_toml_str(example_toml, data_dir.path(), &Fixture::targets()).unwrap();

    let person = "shlyuz.registry.v1.PersonRegistryService";
    assert!(
        directory
            .rule("intake", person, "GetPerson")
            .unwrap()
            .consent_required
    );
    assert!(
        !directory
            .rule("intake", person, "BatchGetPersons")
            .unwrap()
            .consent_required
    );
    assert!(
        directory
            .participant("jauynger-portal")
            .unwrap()
            .certificate_sha256
            .is_some()
    );
}
