from cryptography import x509
from cryptography.x509.oid import NameOID

from gpuctl.dev import pki


def test_client_certificate_carries_user_and_groups() -> None:
    ca = pki.CA.create()
    leaf = ca.issue("alice", ("team-a", "team-b"))
    cert = x509.load_pem_x509_certificate(leaf.cert_pem)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"
    orgs = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    assert orgs == ["team-a", "team-b"]
    cert.verify_directly_issued_by(ca.cert)


def test_ca_hash_has_kubeadm_format() -> None:
    digest = pki.ca_public_key_hash(pki.CA.create().cert_pem)
    assert digest.startswith("sha256:")
    assert len(digest) == len("sha256:") + 64
