//! Validation and compilation of the directory file. Every problem is collected, each naming the
//! entry and the key (`rules[3].purposes: purpose "X" is not declared`), so an operator fixes the
//! whole file in one pass.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::time::Duration;

use shlyuz_kit::pki::{
    PkiError, VerifyingKey, load_certs, participant_id_from_cert, validate_participant_id,
};

use super::DirectoryError;
use super::file::{
    BreakerEntry, DirectoryFile, ParticipantEntry, PurposeEntry, QuotaEntry, RetryEntry, RuleEntry,
    ServiceEntry, SettingsEntry,
};
use super::model::{
    AccessRule, BreakerSettings, Directory, LOCAL_UPSTREAM, Participant, Purpose, Quota,
    RetrySettings, Route, ServiceRules, Settings, TargetResolver, WILDCARD_METHOD,
};

/// Prefix of an upstream resolved through the [`TargetResolver`].
const TARGET_PREFIX: &str = "target:";

/// gRPC frames carry a 32-bit length, so no message can be larger.
const MAX_MESSAGE_BYTES: u64 = u32::MAX as u64;

/// Longest purpose code (the envelope's limit on `x-shlyuz-purpose`).
const MAX_PURPOSE_CODE_LEN: usize = 64;

impl Directory {
    /// Reads, validates and compiles the directory file at `path`; relative key and certificate
    /// paths are resolved against the file's folder.
    pub fn load(path: &Path, targets: &TargetResolver) -> Result<Directory, DirectoryError> {
        let text = std::fs::read_to_string(path).map_err(|source| DirectoryError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base_dir = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let mut directory = Directory::from_toml_str(&text, base_dir, targets)?;
        directory.source_file = Some(path.to_path_buf());
        Ok(directory)
    }

    /// Validates and compiles directory TOML; relative paths are resolved against `base_dir`.
    pub fn from_toml_str(
        text: &str,
        base_dir: &Path,
        targets: &TargetResolver,
    ) -> Result<Directory, DirectoryError> {
        compile(text, base_dir, targets)
    }
}

/// Parses, validates and compiles directory TOML.
fn compile(
    text: &str,
    base_dir: &Path,
    targets: &TargetResolver,
) -> Result<Directory, DirectoryError> {
    let file: DirectoryFile = toml::from_str(text).map_err(|error| DirectoryError::Syntax {
        message: error.to_string().trim_end().to_string(),
    })?;
    let mut problems = Problems::default();
    let settings = compile_settings(&file.settings, &mut problems);
    let participants = compile_participants(&file.participants, base_dir, &mut problems);
    let purposes = compile_purposes(&file.purposes, &mut problems);
    let services = compile_services(&file.services, &settings, targets, &mut problems);
    let rules = compile_rules(
        &file.rules,
        &participants,
        &purposes,
        &services,
        &mut problems,
    );
    if !problems.lines.is_empty() {
        return Err(DirectoryError::Invalid {
            problems: problems.lines,
        });
    }

    let mut sorted_participants = participants.compiled;
    sorted_participants.sort_by(|left, right| left.id.cmp(&right.id));
    let participant_index = sorted_participants
        .iter()
        .enumerate()
        .map(|(position, participant)| (participant.id.clone(), position))
        .collect();
    let mut sorted_purposes = purposes.compiled;
    sorted_purposes.sort_by(|left, right| left.code.cmp(&right.code));
    let mut sorted_routes = services.compiled;
    sorted_routes.sort_by(|left, right| left.service.cmp(&right.service));
    let route_index = sorted_routes
        .iter()
        .enumerate()
        .map(|(position, route)| (route.service.clone(), position))
        .collect();
    Ok(Directory {
        settings,
        participants: sorted_participants,
        participant_index,
        purposes: sorted_purposes,
        routes: sorted_routes,
        route_index,
        rules,
        source_file: None,
        targets: targets.clone(),
    })
}

/// The problems found so far, in file order.
#[derive(Default)]
struct Problems {
    lines: Vec<String>,
}

impl Problems {
    fn add(&mut self, location: impl Display, problem: impl Display) {
        self.lines.push(format!("{location}: {problem}"));
    }

