//! The application workflow of seed 000 (appendix 1) as an explicit state machine: the internal
//! states, the actions that move between them, who may take each action, the status the candidate
//! sees, the SMS texts, and the deadline each step carries.

use shlyuz_kit::calendar::WorkingCalendar;
use shlyuz_proto::intake::v1 as pb;
use time::{Date, Month, OffsetDateTime, UtcOffset};

use crate::roles::Role;

/// Internal workflow state; the numbers are the proto enum values and the stored column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Filed by the candidate, waiting for the head.
    Submitted,
    /// Assigned to an MoD executor ("Принято в работу").
    Assigned,
    /// Personal file collected and the candidate eligible.
    Dossier,
    /// Materials at the special check.
    SpecialCheck,
    /// At the ДДО for the medical examination and psychological testing.
    Medical,
    /// The ДДО executor recorded a pass.
    MedicalPassed,
    /// Agreement drafted, waiting for the candidate's EDS.
    AgreementDrafted,
    /// Signed by the candidate, waiting for the head.
    SignedByCandidate,
    /// Signed by both sides.
    SignedByHead,
    /// Order to report issued.
    OrderToReport,
    /// Personal file sent to the unit (terminal).
    Completed,
    /// Refused (terminal); the reason is internal.
    Rejected,
}

impl State {
    /// Every state, in workflow order.
    pub const ALL: [State; 12] = [
        State::Submitted,
        State::Assigned,
        State::Dossier,
        State::SpecialCheck,
        State::Medical,
        State::MedicalPassed,
        State::AgreementDrafted,
        State::SignedByCandidate,
        State::SignedByHead,
        State::OrderToReport,
        State::Completed,
        State::Rejected,
    ];

    /// The proto enum.
    pub fn to_proto(self) -> pb::ApplicationState {
        match self {
            State::Submitted => pb::ApplicationState::Submitted,
            State::Assigned => pb::ApplicationState::Assigned,
            State::Dossier => pb::ApplicationState::Dossier,
            State::SpecialCheck => pb::ApplicationState::SpecialCheck,
            State::Medical => pb::ApplicationState::Medical,
            State::MedicalPassed => pb::ApplicationState::MedicalPassed,
            State::AgreementDrafted => pb::ApplicationState::AgreementDrafted,
            State::SignedByCandidate => pb::ApplicationState::SignedByCandidate,
            State::SignedByHead => pb::ApplicationState::SignedByHead,
            State::OrderToReport => pb::ApplicationState::OrderToReport,
            State::Completed => pb::ApplicationState::Completed,
            State::Rejected => pb::ApplicationState::Rejected,
        }
    }

    /// The stored column value (the proto number).
    pub fn code(self) -> i64 {
        i64::from(self.to_proto() as i32)
    }

    /// The state stored as `code`.
    pub fn from_code(code: i64) -> Option<State> {
        State::ALL.into_iter().find(|state| state.code() == code)
    }

    /// Completed or rejected: nothing more happens and the candidate may apply again.
    pub fn is_terminal(self) -> bool {
        matches!(self, State::Completed | State::Rejected)
    }

    /// What the candidate sees for this state.
    pub fn candidate_status(self) -> CandidateStatus {
        match self {
            State::Submitted => CandidateStatus::Submitted,
            State::Assigned | State::Dossier => CandidateStatus::Accepted,
            State::SpecialCheck => CandidateStatus::SpecialCheck,
            State::Medical | State::MedicalPassed => CandidateStatus::Medical,
            State::AgreementDrafted => CandidateStatus::AgreementToSign,
            State::SignedByCandidate | State::SignedByHead => CandidateStatus::AgreementSigned,
            State::OrderToReport => CandidateStatus::OrderToReport,
            State::Completed => CandidateStatus::Completed,
            State::Rejected => CandidateStatus::Rejected,
        }
    }
}

/// The status the candidate sees: coarser than [`State`] and never carrying a reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CandidateStatus {
    /// Filed.
    Submitted,
    /// "Принято в работу".
    Accepted,
    /// "направлено на специальную проверку".
    SpecialCheck,
    /// "направлен на медицинское обследование и психологическое тестирование".
    Medical,
    /// The agreement waits for the candidate's signature.
    AgreementToSign,
    /// The candidate signed; the head signs next.
    AgreementSigned,
    /// Order to report issued.
    OrderToReport,
    /// Completed.
    Completed,
    /// Refused.
    Rejected,
}

