"""Looks a candidate up and files their Jauynger application through the gateway: the intake system
reads the person from the individuals registry, the unit head publishes a vacancy (the officials'
workstation, SDU), the candidate gets a test EDS certificate from the НУЦ mimic, signs the application
form and the portal files it; then the candidate's cabinet shows its status.

    python examples/submit_application.py var/endpoints.json [candidate IIN]
"""
import pathlib
import sys
import uuid

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import shlyuz_client  # noqa: E402
from lookup_person import look_up  # noqa: E402
from shlyuz.intake.v1 import application_pb2, application_pb2_grpc, vacancy_pb2, vacancy_pb2_grpc  # noqa: E402
from shlyuz.registry.v1 import certificate_authority_pb2, certificate_authority_pb2_grpc  # noqa: E402

CREATE_VACANCY = "/shlyuz.intake.v1.VacancyService/CreateVacancy"
ISSUE_CERTIFICATE = "/shlyuz.registry.v1.CertificateAuthorityService/IssueCertificate"
CREATE_APPLICATION = "/shlyuz.intake.v1.ApplicationService/CreateApplication"
GET_APPLICATION = "/shlyuz.intake.v1.ApplicationService/GetApplication"

CLEAN_CANDIDATE = "980512391010"  # Қасымов Ерлан Серікұлы in the rules fixture `shlyuz up` loads
UNIT_HEAD = "900315391113"  # Тоқаев Ғалым Бауыржанұлы, a serviceman of the fixture
AKMOLA = "110000000"


def create_vacancy(endpoints):
    """The unit head publishes a vacancy from the officials' workstation (participant `sdu`)."""
    sdu = shlyuz_client.Participant(endpoints, "sdu")
    request = vacancy_pb2.CreateVacancyRequest(
        vacancy=vacancy_pb2.Vacancy(
            position="стрелок",
            rank=vacancy_pb2.RANK_PRIVATE,
            branch="Сухопутные войска",
            unit="в/ч 12345",
            region_kato=AKMOLA,
            places=2,
        )
    )
    metadata = sdu.envelope(CREATE_VACANCY, request, user_id=UNIT_HEAD, user_role="head")
    with sdu.channel(endpoints["gateway"]) as channel:
        response = vacancy_pb2_grpc.VacancyServiceStub(channel).CreateVacancy(request, metadata=metadata)
    return response.vacancy.vacancy_id


def issue_certificate(endpoints, iin, full_name="Demo Holder"):
    """A test EDS certificate (and its key) for `iin` from the НУЦ mimic, as the portal obtains it."""
    portal = shlyuz_client.Participant(endpoints, "jauynger-portal")
    request = certificate_authority_pb2.IssueCertificateRequest(
        iin=iin,
        full_name=full_name,
        holder_kind=certificate_authority_pb2.HOLDER_KIND_CITIZEN,
        validity_days=30,
    )
    metadata = portal.envelope(ISSUE_CERTIFICATE, request, purpose="DIGITAL_SIGNATURE", subject_iin=iin)
    with portal.channel(endpoints["gateway"]) as channel:
        return certificate_authority_pb2_grpc.CertificateAuthorityServiceStub(channel).IssueCertificate(
            request, metadata=metadata
        )


def file_application(endpoints, vacancy_id, candidate_iin, certificate, consent_id=None, signed_iin=None):
    """The candidate signs the application form with EDS and the portal files it. `signed_iin` lets a
    test sign a form that names someone else."""
    portal = shlyuz_client.Participant(endpoints, "jauynger-portal")
    consent_id = consent_id or str(uuid.uuid4())
    document = shlyuz_client.application_document(vacancy_id, signed_iin or candidate_iin, consent_id)
    request = application_pb2.CreateApplicationRequest(
        vacancy_id=vacancy_id,
        consent_id=consent_id,
        signed_application=application_pb2.SignedDocument(
            document=document,
            signature=shlyuz_client.sign_document(certificate.private_key_pem, document),
            signer_certificate_pem=certificate.certificate_pem,
        ),
        phone_number="+77015550010",
        language="kk",
    )
    metadata = portal.envelope(CREATE_APPLICATION, request, user_id=candidate_iin, user_role="candidate")
    with portal.channel(endpoints["gateway"]) as channel:
        return application_pb2_grpc.ApplicationServiceStub(channel).CreateApplication(
            request, metadata=metadata
        ).application


def candidate_view(endpoints, candidate_iin, application_id):
    """The application as the candidate's cabinet shows it."""
    portal = shlyuz_client.Participant(endpoints, "jauynger-portal")
    request = application_pb2.GetApplicationRequest(application_id=application_id)
    metadata = portal.envelope(GET_APPLICATION, request, user_id=candidate_iin, user_role="candidate")
    with portal.channel(endpoints["gateway"]) as channel:
        return application_pb2_grpc.ApplicationServiceStub(channel).GetApplication(
            request, metadata=metadata
        ).application


def main(endpoints_path, candidate_iin):
    endpoints = shlyuz_client.load_endpoints(endpoints_path)
    person = look_up(endpoints, candidate_iin)
    full_name = f"{person.last_name} {person.first_name} {person.patronymic}".strip()
    print(f"candidate {full_name}, born {person.birth_date} (individuals registry)")
    vacancy_id = create_vacancy(endpoints)
    print(f"vacancy {vacancy_id} published by the unit head")
    certificate = issue_certificate(endpoints, candidate_iin, full_name)
    print(f"EDS certificate {certificate.serial_number} issued to {candidate_iin}")
    application = file_application(endpoints, vacancy_id, candidate_iin, certificate)
    print(f"application {application.application_id} filed")
    seen = candidate_view(endpoints, candidate_iin, application.application_id)
    status = application_pb2.CandidateStatus.Name(seen.candidate_status)
    print(f"the candidate's cabinet shows {status}")
    return 0 if seen.candidate_status == application_pb2.CANDIDATE_STATUS_SUBMITTED else 1


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1], sys.argv[2] if len(sys.argv) == 3 else CLEAN_CANDIDATE))
