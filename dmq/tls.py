# -*- test-case-name: dmq.test.test_tls_live -*-
"""
L{TLSSettings}: a node's certificate, key and CA, and the Twisted TLS options
made of them for its server and client sides (TLS 1.2 at least; mutual TLS
when clients are verified).  C{twisted.internet.ssl} needs pyOpenSSL and
service_identity (the C{tls} extra): it is imported only when options are
made.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, List, Optional, Tuple

import attrs

if TYPE_CHECKING:
    from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
    from twisted.internet.ssl import Certificate, CertificateOptions, PrivateCertificate

__all__ = ["TLSSettings"]


@attrs.frozen
class TLSSettings:
    """
    The TLS side of a node: its certificate and key, and the CA its peers'
    certificates must come from.

    @ivar certificate: the PEM file of our certificate (and chain).
    @ivar privateKey: the PEM file of its key.
    @ivar ca: the PEM file of the CA(s) peers are verified against; C{None}
        trusts the platform's CAs, as a client, and asks clients for none.
    @ivar verifyClient: whether a client must present a certificate from
        C{ca} (mutual TLS); by default, whenever C{ca} is given.
    """

    certificate: str
    privateKey: str
    ca: Optional[str] = None
    verifyClient: Optional[bool] = None

    def _load(self) -> Tuple[PrivateCertificate, List[Certificate]]:
        from twisted.internet import ssl

        with open(self.certificate, "rb") as f:
            certificate = f.read()
        with open(self.privateKey, "rb") as f:
            key = f.read()
        own = ssl.PrivateCertificate.loadPEM(certificate + b"\n" + key)
        authorities: List[Certificate] = []
        if self.ca is not None:
            with open(self.ca, "rb") as f:
                pem = f.read()
            for block in re.findall(
                rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", pem, re.DOTALL
            ):
                authorities.append(ssl.Certificate.loadPEM(block))
            if not authorities:
                raise ValueError(f"{self.ca}: no certificate in it")
        return own, authorities

    def serverOptions(self) -> CertificateOptions:
        """
        The server side's options: our certificate, TLS 1.2 at least, and,
        when clients are verified, a certificate from our CA required.
        """
        from twisted.internet import ssl

        own, authorities = self._load()
        verify = self.verifyClient if self.verifyClient is not None else bool(authorities)
        if verify and not authorities:
            raise ValueError("verifying clients needs a CA (tls_ca)")
        # trustRoot=None, CertificateOptions' default, asks for no client certificate.
        return ssl.CertificateOptions(
            privateKey=own.privateKey.original,
            certificate=own.original,
            raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
            trustRoot=ssl.trustRootFromCertificates(authorities) if verify else None,
        )

    def clientOptions(self, host: str) -> IOpenSSLClientConnectionCreator:
        """
        The client side's options for a connection to C{host}: its
        certificate must come from our CA and name C{host} (as an IP address
        or a DNS name), ours is presented, TLS 1.2 at least.
        """
        from twisted.internet import ssl

        own, authorities = self._load()
        trust = ssl.trustRootFromCertificates(authorities) if authorities else None
        return ssl.optionsForClientTLS(
            host,
            trustRoot=trust,
            clientCertificate=own,
            extraCertificateOptions={"raiseMinimumTo": ssl.TLSVersion.TLSv1_2},
        )
