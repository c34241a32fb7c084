//! `shlyuz.gateway.v1.DirectoryService`: X-Road-style metadata — participants, services and the
//! methods a participant may call — paged per AIP-158 over the current directory.

use shlyuz_kit::error::ApiError;
use shlyuz_kit::paging::{decode_page_token, encode_page_token, page_size};
use shlyuz_proto::gateway::v1::directory_service_server::{
    DirectoryService, DirectoryServiceServer,
};
use shlyuz_proto::gateway::v1::{
    AllowedMethod as AllowedMethodMessage, ListAllowedMethodsRequest, ListAllowedMethodsResponse,
    ListParticipantsRequest, ListParticipantsResponse, ListServicesRequest, ListServicesResponse,
    Participant as ParticipantMessage, Service as ServiceMessage,
};
use tonic::{Request, Response, Status};

use super::reload::DirectoryHandle;
use crate::identity::CallerIdentity;
use shlyuz_kit::error::reasons;

/// The Directory API over the live directory: every call sees the directory current at that moment.
#[derive(Debug, Clone)]
pub struct DirectoryApi {
    directory: DirectoryHandle,
}

impl DirectoryApi {
    /// The API over `directory`.
    pub fn new(directory: DirectoryHandle) -> Self {
        Self { directory }
    }
}

/// The tonic server of the Directory API, ready to add to a router.
pub fn directory_server(directory: DirectoryHandle) -> DirectoryServiceServer<DirectoryApi> {
    DirectoryServiceServer::new(DirectoryApi::new(directory))
}

#[tonic::async_trait]
impl DirectoryService for DirectoryApi {
    async fn list_participants(
        &self,
        request: Request<ListParticipantsRequest>,
    ) -> Result<Response<ListParticipantsResponse>, Status> {
        let message = request.into_inner();
        let limit = page_size(message.page_size)?;
        let after = decode_page_token(&message.page_token, "participants")?;
        let directory = self.directory.snapshot();
        let page = paginate(
            directory.participants(),
            |participant| participant.id.as_str(),
            after.as_deref(),
            limit,
        );
        Ok(Response::new(ListParticipantsResponse {
            participants: page
                .items
                .iter()
                .map(|participant| ParticipantMessage {
                    id: participant.id.clone(),
                    name: participant.name.clone(),
                })
                .collect(),
            next_page_token: page
                .next_key
                .map(|key| encode_page_token("participants", &key))
                .unwrap_or_default(),
        }))
    }

    async fn list_services(
        &self,
        request: Request<ListServicesRequest>,
    ) -> Result<Response<ListServicesResponse>, Status> {
        let message = request.into_inner();
        let limit = page_size(message.page_size)?;
        let after = decode_page_token(&message.page_token, "services")?;
        let directory = self.directory.snapshot();
        let page = paginate(
            directory.routes(),
            |route| route.service.as_str(),
            after.as_deref(),
            limit,
        );
        Ok(Response::new(ListServicesResponse {
            services: page
                .items
                .iter()
                .map(|route| ServiceMessage {
                    name: route.service.clone(),
                    methods: route.methods.clone(),
                    personal_data: route.personal_data,
                })
                .collect(),
            next_page_token: page
                .next_key
                .map(|key| encode_page_token("services", &key))
                .unwrap_or_default(),
        }))
    }

