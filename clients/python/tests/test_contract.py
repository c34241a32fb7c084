"""The public surface of Shlyuz proven with a gRPC implementation it does not share code with
(grpcio) and a client written from proto/ and docs/gateway.md only. The live tests need a running
`shlyuz up` whose registry holds the rules fixture: SHLYUZ_ENDPOINTS names its endpoints.json
(clients/python/run-contract.sh prepares both).
"""
import base64
import hashlib
import os
import pathlib
import sys

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.rpc import error_details_pb2
from grpc_status import rpc_status

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import shlyuz_client  # noqa: E402
from shlyuz.gateway.v1 import access_log_pb2, access_log_pb2_grpc  # noqa: E402
from shlyuz.registry.v1 import person_pb2, person_pb2_grpc  # noqa: E402

GET_PERSON = "/shlyuz.registry.v1.PersonRegistryService/GetPerson"
LIST_ACCESS = "/shlyuz.gateway.v1.AccessLogService/ListSubjectAccess"
CLEAN_CANDIDATE = "980512391010"  # services/registry/fixtures/rules.toml


def test_the_documented_worked_example_signs_to_the_documented_signature():
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    body = bytes.fromhex("0a0c393030313031333030303137")
    assert hashlib.sha256(body).hexdigest() == "2daffebfcabb587e0c427cb55ac631fa9ca3c1c765a94392021ade47706b648d"
    text = shlyuz_client.canonical_string(
        "0191f5a0-3c1e-7b3a-9a52-5d0b5e0f6c11",
        GET_PERSON,
        "2026-11-25T07:30:00.123Z",
        "850315400025",
        "900101300017",
        "MILITARY_RECRUITMENT",
        "",
        body,
    )
    signature = base64.b64encode(key.sign(text.encode())).decode()
    assert signature == (
        "pURJj2h0AclzUmbgx0pqFG1w8w4C2FnTCdiWwS1Bq7YGh63VtuDi6y1BniXwD+b5xB0uX9zQgLzX2/5w0Z5TDg=="
    )


def test_the_documented_v2_example_signs_the_role_and_the_region():
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    body = bytes.fromhex("0a0c393030313031333030303137")
    text = shlyuz_client.canonical_string_v2(
        "0191f5a0-3c1e-7b3a-9a52-5d0b5e0f6c11",
        GET_PERSON,
        "2026-11-25T07:30:00.123Z",
        "850315400025",
        "ddo_executor",
        "110000000",
        "900101300017",
        "MILITARY_RECRUITMENT",
        "",
        body,
    )
    signature = base64.b64encode(key.sign(text.encode())).decode()
    assert signature == (
        "MKIRnI1xAdNs1JvilvOwnhS/REQC84IeHXrNWzWScXp4fk3TneA7Yrb2GjT4QVSf+aptjK+OBC0MtbDQduqjDg=="
    )


@pytest.fixture(scope="module")
def endpoints():
    path = os.environ.get("SHLYUZ_ENDPOINTS")
    if not path:
        pytest.fail("SHLYUZ_ENDPOINTS must name the endpoints.json of a running `shlyuz up`")
    return shlyuz_client.load_endpoints(path)


def error_details(error):
    status = rpc_status.from_call(error)
    assert status is not None, f"no google.rpc.Status details in {error}"
    reason, fields = "", []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            assert info.domain == "shlyuz"
            reason = info.reason
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            fields = [violation.field for violation in bad_request.field_violations]
    return reason, fields


def get_person(endpoints, participant_id, iin, purpose="MILITARY_RECRUITMENT", tamper=None):
    participant = shlyuz_client.Participant(endpoints, participant_id)
    request = person_pb2.GetPersonRequest(iin=iin)
    metadata = participant.envelope(GET_PERSON, request, purpose=purpose, subject_iin=iin)
    if tamper:
        metadata = tamper(metadata)
    with participant.channel(endpoints["gateway"]) as channel:
        stub = person_pb2_grpc.PersonRegistryServiceStub(channel)
        response, call = stub.GetPerson.with_call(request, metadata=metadata)
        return request, response, call


