"""Prometheus authentication and TLS: a fake Prometheus over real HTTPS (a CA and a server certificate made
here with openssl) that answers only the expected credentials, read through the real PrometheusSource."""

from __future__ import annotations

import base64
import json
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from scaler_service.settings import SettingsError, settings_from_sources
from scaler_service.sources.base import QueryError, SourceUnavailable
from scaler_service.sources.prometheus import PrometheusSource
from scaler_service.sources.prometheus_auth import AuthConfigError, PrometheusAuth


@dataclass
class FakePrometheus:
    url: str
    ca: Path
    expected: list[str]
    """Accepted Authorization header values (the test changes it to rotate a token)."""
    seen: list[str]


def _pki(tmp: Path) -> tuple[Path, Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=tmp, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=foresight-test-ca")  # fmt: skip
    (tmp / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out",
        "server.pem", "-days", "2", "-extfile", "san.ext")  # fmt: skip
    return tmp / "ca.pem", tmp / "server.pem", tmp / "server.key"


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[FakePrometheus]:
    ca, cert, key = _pki(tmp_path)
    expected: list[str] = []
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            auth = self.headers.get("Authorization", "")
            seen.append(auth)
            if auth not in expected:
                body = b'{"status":"error","errorType":"unauthorized","error":"unauthorized"}'
                self.send_response(401)
            else:
                doc = {"status": "success", "data": {"resultType": "vector", "result": [
                    {"metric": {}, "value": [1700000000.0, "42"]}]}}  # fmt: skip
                body = json.dumps(doc).encode()
                self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield FakePrometheus(f"https://127.0.0.1:{server.server_address[1]}", ca, expected, seen)
    finally:
        server.shutdown()
        server.server_close()


def test_bearer_token_file_over_verified_tls_and_a_rotated_token(prometheus: FakePrometheus, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first-token\n")
    prometheus.expected.append("Bearer first-token")
    source = PrometheusSource(
        prometheus.url, auth=PrometheusAuth(bearer_token_file=token, ca_bundle=prometheus.ca), retries=0
    )
    assert source.fetch_latest("up", 1700000000.0) == (1700000000.0, 42.0)
    # A rotated token (a projected service-account token is rewritten in place) is used without a restart.
    token.write_text("second-token-longer\n")
    prometheus.expected[:] = ["Bearer second-token-longer"]
    assert source.fetch_latest("up", 1700000000.0) == (1700000000.0, 42.0)
    source.close()


def test_basic_auth_from_a_password_file(prometheus: FakePrometheus, tmp_path: Path) -> None:
    password = tmp_path / "password"
    password.write_text("s3cret")
    prometheus.expected.append("Basic " + base64.b64encode(b"keda:s3cret").decode())
    auth = PrometheusAuth(basic_auth_user="keda", basic_auth_password_file=password, ca_bundle=prometheus.ca)
    assert PrometheusSource(prometheus.url, auth=auth, retries=0).fetch_latest("up", 1.0) == (1700000000.0, 42.0)


def test_wrong_credentials_and_an_unknown_ca_are_refused(prometheus: FakePrometheus, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("wrong")
    prometheus.expected.append("Bearer right")
    wrong = PrometheusSource(
        prometheus.url, auth=PrometheusAuth(bearer_token_file=token, ca_bundle=prometheus.ca), retries=0
    )
    with pytest.raises(QueryError, match="HTTP 401"):
        wrong.fetch_latest("up", 1.0)
    # Without the CA the server's certificate is not trusted: nothing is sent to it.
    before = len(prometheus.seen)
    untrusted = PrometheusSource(prometheus.url, auth=PrometheusAuth(bearer_token_file=token), retries=0)
    with pytest.raises(SourceUnavailable, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        untrusted.fetch_latest("up", 1.0)
    assert len(prometheus.seen) == before


def test_settings_check_the_auth_options(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t")
    s = settings_from_sources({"prometheus_bearer_token_file": str(token)}, {})
    assert s.prometheus_auth().bearer_token_file == token
    with pytest.raises(SettingsError, match="go together"):
        settings_from_sources({"prometheus_basic_auth_user": "keda"}, {})
    with pytest.raises(SettingsError, match="not both"):
        settings_from_sources(
            {"prometheus_bearer_token_file": str(token), "prometheus_basic_auth_user": "u",
             "prometheus_basic_auth_password_file": str(token)}, {})  # fmt: skip
    with pytest.raises(SettingsError, match=r"prometheus_ca_bundle: '/nonexistent/ca\.pem' is not a readable file"):
        settings_from_sources({}, {"FORESIGHT_PROMETHEUS_CA_BUNDLE": "/nonexistent/ca.pem"})
    big = tmp_path / "big"
    big.write_bytes(b"x" * 20_000)
    auth = PrometheusAuth(bearer_token_file=big).requests_auth()
    assert auth is not None
    with pytest.raises(AuthConfigError, match="larger than"):
        auth(requests.Request("GET", "https://prometheus.invalid/").prepare())
