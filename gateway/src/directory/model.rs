//! The compiled directory: what the sync channel consults on every call. Lookups are hash-map
//! reads keyed by `&str`, so the hot path neither allocates nor scans.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use shlyuz_kit::pki::VerifyingKey;

/// The `upstream` of a service the gateway serves itself (directory, message log, access log).
pub const LOCAL_UPSTREAM: &str = "local";

/// The method name in a rule that grants every method of the service.
pub const WILDCARD_METHOD: &str = "*";

/// Gateway-wide defaults from `[settings]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Largest request message a route accepts unless it overrides it.
    pub max_request_bytes: usize,
    /// Largest response a route passes through unless it overrides it.
    pub max_response_bytes: usize,
    /// Upstream deadline of a route without `timeout_ms`.
    pub default_timeout: Duration,
    /// How far `x-shlyuz-timestamp` may be from the gateway's clock, in either direction.
    pub replay_window: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_request_bytes: 4 * 1024 * 1024,
            max_response_bytes: 4 * 1024 * 1024,
            default_timeout: Duration::from_secs(10),
            replay_window: Duration::from_secs(300),
        }
    }
}

/// A registered information system.
#[derive(Debug, Clone, PartialEq)]
pub struct Participant {
    /// Stable id, also the identity in the participant's client certificate.
    pub id: String,
    /// Human-readable name.
    pub name: String,
    /// Verifies the participant's envelope signatures.
    pub signing_key: VerifyingKey,
    /// SHA-256 of the DER client certificate the participant must present, when pinned.
    pub certificate_sha256: Option<[u8; 32]>,
    /// Call rate limit; `None` means unlimited.
    pub quota: Option<Quota>,
    /// Whether the participant may assert `x-shlyuz-user-role`.
    pub assert_roles: bool,
    /// Participants whose async-channel messages this participant accepts in its inbox (`*`: any).
    pub accept_messages_from: Vec<String>,
}

impl Participant {
    /// Whether `sender` may put messages into this participant's inbox.
    pub fn accepts_messages_from(&self, sender: &str) -> bool {
        self.accept_messages_from
            .iter()
            .any(|allowed| allowed == WILDCARD_METHOD || allowed == sender)
    }
}

/// A token-bucket rate limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quota {
    /// Sustained calls per second (may be fractional).
    pub rate_per_second: f64,
    /// Calls that may be made at once after a quiet period.
    pub burst: u32,
}

/// A declared purpose (legal basis) code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purpose {
    /// The code callers send in `x-shlyuz-purpose`.
    pub code: String,
    /// The legal basis, for humans.
    pub description: String,
}

/// When to stop sending calls to a failing upstream: the kit's breaker settings (defaults five
/// failures, five seconds open).
pub use shlyuz_kit::breaker::BreakerSettings;

/// How idempotent methods are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetrySettings {
    /// Attempts in total, the first included.
    pub max_attempts: u32,
    /// Wait before the first retry; later waits grow from it.
    pub initial_backoff: Duration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(50),
        }
    }
}

/// Where and how calls to one gRPC service go.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// Fully qualified gRPC service name, e.g. `shlyuz.registry.v1.PersonRegistryService`.
    pub service: String,
    /// Resolved `host:port` of the upstream, or [`LOCAL_UPSTREAM`].
    pub upstream: String,
    /// TLS server name expected in the upstream's certificate (empty for local routes).
    pub upstream_server_name: String,
    /// Upper bound of the upstream deadline.
    pub timeout: Duration,
    /// Whether calls carry personal data (purpose and subject then required).
    pub personal_data: bool,
    /// Methods that may be retried.
    pub idempotent_methods: HashSet<String>,
    /// Methods whose request is a client stream: forwarded without buffering.
    pub client_streaming_methods: HashSet<String>,
    /// Methods whose response is a server stream: passed through as it comes, after an opening
    /// message-log entry. Every other response is held until its entry is durable.
    pub server_streaming_methods: HashSet<String>,
    /// Every method the gateway forwards, in file order (the Directory API lists them).
    pub methods: Vec<String>,
    /// Largest request message accepted.
    pub max_request_bytes: usize,
    /// Largest response passed through.
    pub max_response_bytes: usize,
    /// Circuit breaker of the upstream.
    pub breaker: BreakerSettings,
    /// Retry policy of idempotent methods.
    pub retry: RetrySettings,
}

impl Route {
    /// Whether the gateway serves this service itself.
    pub fn is_local(&self) -> bool {
        self.upstream == LOCAL_UPSTREAM
    }
}

/// What a participant may do with one method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRule {
    /// Purpose codes the participant may state; empty means any (non-personal-data services only).
    pub purposes: HashSet<String>,
    /// Whether the subject's consent must accompany the call.
    pub consent_required: bool,
}

/// One method a participant may call, for the Directory API.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AllowedMethod {
    /// Fully qualified gRPC service name.
    pub service: String,
    /// Method name, or `*` when the service's methods are not listed.
    pub method: String,
    /// Allowed purpose codes, sorted.
    pub purposes: Vec<String>,
    /// Whether consent is required.
    pub consent_required: bool,
}

/// The Shlyuz service targets a directory may route to as `target:<name>`.
pub const TARGET_NAMES: [&str; 4] = ["registry", "notify", "intake", "housing"];

/// Resolves `target:<name>` upstreams to `host:port` (the addresses `shlyuz up` bound).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetResolver {
    targets: HashMap<String, String>,
}

impl TargetResolver {
    /// A resolver over `target name -> host:port`.
    pub fn new(targets: HashMap<String, String>) -> Self {
        Self { targets }
    }

