"""ActSettings from the config file's ``act:`` section: accepted values and clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from rightsizer.act.settings import ActSettings, ActSettingsError, HealthSignal, MaintenanceWindow
from rightsizer.settings import SettingsError, load_settings


def test_act_section_of_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "rightsizer.yaml"
    path.write_text(
        """
act:
  maintenance_window: {days: [sat, sun], start_hour: 22, end_hour: 4}
  max_concurrent_changes: 3
  health_signals_by_group:
    web: [{name: p95_latency_ms, query: 'max(lat{{vm="{vm}"}})', threshold: 250}]
  spot: {min_regular_share: 0.3}
""",
        encoding="utf-8",
    )
    act = load_settings(path).act
    assert isinstance(act, ActSettings)
    assert act.maintenance_window == MaintenanceWindow(("sat", "sun"), 22, 4)
    assert act.max_concurrent_changes == 3
    assert act.spot.regular_percentage_above_base == 30
    signals = act.signals_for("web-1", "web")
    assert [s.name for s in signals] == ["cpu_above_90_sustained", "p95_latency_ms"]
    assert signals[1].render(vm="web-1") == 'max(lat{vm="web-1"})'


def test_defaults_when_the_section_is_absent() -> None:
    act = load_settings(None).act
    assert isinstance(act, ActSettings)
    assert (act.validation_window_s, act.max_concurrent_changes, act.maintenance_window) == (300.0, 1, None)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"max_concurent_changes": 2}, "unknown field.*max_concurent_changes"),
        ({"maintenance_window": {"days": ["monday"]}}, "days.*monday"),
        ({"maintenance_window": {"start_hour": 25}}, "start_hour must be 0-23"),
        ({"recover_mode": "yolo"}, "rollback' or 'resume"),
        ({"health_signals": [{"name": "x", "query": "up"}]}, r"health_signals\[0\].threshold"),
        ({"spot": {"min_regular_share": 1.5}}, r"min_regular_share must be in \[0, 1\]"),
        ({"max_concurrent_changes": 0}, "max_concurrent_changes must be >= 1"),
    ],
)
def test_bad_values_name_the_field_and_the_accepted_form(section: dict[str, object], message: str) -> None:
    with pytest.raises(ActSettingsError, match=message):
        ActSettings.from_mapping(section)


def test_settings_loader_reports_act_errors_as_settings_errors(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("act: {validation_window_s: -1}\n", encoding="utf-8")
    with pytest.raises(SettingsError, match="validation_window_s"):
        load_settings(path)


def test_signal_direction() -> None:
    low_is_bad = HealthSignal("throughput", "sum(rate(x[5m]))", 10.0, breach_when_above=False)
    assert low_is_bad.breached(5.0) and not low_is_bad.breached(12.0)
