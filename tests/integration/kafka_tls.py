"""Test-only TLS for the local broker: certificates made here and a TLS-terminating proxy.

Tansu 0.6 has `broker --cert --key`, but its CLI declares both in one clap group, which
makes them mutually exclusive ("the argument '--cert <CERT>' cannot be used with '--key
<KEY>'"), and `--cert` alone starts a plaintext listener: its TLS cannot be turned on. So
the tests put a real TLS endpoint in front of it: `TlsProxy` accepts TLS (optionally
requiring a client certificate signed by the test CA), and pipes the bytes to the broker's
plaintext port; the broker advertises the proxy's address, so every connection a Kafka
client makes (bootstrap, then the partition leader) goes through TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class CertFiles:
    """PEM files: a CA, a server certificate for 127.0.0.1/localhost and a client
    certificate (both signed by the CA), and an unrelated CA (the wrong one)."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    san: list[x509.GeneralName] | None = None,
    usage: list[x509.ObjectIdentifier] | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_certs(directory: Path, *, key_password: bytes | None = None) -> CertFiles:
    """Write a fresh CA, server and client certificate (and a wrong CA) to `directory`;
    `key_password` encrypts the client's private key."""
    directory.mkdir(parents=True, exist_ok=True)

    def key() -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    def write_cert(name: str, cert: x509.Certificate) -> Path:
        path = directory / name
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    def write_key(name: str, k: ec.EllipticCurvePrivateKey, password: bytes | None = None) -> Path:
        path = directory / name
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(password)
            if password
            else serialization.NoEncryption()
        )
        path.write_bytes(
            k.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
            )
        )
        return path

    ca_key, server_key, client_key, other_key = key(), key(), key(), key()
    ca = _cert("agentaudit-test-ca", ca_key, "agentaudit-test-ca", ca_key, ca=True)
    server = _cert(
        "localhost",
        server_key,
        "agentaudit-test-ca",
        ca_key,
        san=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        usage=[ExtendedKeyUsageOID.SERVER_AUTH],
    )
    client = _cert(
        "agentaudit-client",
        client_key,
        "agentaudit-test-ca",
        ca_key,
        usage=[ExtendedKeyUsageOID.CLIENT_AUTH],
    )
    other = _cert("other-ca", other_key, "other-ca", other_key, ca=True)
    return CertFiles(
        ca=write_cert("ca.pem", ca),
        server_cert=write_cert("server.pem", server),
        server_key=write_key("server.key", server_key),
        client_cert=write_cert("client.pem", client),
        client_key=write_key("client.key", client_key, key_password),
        other_ca=write_cert("other-ca.pem", other),
    )


class TlsProxy:
    """Accepts TLS on 127.0.0.1:`port` and pipes each connection to `upstream_port`
    (plaintext), on its own event loop in a daemon thread. `require_client_cert`: the
    handshake fails unless the client presents a certificate signed by the CA (mutual TLS)."""

    def __init__(
        self, certs: CertFiles, port: int, upstream_port: int, *, require_client_cert: bool
    ) -> None:
        self.port = port
        self._upstream_port = upstream_port
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.load_cert_chain(certs.server_cert, certs.server_key)
        if require_client_cert:
            self._context.load_verify_locations(certs.ca)
            self._context.verify_mode = ssl.CERT_REQUIRED
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, daemon=True, name="tls-proxy"
        )
        self._server: asyncio.Server | None = None

    def start(self) -> None:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._serve(), self._loop)
        self._server = future.result(10)

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks() - {asyncio.current_task()}:
                task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _serve(self) -> asyncio.Server:
        return await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, ssl=self._context, ssl_handshake_timeout=5
        )

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._upstream_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    except (OSError, ssl.SSLError):
        pass  # the other side went away; closing below ends the pair
    finally:
        with contextlib.suppress(Exception):
            writer.close()
