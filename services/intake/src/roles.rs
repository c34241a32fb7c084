//! Who is calling: the participant the gateway authenticated (`x-shlyuz-sender`), the user id it
//! forwards (`x-shlyuz-user-id`) and the role the participant asserts (`x-shlyuz-user-role`,
//! plus `x-shlyuz-user-region` for ДДО executors). Roles are trusted only from participants the
//! intake configuration lists; every user id is the user's IIN.

use std::collections::BTreeSet;

use shlyuz_kit::envelope::{SENDER, USER_ID};
use shlyuz_kit::error::{ApiError, parse_iin_field};
use tonic::metadata::MetadataMap;

use crate::reasons;

/// Metadata with the role the calling participant asserts for its user.
pub const USER_ROLE: &str = "x-shlyuz-user-role";
/// Metadata with the KATO region of a ДДО executor, asserted like the role.
pub const USER_REGION: &str = "x-shlyuz-user-region";

/// A role of seed 000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The applicant.
    Candidate,
    /// Head of the MoD unit.
    Head,
    /// MoD executor.
    ModExecutor,
    /// Executor of the Defence Affairs Department.
    DdoExecutor,
}

impl Role {
    /// The header value.
    pub fn name(self) -> &'static str {
        match self {
            Role::Candidate => "candidate",
            Role::Head => "head",
            Role::ModExecutor => "mod_executor",
            Role::DdoExecutor => "ddo_executor",
        }
    }

    /// The role a header value names.
    pub fn parse(value: &str) -> Option<Role> {
        [
            Role::Candidate,
            Role::Head,
            Role::ModExecutor,
            Role::DdoExecutor,
        ]
        .into_iter()
        .find(|role| role.name() == value)
    }
}

/// The established caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Participant id the gateway authenticated.
    pub participant: String,
    /// User id as the participant forwards it (the IIN for candidates).
    pub user_id: String,
    /// Asserted role.
    pub role: Role,
    /// ДДО executor's region (KATO); empty for other roles.
    pub region_kato: String,
}

impl Caller {
    /// `who` of an event: `<participant>/<role>/<user id>`.
    pub fn actor(&self) -> String {
        format!("{}/{}/{}", self.participant, self.role.name(), self.user_id)
    }

    /// `PERMISSION_DENIED` unless the caller has one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.role) {
            return Ok(());
        }
        Err(ApiError::permission_denied(
            reasons::ROLE_NOT_ALLOWED,
            format!("role {} may not do this", self.role.name()),
        )
        .with_metadata("role", self.role.name()))
    }
}

/// Which participants may assert roles.
#[derive(Debug, Clone, Default)]
pub struct RolePolicy {
    asserting: BTreeSet<String>,
}

impl RolePolicy {
    /// Trusts the role headers of `participants` only.
    pub fn new(participants: impl IntoIterator<Item = String>) -> Self {
        Self {
            asserting: participants.into_iter().collect(),
        }
    }

    /// The caller of a request, from its metadata.
    pub fn caller(&self, metadata: &MetadataMap) -> Result<Caller, ApiError> {
        let header = |name: &str| {
            metadata
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::trim)
                .unwrap_or_default()
                .to_string()
        };
        let participant = header(SENDER);
        if participant.is_empty() {
            return Err(ApiError::unauthenticated(
                reasons::SENDER_MISSING,
                "the request did not come through the gateway",
            ));
        }
        if !self.asserting.contains(&participant) {
            return Err(ApiError::permission_denied(
                reasons::ROLE_NOT_TRUSTED,
                format!("participant {participant} may not assert user roles"),
            )
            .with_metadata("participant", participant));
        }
        let role_value = header(USER_ROLE);
        let role = Role::parse(&role_value).ok_or_else(|| {
            ApiError::invalid_field(
                USER_ROLE,
                "must be candidate, head, mod_executor or ddo_executor",
            )
        })?;
        let user_id = header(USER_ID);
        if user_id.is_empty() || user_id.len() > 200 {
            return Err(ApiError::invalid_field(
                USER_ID,
                "must be 1 to 200 characters",
            ));
        }
        if role == Role::Candidate {
            parse_iin_field(USER_ID, &user_id)?;
        }
        let region_kato = if role == Role::DdoExecutor {
            let region = header(USER_REGION);
            validate_kato(USER_REGION, &region)?;
            region
        } else {
            String::new()
        };
        Ok(Caller {
            participant,
            user_id,
            role,
            region_kato,
        })
    }
}

/// `INVALID_ARGUMENT` unless `value` is a 9-digit KATO code.
pub fn validate_kato(field: &str, value: &str) -> Result<(), ApiError> {
    if value.len() == 9 && value.bytes().all(|byte| byte.is_ascii_digit()) {
        Ok(())
    } else {
        Err(ApiError::invalid_field(
            field,
            "must be a 9-digit KATO code",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(pairs: &[(&'static str, &str)]) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        for (name, value) in pairs {
            if let Ok(value) = value.parse() {
                metadata.insert(*name, value);
            }
        }
        metadata
    }

    #[test]
    fn roles_from_an_untrusted_participant_are_refused() {
        let policy = RolePolicy::new(["jauynger-portal".to_string()]);
        let error = policy
            .caller(&metadata(&[
                (SENDER, "housing"),
                (USER_ID, "head-1"),
                (USER_ROLE, "head"),
            ]))
            .err();
        assert_eq!(
            error.as_ref().map(ApiError::reason),
            Some(reasons::ROLE_NOT_TRUSTED)
        );
    }

    #[test]
    fn a_user_id_must_be_an_iin() {
        let policy = RolePolicy::new(["jauynger-portal".to_string()]);
        let error = policy
            .caller(&metadata(&[
                (SENDER, "jauynger-portal"),
                (USER_ID, "someone"),
                (USER_ROLE, "candidate"),
            ]))
            .err();
        assert_eq!(
            error.map(|error| error.field_violations()[0].field.clone()),
            Some(USER_ID.to_string())
        );
    }

    #[test]
    fn a_ddo_executor_carries_a_region() {
        let policy = RolePolicy::new(["sdu".to_string()]);
        let caller = policy
            .caller(&metadata(&[
                (SENDER, "sdu"),
                (USER_ID, "800202400021"),
                (USER_ROLE, "ddo_executor"),
                (USER_REGION, "110000000"),
            ]))
            .ok();
        assert_eq!(
            caller.map(|caller| caller.region_kato),
            Some("110000000".into())
        );
    }
}