    /// The value of a required key, or a problem when it is missing.
    fn required<'a, T: ?Sized>(
        &mut self,
        location: impl Display,
        value: Option<&'a T>,
    ) -> Option<&'a T> {
        if value.is_none() {
            self.add(location, "is required");
        }
        value
    }

    /// An integer in `1..=max`, `default` when absent; a bad value is a problem (and `default` is
    /// returned so that compilation can go on collecting problems).
    fn positive(
        &mut self,
        location: impl Display,
        value: Option<i64>,
        default: u64,
        max: u64,
    ) -> u64 {
        let Some(value) = value else {
            return default;
        };
        match u64::try_from(value) {
            Ok(accepted) if (1..=max).contains(&accepted) => accepted,
            Ok(too_large) if too_large > max => {
                self.add(location, format!("must be at most {max}, got {too_large}"));
                default
            }
            _ => {
                self.add(location, format!("must be positive, got {value}"));
                default
            }
        }
    }
}

fn compile_settings(entry: &SettingsEntry, problems: &mut Problems) -> Settings {
    let defaults = Settings::default();
    let max_request_bytes = problems.positive(
        "settings.max_request_bytes",
        entry.max_request_bytes,
        defaults.max_request_bytes as u64,
        MAX_MESSAGE_BYTES,
    );
    let max_response_bytes = problems.positive(
        "settings.max_response_bytes",
        entry.max_response_bytes,
        defaults.max_response_bytes as u64,
        MAX_MESSAGE_BYTES,
    );
    let default_timeout_ms = problems.positive(
        "settings.default_timeout_ms",
        entry.default_timeout_ms,
        duration_millis(defaults.default_timeout),
        u64::MAX,
    );
    let replay_window_secs = problems.positive(
        "settings.replay_window_secs",
        entry.replay_window_secs,
        defaults.replay_window.as_secs(),
        u64::MAX,
    );
    Settings {
        max_request_bytes: bytes_limit(max_request_bytes),
        max_response_bytes: bytes_limit(max_response_bytes),
        default_timeout: Duration::from_millis(default_timeout_ms),
        replay_window: Duration::from_secs(replay_window_secs),
    }
}

fn duration_millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A validated byte count (at most [`MAX_MESSAGE_BYTES`]) as `usize`.
fn bytes_limit(bytes: u64) -> usize {
    usize::try_from(bytes).unwrap_or(usize::MAX)
}

/// Compiled participants plus every id the file declares (also ids of entries that failed
/// validation, so rules naming them do not add a misleading "not declared").
struct CompiledParticipants {
    compiled: Vec<Participant>,
    declared: HashMap<String, usize>,
}

fn compile_participants(
    entries: &[ParticipantEntry],
    base_dir: &Path,
    problems: &mut Problems,
) -> CompiledParticipants {
    let mut compiled = Vec::with_capacity(entries.len());
    let mut declared: HashMap<String, usize> = HashMap::new();
    for (index, entry) in entries.iter().enumerate() {
        let location = |key: &str| format!("participants[{index}].{key}");
        let id = problems
            .required(location("id"), entry.id.as_deref())
            .and_then(|id| declare_participant(id, index, &mut declared, problems));
        let name = problems
            .required(location("name"), entry.name.as_deref())
            .and_then(|name| non_blank(name, location("name"), problems));
        let signing_key = problems
            .required(
                location("signing_public_key"),
                entry.signing_public_key.as_deref(),
            )
            .and_then(|key_path| {
                VerifyingKey::from_pem_file(&resolve_path(base_dir, key_path))
                    .map_err(|error| problems.add(location("signing_public_key"), error))
                    .ok()
            });
        let certificate_sha256 = match &entry.certificate {
            None => Some(None),
            Some(certificate_path) => pinned_certificate(
                &resolve_path(base_dir, certificate_path),
                entry.id.as_deref(),
            )
            .map_err(|problem| problems.add(location("certificate"), problem))
            .ok()
            .map(Some),
        };
        let quota = match &entry.quota {
            None => Some(None),
            Some(quota) => compile_quota(quota, &location("quota"), problems).map(Some),
        };
        if let (Some(id), Some(name), Some(signing_key), Some(certificate_sha256), Some(quota)) =
            (id, name, signing_key, certificate_sha256, quota)
        {
            compiled.push(Participant {
                id: id.to_string(),
                name: name.to_string(),
                signing_key,
                certificate_sha256,
                quota,
                assert_roles: entry.assert_roles,
                accept_messages_from: entry.accept_messages_from.clone(),
            });
        }
    }
    for (index, entry) in entries.iter().enumerate() {
        for sender in &entry.accept_messages_from {
            if sender != "*" && !declared.contains_key(sender) {
                problems.add(
                    format!("participants[{index}].accept_messages_from"),
                    format!("participant \"{sender}\" is not declared"),
                );
            }
        }
    }
    CompiledParticipants { compiled, declared }
}