def test_a_signed_lookup_returns_the_person_with_request_hash_and_log_position(endpoints):
    request, response, call = get_person(endpoints, "intake", CLEAN_CANDIDATE)
    assert response.person.iin == CLEAN_CANDIDATE
    assert response.person.last_name
    headers = dict(call.initial_metadata())
    assert headers["x-shlyuz-request-hash"] == hashlib.sha256(request.SerializeToString()).hexdigest()
    trailers = dict(call.trailing_metadata())
    chain_id, sequence = trailers["x-shlyuz-log-position"].rsplit(":", 1)
    assert chain_id and int(sequence) > 0


def test_a_forged_signature_is_refused_with_its_reason(endpoints):
    def forge(metadata):
        return [(name, "A" * 86 + "==" if name == "x-shlyuz-signature" else value) for name, value in metadata]

    with pytest.raises(grpc.RpcError) as refused:
        get_person(endpoints, "intake", CLEAN_CANDIDATE, tamper=forge)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_details(refused.value)[0] == "SIGNATURE_INVALID"


def test_a_purpose_outside_the_rule_is_refused(endpoints):
    with pytest.raises(grpc.RpcError) as refused:
        get_person(endpoints, "intake", CLEAN_CANDIDATE, purpose="SUBJECT_ACCESS_REPORT")
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_details(refused.value)[0] == "PURPOSE_NOT_ALLOWED"


def test_an_invalid_iin_names_the_metadata_key(endpoints):
    with pytest.raises(grpc.RpcError) as refused:
        get_person(endpoints, "intake", "980512391011")
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(refused.value)[1] == ["x-shlyuz-subject-iin"]


def test_the_citizen_sees_who_looked_at_their_data(endpoints):
    get_person(endpoints, "intake", CLEAN_CANDIDATE)
    portal = shlyuz_client.Participant(endpoints, "jauynger-portal")
    request = access_log_pb2.ListSubjectAccessRequest(subject_iin=CLEAN_CANDIDATE)
    metadata = portal.envelope(LIST_ACCESS, request, purpose="SUBJECT_ACCESS_REPORT", subject_iin=CLEAN_CANDIDATE)
    with portal.channel(endpoints["gateway"]) as channel:
        accesses = access_log_pb2_grpc.AccessLogServiceStub(channel).ListSubjectAccess(request, metadata=metadata)
    looked = [(access.participant_id, access.method, access.purpose) for access in accesses.accesses]
    assert ("intake", "GetPerson", "MILITARY_RECRUITMENT") in looked


sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "examples"))
import submit_application  # noqa: E402
from shlyuz.intake.v1 import application_pb2  # noqa: E402

NARCOLOGICAL_CANDIDATE = "990203391021"  # services/registry/fixtures/rules.toml


def test_an_application_signed_with_eds_is_filed_once_per_vacancy(endpoints):
    vacancy_id = submit_application.create_vacancy(endpoints)
    certificate = submit_application.issue_certificate(endpoints, CLEAN_CANDIDATE)
    filed = submit_application.file_application(endpoints, vacancy_id, CLEAN_CANDIDATE, certificate)
    seen = submit_application.candidate_view(endpoints, CLEAN_CANDIDATE, filed.application_id)
    assert seen.candidate_status == application_pb2.CANDIDATE_STATUS_SUBMITTED
    assert seen.vacancy_id == vacancy_id

    with pytest.raises(grpc.RpcError) as refused:
        submit_application.file_application(endpoints, vacancy_id, CLEAN_CANDIDATE, certificate)
    assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_details(refused.value)[0] == "APPLICATION_ALREADY_ACTIVE"


