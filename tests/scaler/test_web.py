"""The live view on the HTTP port: real server, real HTTP, and a real headless browser (Debian's chromium)."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from scaler_service.server import ScalerServer
from scaler_service.web.page import CONTENT_SECURITY_POLICY
from tests.scaler.conftest import (
    ScriptedFits,
    ScriptedSource,
    StartScaler,
    client_for,
    scaler_settings,
    wait_for,
)

HOSTILE = '<img src=x onerror="alert(1)">'


def get(port: int, path: str) -> tuple[int, dict[str, str], str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def _register(server: ScalerServer, source: ScriptedSource, fits: ScriptedFits, objects: list[tuple[str, str]]) -> None:
    now = time.time()
    source.set_points("rps", [(now - 7200 + 60 * i, 40.0 + 10 * np.sin(i / 10)) for i in range(121)])
    fits.levels["rps"] = 60.0
    client = client_for(server)
    try:
        for namespace, name in objects:
            client.keda_poll(namespace, name, {"query": "rps", "threshold": "10", "queryStep": "1m"})
        wait_for(lambda: server.cache.get(server.engine.subscriptions()[0].spec.series_key.id) is not None)
    finally:
        client.close()


def test_list_escapes_names_filters_and_pages(
    start_scaler: StartScaler, source: ScriptedSource, fits: ScriptedFits
) -> None:
    server = start_scaler(source, fits=fits)
    _register(server, source, fits, [("shop", HOSTILE), ("shop", "cart"), ("ops", "batch")])

    status, headers, body = get(server.http_port, "/")
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "script-src" not in CONTENT_SECURITY_POLICY and "default-src 'none'" in CONTENT_SECURITY_POLICY
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert HOSTILE not in body and "<img" not in body
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in body
    assert "3 ScaledObjects poll this scaler" in body
    assert body.count("<svg") == 3
    assert "served" in body and "forecast" in body and "minConfidence" in body

    status, _, body = get(server.http_port, "/?namespace=shop&limit=1")
    assert status == 200
    assert "2 ScaledObjects in namespace <b>shop</b>" in body and "showing 1-1 of 2" in body
    assert "ops/batch" not in body
    assert 'href="/?limit=1&amp;offset=1&amp;namespace=shop">next page' in body
    status, _, body = get(server.http_port, "/?namespace=shop&limit=1&offset=1")
    assert "showing 2-2 of 2" in body and "previous page" in body and "next page" not in body

    status, _, body = get(server.http_port, "/scaledobjects/shop/cart")
    assert status == 200
    assert "shop/cart" in body and "Now: the last 2 h and the next 1h" in body and "whole forecast" in body
    assert body.count("<svg") >= 2 and ("Live error" in body or "No live error to show yet" in body)


@pytest.mark.parametrize(
    ("path", "status", "says"),
    [
        ("/?limit=0", 400, "limit must be a whole number from 1 to 100"),
        ("/?limit=99999999999999", 400, "limit must be a whole number from 1 to 100"),
        ("/?offset=-1", 400, "offset must be a whole number"),
        ("/?sort=name", 400, "unknown parameter &#x27;sort&#x27;: accepted are namespace, limit and offset"),
        ("/?namespace=" + "a" * 300, 400, "namespace is longer than 253 characters"),
        ("/?" + "&".join(f"a{i}=1" for i in range(50)), 400, "too many query parameters"),
        ("/scaledobjects/only-one-part", 400, "/scaledobjects/&lt;namespace&gt;/&lt;name&gt;"),
        ("/scaledobjects/shop/nobody", 404, "No ScaledObject <b>shop/nobody</b>"),
        ("/scaledobjects/shop/%3Cscript%3E", 404, "shop/&lt;script&gt;"),
        ("/nothing-here", 404, "not found: try /, /forecast, /healthz, /metrics"),
    ],
)
def test_bad_requests_are_refused_with_what_is_accepted(
    start_scaler: StartScaler, source: ScriptedSource, path: str, status: int, says: str
) -> None:
    server = start_scaler(source)
    code, headers, body = get(server.http_port, path)
    assert code == status
    assert says in body
    assert "<script>" not in body
    if path != "/nothing-here":
        assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("chromium not installed (Debian package 'chromium'; ./test.sh installs it)")


def _browser(url: str, tmp: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp / 'chromium-profile'}",
            "--window-size=1280,900",
            *extra,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=tmp,
    )


def test_page_draws_in_a_real_browser_against_the_replay_source(tmp_path: Path) -> None:
    """Real fits on a bundled trace, the page rendered by chromium: the charts are drawn, a screenshot taken."""
    _chromium()
    server = ScalerServer(scaler_settings(source="replay", prometheus_url="http://127.0.0.1:9090"))
    server.start()
    client = client_for(server)
    try:
        metadata = {"query": "nyc-taxi", "threshold": "5000", "queryStep": "30m", "historyTimeWindow": "7d"}
        client.keda_poll("demo", "taxi-dispatch", {**metadata, "predictHorizon": "1h"})
        key = server.parser.parse(metadata).series_key.id
        wait_for(lambda: server.cache.get(key) is not None, timeout=120, interval=0.5)
        url = f"http://127.0.0.1:{server.http_port}/"

        dom = _browser(url, tmp_path, "--dump-dom")
        assert dom.returncode == 0, dom.stderr[-2000:]
        paths = re.findall(r'<path class="line" d="([^"]*)"', dom.stdout)
        bands = re.findall(r'<path class="band" d="([^"]*)"', dom.stdout)
        assert len(paths) >= 2, dom.stdout[-2000:]  # observed and forecast
        assert all(p.count("L") >= 2 for p in paths)
        assert bands and all(b.endswith("Z") for b in bands)
        assert "demo/taxi-dispatch" in dom.stdout and "served" in dom.stdout

        shot = _browser(url, tmp_path, f"--screenshot={tmp_path / 'page.png'}")
        assert shot.returncode == 0, shot.stderr[-2000:]
        image: Any = __import__("matplotlib.image", fromlist=["imread"]).imread(tmp_path / "page.png")
        assert image.shape[:2] == (900, 1280)
        rgb = (image[..., :3] * 255).round().astype(int)
        # The forecast line (#2563eb) and the served value (#ea580c) are on screen, not only in the markup.
        for colour in ((0x25, 0x63, 0xEB), (0xEA, 0x58, 0x0C)):
            assert (np.abs(rgb - np.array(colour)).sum(axis=-1) < 30).sum() > 20, colour
    finally:
        client.close()
        server.stop(grace_s=1.0)
