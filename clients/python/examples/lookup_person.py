"""Looks a person up in the individuals registry (ГБД ФЛ) through the gateway, as the intake system
would for a Jauynger candidate, then shows the citizen's "who looked at my data" entries.

    python examples/lookup_person.py var/endpoints.json 980512391010
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import shlyuz_client  # noqa: E402
from shlyuz.gateway.v1 import access_log_pb2, access_log_pb2_grpc  # noqa: E402
from shlyuz.registry.v1 import person_pb2, person_pb2_grpc  # noqa: E402

GET_PERSON = "/shlyuz.registry.v1.PersonRegistryService/GetPerson"
LIST_ACCESS = "/shlyuz.gateway.v1.AccessLogService/ListSubjectAccess"


def look_up(endpoints, iin):
    """The person in the individuals registry, as the intake system reads them (purpose
    MILITARY_RECRUITMENT, the person as the envelope's subject)."""
    intake = shlyuz_client.Participant(endpoints, "intake")
    request = person_pb2.GetPersonRequest(iin=iin)
    metadata = intake.envelope(GET_PERSON, request, purpose="MILITARY_RECRUITMENT", subject_iin=iin)
    with intake.channel(endpoints["gateway"]) as channel:
        return person_pb2_grpc.PersonRegistryServiceStub(channel).GetPerson(request, metadata=metadata).person


def main(endpoints_path, iin):
    endpoints = shlyuz_client.load_endpoints(endpoints_path)
    person = look_up(endpoints, iin)
    print(f"{person.last_name} {person.first_name} {person.patronymic}, born {person.birth_date}")

    portal = shlyuz_client.Participant(endpoints, "jauynger-portal")
    access_request = access_log_pb2.ListSubjectAccessRequest(subject_iin=iin)
    metadata = portal.envelope(LIST_ACCESS, access_request, purpose="SUBJECT_ACCESS_REPORT", subject_iin=iin)
    with portal.channel(endpoints["gateway"]) as channel:
        accesses = access_log_pb2_grpc.AccessLogServiceStub(channel).ListSubjectAccess(
            access_request, metadata=metadata
        ).accesses
    for access in accesses:
        print(f"  looked at by {access.participant_id} ({access.purpose}): {access.service}/{access.method}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1], sys.argv[2]))
