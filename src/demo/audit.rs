//! The audit: the candidate sees who looked at their data (the gateway's subject access log),
//! and operations verifies the hash-chained message log every call of the demo went into.

use anyhow::ensure;
use shlyuz_kit::envelope::EnvelopeBuilder;
use shlyuz_kit::gateway_client::with_envelope;
use shlyuz_proto::gateway::v1 as gateway_pb;

use super::{CANDIDATE, Demo, Described, Progress, client};

impl Demo {
    /// The audit scenario: the subject access report and the message log's chain.
    pub(super) async fn audit(&self, progress: &mut Progress) -> anyhow::Result<()> {
        progress.section("Audit");
        progress
            .step("the candidate can see who looked at their data", async {
                let envelope = EnvelopeBuilder {
                    purpose: "SUBJECT_ACCESS_REPORT".to_string(),
                    subject_iin: CANDIDATE.iin.to_string(),
                    ..EnvelopeBuilder::default()
                };
                let accesses = gateway_pb::access_log_service_client::AccessLogServiceClient::new(
                    self.portal.signed_channel(),
                )
                .list_subject_access(with_envelope(
                    envelope,
                    gateway_pb::ListSubjectAccessRequest {
                        subject_iin: CANDIDATE.iin.to_string(),
                        ..Default::default()
                    },
                ))
                .await
                .described()?
                .accesses;
                ensure!(
                    accesses
                        .iter()
                        .any(|access| access.participant_id == "intake"),
                    "intake's look-ups of {} are not in the access log",
                    CANDIDATE.full_name
                );
                let mut seen: Vec<String> = accesses
                    .iter()
                    .map(|access| {
                        format!(
                            "{} ({}) {}",
                            access.participant_id, access.purpose, access.service
                        )
                    })
                    .collect();
                seen.sort();
                seen.dedup();
                Ok(((), seen.join("\n")))
            })
            .await?;

        progress
            .step("operations verifies the hash-chained message log", async {
                let verification =
                    gateway_pb::message_log_service_client::MessageLogServiceClient::new(
                        self.ops.signed_channel(),
                    )
                    .verify_chain(client::signed(gateway_pb::VerifyChainRequest::default()))
                    .await
                    .described()?;
                ensure!(
                    verification.intact,
                    "the message log is broken: {verification:?}"
                );
                let entries: i64 = verification.chains.iter().map(|chain| chain.entries).sum();
                let checkpoints: i64 = verification
                    .chains
                    .iter()
                    .map(|chain| chain.checkpoints)
                    .sum();
                Ok((
                    (),
                    format!(
                        "{entries} entries and {checkpoints} signed checkpoints in {} chain(s): \
                         intact{}",
                        verification.chains.len(),
                        if checkpoints == 0 {
                            " (the gateway signs a checkpoint every minute while entries arrive, \
                             and at shutdown)"
                        } else {
                            ""
                        }
                    ),
                ))
            })
            .await
    }
}