fn declare_participant<'a>(
    id: &'a str,
    index: usize,
    declared: &mut HashMap<String, usize>,
    problems: &mut Problems,
) -> Option<&'a str> {
    let location = format!("participants[{index}].id");
    let valid = match validate_participant_id(id) {
        Ok(()) => true,
        Err(PkiError::InvalidParticipantId { reason, .. }) => {
            problems.add(
                &location,
                format!("participant id {id:?} {reason} (a lowercase DNS label)"),
            );
            false
        }
        Err(other) => {
            problems.add(&location, other);
            false
        }
    };
    match declared.entry(id.to_string()) {
        Entry::Occupied(first) => {
            problems.add(
                &location,
                format!(
                    "participant {id:?} is already declared by participants[{}]",
                    first.get()
                ),
            );
            None
        }
        Entry::Vacant(slot) => {
            slot.insert(index);
            valid.then_some(id)
        }
    }
}

fn non_blank<'a>(text: &'a str, location: String, problems: &mut Problems) -> Option<&'a str> {
    if text.trim().is_empty() {
        problems.add(location, "must not be empty");
        return None;
    }
    Some(text)
}

/// Relative paths are relative to the directory file's folder, so the file and its keys move
/// together.
fn resolve_path(base_dir: &Path, path: &str) -> PathBuf {
    base_dir.join(path)
}

/// The SHA-256 of the first certificate in `path`, checked to belong to `participant_id`.
fn pinned_certificate(path: &Path, participant_id: Option<&str>) -> Result<[u8; 32], String> {
    let certificates = load_certs(path).map_err(|error| error.to_string())?;
    let Some(leaf) = certificates.first() else {
        return Err(format!("no PEM certificate found in {}", path.display()));
    };
    let found_id = participant_id_from_cert(leaf.as_ref()).map_err(|error| {
        format!(
            "cannot read the participant id of {}: {error}",
            path.display()
        )
    })?;
    if let Some(expected_id) = participant_id
        && found_id != expected_id
    {
        return Err(format!(
            "certificate {} belongs to participant {found_id:?}, not {expected_id:?}",
            path.display()
        ));
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, leaf.as_ref());
    let mut certificate_sha256 = [0_u8; 32];
    certificate_sha256.copy_from_slice(digest.as_ref());
    Ok(certificate_sha256)
}

fn compile_quota(entry: &QuotaEntry, location: &str, problems: &mut Problems) -> Option<Quota> {
    let rate_location = format!("{location}.rate_per_second");
    let rate_per_second = match entry.rate_per_second {
        None => {
            problems.add(rate_location, "is required");
            None
        }
        Some(rate) if rate.is_finite() && rate > 0.0 => Some(rate),
        Some(rate) => {
            problems.add(
                rate_location,
                format!("must be a positive number, got {rate}"),
            );
            None
        }
    };
    let burst_location = format!("{location}.burst");
    let burst = match entry.burst {
        None => {
            problems.add(burst_location, "is required");
            None
        }
        Some(burst) => match u32::try_from(burst) {
            Ok(accepted) if accepted >= 1 => Some(accepted),
            _ => {
                problems.add(
                    burst_location,
                    format!("must be between 1 and {}, got {burst}", u32::MAX),
                );
                None
            }
        },
    };
    Some(Quota {
        rate_per_second: rate_per_second?,
        burst: burst?,
    })
}

struct CompiledPurposes {
    compiled: Vec<Purpose>,
    declared: HashSet<String>,
}