    async fn list_allowed_methods(
        &self,
        request: Request<ListAllowedMethodsRequest>,
    ) -> Result<Response<ListAllowedMethodsResponse>, Status> {
        let caller = CallerIdentity::of(&request).map(|identity| identity.participant_id.clone());
        let message = request.into_inner();
        let limit = page_size(message.page_size)?;
        let participant_id = if message.participant_id.is_empty() {
            caller.ok_or_else(|| {
                ApiError::invalid_field(
                    "participant_id",
                    "is required when the caller's identity is not known",
                )
            })?
        } else {
            message.participant_id
        };
        // The token is tied to the participant, so a token of another participant's listing is refused.
        let token_scope = format!("allowed-methods/{participant_id}");
        let after = decode_page_token(&message.page_token, &token_scope)?;
        let directory = self.directory.snapshot();
        if directory.participant(&participant_id).is_none() {
            return Err(ApiError::not_found(
                reasons::UNKNOWN_PARTICIPANT,
                format!("participant {participant_id} is not registered with the gateway"),
            )
            .with_metadata("participant_id", participant_id)
            .into());
        }
        let allowed = directory.allowed_methods(&participant_id);
        let page = paginate(allowed.iter(), allowed_method_key, after.as_deref(), limit);
        Ok(Response::new(ListAllowedMethodsResponse {
            methods: page
                .items
                .iter()
                .map(|allowed_method| AllowedMethodMessage {
                    service: allowed_method.service.clone(),
                    method: allowed_method.method.clone(),
                    purposes: allowed_method.purposes.clone(),
                    consent_required: allowed_method.consent_required,
                })
                .collect(),
            next_page_token: page
                .next_key
                .map(|key| encode_page_token(&token_scope, &key))
                .unwrap_or_default(),
        }))
    }
}

/// The sort key of an allowed method: the gRPC path without the leading slash, which sorts the
/// same way as (service, method) because neither part contains `/`.
fn allowed_method_key(allowed_method: &&super::AllowedMethod) -> String {
    format!("{}/{}", allowed_method.service, allowed_method.method)
}

/// One page of a key-sorted list.
struct Page<T> {
    items: Vec<T>,
    /// The last key of this page when more items follow.
    next_key: Option<String>,
}