def test_a_form_signed_with_someone_elses_certificate_is_refused(endpoints):
    vacancy_id = submit_application.create_vacancy(endpoints)
    someone_else = submit_application.issue_certificate(endpoints, NARCOLOGICAL_CANDIDATE)
    with pytest.raises(grpc.RpcError) as refused:
        submit_application.file_application(endpoints, vacancy_id, CLEAN_CANDIDATE, someone_else)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(refused.value)[0] == "SIGNER_IIN_MISMATCH"


def test_a_form_naming_another_candidate_is_refused(endpoints):
    vacancy_id = submit_application.create_vacancy(endpoints)
    certificate = submit_application.issue_certificate(endpoints, CLEAN_CANDIDATE)
    with pytest.raises(grpc.RpcError) as refused:
        submit_application.file_application(
            endpoints, vacancy_id, CLEAN_CANDIDATE, certificate, signed_iin=NARCOLOGICAL_CANDIDATE
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(refused.value)[0] == "SIGNED_DOCUMENT_MISMATCH"


from shlyuz.registry.v1 import consent_pb2, consent_pb2_grpc  # noqa: E402

REQUEST_CONSENT = "/shlyuz.registry.v1.ConsentService/RequestConsent"
CONFIRM_CONSENT = "/shlyuz.registry.v1.ConsentService/ConfirmConsent"
CLEAN_CANDIDATE_PHONE = "+77015550010"  # the rules fixture's mobile citizens database


def consent_code(endpoints, consent_id, timeout_s=30):
    """The code of the consent SMS notify sent, read from the log provider's file (endpoints.json)."""
    import json
    import re
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            lines = pathlib.Path(endpoints["sms_log"]).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            lines = []
        for line in reversed(lines):
            sms = json.loads(line)
            if sms["to"] == CLEAN_CANDIDATE_PHONE and "Код подтверждения" in sms["text"]:
                return re.search(r"\b(\d{6})\b", sms["text"]).group(1)
        time.sleep(0.1)
    pytest.fail(f"no consent SMS for {consent_id} in {endpoints['sms_log']}")


def test_a_consent_confirmed_with_the_sms_code_becomes_active(endpoints):
    import time

    portal = shlyuz_client.Participant(endpoints, "jauynger-portal")
    request = consent_pb2.RequestConsentRequest(
        subject_iin=CLEAN_CANDIDATE,
        participant="intake",
        purpose="MILITARY_RECRUITMENT",
        scopes=["shlyuz.registry.v1.PersonRegistryService"],
        expire_time_ms=int(time.time() * 1000) + 3_600_000,
    )
    with portal.channel(endpoints["gateway"]) as channel:
        stub = consent_pb2_grpc.ConsentServiceStub(channel)
        metadata = portal.envelope(
            REQUEST_CONSENT, request, purpose="PERSONAL_DATA_CONSENT", subject_iin=CLEAN_CANDIDATE
        )
        pending = stub.RequestConsent(request, metadata=metadata).consent
        assert pending.state == consent_pb2.CONSENT_STATE_PENDING

        wrong = consent_pb2.ConfirmConsentRequest(consent_id=pending.consent_id, otp="000000")
        code = consent_code(endpoints, pending.consent_id)
        if code == "000000":
            wrong.otp = "000001"
        metadata = portal.envelope(
            CONFIRM_CONSENT, wrong, purpose="PERSONAL_DATA_CONSENT", subject_iin=CLEAN_CANDIDATE
        )
        with pytest.raises(grpc.RpcError) as refused:
            stub.ConfirmConsent(wrong, metadata=metadata)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_details(refused.value)[0] == "OTP_CODE_WRONG"

        right = consent_pb2.ConfirmConsentRequest(consent_id=pending.consent_id, otp=code)
        metadata = portal.envelope(
            CONFIRM_CONSENT, right, purpose="PERSONAL_DATA_CONSENT", subject_iin=CLEAN_CANDIDATE
        )
        active = stub.ConfirmConsent(right, metadata=metadata).consent
    assert active.state == consent_pb2.CONSENT_STATE_ACTIVE