fn compile_purposes(entries: &[PurposeEntry], problems: &mut Problems) -> CompiledPurposes {
    let mut compiled = Vec::with_capacity(entries.len());
    let mut first_declaration: HashMap<&str, usize> = HashMap::new();
    for (index, entry) in entries.iter().enumerate() {
        let location = format!("purposes[{index}].code");
        let Some(code) = problems.required(&location, entry.code.as_deref()) else {
            continue;
        };
        if let Some(first_index) = first_declaration.get(code) {
            problems.add(
                &location,
                format!("purpose {code:?} is already declared by purposes[{first_index}]"),
            );
            continue;
        }
        first_declaration.insert(code, index);
        let well_formed = !code.is_empty()
            && code.len() <= MAX_PURPOSE_CODE_LEN
            && code
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_');
        if !well_formed {
            problems.add(
                &location,
                format!("purpose code {code:?} must be 1 to {MAX_PURPOSE_CODE_LEN} characters of A-Z, a-z, 0-9 and _"),
            );
            continue;
        }
        compiled.push(Purpose {
            code: code.to_string(),
            description: entry.description.clone(),
        });
    }
    let declared = first_declaration
        .keys()
        .map(|code| code.to_string())
        .collect();
    CompiledPurposes { compiled, declared }
}

/// What rules need to know about a declared service, even one whose entry failed validation.
struct DeclaredService {
    personal_data: Option<bool>,
    methods: HashSet<String>,
}

struct CompiledServices {
    compiled: Vec<Route>,
    declared: HashMap<String, DeclaredService>,
}

/// Where a service's calls go.
enum Upstream {
    Local,
    Remote {
        address: String,
        default_server_name: String,
    },
}

fn compile_services(
    entries: &[ServiceEntry],
    settings: &Settings,
    targets: &TargetResolver,
    problems: &mut Problems,
) -> CompiledServices {
    let mut compiled = Vec::with_capacity(entries.len());
    let mut declared: HashMap<String, DeclaredService> = HashMap::new();
    let mut first_declaration: HashMap<&str, usize> = HashMap::new();
    for (index, entry) in entries.iter().enumerate() {
        let location = |key: &str| format!("services[{index}].{key}");
        let name = problems
            .required(location("name"), entry.name.as_deref())
            .and_then(|name| {
                if let Some(first_index) = first_declaration.get(name) {
                    problems.add(
                        location("name"),
                        format!("service {name:?} is already declared by services[{first_index}]"),
                    );
                    return None;
                }
                first_declaration.insert(name, index);
                declared.insert(
                    name.to_string(),
                    DeclaredService {
                        personal_data: entry.personal_data,
                        methods: entry.methods.iter().cloned().collect(),
                    },
                );
                match check_service_name(name) {
                    Ok(()) => Some(name),
                    Err(problem) => {
                        problems.add(location("name"), problem);
                        None
                    }
                }
            });
        let upstream = problems
            .required(location("upstream"), entry.upstream.as_deref())
            .and_then(|upstream| {
                resolve_upstream(upstream, targets)
                    .map_err(|problem| problems.add(location("upstream"), problem))
                    .ok()
            });
        let upstream_server_name = match (&upstream, entry.upstream_server_name.as_deref()) {
            (None, _) => None,
            (Some(Upstream::Local), None) => Some(String::new()),
            (Some(Upstream::Local), Some(_)) => {
                problems.add(
                    location("upstream_server_name"),
                    format!("a {LOCAL_UPSTREAM:?} service is served by the gateway itself and has no upstream certificate"),
                );
                None
            }
            (Some(Upstream::Remote { .. }), Some(server_name)) => {
                non_blank(server_name, location("upstream_server_name"), problems)
                    .map(str::to_string)
            }
            (
                Some(Upstream::Remote {
                    default_server_name,
                    ..
                }),
                None,
            ) => Some(default_server_name.clone()),
        };
        let timeout_ms = problems.positive(
            location("timeout_ms"),
            entry.timeout_ms,
            duration_millis(settings.default_timeout),
            u64::MAX,
        );
        let personal_data = entry.personal_data;
        if personal_data.is_none() {
            problems.add(
                location("personal_data"),
                "is required: true when calls carry data about a person (purpose and subject are then enforced)",
            );
        }
        // The gateway forwards only listed methods (a `*` rule grants the listed ones), so an
        // upstream is never reached at a method the directory does not name.
        let methods_valid = if entry.methods.is_empty() {
            problems.add(
                location("methods"),
                "must list every method the gateway forwards to this service",
            );
            false
        } else {
            check_method_list(&entry.methods, &location("methods"), None, problems)
        };
        let listed_methods: HashSet<&str> = entry.methods.iter().map(String::as_str).collect();
        let idempotent_valid = check_method_list(
            &entry.idempotent_methods,
            &location("idempotent_methods"),
            Some(&listed_methods),
            problems,
        );
        let streaming_valid = check_method_list(
            &entry.client_streaming_methods,
            &location("client_streaming_methods"),
            Some(&listed_methods),
            problems,
        );
        let server_streaming_valid = check_method_list(
            &entry.server_streaming_methods,
            &location("server_streaming_methods"),
            Some(&listed_methods),
            problems,
        );
        let max_request_bytes = problems.positive(
            location("max_request_bytes"),
            entry.max_request_bytes,
            settings.max_request_bytes as u64,
            MAX_MESSAGE_BYTES,
        );
        let max_response_bytes = problems.positive(
            location("max_response_bytes"),
            entry.max_response_bytes,
            settings.max_response_bytes as u64,
            MAX_MESSAGE_BYTES,
        );
        let breaker = compile_breaker(entry.breaker.as_ref(), &location("breaker"), problems);
        let retry = compile_retry(entry.retry.as_ref(), &location("retry"), problems);

        let all_lists_valid =
            methods_valid && idempotent_valid && streaming_valid && server_streaming_valid;
        if let (Some(name), Some(upstream), Some(upstream_server_name), Some(personal_data), true) = (
            name,
            upstream,
            upstream_server_name,
            personal_data,
            all_lists_valid,
        ) {
            let upstream_address = match upstream {
                Upstream::Local => LOCAL_UPSTREAM.to_string(),
                Upstream::Remote { address, .. } => address,
            };
            compiled.push(Route {
                service: name.to_string(),
                upstream: upstream_address,
                upstream_server_name,
                timeout: Duration::from_millis(timeout_ms),
                personal_data,
                idempotent_methods: entry.idempotent_methods.iter().cloned().collect(),
                client_streaming_methods: entry.client_streaming_methods.iter().cloned().collect(),
                server_streaming_methods: entry.server_streaming_methods.iter().cloned().collect(),
                methods: entry.methods.clone(),
                max_request_bytes: bytes_limit(max_request_bytes),
                max_response_bytes: bytes_limit(max_response_bytes),
                breaker,
                retry,
            });
        }
    }
    CompiledServices { compiled, declared }
}

