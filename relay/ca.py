"""The relay's certificate authority: client certificates for doorbells (and the broker's own).

Mosquitto's TLS listener (``require_certificate``, ``use_identity_as_username``)
takes a client certificate's CN as the account name, so a doorbell's certificate
*is* its identity: CN = device id, signed by this CA, whose certificate is the
listener's ``cafile``.  The CA key is made on first use (ECDSA P-256, mode 0600)
in ``[provisioning] ca_dir``.

Example::

    ca = DeviceCA(Path("/var/lib/doorbell-relay/ca"))
    cert_pem, key_pem = ca.issue_client("front-door")
    ca.cert_pem()           # goes in the bundle; the doorbell checks the broker with it
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 20 * 365
CLIENT_DAYS = 10 * 365  # a doorbell is not re-provisioned often; revocation is the account's


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


class DeviceCA:
    def __init__(self, folder: Path) -> None:
        self.dir = folder
        self.cert_file = folder / "ca.crt"
        self.key_file = folder / "ca.key"
        if not self.cert_file.exists():
            self._create()
        self._key = serialization.load_pem_private_key(self.key_file.read_bytes(), None)
        self._cert = x509.load_pem_x509_certificate(self.cert_file.read_bytes())

    def _create(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "open doorbell relay CA")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
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
            .sign(key, hashes.SHA256())
        )
        _write_private(self.key_file, _pem_key(key))
        self.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def cert_pem(self) -> str:
        return self.cert_file.read_text()

    def _issue(
        self, cn: str, usage: x509.ObjectIdentifier, san: x509.GeneralName | None, days: int
    ) -> tuple[str, str]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        b = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if san is not None:
            b = b.add_extension(x509.SubjectAlternativeName([san]), critical=False)
        cert = b.sign(self._key, hashes.SHA256())  # type: ignore[arg-type]
        return cert.public_bytes(serialization.Encoding.PEM).decode(), _pem_key(key).decode()

    def issue_client(self, device: str) -> tuple[str, str]:
        """A doorbell's certificate and key (PEM): CN is its device id."""
        return self._issue(device, ExtendedKeyUsageOID.CLIENT_AUTH, None, CLIENT_DAYS)

    def issue_server(self, host: str, days: int = 825) -> tuple[str, str]:
        """The broker's certificate for ``host`` (a DNS name or an IP address)."""
        try:
            san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            san = x509.DNSName(host)
        return self._issue(host, ExtendedKeyUsageOID.SERVER_AUTH, san, days)