/// Status text of "Принято в работу", verbatim from seed 000.
pub const TEXT_ACCEPTED: &str = "Принято в работу";
/// Status text of the special check, verbatim from seed 000.
pub const TEXT_SPECIAL_CHECK: &str = "направлено на специальную проверку";
/// Status text of the medical examination, verbatim from seed 000.
pub const TEXT_MEDICAL: &str =
    "направлен на медицинское обследование и психологическое тестирование";

impl CandidateStatus {
    /// The proto enum.
    pub fn to_proto(self) -> pb::CandidateStatus {
        match self {
            CandidateStatus::Submitted => pb::CandidateStatus::Submitted,
            CandidateStatus::Accepted => pb::CandidateStatus::Accepted,
            CandidateStatus::SpecialCheck => pb::CandidateStatus::SpecialCheck,
            CandidateStatus::Medical => pb::CandidateStatus::Medical,
            CandidateStatus::AgreementToSign => pb::CandidateStatus::AgreementToSign,
            CandidateStatus::AgreementSigned => pb::CandidateStatus::AgreementSigned,
            CandidateStatus::OrderToReport => pb::CandidateStatus::OrderToReport,
            CandidateStatus::Completed => pb::CandidateStatus::Completed,
            CandidateStatus::Rejected => pb::CandidateStatus::Rejected,
        }
    }

    /// The stored column value (the proto number).
    pub fn code(self) -> i64 {
        i64::from(self.to_proto() as i32)
    }

    /// The Russian text of the cabinet and the SMS. The three texts the seed names are verbatim;
    /// the others are ours (decision 47).
    pub fn text(self) -> &'static str {
        match self {
            CandidateStatus::Submitted => "Заявка подана",
            CandidateStatus::Accepted => TEXT_ACCEPTED,
            CandidateStatus::SpecialCheck => TEXT_SPECIAL_CHECK,
            CandidateStatus::Medical => TEXT_MEDICAL,
            CandidateStatus::AgreementToSign => {
                "Соглашение о заключении контракта направлено на подписание"
            }
            CandidateStatus::AgreementSigned => {
                "Соглашение подписано кандидатом и направлено руководителю"
            }
            CandidateStatus::OrderToReport => "Соглашение подписано сторонами, выдано предписание",
            CandidateStatus::Completed => "Личное дело направлено в воинскую часть",
            CandidateStatus::Rejected => "Отказано в дальнейшем рассмотрении",
        }
    }

    /// Template id of the SMS in the notify service.
    pub fn template_id(self) -> &'static str {
        match self {
            CandidateStatus::Submitted => "intake.status.submitted",
            CandidateStatus::Accepted => "intake.status.accepted",
            CandidateStatus::SpecialCheck => "intake.status.special_check",
            CandidateStatus::Medical => "intake.status.medical",
            CandidateStatus::AgreementToSign => "intake.status.agreement_to_sign",
            CandidateStatus::AgreementSigned => "intake.status.agreement_signed",
            CandidateStatus::OrderToReport => "intake.status.order_to_report",
            CandidateStatus::Completed => "intake.status.completed",
            CandidateStatus::Rejected => "intake.status.rejected",
        }
    }
}

/// A workflow action; each one is an RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Head assigns to an executor.
    Assign,
    /// Executor's dossier is complete and the candidate eligible.
    DossierAccepted,
    /// Executor sends to special check.
    SendToSpecialCheck,
    /// Executor or head rejects with an internal reason.
    Reject,
    /// Executor sends to the ДДО.
    SendToMedical,
    /// ДДО executor records a pass.
    MedicalPass,
    /// ДДО executor records a fail.
    MedicalFail,
    /// Executor drafts the agreement.
    DraftAgreement,
    /// Candidate signs.
    SignByCandidate,
    /// Head signs.
    SignByHead,
    /// Executor issues the order to report.
    IssueOrder,
    /// Executor completes.
    Complete,
}

impl Action {
    /// The action's name in errors and events.
    pub fn name(self) -> &'static str {
        match self {
            Action::Assign => "assign",
            Action::DossierAccepted => "dossier_accepted",
            Action::SendToSpecialCheck => "send_to_special_check",
            Action::Reject => "reject",
            Action::SendToMedical => "send_to_medical",
            Action::MedicalPass => "medical_pass",
            Action::MedicalFail => "medical_fail",
            Action::DraftAgreement => "draft_agreement",
            Action::SignByCandidate => "sign_by_candidate",
            Action::SignByHead => "sign_by_head",
            Action::IssueOrder => "issue_order_to_report",
            Action::Complete => "complete",
        }
    }

    /// The roles allowed to take the action (ownership is checked separately).
    pub fn roles(self) -> &'static [Role] {
        match self {
            Action::Assign | Action::SignByHead => &[Role::Head],
            Action::Reject => &[Role::ModExecutor, Role::Head],
            Action::MedicalPass | Action::MedicalFail => &[Role::DdoExecutor],
            Action::SignByCandidate => &[Role::Candidate],
            Action::DossierAccepted
            | Action::SendToSpecialCheck
            | Action::SendToMedical
            | Action::DraftAgreement
            | Action::IssueOrder
            | Action::Complete => &[Role::ModExecutor],
        }
    }
}

