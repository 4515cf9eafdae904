"""
A throwaway certificate authority for the TLS tests: the certificates are
made at test time, once per test run; no key is committed.
"""

from __future__ import annotations

import atexit
import datetime
import ipaddress
import os
import shutil
import tempfile

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


class PKI:
    """
    A throwaway certificate authority and the certificates the tests need,
    as PEM files in a temporary directory:

      - C{ca.pem}: the CA;
      - C{server.pem}, C{server.key}: for C{localhost} and 127.0.0.1;
      - C{client.pem}, C{client.key}: a client certificate;
      - the same with a C{rogue-} prefix, from another CA nobody trusts.
    """

    def __init__(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="agilerpc-pki-")
        atexit.register(shutil.rmtree, self.directory, True)
        for prefix in ("", "rogue-"):
            caKey, caCert = self._ca(prefix + "agilerpc test CA")
            self._writeCert(prefix + "ca.pem", caCert)
            self._leaf(prefix + "server", caKey, caCert, server=True)
            self._leaf(prefix + "client", caKey, caCert, server=False)

    def path(self, name: str) -> str:
        """
        The path of the file C{name}.
        """
        return os.path.join(self.directory, name)

    def read(self, name: str) -> bytes:
        """
        The content of the file C{name}.
        """
        with open(self.path(name), "rb") as f:
            return f.read()

    def _writeCert(self, name: str, cert: x509.Certificate) -> None:
        with open(self.path(name), "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))

    def _writeKey(self, name: str, key: ec.EllipticCurvePrivateKey) -> None:
        with open(self.path(name), "wb") as f:
            f.write(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )

    @staticmethod
    def _builder(
        subject: str, issuer: str, key: ec.EllipticCurvePrivateKey
    ) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.timezone.utc)
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
        )

    def _ca(self, name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        usage = x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=True,
            crl_sign=True,
            encipher_only=False,
            decipher_only=False,
        )
        cert = (
            self._builder(name, name, key)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .add_extension(usage, critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False
            )
            .sign(key, hashes.SHA256())
        )
        return key, cert

    def _leaf(
        self,
        name: str,
        caKey: ec.EllipticCurvePrivateKey,
        caCert: x509.Certificate,
        server: bool,
    ) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        issuer = caCert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        assert isinstance(issuer, str)
        purpose = (
            ExtendedKeyUsageOID.SERVER_AUTH
            if server
            else ExtendedKeyUsageOID.CLIENT_AUTH
        )
        builder = (
            self._builder("localhost" if server else "test client", issuer, key)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(caKey.public_key()),
                False,
            )
            .add_extension(x509.ExtendedKeyUsage([purpose]), False)
        )
        if server:
            names = x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            )
            builder = builder.add_extension(names, False)
        self._writeCert(name + ".pem", builder.sign(caKey, hashes.SHA256()))
        self._writeKey(name + ".key", key)


_pki: PKI | None = None


def pki() -> PKI:
    """
    The test run's L{PKI}, made on first use.
    """
    global _pki
    if _pki is None:
        _pki = PKI()
    return _pki
