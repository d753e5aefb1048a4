"""AnnotationWatcher driving the real kubernetes client against a fake API server over loopback HTTP."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s
from structlog.testing import capture_logs

from scaler_service.kube import OPT_OUT_ANNOTATION, AnnotationWatcher, annotation_opts_out, watcher_api_client
from tests.fakes.kube_api import FakeKubeApi

OFF = {OPT_OUT_ANNOTATION: "false"}
ON = {OPT_OUT_ANNOTATION: "true"}


@pytest.fixture
def api() -> Iterator[FakeKubeApi]:
    with FakeKubeApi(token="secret-token") as fake:
        fake.add_deployment("shop", "web")
        fake.add_scaled_object("shop", "web-so", target_name="web")
        fake.add_deployment("shop", "batch", annotations=OFF)
        fake.add_scaled_object("shop", "batch-so", target_name="batch", target_kind="Deployment")
        fake.add_stateful_set("db", "cache", annotations={OPT_OUT_ANNOTATION: " FALSE "})
        fake.add_scaled_object(
            "db", "cache-so", target_name="cache", target_kind="StatefulSet", target_api_version="apps/v1"
        )
        fake.add_deployment("db", "reports")
        fake.add_scaled_object("db", "reports-so", target_name="reports", annotations=OFF)
        fake.add_custom_object("argoproj.io", "v1alpha1", "rollouts", "Rollout", "shop", "canary", OFF)
        fake.add_scaled_object(
            "shop",
            "canary-so",
            target_name="canary",
            target_kind="Rollout",
            target_api_version="argoproj.io/v1alpha1",
        )
        yield fake


@pytest.fixture
def watcher(api: FakeKubeApi) -> Iterator[AnnotationWatcher]:
    w = AnnotationWatcher(api.api_client(), refresh_interval_s=0.05)
    yield w
    w.stop()


def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def test_opt_out_on_the_scaled_object_or_its_target(watcher: AnnotationWatcher) -> None:
    assert watcher.refresh()
    assert not watcher.is_opted_out("shop", "web-so")
    assert watcher.is_opted_out("shop", "batch-so")  # Deployment annotated
    assert watcher.is_opted_out("db", "cache-so")  # StatefulSet annotated (case and spaces ignored)
    assert watcher.is_opted_out("db", "reports-so")  # the ScaledObject itself annotated
    assert watcher.is_opted_out("shop", "canary-so")  # a custom kind, read generically
    assert not watcher.is_opted_out("shop", "unknown")
    assert not watcher.is_opted_out("db", "web-so")  # namespace matters
    status = watcher.status()
    assert status.scaled_objects == 5 and status.opted_out == 4 and status.last_error is None


def test_the_client_only_reads(api: FakeKubeApi, watcher: AnnotationWatcher) -> None:
    watcher.refresh()
    assert api.requests
    assert {method for method, _ in api.requests} == {"GET"}


def test_annotation_changes_are_picked_up_by_the_background_refresh(
    api: FakeKubeApi, watcher: AnnotationWatcher
) -> None:
    watcher.start()
    assert wait_for(lambda: watcher.is_opted_out("shop", "batch-so"))
    api.set_annotations("deployments", "shop", "web", OFF)
    api.set_annotations("deployments", "shop", "batch", ON)
    assert wait_for(lambda: watcher.is_opted_out("shop", "web-so") and not watcher.is_opted_out("shop", "batch-so"))
    api.set_annotations("scaledobjects", "db", "reports-so", {})
    assert wait_for(lambda: not watcher.is_opted_out("db", "reports-so"))
    api.set_annotations("rollouts", "shop", "canary", ON)  # a kind read one object at a time, every period
    assert wait_for(lambda: not watcher.is_opted_out("shop", "canary-so"))


def list_requests(api: FakeKubeApi, plural: str) -> int:
    """Plain lists (not watches) of ``plural`` the fake has answered."""
    return sum(1 for _, path in list(api.requests) if f"/{plural}" in path and "watch=" not in path)


@pytest.fixture
def watching(api: FakeKubeApi) -> Iterator[AnnotationWatcher]:
    """A started watcher that would only re-list after 10 minutes: anything it sees sooner came by watch."""
    w = AnnotationWatcher(api.api_client(), resync_s=600, backoff_initial_s=0.05, backoff_max_s=0.2)
    w.start()
    assert wait_for(lambda: w.is_opted_out("shop", "batch-so") and w.is_opted_out("db", "reports-so"))
    assert wait_for(lambda: api.watch_requests >= 3)  # the three watches are open
    yield w
    w.stop()


def test_an_annotation_added_after_start_arrives_by_watch_within_a_second(
    api: FakeKubeApi, watching: AnnotationWatcher
) -> None:
    lists_before = list_requests(api, "deployments") + list_requests(api, "scaledobjects")
    api.set_annotations("deployments", "shop", "web", OFF)
    assert wait_for(lambda: watching.is_opted_out("shop", "web-so"), timeout_s=1.5)
    api.add_deployment("shop", "late", annotations=OFF)
    api.add_scaled_object("shop", "late-so", target_name="late")
    assert wait_for(lambda: watching.is_opted_out("shop", "late-so"), timeout_s=2.0)
    assert list_requests(api, "deployments") + list_requests(api, "scaledobjects") == lists_before  # no polling
    assert watching.status().watch_events >= 3


def test_a_removed_annotation_or_a_deleted_object_arrives_by_watch(
    api: FakeKubeApi, watching: AnnotationWatcher
) -> None:
    api.set_annotations("deployments", "shop", "batch", ON)
    assert wait_for(lambda: not watching.is_opted_out("shop", "batch-so"), timeout_s=2.0)
    api.set_annotations("scaledobjects", "db", "reports-so", {})
    assert wait_for(lambda: not watching.is_opted_out("db", "reports-so"), timeout_s=2.0)
    api.delete("statefulsets", "db", "cache")  # the target goes: its annotation no longer counts
    assert wait_for(lambda: not watching.is_opted_out("db", "cache-so"), timeout_s=2.0)
    assert watching.is_opted_out("shop", "canary-so")
    api.delete("scaledobjects", "shop", "canary-so")
    assert wait_for(lambda: not watching.is_opted_out("shop", "canary-so"), timeout_s=2.0)
    assert watching.status().scaled_objects == 4


def test_an_expired_version_lists_again_at_once(api: FakeKubeApi, watching: AnnotationWatcher) -> None:
    lists_before = list_requests(api, "scaledobjects")
    api.go_away()
    api.set_annotations("scaledobjects", "shop", "web-so", OFF)  # missed by the watch ...
    api.compact()  # ... and no longer in the history it would replay from
    api.come_back()
    assert wait_for(lambda: watching.is_opted_out("shop", "web-so"), timeout_s=5.0)
    assert watching.status().expired_watches >= 1
    assert list_requests(api, "scaledobjects") > lists_before


def test_an_api_server_outage_is_recovered_with_backoff_and_logged_once(
    api: FakeKubeApi, caplog: pytest.LogCaptureFixture
) -> None:
    client = watcher_api_client(api.configuration())
    with capture_logs() as logs:
        w = AnnotationWatcher(client, resync_s=600, backoff_initial_s=0.05, backoff_max_s=0.2)
        w.start()
        try:
            assert wait_for(lambda: w.is_opted_out("shop", "batch-so") and api.watch_requests >= 3)
            api.go_away()
            api.set_annotations("deployments", "shop", "batch", {})
            assert wait_for(lambda: w.status().failures >= 9)  # several attempts for each of the three watches
            assert w.is_opted_out("shop", "batch-so")  # the last answers are kept meanwhile
            assert "Connection" in (w.status().last_error or "") or "Max retries" in (w.status().last_error or "")
            api.come_back()
            assert wait_for(lambda: not w.is_opted_out("shop", "batch-so"), timeout_s=5.0)
            assert wait_for(lambda: sum("reachable again" in e["event"] for e in logs) == 3)
        finally:
            w.stop()
    warnings = [e for e in logs if e["log_level"] == "warning" and "unreachable" in e["event"]]
    assert sorted(e["resource"] for e in warnings) == ["deployments", "scaledobjects", "statefulsets"]
    assert w.status().last_error is None
    assert not [r for r in caplog.records if r.name.startswith("urllib3")]  # no warning per attempt either


def test_stop_is_prompt_while_watches_are_open(api: FakeKubeApi) -> None:
    w = AnnotationWatcher(api.api_client(), watch_timeout_s=300)
    w.start()
    assert wait_for(lambda: api.watch_requests >= 3)
    started = time.monotonic()
    w.stop()
    assert time.monotonic() - started < 2.0
    assert not [t for t in threading.enumerate() if t.name.startswith(("kube-watch-", "annotation-"))]


def test_memory_is_capped_at_max_objects(api: FakeKubeApi) -> None:
    for i in range(5):
        api.add_deployment("many", f"app-{i}", annotations=OFF)
    with capture_logs() as logs:
        w = AnnotationWatcher(api.api_client(), max_objects=3)
        assert w.refresh()
    assert w.status().scaled_objects == 3
    assert len(w._opted_out_apps["Deployment"]) == 3
    capped = [e for e in logs if "too many objects" in e["event"]]
    assert sorted(e["resource"] for e in capped) == ["Deployment", "scaledobjects"]  # once per resource


def test_deleted_scaled_objects_are_forgotten(api: FakeKubeApi, watcher: AnnotationWatcher) -> None:
    watcher.refresh()
    assert watcher.is_opted_out("db", "reports-so")
    api.delete("scaledobjects", "db", "reports-so")
    watcher.refresh()
    assert not watcher.is_opted_out("db", "reports-so")


def test_api_outage_keeps_the_last_answers_and_recovers(api: FakeKubeApi, watcher: AnnotationWatcher) -> None:
    assert watcher.refresh()
    api.fail_with = 503
    assert not watcher.refresh()
    assert watcher.is_opted_out("shop", "batch-so")
    status = watcher.status()
    assert status.failures == 1 and status.last_error is not None and "503" in status.last_error
    api.fail_with = None
    api.set_annotations("deployments", "shop", "batch", {})
    assert watcher.refresh()
    assert not watcher.is_opted_out("shop", "batch-so")


def test_wrong_credentials_are_a_failed_refresh_not_an_opt_out(api: FakeKubeApi) -> None:
    configuration = api.configuration()
    configuration.api_key = {"authorization": "wrong-token"}
    w = AnnotationWatcher(k8s.ApiClient(configuration), refresh_interval_s=1.0)
    assert not w.refresh()
    assert "401" in (w.status().last_error or "")
    assert not w.is_opted_out("shop", "batch-so")


def test_listing_follows_continue_tokens(api: FakeKubeApi) -> None:
    for i in range(7):
        api.add_deployment("many", f"app-{i}", annotations=OFF if i % 2 else None)
        api.add_scaled_object("many", f"so-{i}", target_name=f"app-{i}")
    w = AnnotationWatcher(api.api_client(), page_size=2)
    assert w.refresh()
    assert [w.is_opted_out("many", f"so-{i}") for i in range(7)] == [bool(i % 2) for i in range(7)]
    assert any("continue=" in path for _, path in api.requests)


def test_namespaced_watcher_reads_only_its_namespace(api: FakeKubeApi) -> None:
    w = AnnotationWatcher(api.api_client(), namespace="db")
    assert w.refresh()
    assert w.is_opted_out("db", "cache-so")
    assert not w.is_opted_out("shop", "batch-so")
    assert w.status().scaled_objects == 2


def test_from_environment_uses_a_kubeconfig(api: FakeKubeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    config = tmp_path / "kubeconfig"
    config.write_text(api.kubeconfig(), encoding="utf-8")
    w = AnnotationWatcher.from_environment(kubeconfig=config, refresh_interval_s=0.05)
    try:
        assert w.enabled
        assert wait_for(lambda: w.is_opted_out("shop", "batch-so"))
    finally:
        w.stop()


def test_disabled_outside_a_cluster_without_kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    w = AnnotationWatcher.from_environment()
    assert not w.enabled
    assert "no kubeconfig" in (w.disabled_reason or "")
    assert not w.refresh()
    assert not w.is_opted_out("shop", "batch-so")
    w.stop()


@pytest.mark.parametrize(
    ("annotations", "opted_out"),
    [(None, False), ({}, False), (OFF, True), ({OPT_OUT_ANNOTATION: "False"}, True), (ON, False),
     ({OPT_OUT_ANNOTATION: "no"}, False), ({"other": "false"}, False)],
)  # fmt: skip
def test_annotation_values(annotations: dict[str, str] | None, opted_out: bool) -> None:
    assert annotation_opts_out(annotations) is opted_out


def test_the_resync_period_is_a_duration_setting() -> None:
    from scaler_service.settings import SettingsError, settings_from_sources

    assert settings_from_sources({}, {}).kube_resync == 600.0
    assert settings_from_sources({"kube_resync": "2m"}, {}).kube_resync == 120.0
    assert settings_from_sources({}, {"FORESIGHT_KUBE_RESYNC": "1h"}).kube_resync == 3600.0
    with pytest.raises(SettingsError, match="kube_resync"):
        settings_from_sources({"kube_resync": "0s"}, {})