/// The state `action` leads to from `from`, or `None` when the seed's algorithm does not allow it.
pub fn next_state(from: State, action: Action) -> Option<State> {
    use Action as A;
    use State as S;
    match (from, action) {
        (S::Submitted, A::Assign) => Some(S::Assigned),
        // Step 4: the executor may refuse on the form already, before the dossier.
        (S::Assigned, A::Reject) => Some(S::Rejected),
        (S::Assigned, A::DossierAccepted) => Some(S::Dossier),
        (S::Dossier, A::Reject) => Some(S::Rejected),
        (S::Dossier, A::SendToSpecialCheck) => Some(S::SpecialCheck),
        // Step 8: Art. 38 p.2 and p.4 grounds from the special check.
        (S::SpecialCheck, A::Reject) => Some(S::Rejected),
        (S::SpecialCheck, A::SendToMedical) => Some(S::Medical),
        (S::Medical, A::MedicalPass) => Some(S::MedicalPassed),
        (S::Medical, A::MedicalFail) => Some(S::Rejected),
        (S::MedicalPassed, A::DraftAgreement) => Some(S::AgreementDrafted),
        (S::AgreementDrafted, A::SignByCandidate) => Some(S::SignedByCandidate),
        (S::SignedByCandidate, A::SignByHead) => Some(S::SignedByHead),
        // Step 14: the head checks everything and may still refuse instead of signing.
        (S::SignedByCandidate, A::Reject) => Some(S::Rejected),
        (S::SignedByHead, A::IssueOrder) => Some(S::OrderToReport),
        (S::OrderToReport, A::Complete) => Some(S::Completed),
        _ => None,
    }
}

/// An action the application's state does not allow (the API answers `FAILED_PRECONDITION` /
/// `ILLEGAL_TRANSITION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("action {} is not allowed in state {}", .action.name(), .state.to_proto().as_str_name())]
pub struct IllegalTransition {
    /// The action asked for.
    pub action: Action,
    /// The state the application is in.
    pub state: State,
}

/// [`next_state`], or why not.
pub fn transition(from: State, action: Action) -> Result<State, IllegalTransition> {
    next_state(from, action).ok_or(IllegalTransition {
        action,
        state: from,
    })
}

/// Head: decide on a received application within 3 working days.
pub const HEAD_WORKING_DAYS: u32 = 3;
/// ДДО executor: medical and psychological decision within 7 working days.
pub const DDO_WORKING_DAYS: u32 = 7;
/// Chair of the medical commission: conclusion to the ДДО executor within 1 working day.
pub const MEDICAL_CHAIR_WORKING_DAYS: u32 = 1;
/// MoD executor: decision within 4 months of receiving the materials.
pub const MOD_EXECUTOR_MONTHS: u8 = 4;

/// Kazakhstan's single time zone since 1 March 2024 (UTC+5): working days are counted in it.
pub const KAZAKHSTAN_OFFSET_HOURS: i8 = 5;

fn kazakhstan_offset() -> UtcOffset {
    UtcOffset::from_hms(KAZAKHSTAN_OFFSET_HOURS, 0, 0).unwrap_or(UtcOffset::UTC)
}

