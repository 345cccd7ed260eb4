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
    ca.revoke_client("front-door")   # its serials go in crl.pem, the listener's crlfile

Revocation: every client certificate issued is recorded in ``issued.json`` (serial,
CN, expiry, revocation time), and ``crl.pem`` is re-signed from it, atomically, on
every issue and every revoke.  Mosquitto loads the listener's ``crlfile`` at start and
again on SIGHUP, and refuses a revoked certificate at the TLS handshake; a session that
is already connected is not re-checked (see :mod:`relay.registry` for how it is cut).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import ipaddress
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 20 * 365
CLIENT_DAYS = 10 * 365  # a doorbell is not re-provisioned often; revocation is by CRL
CRL_DAYS = CLIENT_DAYS + 1
"""How long a CRL is valid.  An expired CRL makes OpenSSL refuse *every* client
certificate, so it must outlive every certificate it could matter for: it is re-signed
on each issue, and so always covers the newest certificate's whole life.  The CRL is
read only by our own broker from local disk, so a short nextUpdate (which guards
against a distributor replaying an old CRL) buys nothing here."""


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _replace(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``path`` so a reader (the broker on SIGHUP) sees the old file or the new one,
    never half of one."""
    tmp = path.with_name(f".tmp-{path.name}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)  # the umask must not make the CRL unreadable to the broker
    os.replace(tmp, path)


class DeviceCA:
    def __init__(self, folder: Path, now: Callable[[], datetime.datetime] = _utcnow) -> None:
        self.dir = folder
        self.cert_file = folder / "ca.crt"
        self.key_file = folder / "ca.key"
        self.crl_file = folder / "crl.pem"
        """The TLS listener's ``crlfile`` (PEM, 0644; always present once the CA exists)."""
        self.issued_file = folder / "issued.json"
        self._now = now
        if not self.cert_file.exists():
            self._create()
        self._key = serialization.load_pem_private_key(self.key_file.read_bytes(), None)
        self._cert = x509.load_pem_x509_certificate(self.cert_file.read_bytes())
        if not self.crl_file.exists():
            # Mosquitto will not start with a crlfile it cannot load: there is always one.
            self.write_crl()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer of issued.json and crl.pem at a time: two ``relay devices``
        commands at once must not lose each other's certificate or revocation."""
        fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _create(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "open doorbell relay CA")])
        now = self._now()
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
        now = self._now()
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
        if usage == ExtendedKeyUsageOID.CLIENT_AUTH:
            with self._locked():
                issued = self.issued()
                issued.append(
                    {
                        "serial": format(cert.serial_number, "x"),
                        "cn": cn,
                        "not_after": cert.not_valid_after_utc.isoformat(),
                        "revoked": None,
                    }
                )
                self._save_issued(issued)
                self._write_crl()  # keeps the CRL's nextUpdate beyond this certificate's expiry
        return cert.public_bytes(serialization.Encoding.PEM).decode(), _pem_key(key).decode()

    def issue_client(self, device: str) -> tuple[str, str]:
        """A doorbell's certificate and key (PEM): CN is its device id."""
        return self._issue(device, ExtendedKeyUsageOID.CLIENT_AUTH, None, CLIENT_DAYS)

    def issued(self) -> list[dict]:
        """Every client certificate this CA issued (oldest first), revoked ones too.

        >>> ca.issued()[0]
        {'serial': '3f9c…', 'cn': 'front-door', 'not_after': '2036-…', 'revoked': None}
        """
        if not self.issued_file.exists():
            return []
        return json.loads(self.issued_file.read_text())

    def _save_issued(self, issued: list[dict]) -> None:
        _replace(self.issued_file, json.dumps(issued, indent=1).encode())

    def revoke_client(self, device: str) -> list[int]:
        """Revoke every unrevoked certificate with CN ``device`` and re-sign the CRL.

        Returns the serials newly revoked (empty if there were none, e.g. a doorbell
        with a password only).  The broker sees the new CRL at its next SIGHUP.
        """
        with self._locked():
            issued = self.issued()
            when = self._now().isoformat()
            serials = []
            for entry in issued:
                if entry["cn"] == device and entry["revoked"] is None:
                    entry["revoked"] = when
                    serials.append(int(entry["serial"], 16))
            if serials:
                self._save_issued(issued)
                self._write_crl()
        return serials

    def crl(self) -> x509.CertificateRevocationList:
        return x509.load_pem_x509_crl(self.crl_file.read_bytes())

    def write_crl(self) -> x509.CertificateRevocationList:
        """Sign a CRL of every revoked certificate and replace ``crl.pem`` atomically."""
        with self._locked():
            return self._write_crl()

    def _write_crl(self) -> x509.CertificateRevocationList:
        # Never later than now: OpenSSL refuses every certificate checked against a CRL
        # that is "not yet valid".  (Mosquitto 2 builds a new TLS context on each
        # reload, so two CRLs with the same lastUpdate never compete.)
        now = self._now().replace(microsecond=0)
        number = 1
        if self.crl_file.exists():
            number = self.crl().extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
            number += 1
        b = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self._cert.subject)
            .last_update(now)
            .next_update(now + datetime.timedelta(days=CRL_DAYS))
            .add_extension(x509.CRLNumber(number), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._cert.public_key()),  # type: ignore[arg-type]
                critical=False,
            )
        )
        for entry in self.issued():
            if entry["revoked"] is not None:
                b = b.add_revoked_certificate(
                    x509.RevokedCertificateBuilder()
                    .serial_number(int(entry["serial"], 16))
                    .revocation_date(datetime.datetime.fromisoformat(entry["revoked"]))
                    .build()
                )
        crl = b.sign(self._key, hashes.SHA256())  # type: ignore[arg-type]
        _replace(self.crl_file, crl.public_bytes(serialization.Encoding.PEM))
        return crl

    def issue_server(self, host: str, days: int = 825) -> tuple[str, str]:
        """The broker's certificate for ``host`` (a DNS name or an IP address)."""
        try:
            san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            san = x509.DNSName(host)
        return self._issue(host, ExtendedKeyUsageOID.SERVER_AUTH, san, days)
