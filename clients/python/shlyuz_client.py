"""A small Shlyuz client written only from the published contract: proto/ and docs/gateway.md.

It connects to the gateway with mutual TLS using the files `shlyuz up` lists in endpoints.json, and
signs the envelope exactly as docs/gateway.md specifies (Ed25519 over the canonical string).
"""
import base64
import datetime
import hashlib
import json
import pathlib
import sys
import uuid

import grpc
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "generated"))

CANONICAL_VERSION = "shlyuz-envelope-v1"
CANONICAL_VERSION_V2 = "shlyuz-envelope-v2"


def _request_hash(request_bytes):
    return hashlib.sha256(request_bytes).hexdigest() if request_bytes is not None else ""


def canonical_string(message_id, path, timestamp, user_id, subject_iin, purpose, consent_id, request_bytes):
    """The legacy v1 string of docs/gateway.md: nine lines joined by a single newline."""
    return "\n".join(
        [CANONICAL_VERSION, message_id, path, timestamp, user_id, subject_iin, purpose, consent_id,
         _request_hash(request_bytes)]
    )


def canonical_string_v2(message_id, path, timestamp, user_id, user_role, user_region, subject_iin, purpose,
                        consent_id, request_bytes):
    """The v2 string of docs/gateway.md: eleven lines (v1 plus the user's role and region after the
    user id) joined by a single newline, no trailing newline."""
    return "\n".join(
        [CANONICAL_VERSION_V2, message_id, path, timestamp, user_id, user_role, user_region, subject_iin,
         purpose, consent_id, _request_hash(request_bytes)]
    )


def now_timestamp():
    """RFC 3339 UTC with milliseconds and Z, as the envelope expects."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


class Participant:
    """A participant's identity: its TLS files and its message-signing key."""

    def __init__(self, endpoints, participant_id):
        files = endpoints["participants"][participant_id]
        self.id = participant_id
        self.ca = pathlib.Path(endpoints["ca_cert"]).read_bytes()
        self.cert = pathlib.Path(files["tls_cert"]).read_bytes()
        self.key = pathlib.Path(files["tls_key"]).read_bytes()
        self.signing_key = load_ed25519_key(pathlib.Path(files["signing_key"]).read_bytes())

    def channel(self, address):
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )
        return grpc.secure_channel(address, credentials)

    def envelope(self, path, request, purpose="", subject_iin="", user_id="", consent_id="", correlation_id="",
                 message_id=None, timestamp=None, user_role="", user_region=""):
        """The metadata of a signed call of `path` carrying the protobuf message `request`, signed
        with envelope v2 (which also covers the user's role and region, e.g. intake's roles)."""
        message_id = message_id or str(uuid.uuid4())
        timestamp = timestamp or now_timestamp()
        text = canonical_string_v2(
            message_id, path, timestamp, user_id, user_role, user_region, subject_iin, purpose, consent_id,
            request.SerializeToString(),
        )
        signature = base64.b64encode(self.signing_key.sign(text.encode("utf-8"))).decode("ascii")
        metadata = [
            ("x-shlyuz-message-id", message_id),
            ("x-shlyuz-timestamp", timestamp),
            ("x-shlyuz-signature", signature),
            ("x-shlyuz-envelope-version", "2"),
        ]
        for name, value in [
            ("x-shlyuz-correlation-id", correlation_id),
            ("x-shlyuz-user-id", user_id),
            ("x-shlyuz-user-role", user_role),
            ("x-shlyuz-user-region", user_region),
            ("x-shlyuz-purpose", purpose),
            ("x-shlyuz-subject-iin", subject_iin),
            ("x-shlyuz-consent-id", consent_id),
        ]:
            if value:
                metadata.append((name, value))
        return metadata


def application_document(vacancy_id, candidate_iin, consent_id, attachment_sha256=()):
    """The canonical application form of docs/intake.md that the candidate signs."""
    text = (
        "shlyuz-intake-application-v1\n"
        f"vacancy_id={vacancy_id}\ncandidate_iin={candidate_iin}\nconsent_id={consent_id}\n"
    )
    for digest in attachment_sha256:
        text += f"attachment_sha256={digest}\n"
    return text.encode("utf-8")


def sign_document(private_key_pem, document):
    """A detached EDS signature as docs/intake.md specifies: ECDSA P-256 over SHA-256, DER-encoded,
    with the holder's PKCS#8 key (the test НУЦ hands it out with the certificate)."""
    key = serialization.load_pem_private_key(private_key_pem.encode("ascii"), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("not an ECDSA key")
    return key.sign(document, ec.ECDSA(hashes.SHA256()))


def load_ed25519_key(pem):
    """An Ed25519 private key from PKCS#8 PEM, version 1 or 2 (ring writes version 2, with the
    public key attached, which not every library reads: then the 32-byte seed is taken from its
    CurvePrivateKey, the OCTET STRING 04 20 inside the privateKey field 04 22)."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except ValueError:
        body = b"".join(line for line in pem.splitlines() if line and not line.startswith(b"-----"))
        der = base64.b64decode(body)
        marker = der.find(b"\x04\x22\x04\x20")
        if marker < 0 or len(der) < marker + 36:
            raise ValueError("not an Ed25519 PKCS#8 key")
        key = Ed25519PrivateKey.from_private_bytes(der[marker + 4 : marker + 36])
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("not an Ed25519 key")
    return key


def load_endpoints(path):
    return json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
