//! A development PKI in a temporary folder and a valid directory file that uses it, shared by the
//! directory's tests.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use shlyuz_kit::pki::DevPki;

use super::{Directory, DirectoryError, TargetResolver};

/// Participants with keys in the fixture's PKI.
pub(super) const FIXTURE_PARTICIPANTS: [&str; 4] = ["intake", "registry", "ops", "jauynger-portal"];

/// A valid directory exercising every key; relative key paths point into the fixture's PKI.
pub(super) const VALID_DIRECTORY: &str = r#"
[settings]
max_request_bytes = 1048576
max_response_bytes = 2097152
default_timeout_ms = 8000
replay_window_secs = 120

[[participants]]
id = "intake"
name = "Intake"
signing_public_key = "pki/intake/signing.pub"
quota = { rate_per_second = 50.0, burst = 100 }

[[participants]]
id = "registry"
name = "Registry"
signing_public_key = "pki/registry/signing.pub"
certificate = "pki/registry/tls.pem"
assert_roles = true

[[participants]]
id = "ops"
name = "Operations"
signing_public_key = "pki/ops/signing.pub"

[[purposes]]
code = "MILITARY_RECRUITMENT"
description = "recruitment"

[[purposes]]
code = "OPERATIONS"

[[services]]
name = "shlyuz.registry.v1.PersonRegistryService"
upstream = "target:registry"
timeout_ms = 5000
personal_data = true
methods = ["GetPerson", "BatchGetPersons", "StreamPeople"]
idempotent_methods = ["GetPerson", "BatchGetPersons"]
client_streaming_methods = ["StreamPeople"]
max_request_bytes = 1024
breaker = { failure_threshold = 7, open_ms = 9000 }
retry = { max_attempts = 4, initial_backoff_ms = 20 }

[[services]]
name = "shlyuz.registry.v1.CivilRegistryService"
upstream = "civil.registry.svc:7443"
personal_data = false
methods = ["GetFamily"]

[[services]]
name = "shlyuz.gateway.v1.DirectoryService"
upstream = "local"
personal_data = false
methods = ["ListParticipants", "ListServices", "ListAllowedMethods"]

[[rules]]
participant = "intake"
service = "shlyuz.registry.v1.PersonRegistryService"
methods = ["*"]
purposes = ["MILITARY_RECRUITMENT", "OPERATIONS"]

[[rules]]
participant = "intake"
service = "shlyuz.registry.v1.PersonRegistryService"
methods = ["GetPerson"]
purposes = ["MILITARY_RECRUITMENT"]
consent_required = true

[[rules]]
participant = "ops"
service = "shlyuz.registry.v1.CivilRegistryService"
methods = ["*"]

[[rules]]
participant = "ops"
service = "shlyuz.gateway.v1.DirectoryService"
methods = ["ListServices"]
"#;

/// A temporary folder with a development PKI under `pki/`.
pub(super) struct Fixture {
    pub(super) dir: tempfile::TempDir,
    pub(super) pki: DevPki,
}

impl Fixture {
    pub(super) fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let pki = DevPki::ensure(&dir.path().join("pki"), &FIXTURE_PARTICIPANTS).unwrap();
        Fixture { dir, pki }
    }

    pub(super) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Resolves `target:registry` only.
    pub(super) fn targets() -> TargetResolver {
        TargetResolver::new(HashMap::from([(
            "registry".to_string(),
            "127.0.0.1:7001".to_string(),
        )]))
    }

    pub(super) fn compile(&self, text: &str) -> Result<Directory, DirectoryError> {
        Directory::from_toml_str(text, self.path(), &Fixture::targets())
    }

    /// The problems of an invalid directory; fails the test on any other outcome.
    pub(super) fn problems(&self, text: &str) -> Vec<String> {
        match self.compile(text) {
            Err(DirectoryError::Invalid { problems }) => problems,
            other => panic!("expected an invalid directory, got {other:?}"),
        }
    }

    /// Writes `text` as the directory file atomically (as editors and ConfigMap updates do), so
    /// the reloader never sees a half-written file.
    pub(super) fn write_directory(&self, text: &str) -> PathBuf {
        let path = self.path().join("gateway-directory.toml");
        let temp_path = self
            .path()
            .join(format!(".directory-{}.tmp", uuid::Uuid::new_v4().simple()));
        std::fs::write(&temp_path, text).unwrap();
        std::fs::rename(&temp_path, &path).unwrap();
        path
    }
}

/// Changes `original` (which must occur in `text`) to `replacement`, once.
pub(super) fn edited(text: &str, original: &str, replacement: &str) -> String {
    assert!(text.contains(original), "the fixture lacks {original:?}");
    text.replacen(original, replacement, 1)
}
