"""The CA certificate hash without cryptography equals gpuctl.dev.pki's (kubeadm's)."""

from __future__ import annotations

import datetime
import subprocess
import sys

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from gpuctl.dev import pki
from gpuctl.util.cacerthash import ca_cert_hash


def rsa_ca_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize("make", [lambda: pki.CA.create("gpuctl-test").cert_pem, rsa_ca_pem])
def test_the_hash_is_kubeadms(make: object) -> None:
    pem = make()  # type: ignore[operator]
    assert ca_cert_hash(pem) == pki.ca_public_key_hash(pem)
    assert ca_cert_hash(pem + rsa_ca_pem()) == pki.ca_public_key_hash(pem)  # a bundle: the first


def test_garbage_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        ca_cert_hash(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")


def test_gpuctl_run_imports_no_other_sub_command() -> None:
    """`gpuctl run` builds only its own parser: no control plane, demo or cryptography."""
    code = (
        "import sys; from gpuctl.cli import main; main.build_parser('run'); "
        "print(sorted(m for m in sys.modules if m.startswith(('cryptography', 'gpuctl.cli.'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['gpuctl.cli.main', 'gpuctl.cli.run']"
