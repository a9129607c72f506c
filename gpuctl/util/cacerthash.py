"""kubeadm's `--discovery-token-ca-cert-hash` without the cryptography package.

`sha256:<hex>` of the CA certificate's DER-encoded SubjectPublicKeyInfo, as
`kubeadm token create --print-join-command` prints it and gpuctl.dev.pki's
`ca_public_key_hash` computes. The operator needs only this at startup; importing
cryptography for it (its own OpenSSL bindings) cost 7.8 MiB of RSS in every replica.
The certificate is walked as DER (X.509: Certificate -> tbsCertificate -> the seventh
field when a version is present, the sixth otherwise); the key bytes are hashed as they
stand in the certificate, which is exactly the DER encoding of the SubjectPublicKeyInfo.
"""

from __future__ import annotations

import hashlib
import ssl

_SEQUENCE = 0x30
_VERSION = 0xA0  # [0] EXPLICIT Version, present for v2 and v3 certificates


def _element(der: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of the value, end of the element) of the DER element at `pos`."""
    if pos + 2 > len(der):
        raise ValueError("truncated DER")
    tag, length = der[pos], der[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or pos + count > len(der):
            raise ValueError("unsupported DER length")
        length = int.from_bytes(der[pos : pos + count], "big")
        pos += count
    if pos + length > len(der):
        raise ValueError("truncated DER")
    return tag, pos, pos + length


def subject_public_key_info(der: bytes) -> bytes:
    """The DER SubjectPublicKeyInfo of a DER X.509 certificate."""
    tag, start, _ = _element(der, 0)
    if tag != _SEQUENCE:
        raise ValueError("not a certificate")
    tag, pos, tbs_end = _element(der, start)  # tbsCertificate
    if tag != _SEQUENCE:
        raise ValueError("not a certificate")
    if der[pos] == _VERSION:
        pos = _element(der, pos)[2]
    for _ in range(5):  # serialNumber, signature, issuer, validity, subject
        pos = _element(der, pos)[2]
    tag, _, end = _element(der, pos)
    if tag != _SEQUENCE or end > tbs_end:
        raise ValueError("no SubjectPublicKeyInfo")
    return der[pos:end]


def ca_cert_hash(ca_pem: bytes) -> str:
    """`sha256:<hex>` of the first certificate in `ca_pem`'s public key info."""
    text = ca_pem.decode("ascii")
    end = text.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")
    der = ssl.PEM_cert_to_DER_cert(text[text.index("-----BEGIN CERTIFICATE-----") : end])
    return "sha256:" + hashlib.sha256(subject_public_key_info(der)).hexdigest()