/// A fully qualified gRPC service name: a package and a service, dot-separated identifiers.
pub(crate) fn check_service_name(name: &str) -> Result<(), String> {
    let segments: Vec<&str> = name.split('.').collect();
    if segments.len() < 2 || !segments.iter().all(|segment| is_identifier(segment)) {
        return Err(format!(
            "{name:?} is not a fully qualified gRPC service name such as \"shlyuz.registry.v1.PersonRegistryService\""
        ));
    }
    Ok(())
}

/// A protobuf identifier: a letter or `_`, then letters, digits or `_`.
pub(crate) fn is_identifier(text: &str) -> bool {
    let mut characters = text.chars();
    let Some(first) = characters.next() else {
        return false;
    };
    (first.is_ascii_alphabetic() || first == '_')
        && characters.all(|character| character.is_ascii_alphanumeric() || character == '_')
}

fn resolve_upstream(upstream: &str, targets: &TargetResolver) -> Result<Upstream, String> {
    if upstream == LOCAL_UPSTREAM {
        return Ok(Upstream::Local);
    }
    if let Some(target) = upstream.strip_prefix(TARGET_PREFIX) {
        if target.is_empty() {
            return Err(format!("a target name is required after {TARGET_PREFIX:?}"));
        }
        let Some(address) = targets.resolve(target) else {
            let known_names = targets.names();
            let known = if known_names.is_empty() {
                "no targets are known in this deployment; use host:port".to_string()
            } else {
                format!("known targets: {}", known_names.join(", "))
            };
            return Err(format!("target {target:?} is not known ({known})"));
        };
        return Ok(Upstream::Remote {
            address: address.to_string(),
            default_server_name: target.to_string(),
        });
    }
    let host = check_host_port(upstream)?;
    Ok(Upstream::Remote {
        address: upstream.to_string(),
        default_server_name: host.to_string(),
    })
}

