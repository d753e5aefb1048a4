"""TLS for the fake servers: a self-signed certificate for 127.0.0.1/localhost made at start with ``cryptography``.

Clients trust it through their CA-bundle option (``connection_verify=cert_path`` for the Azure SDK, ``verify=`` for
requests): the production code path runs with verification on, only the trusted bundle differs.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def self_signed_cert(directory: Path, name: str = "fake") -> tuple[Path, Path]:
    """``(cert.pem, key.pem)`` in ``directory``: an EC P-256 certificate valid for two days, its own CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name}.localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / f"{name}-cert.pem"
    key_path = directory / f"{name}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


class FakeApiHandler(BaseHTTPRequestHandler):
    """The base of the fakes' request handlers: HTTP/1.1 keep-alive, no request log, and TCP_NODELAY (headers and
    body go out in separate writes: without it, Nagle and delayed ACK add 40 ms a request)."""

    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: object) -> None:
        pass


def wrap_https(server: ThreadingHTTPServer, cert_path: Path, key_path: Path) -> None:
    """Serve ``server`` over TLS with the given certificate (handshakes happen in the handler threads)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)


class LoopbackHttps:
    """The lifecycle the HTTPS fakes share: a self-signed certificate made at construction, a threading server
    on a free loopback port serving ``handler`` over TLS, and a stop that removes the certificate."""

    def __init__(self, name: str) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix=f"{name}-")
        self.cert_path, self._key_path = self_signed_cert(Path(self._tmp.name), name)
        self._name = name
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self, handler: type[BaseHTTPRequestHandler], *, quiet_handshake_errors: bool = False) -> str:
        """Serves ``handler`` and returns the base URL (``https://127.0.0.1:PORT``)."""
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        if quiet_handshake_errors:  # a client that refuses the certificate aborts the handshake: no traceback
            server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        wrap_https(server, self.cert_path, self._key_path)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), name=self._name, daemon=True)
        self._thread.start()
        return f"https://127.0.0.1:{server.server_address[1]}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._tmp.cleanup()