/// The local (UTC+5) date of an epoch-ms instant.
pub fn local_date(epoch_ms: i64) -> Date {
    let instant = OffsetDateTime::from_unix_timestamp_nanos(i128::from(epoch_ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    instant.to_offset(kazakhstan_offset()).date()
}

/// Epoch ms of the end of `date` (next local midnight): a deadline "on day D" runs through D.
pub fn end_of_local_day(date: Date) -> i64 {
    let next = date.next_day().unwrap_or(Date::MAX);
    let midnight = next.midnight().assume_offset(kazakhstan_offset());
    i64::try_from(midnight.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// The end of the `working_days`-th working day after the local date of `start_ms`.
pub fn working_day_deadline(calendar: &WorkingCalendar, start_ms: i64, working_days: u32) -> i64 {
    end_of_local_day(calendar.add_working_days(local_date(start_ms), working_days))
}

/// The end of the same day `months` calendar months after `start_ms` (clamped to the month's
/// last day: 31 October + 4 months is 28/29 February).
pub fn month_deadline(start_ms: i64, months: u8) -> i64 {
    let date = local_date(start_ms);
    let month_index = i32::from(u8::from(date.month())) - 1 + i32::from(months);
    let year = date.year() + month_index.div_euclid(12);
    let month = u8::try_from(month_index.rem_euclid(12) + 1)
        .ok()
        .and_then(|month| Month::try_from(month).ok())
        .unwrap_or(Month::December);
    let last_day = time::util::days_in_month(month, year);
    let target =
        Date::from_calendar_date(year, month, date.day().min(last_day)).unwrap_or(Date::MAX);
    end_of_local_day(target)
}

/// Who owes the next step in `state` and by when; `executor_deadline_ms` is the 4-month deadline
/// fixed at assignment. `None` when nobody owes a step (terminal, or the candidate's turn).
pub fn step_deadline(
    calendar: &WorkingCalendar,
    state: State,
    entered_ms: i64,
    executor_deadline_ms: i64,
) -> Option<(Role, i64)> {
    match state {
        State::Submitted | State::SignedByCandidate => Some((
            Role::Head,
            working_day_deadline(calendar, entered_ms, HEAD_WORKING_DAYS),
        )),
        State::Assigned
        | State::Dossier
        | State::SpecialCheck
        | State::MedicalPassed
        | State::SignedByHead
        | State::OrderToReport => Some((Role::ModExecutor, executor_deadline_ms)),
        State::Medical => Some((
            Role::DdoExecutor,
            working_day_deadline(calendar, entered_ms, DDO_WORKING_DAYS),
        )),
        State::AgreementDrafted | State::Completed | State::Rejected => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn happy_path_reaches_completed() {
        let actions = [
            Action::Assign,
            Action::DossierAccepted,
            Action::SendToSpecialCheck,
            Action::SendToMedical,
            Action::MedicalPass,
            Action::DraftAgreement,
            Action::SignByCandidate,
            Action::SignByHead,
            Action::IssueOrder,
            Action::Complete,
        ];
        let end = actions
            .iter()
            .try_fold(State::Submitted, |state, action| next_state(state, *action));
        assert_eq!(end, Some(State::Completed));
    }

    #[test]
    fn skipping_the_special_check_is_illegal() {
        assert_eq!(
            transition(State::Dossier, Action::SendToMedical),
            Err(IllegalTransition {
                action: Action::SendToMedical,
                state: State::Dossier,
            })
        );
    }

    #[test]
    fn terminal_states_allow_nothing() {
        for state in [State::Completed, State::Rejected] {
            for action in [
                Action::Assign,
                Action::Reject,
                Action::Complete,
                Action::MedicalPass,
            ] {
                assert_eq!(next_state(state, action), None, "{state:?} {action:?}");
            }
        }
    }

    #[test]
    fn candidate_texts_are_the_seed_texts() {
        assert_eq!(
            State::Assigned.candidate_status().text(),
            "Принято в работу"
        );
        assert_eq!(
            State::SpecialCheck.candidate_status().text(),
            "направлено на специальную проверку"
        );
        assert_eq!(
            State::Medical.candidate_status().text(),
            "направлен на медицинское обследование и психологическое тестирование"
        );
    }

    #[test]
    fn head_deadline_skips_the_nauryz_holidays() {
        let calendar = WorkingCalendar::kazakhstan();
        // Filed Friday 20 March 2026 at 10:00 Astana; 21–23 March are Nauryz and the 21st and
        // 22nd (a weekend) move to 24 and 25 March, so the three working days are Thursday 26,
        // Friday 27 and Monday 30 March.
        let filed = date!(2026 - 03 - 20)
            .with_hms(10, 0, 0)
            .map(|time| time.assume_offset(kazakhstan_offset()))
            .map(|instant| instant.unix_timestamp() * 1000)
            .unwrap_or(0);
        let due = working_day_deadline(&calendar, filed, HEAD_WORKING_DAYS);
        assert_eq!(local_date(due - 1), date!(2026 - 03 - 30));
        assert_eq!(local_date(due), date!(2026 - 03 - 31));
    }

    #[test]
    fn four_months_clamp_to_the_end_of_february() {
        let start = end_of_local_day(date!(2025 - 10 - 30)) - 1;
        let due = month_deadline(start, MOD_EXECUTOR_MONTHS);
        assert_eq!(local_date(due - 1), date!(2026 - 02 - 28));
    }
}
