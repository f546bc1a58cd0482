"""Self-signed TLS material for the admission webhook server.

Development clusters (kind, k3s, the test emulator) have no cert-manager; the operator then
generates a CA-less self-signed server certificate and registers it as the webhook's caBundle.
Production installs mount a provided certificate instead (Helm values or cert-manager).
"""

from __future__ import annotations

import datetime
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def generate_self_signed(
    hosts: list[str], *, days: int = 365, now: datetime.datetime | None = None
) -> tuple[bytes, bytes]:
    """Return ``(cert_pem, key_pem)`` for a self-signed server certificate valid for ``hosts``.

    Each host becomes a subjectAltName: an IP address when it parses as one, else a DNS name.
    """
    if not hosts:
        raise ValueError("hosts: at least one host name or IP address is required")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0][:64])])
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    start = (now or datetime.datetime.now(datetime.UTC)) - datetime.timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert_pem, key_pem
