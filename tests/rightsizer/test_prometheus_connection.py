"""The rightsizer's Prometheus connection: TLS verified (CA bundle option), bearer token and basic auth, against an
HTTPS fake Prometheus with a self-signed certificate."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from rightsizer.cli import main
from rightsizer.domain import VmInfo
from rightsizer.metrics import VmUsage
from rightsizer.settings import MetricsSettings, Settings, SettingsError, settings_from_mapping
from rightsizer.sources.live import SourceUnavailable, live_usage
from rightsizer.sources.prometheus import prometheus_client
from tests.fakes.prometheus_https import FakeHttpsPrometheus

NOW = 1_796_000_000.0
VMS = [
    VmInfo(id=f"vm-{i}", name=f"vm-{i}", resource_group="rg", size="Standard_D4s_v5", region="westeurope")
    for i in range(3)
]


@pytest.fixture
def prom() -> Iterator[FakeHttpsPrometheus]:
    with FakeHttpsPrometheus() as fake:
        yield fake


def settings(prom: FakeHttpsPrometheus, **metrics: object) -> Settings:
    return settings_from_mapping({"metrics": {"source": "prometheus", "prometheus_url": prom.url, **metrics}})


def test_a_self_signed_certificate_is_refused_without_the_ca_bundle(prom: FakeHttpsPrometheus) -> None:
    # Verification used to be switched off (disable_ssl=True): any certificate, any man in the middle, was accepted.
    with pytest.raises(SourceUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        live_usage(VMS, settings(prom), NOW)
    assert prom.requests == []  # no request got past the handshake


def test_the_ca_bundle_makes_it_trusted(prom: FakeHttpsPrometheus) -> None:
    usage, note = live_usage(VMS, settings(prom, prometheus_ca_bundle=str(prom.cert_path)), NOW)
    assert note == f"Prometheus {prom.url}"
    for vm in VMS:
        u = usage[vm.id]
        assert isinstance(u, VmUsage) and u.memory is not None
        assert float(u.cpu.values.max()) == pytest.approx(10.0)
    assert len(prom.requests) == 2 * len(VMS)


def test_bearer_token_from_a_file(prom: FakeHttpsPrometheus, tmp_path: Path) -> None:
    prom.bearer_token = "s3cret-token"
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    ok, _ = live_usage(
        VMS, settings(prom, prometheus_ca_bundle=str(prom.cert_path), prometheus_bearer_token_file=str(token)), NOW
    )
    assert all(isinstance(u, VmUsage) for u in ok.values())
    with pytest.raises(SourceUnavailable, match="401"):
        live_usage(VMS, settings(prom, prometheus_ca_bundle=str(prom.cert_path)), NOW)


def test_basic_auth_with_a_password_file(prom: FakeHttpsPrometheus, tmp_path: Path) -> None:
    prom.basic_auth = ("rightsizer", "pa:ss word")
    password = tmp_path / "password"
    password.write_text("pa:ss word")
    common = {"prometheus_ca_bundle": str(prom.cert_path), "prometheus_basic_auth_user": "rightsizer"}
    ok, _ = live_usage(VMS, settings(prom, **common, prometheus_basic_auth_password_file=str(password)), NOW)
    assert all(isinstance(u, VmUsage) for u in ok.values())
    password.write_text("wrong")
    with pytest.raises(SourceUnavailable, match="401"):
        live_usage(VMS, settings(prom, **common, prometheus_basic_auth_password_file=str(password)), NOW)


def test_secret_files_and_options_are_checked(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="prometheus_basic_auth_password_file needs"):
        settings_from_mapping({"metrics": {"prometheus_basic_auth_password_file": "/x"}})
    with pytest.raises(SettingsError, match="either a bearer token file or basic auth"):
        settings_from_mapping({"metrics": {"prometheus_bearer_token_file": "/x", "prometheus_basic_auth_user": "u"}})
    missing = MetricsSettings(prometheus_url="https://127.0.0.1:1", prometheus_bearer_token_file=str(tmp_path / "no"))
    with pytest.raises(SettingsError, match="prometheus_bearer_token_file: cannot read"):
        prometheus_client(missing)
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(SettingsError, match="is empty"):
        prometheus_client(
            MetricsSettings(prometheus_url="https://127.0.0.1:1", prometheus_bearer_token_file=str(empty))
        )
    with pytest.raises(SettingsError, match=r"prometheus_ca_bundle: .* is not a readable file"):
        prometheus_client(MetricsSettings(prometheus_url="https://127.0.0.1:1", prometheus_ca_bundle=str(tmp_path)))


def test_cli_exits_3_when_prometheus_cannot_be_verified(prom: FakeHttpsPrometheus, tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.json"
    inventory.write_text(
        '[{"id": "a", "name": "a", "resource_group": "rg", "size": "Standard_D4s_v5", "region": "westeurope"}]'
    )
    config = tmp_path / "c.yaml"
    config.write_text(f"metrics:\n  source: prometheus\n  prometheus_url: '{prom.url}'\n")
    code = main(
        ["recommend", "--config", str(config), "--inventory", str(inventory), "--now", str(NOW)], out=io.StringIO()
    )
    assert code == 3


def test_health_signals_use_the_same_verified_connection(prom: FakeHttpsPrometheus, tmp_path: Path) -> None:
    import datetime as dt

    from rightsizer.act.apply import default_probe
    from rightsizer.act.health import HealthProbeError
    from rightsizer.act.settings import ActSettings, HealthSignal

    signal = HealthSignal("cpu", 'cpu_percent{{vm="{vm}"}}', 90.0)
    now = dt.datetime.fromtimestamp(NOW, dt.UTC)
    act = ActSettings()
    untrusted = default_probe(settings(prom), act)
    with pytest.raises(HealthProbeError, match="CERTIFICATE_VERIFY_FAILED"):
        untrusted.check(VMS[0], [signal], now)
    prom.cpu_percent = 95.0
    trusted = default_probe(settings(prom, prometheus_ca_bundle=str(prom.cert_path)), act)
    breaches = trusted.check(VMS[0], [signal], now)
    assert [b.signal for b in breaches] == ["cpu"]