    /// A resolver that knows no targets: every `target:` upstream is an error.
    pub fn none() -> Self {
        Self::default()
    }

    /// For a gateway run beside only some services (tests, benchmarks): `known` targets resolve
    /// to their addresses, every other Shlyuz target to `elsewhere`, so a directory that routes
    /// all of them loads while only the running ones are called.
    pub fn partial(known: &[(&str, String)], elsewhere: &str) -> Self {
        let mut targets: HashMap<String, String> = TARGET_NAMES
            .iter()
            .map(|name| (name.to_string(), elsewhere.to_string()))
            .collect();
        for (name, address) in known {
            targets.insert(name.to_string(), address.clone());
        }
        Self::new(targets)
    }

    /// The address of `target`.
    pub fn resolve(&self, target: &str) -> Option<&str> {
        self.targets.get(target).map(String::as_str)
    }

    /// Known target names, sorted (for error messages).
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.targets.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }
}

/// The rules of one participant on one service.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct ServiceRules {
    pub(super) by_method: HashMap<String, AccessRule>,
    pub(super) any_method: Option<AccessRule>,
}

/// The compiled, validated directory.
#[derive(Clone, PartialEq)]
pub struct Directory {
    pub(super) settings: Settings,
    /// Sorted by id; `participant_index` points into it.
    pub(super) participants: Vec<Participant>,
    pub(super) participant_index: HashMap<String, usize>,
    /// Sorted by code.
    pub(super) purposes: Vec<Purpose>,
    /// Sorted by service name; `route_index` points into it.
    pub(super) routes: Vec<Route>,
    pub(super) route_index: HashMap<String, usize>,
    /// participant -> service -> rules.
    pub(super) rules: HashMap<String, HashMap<String, ServiceRules>>,
    pub(super) source_file: Option<PathBuf>,
    pub(super) targets: TargetResolver,
}

impl Directory {
    /// The participant with this id.
    pub fn participant(&self, id: &str) -> Option<&Participant> {
        let position = *self.participant_index.get(id)?;
        self.participants.get(position)
    }

    /// The route of a fully qualified gRPC service name.
    pub fn route(&self, service: &str) -> Option<&Route> {
        let position = *self.route_index.get(service)?;
        self.routes.get(position)
    }

    /// The rule that lets `participant` call `service`/`method`: a rule naming the method wins
    /// over a `*` rule; `None` means the call is not allowed.
    pub fn rule(&self, participant: &str, service: &str, method: &str) -> Option<&AccessRule> {
        let service_rules = self.rules.get(participant)?.get(service)?;
        service_rules
            .by_method
            .get(method)
            .or(service_rules.any_method.as_ref())
    }

    /// Gateway-wide defaults.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Every participant, sorted by id.
    pub fn participants(&self) -> impl Iterator<Item = &Participant> {
        self.participants.iter()
    }

    /// Every declared purpose, sorted by code.
    pub fn purposes(&self) -> impl Iterator<Item = &Purpose> {
        self.purposes.iter()
    }

    /// Every route, sorted by service name.
    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }

    /// The file this directory was loaded from, if any.
    pub fn source_file(&self) -> Option<&Path> {
        self.source_file.as_deref()
    }

    /// The resolver `target:` upstreams were resolved with.
    pub fn targets(&self) -> &TargetResolver {
        &self.targets
    }

    /// The methods `participant` may call, sorted by service then method. A `*` rule expands to
    /// the service's listed methods, or stays `*` when the service lists none.
    pub fn allowed_methods(&self, participant: &str) -> Vec<AllowedMethod> {
        let Some(rules_by_service) = self.rules.get(participant) else {
            return Vec::new();
        };
        let mut allowed = Vec::new();
        for (service, service_rules) in rules_by_service {
            let mut rule_by_method: BTreeMap<&str, &AccessRule> = BTreeMap::new();
            if let Some(any_method_rule) = &service_rules.any_method {
                let listed_methods = self
                    .route(service)
                    .map(|route| route.methods.as_slice())
                    .unwrap_or_default();
                if listed_methods.is_empty() {
                    rule_by_method.insert(WILDCARD_METHOD, any_method_rule);
                }
                for method in listed_methods {
                    rule_by_method.insert(method, any_method_rule);
                }
            }
            for (method, rule) in &service_rules.by_method {
                rule_by_method.insert(method, rule);
            }
            allowed.extend(rule_by_method.into_iter().map(|(method, rule)| {
                let mut purposes: Vec<String> = rule.purposes.iter().cloned().collect();
                purposes.sort_unstable();
                AllowedMethod {
                    service: service.clone(),
                    method: method.to_string(),
                    purposes,
                    consent_required: rule.consent_required,
                }
            }));
        }
        allowed.sort_unstable();
        allowed
    }
}

impl fmt::Debug for Directory {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rule_count: usize = self
            .rules
            .values()
            .flat_map(|by_service| by_service.values())
            .map(|service_rules| {
                service_rules.by_method.len() + usize::from(service_rules.any_method.is_some())
            })
            .sum();
        formatter
            .debug_struct("Directory")
            .field("source_file", &self.source_file)
            .field("settings", &self.settings)
            .field(
                "participants",
                &self
                    .participants
                    .iter()
                    .map(|participant| participant.id.as_str())
                    .collect::<Vec<_>>(),
            )
            .field(
                "purposes",
                &self
                    .purposes
                    .iter()
                    .map(|purpose| purpose.code.as_str())
                    .collect::<Vec<_>>(),
            )
            .field(
                "routes",
                &self
                    .routes
                    .iter()
                    .map(|route| route.service.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("method_rules", &rule_count)
            .finish()
    }
}