/// The items whose key sorts after `after`, at most `page_size` of them. Paging by key rather than
/// by offset keeps pages free of duplicates and gaps when a reload changes the directory between
/// two requests.
fn paginate<T, K>(
    items: impl Iterator<Item = T>,
    key_of: impl Fn(&T) -> K,
    after: Option<&str>,
    page_size: usize,
) -> Page<T>
where
    K: AsRef<str>,
{
    let mut remaining =
        items.filter(|item| after.is_none_or(|after_key| key_of(item).as_ref() > after_key));
    let page_items: Vec<T> = remaining.by_ref().take(page_size).collect();
    let has_more = remaining.next().is_some();
    let next_key = match page_items.last() {
        Some(last) if has_more => Some(key_of(last).as_ref().to_string()),
        _ => None,
    };
    Page {
        items: page_items,
        next_key,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use shlyuz_kit::error::summarize_status;
    use tonic::Code;

    use super::super::Directory;
    use super::super::test_fixture::{Fixture, VALID_DIRECTORY};
    use super::*;

    /// The fixture's directory plus `extra` participants that reuse the ops signing key, and a
    /// service per participant with a `*` rule for ops, so lists span many pages.
    fn large_directory(fixture: &Fixture, extra: usize) -> Directory {
        let mut text = VALID_DIRECTORY.to_string();
        for number in 0..extra {
            text.push_str(&format!(
                "\n[[participants]]\nid = \"system-{number:03}\"\nname = \"System {number}\"\nsigning_public_key = \"pki/ops/signing.pub\"\n\n[[services]]\nname = \"shlyuz.test.v1.Service{number:03}\"\nupstream = \"127.0.0.1:9\"\npersonal_data = false\nmethods = [\"Alpha\", \"Beta\"]\n\n[[rules]]\nparticipant = \"ops\"\nservice = \"shlyuz.test.v1.Service{number:03}\"\nmethods = [\"*\"]\n"
            ));
        }
        fixture.compile(&text).unwrap()
    }

    fn api(directory: Directory) -> DirectoryApi {
        DirectoryApi::new(DirectoryHandle::new(directory))
    }

    fn as_caller<T>(message: T, participant_id: &str) -> Request<T> {
        let mut request = Request::new(message);
        request.extensions_mut().insert(CallerIdentity {
            participant_id: participant_id.to_string(),
        });
        request
    }

    #[tokio::test]
    async fn participants_pages_cover_everything_once() {
        let fixture = Fixture::new();
        let directory = large_directory(&fixture, 23);
        let expected: Vec<String> = directory
            .participants()
            .map(|participant| participant.id.clone())
            .collect();
        let api = api(directory);

        let mut seen = Vec::new();
        let mut page_token = String::new();
        let mut pages = 0;
        loop {
            let page = api
                .list_participants(Request::new(ListParticipantsRequest {
                    page_size: 4,
                    page_token: page_token.clone(),
                }))
                .await
                .unwrap()
                .into_inner();
            assert!(page.participants.len() <= 4);
            pages += 1;
            seen.extend(
                page.participants
                    .into_iter()
                    .map(|participant| participant.id),
            );
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        assert_eq!(seen, expected);
        assert_eq!(seen.len(), 26);
        assert_eq!(pages, 7);
        let unique: HashSet<&String> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len());
    }

    #[tokio::test]
    async fn services_pages_cover_everything_once() {
        let fixture = Fixture::new();
        let directory = large_directory(&fixture, 10);
        let expected: Vec<String> = directory
            .routes()
            .map(|route| route.service.clone())
            .collect();
        let api = api(directory);

        let mut seen = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = api
                .list_services(Request::new(ListServicesRequest {
                    page_size: 3,
                    page_token: page_token.clone(),
                }))
                .await
                .unwrap()
                .into_inner();
            seen.extend(page.services);
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        let names: Vec<String> = seen.iter().map(|service| service.name.clone()).collect();
        assert_eq!(names, expected);
        let person = seen
            .iter()
            .find(|service| service.name == "shlyuz.registry.v1.PersonRegistryService")
            .unwrap();
        assert_eq!(
            person.methods,
            vec!["GetPerson", "BatchGetPersons", "StreamPeople"]
        );
        assert!(person.personal_data);
    }

    #[tokio::test]
    async fn one_page_when_everything_fits() {
        let fixture = Fixture::new();
        let api = api(fixture.compile(VALID_DIRECTORY).unwrap());
        let page = api
            .list_services(Request::new(ListServicesRequest::default()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(page.services.len(), 3);
        assert!(page.next_page_token.is_empty());
    }

    #[tokio::test]
    async fn allowed_methods_default_to_the_caller_and_page_through() {
        let fixture = Fixture::new();
        let directory = large_directory(&fixture, 12);
        let expected = directory.allowed_methods("ops");
        assert_eq!(expected.len(), 2 + 12 * 2);
        let api = api(directory);

        let mut seen = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = api
                .list_allowed_methods(as_caller(
                    ListAllowedMethodsRequest {
                        participant_id: String::new(),
                        page_size: 5,
                        page_token: page_token.clone(),
                    },
                    "ops",
                ))
                .await
                .unwrap()
                .into_inner();
            seen.extend(page.methods);
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        let listed: Vec<(String, String)> = seen
            .iter()
            .map(|allowed| (allowed.service.clone(), allowed.method.clone()))
            .collect();
        let wanted: Vec<(String, String)> = expected
            .iter()
            .map(|allowed| (allowed.service.clone(), allowed.method.clone()))
            .collect();
        assert_eq!(listed, wanted);
    }

    #[tokio::test]
    async fn allowed_methods_of_a_named_participant() {
        let fixture = Fixture::new();
        let api = api(fixture.compile(VALID_DIRECTORY).unwrap());
        let page = api
            .list_allowed_methods(as_caller(
                ListAllowedMethodsRequest {
                    participant_id: "intake".to_string(),
                    ..ListAllowedMethodsRequest::default()
                },
                "ops",
            ))
            .await
            .unwrap()
            .into_inner();
        let get_person = page
            .methods
            .iter()
            .find(|allowed| allowed.method == "GetPerson")
            .unwrap();
        assert_eq!(
            get_person.service,
            "shlyuz.registry.v1.PersonRegistryService"
        );
        assert_eq!(get_person.purposes, vec!["MILITARY_RECRUITMENT"]);
        assert!(get_person.consent_required);
        assert_eq!(page.methods.len(), 3);
    }

    #[tokio::test]
    async fn unknown_participant_is_not_found() {
        let fixture = Fixture::new();
        let api = api(fixture.compile(VALID_DIRECTORY).unwrap());
        let status = api
            .list_allowed_methods(as_caller(
                ListAllowedMethodsRequest {
                    participant_id: "nobody".to_string(),
                    ..ListAllowedMethodsRequest::default()
                },
                "ops",
            ))
            .await
            .unwrap_err();
        let summary = summarize_status(&status);
        assert_eq!(summary.code, Code::NotFound);
        assert_eq!(summary.reason, "UNKNOWN_PARTICIPANT");

        // A caller the directory does not know (removed by a reload) is not found either.
        let retired_status = api
            .list_allowed_methods(as_caller(
                ListAllowedMethodsRequest::default(),
                "retired-system",
            ))
            .await
            .unwrap_err();
        assert_eq!(
            summarize_status(&retired_status).reason,
            "UNKNOWN_PARTICIPANT"
        );
    }

    #[tokio::test]
    async fn anonymous_caller_must_name_the_participant() {
        let fixture = Fixture::new();
        let api = api(fixture.compile(VALID_DIRECTORY).unwrap());
        let status = api
            .list_allowed_methods(Request::new(ListAllowedMethodsRequest::default()))
            .await
            .unwrap_err();
        let summary = summarize_status(&status);
        assert_eq!(summary.code, Code::InvalidArgument);
        assert_eq!(summary.fields, vec!["participant_id"]);
    }

    #[tokio::test]
    async fn negative_page_size_is_invalid() {
        let fixture = Fixture::new();
        let api = api(fixture.compile(VALID_DIRECTORY).unwrap());
        let status = api
            .list_participants(Request::new(ListParticipantsRequest {
                page_size: -1,
                page_token: String::new(),
            }))
            .await
            .unwrap_err();
        let summary = summarize_status(&status);
        assert_eq!(summary.code, Code::InvalidArgument);
        assert_eq!(summary.fields, vec!["page_size"]);
    }

    #[tokio::test]
    async fn malformed_or_foreign_page_tokens_are_invalid() {
        let fixture = Fixture::new();
        let directory = large_directory(&fixture, 3);
        let api = api(directory);
        let services_token = api
            .list_services(Request::new(ListServicesRequest {
                page_size: 1,
                page_token: String::new(),
            }))
            .await
            .unwrap()
            .into_inner()
            .next_page_token;
        assert!(!services_token.is_empty());
        let intake_token = api
            .list_allowed_methods(as_caller(
                ListAllowedMethodsRequest {
                    participant_id: String::new(),
                    page_size: 1,
                    page_token: String::new(),
                },
                "intake",
            ))
            .await
            .unwrap()
            .into_inner()
            .next_page_token;
        assert!(!intake_token.is_empty());

        let not_base64 = "not a token!".to_string();
        let not_utf8 = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            [0xff_u8, 0xfe, b'\n', b'x'],
        );
        let no_scope =
            base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, "intake");
        for page_token in [not_base64, not_utf8, no_scope, services_token] {
            let status = api
                .list_participants(Request::new(ListParticipantsRequest {
                    page_size: 1,
                    page_token: page_token.clone(),
                }))
                .await
                .unwrap_err();
            let summary = summarize_status(&status);
            assert_eq!(summary.code, Code::InvalidArgument, "{page_token}");
            assert_eq!(summary.fields, vec!["page_token"], "{page_token}");
        }

        // A token from intake's listing does not continue ops's listing.
        let foreign_status = api
            .list_allowed_methods(as_caller(
                ListAllowedMethodsRequest {
                    participant_id: "ops".to_string(),
                    page_size: 1,
                    page_token: intake_token,
                },
                "intake",
            ))
            .await
            .unwrap_err();
        assert_eq!(summarize_status(&foreign_status).fields, vec!["page_token"]);
    }

    #[test]
    fn pages_continue_after_the_last_key_even_if_it_was_removed() {
        let keys = ["a", "b", "d", "e"];
        let page = paginate(keys.iter(), |key| key.to_string(), Some("c"), 1);
        assert_eq!(page.items, vec![&"d"]);
        assert_eq!(page.next_key.as_deref(), Some("d"));
        let last_page = paginate(keys.iter(), |key| key.to_string(), Some("d"), 1);
        assert_eq!(last_page.items, vec![&"e"]);
        assert_eq!(last_page.next_key, None);
    }
}
