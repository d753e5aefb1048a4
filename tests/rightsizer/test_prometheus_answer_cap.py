"""The rightsizer's Prometheus answers are bounded in size: over real HTTP against the fake Prometheus
(tests/fakes/prometheus_http.py), a huge answer or a gzip bomb for one VM's query is refused while it is read and
skips that VM with the reason; the other VMs are still sized, and answers under the cap are read whole."""

from __future__ import annotations

import io
import json
import tracemalloc
from pathlib import Path

import pytest

from rightsizer.cli import main
from rightsizer.domain import VmInfo
from rightsizer.metrics import NoUsage, VmUsage
from rightsizer.settings import Settings, SettingsError, settings_from_mapping
from rightsizer.sources.live import SourceUnavailable, live_usage
from tests.fakes.prometheus_http import FakePrometheus, fake_prometheus

NOW = 1_796_000_000.0
BIG = "vm-big"
VMS = [
    VmInfo(id=name, name=name, resource_group="rg", size="Standard_D4s_v5", region="westeurope")
    for name in (BIG, "vm-1", "vm-2")  # the bad VM first: its answer must not stop the run
]


def settings(prom: FakePrometheus, **metrics: object) -> Settings:
    return settings_from_mapping(
        {
            "metrics": {
                "source": "prometheus",
                "prometheus_url": prom.url,
                "cpu_query": 'cpu{{instance="{vm}"}}',
                "memory_query": 'memory{{instance="{vm}"}}',
                **metrics,
            }
        }
    )


def assert_others_sized(usage: dict[str, VmUsage | NoUsage], value: float) -> None:
    for vm in VMS[1:]:
        u = usage[vm.id]
        assert isinstance(u, VmUsage) and u.memory is not None, u
        assert float(u.cpu.values.max()) == pytest.approx(value)


def test_a_huge_answer_skips_that_vm_naming_the_cap_and_is_not_held() -> None:
    # 40 MB of distinct series streamed without a length for vm-big's query: refused at the 1 MiB cap.
    with fake_prometheus(range_value=20.0, huge_answer_bytes=40_000_000, huge_range_query=f'"{BIG}"') as prom:
        tracemalloc.start()
        try:
            usage, _ = live_usage(VMS, settings(prom, prometheus_max_response_mb=1), NOW)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        prom.wait_until_sent(2**20)
    big = usage[BIG]
    assert isinstance(big, NoUsage)
    assert big.reason.startswith(f"metrics query failed: Prometheus answered 'cpu{{instance=\"{BIG}\"}}' with more")
    assert "with more than 1 MiB (metrics.prometheus_max_response_mb), which is refused: narrow" in big.reason
    assert_others_sized(usage, 20.0)
    # The read stopped early: far less than the 40 MB crossed the wire, and far less was held at once.
    assert 2**20 <= prom.bytes_sent < 20_000_000
    assert peak < 12 * 2**20
    # Refused once, not retried as if transient: one query for vm-big, two for each other VM.
    assert prom.requests == 1 + 2 * (len(VMS) - 1)


def test_a_small_gzip_that_inflates_past_the_default_cap_is_refused() -> None:
    # About 30 MB once inflated, a few hundred KB on the wire: the cap (16 MiB by default) is on the inflated body.
    with fake_prometheus(
        range_value=35.0, huge_answer_bytes=30_000_000, gzip_answer=True, huge_range_query=f'"{BIG}"'
    ) as prom:
        usage, _ = live_usage(VMS, settings(prom), NOW)
    big = usage[BIG]
    assert isinstance(big, NoUsage)
    assert "with more than 16 MiB " in big.reason
    assert prom.bytes_sent < 2_000_000
    assert_others_sized(usage, 35.0)


def test_an_oversize_memory_answer_skips_the_vm_naming_the_memory_query() -> None:
    with fake_prometheus(
        range_value=20.0, huge_answer_bytes=3_000_000, huge_range_query=f'memory{{instance="{BIG}"'
    ) as prom:
        usage, _ = live_usage(VMS, settings(prom, prometheus_max_response_mb=1), NOW)
    big = usage[BIG]
    assert isinstance(big, NoUsage)
    assert f"Prometheus answered 'memory{{instance=\"{BIG}\"}}' with more than 1 MiB" in big.reason
    assert_others_sized(usage, 20.0)


