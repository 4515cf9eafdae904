"""
Reading the files of C{twistd agilerpc}'s options: the server's TLS
certificate, key and client CAs, loaded into Twisted's TLS options.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.python import usage

_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL
)


def readFile(option: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise usage.UsageError(
            f"--{option} {path}: cannot read it: {e.strerror or e}"
        ) from None


def certificates(option: str, path: str) -> list[Any]:
    """
    Every PEM certificate in the file at C{path}, in order.

    @raise usage.UsageError: if there is none, or one does not load.
    """
    from twisted.internet.ssl import Certificate

    blocks = _PEM_CERTIFICATE.findall(readFile(option, path))
    if not blocks:
        raise usage.UsageError(f"--{option} {path}: no PEM certificate in it")
    try:
        return [Certificate.loadPEM(block) for block in blocks]
    except Exception as e:
        raise usage.UsageError(f"--{option} {path}: {e}") from None


def serverTLSOptions(certPath: str, keyPath: str, clientCAPath: str | None) -> Any:
    """
    Twisted's server TLS options for a certificate (with its chain) and key
    in PEM files; with C{clientCAPath}, clients must present a certificate
    signed by one of the CAs in that file.

    @return: a L{twisted.internet.ssl.CertificateOptions}.
    @raise usage.UsageError: if a file cannot be read or loaded, the key
        does not match the certificate, or the tls extra
        (C{pip install agilerpc[tls]}) is not installed.
    """
    try:
        from OpenSSL.crypto import FILETYPE_PEM
        from twisted.internet.ssl import CertificateOptions, KeyPair
    except ImportError as e:  # pragma: no cover - the tls extra is installed
        raise usage.UsageError(
            f"TLS needs pyOpenSSL: pip install 'agilerpc[tls]' ({e})"
        ) from None
    chain = certificates("tls-cert", certPath)
    keyData = readFile("tls-key", keyPath)
    try:
        key = KeyPair.load(keyData, FILETYPE_PEM)
    except Exception as e:
        raise usage.UsageError(
            f"--tls-key {keyPath}: not a PEM private key ({e})"
        ) from None
    options: dict[str, Any] = {}
    if clientCAPath is not None:
        options = {
            "verify": True,
            "requireCertificate": True,
            "caCerts": [
                c.original for c in certificates("tls-client-ca", clientCAPath)
            ],
        }
    tls = CertificateOptions(
        privateKey=key.original,
        certificate=chain[0].original,
        extraCertChain=[c.original for c in chain[1:]],
        **options,
    )
    try:
        # Build the context now: a key that does not match the certificate
        # is a usage error, not a failure on the first connection.
        tls.getContext()
    except Exception as e:
        raise usage.UsageError(
            f"--tls-cert {certPath} --tls-key {keyPath}: {e}"
        ) from None
    return tls