/// Checks `host:port` (IPv6 hosts in brackets) and returns the host without brackets.
fn check_host_port(upstream: &str) -> Result<&str, String> {
    let malformed =
        || format!("{upstream:?} is not host:port, {TARGET_PREFIX}<name> or {LOCAL_UPSTREAM:?}");
    let Some((host, port)) = upstream.rsplit_once(':') else {
        return Err(malformed());
    };
    match port.parse::<u16>() {
        Ok(port_number) if port_number > 0 => {}
        _ => {
            return Err(format!(
                "port {port:?} of {upstream:?} is not a number from 1 to 65535"
            ));
        }
    }
    if let Some(bracketed) = host
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
    {
        if bracketed.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(malformed());
        }
        return Ok(bracketed);
    }
    let host_valid = !host.is_empty()
        && host.bytes().all(|byte| {
            byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'.' || byte == b'_'
        });
    if !host_valid {
        return Err(malformed());
    }
    Ok(host)
}

/// Checks a list of method names: identifiers, no repeats, and (for `subset_of`) each in the
/// service's `methods` when that list is not empty. Returns whether the list is valid.
fn check_method_list(
    methods: &[String],
    location: &str,
    subset_of: Option<&HashSet<&str>>,
    problems: &mut Problems,
) -> bool {
    let mut valid = true;
    let mut seen: HashSet<&str> = HashSet::new();
    for method in methods {
        if !is_identifier(method) {
            problems.add(location, format!("{method:?} is not a gRPC method name"));
            valid = false;
            continue;
        }
        if !seen.insert(method) {
            problems.add(location, format!("method {method:?} is listed twice"));
            valid = false;
            continue;
        }
        if let Some(listed) = subset_of
            && !listed.is_empty()
            && !listed.contains(method.as_str())
        {
            problems.add(
                location,
                format!("method {method:?} is not in the service's methods"),
            );
            valid = false;
        }
    }
    valid
}

fn compile_breaker(
    entry: Option<&BreakerEntry>,
    location: &str,
    problems: &mut Problems,
) -> BreakerSettings {
    let defaults = BreakerSettings::default();
    let Some(entry) = entry else {
        return defaults;
    };
    let failure_threshold = problems.positive(
        format!("{location}.failure_threshold"),
        entry.failure_threshold,
        u64::from(defaults.failure_threshold),
        u64::from(u32::MAX),
    );
    let open_ms = problems.positive(
        format!("{location}.open_ms"),
        entry.open_ms,
        duration_millis(defaults.open_for),
        u64::MAX,
    );
    BreakerSettings {
        failure_threshold: u32::try_from(failure_threshold).unwrap_or(u32::MAX),
        open_for: Duration::from_millis(open_ms),
    }
}

fn compile_retry(
    entry: Option<&RetryEntry>,
    location: &str,
    problems: &mut Problems,
) -> RetrySettings {
    let defaults = RetrySettings::default();
    let Some(entry) = entry else {
        return defaults;
    };
    let max_attempts = problems.positive(
        format!("{location}.max_attempts"),
        entry.max_attempts,
        u64::from(defaults.max_attempts),
        u64::from(u32::MAX),
    );
    let initial_backoff_ms = problems.positive(
        format!("{location}.initial_backoff_ms"),
        entry.initial_backoff_ms,
        duration_millis(defaults.initial_backoff),
        u64::MAX,
    );
    RetrySettings {
        max_attempts: u32::try_from(max_attempts).unwrap_or(u32::MAX),
        initial_backoff: Duration::from_millis(initial_backoff_ms),
    }
}

/// The methods a rule grants.
enum GrantedMethods<'a> {
    Every,
    Named(Vec<&'a str>),
}

type RulesByParticipant = HashMap<String, HashMap<String, ServiceRules>>;