def test_answers_under_the_cap_are_read_whole() -> None:
    # The same kind of answer under the cap is parsed, and refused for what it is (several series).
    with fake_prometheus(range_value=20.0, huge_answer_bytes=200_000, huge_range_query=f'"{BIG}"') as prom:
        usage, _ = live_usage(VMS, settings(prom, prometheus_max_response_mb=1), NOW)
    big = usage[BIG]
    assert isinstance(big, NoUsage) and "series" in big.reason and "MiB" not in big.reason
    assert_others_sized(usage, 20.0)


def test_an_error_answer_is_quoted_short_in_the_vms_reason() -> None:
    # The client library puts the whole error body (100 kB here) into its exception: the reason keeps a prefix.
    # The bad VM comes last here: refused on the very first query, the run stops (next test).
    with fake_prometheus(range_value=20.0, bad_range_query=f'"{BIG}"') as prom:
        usage, _ = live_usage([*VMS[1:], VMS[0]], settings(prom), NOW)
    big = usage[BIG]
    assert isinstance(big, NoUsage) and "400" in big.reason and "bad_data" in big.reason
    assert len(big.reason) < 400
    assert_others_sized(usage, 20.0)


def test_an_error_answer_to_the_first_query_stops_the_run_with_a_short_message() -> None:
    with (
        fake_prometheus(range_value=20.0, bad_range_query=f'"{BIG}"') as prom,
        pytest.raises(SourceUnavailable) as stopped,
    ):
        live_usage(VMS, settings(prom), NOW)
    assert "refused the first query" in str(stopped.value) and "bad_data" in str(stopped.value)
    assert len(str(stopped.value)) < 500


def test_the_cli_reports_the_refused_vm_as_its_row_and_sizes_the_others(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.json"
    inventory.write_text(
        json.dumps(
            [
                {
                    "id": vm.id,
                    "name": vm.name,
                    "resource_group": vm.resource_group,
                    "size": vm.size,
                    "region": vm.region,
                }
                for vm in VMS
            ]
        )
    )
    with fake_prometheus(range_value=20.0, huge_answer_bytes=3_000_000, huge_range_query=f'"{BIG}"') as prom:
        config = tmp_path / "c.yaml"
        config.write_text(
            "metrics:\n"
            "  source: prometheus\n"
            f"  prometheus_url: '{prom.url}'\n"
            "  prometheus_max_response_mb: 1\n"
            "  cpu_query: 'cpu{{instance=\"{vm}\"}}'\n"
            "  memory_query: 'memory{{instance=\"{vm}\"}}'\n"
            "forecast:\n  method: seasonal-profile\n"
        )
        out = io.StringIO()
        argv = ["recommend", "--config", str(config), "--inventory", str(inventory), "--output", "json"]
        assert main([*argv, "--now", str(NOW)], out=out) == 0
    rows = {r["vm"]: r for r in json.loads(out.getvalue())["recommendations"]}
    assert set(rows) == {vm.name for vm in VMS}
    assert f"Prometheus answered 'cpu{{instance=\"{BIG}\"}}' with more than 1 MiB" in rows[BIG]["reason"]
    assert "(metrics.prometheus_max_response_mb), which is refused: narrow the query" in rows[BIG]["reason"]
    assert all("metrics query failed" not in rows[vm.name]["reason"] for vm in VMS[1:])


def test_a_redirect_is_not_followed() -> None:
    # requests would read a redirect's body whole before following it: around the cap, so redirects are refused.
    with fake_prometheus(range_value=20.0) as elsewhere, fake_prometheus(redirect_to=elsewhere.url) as prom:
        with pytest.raises(SourceUnavailable, match="HTTP Status Code 302"):
            live_usage(VMS, settings(prom), NOW)
        assert prom.requests == 1
        assert elsewhere.requests == 0


@pytest.mark.parametrize("value", [0, -1, 0.001, 1025, "16"])
def test_the_cap_setting_is_checked(value: object) -> None:
    with pytest.raises(SettingsError, match=r"metrics\.prometheus_max_response_mb"):
        settings_from_mapping({"metrics": {"prometheus_max_response_mb": value}})
    assert settings_from_mapping({}).metrics.prometheus_max_response_mb == 16.0
