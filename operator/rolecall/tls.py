"""TLS material for the admission webhook server: a CA, serving certificates, renewal rules.

Two uses:

- the default install: the operator issues its own CA and a serving certificate signed by it
  (:mod:`rolecall.webhookcerts` keeps them in a Secret shared by the replicas and puts the
  CA into the webhook configurations' ``caBundle``); the functions here build and inspect
  them, and decide, with the time passed in, when each must be renewed;
- development (kind, k3s, the test emulator) with kopf registering the webhooks itself:
  :func:`generate_self_signed` makes a CA-less self-signed server certificate.

Lifetimes (documented in docs/install.md): the CA lives 10 years, a serving certificate 1
year; each is renewed once two thirds of its lifetime have passed, so a renewal that fails
has months of retries before anything expires. A renewed CA is published next to the old
one (both in ``caBundle``) until the old one expires, so replicas still serving a certificate
of the old CA keep being trusted while they pick up the new one.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_LIFETIME = datetime.timedelta(days=3650)
SERVING_LIFETIME = datetime.timedelta(days=365)
RENEW_AT = 2 / 3  # renew when this fraction of the lifetime has passed
BACKDATE = datetime.timedelta(minutes=5)  # tolerate clocks a little behind ours


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _sans(hosts: list[str]) -> list[x509.GeneralName]:
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    return sans


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])])


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    start: datetime.datetime,
    end: datetime.datetime,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
    )


def generate_self_signed(
    hosts: list[str], *, days: int = 365, now: datetime.datetime | None = None
) -> tuple[bytes, bytes]:
    """Return ``(cert_pem, key_pem)`` for a self-signed server certificate valid for ``hosts``.

    Each host becomes a subjectAltName: an IP address when it parses as one, else a DNS name.
    """
    if not hosts:
        raise ValueError("hosts: at least one host name or IP address is required")
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(hosts[0])
    start = (now or datetime.datetime.now(datetime.UTC)) - BACKDATE
    cert = (
        _builder(name, name, key.public_key(), start, start + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(_sans(hosts)), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


# --- the operator's own CA and serving certificate ---------------------------------------------


@dataclass(frozen=True)
class KeyPair:
    cert_pem: bytes
    key_pem: bytes


def issue_ca(now: datetime.datetime, *, common_name: str = "rolecall-webhook-ca") -> KeyPair:
    """A new CA that may sign serving certificates only (path length 0)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name)
    start = now - BACKDATE
    cert = (
        _builder(name, name, key.public_key(), start, start + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key))


def issue_serving(ca: KeyPair, hosts: list[str], now: datetime.datetime) -> KeyPair:
    """A serving certificate for ``hosts`` (DNS names or IPs), signed by ``ca``."""
    if not hosts:
        raise ValueError("hosts: at least one host name or IP address is required")
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("ca.key: must be an EC private key")
    key = ec.generate_private_key(ec.SECP256R1())
    start = now - BACKDATE
    end = min(start + SERVING_LIFETIME, ca_cert.not_valid_after_utc)
    cert = (
        _builder(_name(hosts[0]), ca_cert.subject, key.public_key(), start, end)
        .add_extension(x509.SubjectAlternativeName(_sans(hosts)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key))


def load_bundle(pem: bytes) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle (empty when there is none or it does not parse)."""
    try:
        return list(x509.load_pem_x509_certificates(pem))
    except ValueError:
        return []


def first(pem: bytes) -> bytes | None:
    """The first certificate of a PEM bundle, as PEM (None when there is none)."""
    certs = load_bundle(pem)
    return certs[0].public_bytes(serialization.Encoding.PEM) if certs else None


def bundle(*certs: bytes) -> bytes:
    """Concatenate PEM certificates, one per line block, without duplicates."""
    seen: list[bytes] = []
    for pem in certs:
        for cert in load_bundle(pem):
            block = cert.public_bytes(serialization.Encoding.PEM)
            if block not in seen:
                seen.append(block)
    return b"".join(seen)


def still_valid(pem: bytes, now: datetime.datetime) -> bytes:
    """The certificates of a bundle that have not expired at ``now``."""
    return b"".join(
        c.public_bytes(serialization.Encoding.PEM) for c in load_bundle(pem) if c.not_valid_after_utc > now
    )


def _renewal_due(cert: x509.Certificate, now: datetime.datetime) -> datetime.datetime:
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return start + (end - start) * RENEW_AT


def signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    if cert.issuer != ca.subject:
        return False
    public = ca.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        return False
    algorithm = cert.signature_hash_algorithm
    if algorithm is None:
        return False
    try:
        public.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(algorithm))
    except InvalidSignature:
        return False
    return True


def covers(cert: x509.Certificate, hosts: list[str]) -> bool:
    """Whether the certificate's subjectAltNames include every host."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    have = {str(v) for v in sans.get_values_for_type(x509.DNSName)}
    have |= {str(v) for v in sans.get_values_for_type(x509.IPAddress)}
    return all(str(ipaddress.ip_address(h)) in have if _is_ip(h) else h in have for h in hosts)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _key_matches(cert: x509.Certificate, key_pem: bytes) -> bool:
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        return False
    return bool(
        key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        == cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


# --- renewal decisions: each a small named rule, the time passed in --------------------------------
# Each returns why the material must be (re)issued, or None when it is fine.


def ca_renewal_reason(ca: KeyPair | None, now: datetime.datetime) -> str | None:
    if ca is None or not ca.cert_pem or not ca.key_pem:
        return "no CA yet"
    certs = load_bundle(ca.cert_pem)
    if not certs:
        return "the CA certificate does not parse"
    if not _key_matches(certs[0], ca.key_pem):
        return "the CA key does not match its certificate"
    if now >= certs[0].not_valid_after_utc:
        return "the CA has expired"
    if now >= _renewal_due(certs[0], now):
        return (
            f"the CA is past {RENEW_AT:.0%} of its lifetime (expires {certs[0].not_valid_after_utc:%Y-%m-%d})"
        )
    return None


def serving_renewal_reason(
    serving: KeyPair | None, ca: KeyPair, hosts: list[str], now: datetime.datetime
) -> str | None:
    if serving is None or not serving.cert_pem or not serving.key_pem:
        return "no serving certificate yet"
    certs = load_bundle(serving.cert_pem)
    if not certs:
        return "the serving certificate does not parse"
    cert = certs[0]
    if not _key_matches(cert, serving.key_pem):
        return "the serving key does not match its certificate"
    ca_certs = load_bundle(ca.cert_pem)
    if not ca_certs or not signed_by(cert, ca_certs[0]):
        return "the serving certificate is not signed by the current CA"
    if not covers(cert, hosts):
        return f"the serving certificate does not cover {', '.join(hosts)}"
    if now >= cert.not_valid_after_utc:
        return "the serving certificate has expired"
    if now >= _renewal_due(cert, now):
        return f"the serving certificate is past {RENEW_AT:.0%} of its lifetime (expires {cert.not_valid_after_utc:%Y-%m-%d})"
    return None


def verifies(ca_bundle_pem: bytes, serving_pem: bytes) -> bool:
    """Whether some CA of the bundle signed the serving certificate (what an API server checks)."""
    certs = load_bundle(serving_pem)
    return bool(certs) and any(signed_by(certs[0], ca) for ca in load_bundle(ca_bundle_pem))


def expiry(pem: bytes) -> datetime.datetime | None:
    certs = load_bundle(pem)
    return certs[0].not_valid_after_utc if certs else None