fn compile_rules(
    entries: &[RuleEntry],
    participants: &CompiledParticipants,
    purposes: &CompiledPurposes,
    services: &CompiledServices,
    problems: &mut Problems,
) -> RulesByParticipant {
    let mut rules: RulesByParticipant = HashMap::new();
    // participant, service, method (or `*`) -> the rule index that granted it, to name overlaps.
    let mut granted_by: HashMap<(&str, &str, &str), usize> = HashMap::new();
    for (index, entry) in entries.iter().enumerate() {
        let location = |key: &str| format!("rules[{index}].{key}");
        let participant = problems
            .required(location("participant"), entry.participant.as_deref())
            .and_then(|participant| {
                if participants.declared.contains_key(participant) {
                    return Some(participant);
                }
                problems.add(
                    location("participant"),
                    format!("participant {participant:?} is not declared"),
                );
                None
            });
        let service = problems
            .required(location("service"), entry.service.as_deref())
            .and_then(|service| match services.declared.get(service) {
                Some(declared) => Some((service, declared)),
                None => {
                    problems.add(
                        location("service"),
                        format!("service {service:?} is not declared"),
                    );
                    None
                }
            });
        let methods = match &entry.methods {
            None => {
                problems.add(
                    location("methods"),
                    format!(
                        "is required: method names, or [\"{WILDCARD_METHOD}\"] for every method"
                    ),
                );
                None
            }
            Some(methods) => granted_methods(
                methods,
                service.map(|(_, declared)| declared),
                &location("methods"),
                problems,
            ),
        };

        let mut purposes_valid = true;
        let mut rule_purposes: HashSet<String> = HashSet::new();
        for purpose in &entry.purposes {
            if !purposes.declared.contains(purpose) {
                problems.add(
                    location("purposes"),
                    format!("purpose {purpose:?} is not declared"),
                );
                purposes_valid = false;
            } else if !rule_purposes.insert(purpose.clone()) {
                problems.add(
                    location("purposes"),
                    format!("purpose {purpose:?} is listed twice"),
                );
                purposes_valid = false;
            }
        }
        if let Some((service_name, declared)) = service {
            if declared.personal_data == Some(true) && entry.purposes.is_empty() {
                problems.add(
                    location("purposes"),
                    format!("must name at least one purpose because service {service_name} carries personal data"),
                );
                purposes_valid = false;
            }
            if declared.personal_data == Some(false) && entry.consent_required {
                problems.add(
                    location("consent_required"),
                    format!("service {service_name} carries no personal data, so there is no subject to consent"),
                );
                purposes_valid = false;
            }
        }

        let (Some(participant), Some((service_name, _)), Some(methods), true) =
            (participant, service, methods, purposes_valid)
        else {
            continue;
        };
        let rule = AccessRule {
            purposes: rule_purposes,
            consent_required: entry.consent_required,
        };
        let method_names = match &methods {
            GrantedMethods::Every => vec![WILDCARD_METHOD],
            GrantedMethods::Named(names) => names.clone(),
        };
        let mut overlaps = false;
        for &method in &method_names {
            if let Some(first_index) = granted_by.get(&(participant, service_name, method)) {
                problems.add(
                    location("methods"),
                    format!(
                        "participant {participant:?} already has a rule for {service_name}/{method} in rules[{first_index}]"
                    ),
                );
                overlaps = true;
            }
        }
        if overlaps {
            continue;
        }
        for &method in &method_names {
            granted_by.insert((participant, service_name, method), index);
        }
        let service_rules = rules
            .entry(participant.to_string())
            .or_default()
            .entry(service_name.to_string())
            .or_default();
        match methods {
            GrantedMethods::Every => service_rules.any_method = Some(rule),
            GrantedMethods::Named(names) => {
                for method in names {
                    service_rules
                        .by_method
                        .insert(method.to_string(), rule.clone());
                }
            }
        }
    }
    rules
}

fn granted_methods<'a>(
    methods: &'a [String],
    service: Option<&DeclaredService>,
    location: &str,
    problems: &mut Problems,
) -> Option<GrantedMethods<'a>> {
    if methods.is_empty() {
        problems.add(
            location,
            format!(
                "must not be empty: name the methods, or [\"{WILDCARD_METHOD}\"] for every method"
            ),
        );
        return None;
    }
    if methods.iter().any(|method| method == WILDCARD_METHOD) {
        if methods.len() > 1 {
            problems.add(
                location,
                format!("\"{WILDCARD_METHOD}\" already grants every method and cannot be combined with method names"),
            );
            return None;
        }
        return Some(GrantedMethods::Every);
    }
    let listed_methods: HashSet<&str> = service
        .map(|declared| declared.methods.iter().map(String::as_str).collect())
        .unwrap_or_default();
    if check_method_list(methods, location, Some(&listed_methods), problems) {
        return Some(GrantedMethods::Named(
            methods.iter().map(String::as_str).collect(),
        ));
    }
    None
}
