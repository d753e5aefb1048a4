"""A real Prometheus (Debian's ``/usr/bin/prometheus``) over a TSDB backfilled with ``promtool``, for tests.

Building blocks
---------------
- :class:`Series` — one series: metric name, labels, timestamps in epoch **seconds**, values (NaN allowed).
- :func:`write_openmetrics` — OpenMetrics text for several series (``# TYPE name gauge``, ``# EOF`` last).
- :func:`backfill` — ``promtool tsdb create-blocks-from openmetrics FILE DIR``.
- :class:`PrometheusServer` — starts ``prometheus`` on a free 127.0.0.1 port with an empty ``scrape_configs``,
  ``--storage.tsdb.retention.time=100y`` (the default 15 d would delete backfilled blocks seconds after start)
  and waits for ``/-/ready``. ``stop()``/``start()``/``restart()`` keep the same port and data (fault tests).
- :func:`nasa_series` — the real NASA HTTP 1995 trace (requests per minute), shifted by a whole number of
  weeks so that it ends just before ``now`` (weekday and time of day stay aligned), as a :class:`Series`.

Fixtures
--------
``prometheus_factory`` (function scope) and ``session_prometheus_factory`` (session scope) return a callable
``start(*series) -> PrometheusServer``; every server they start is stopped at teardown. Both skip the test
(``pytest.skip`` with the reason) when the ``prometheus`` or ``promtool`` binary is missing. Use them from any
test module or ``tests/<area>/conftest.py`` by importing them (pytest finds fixtures imported into a module)::

    # tests/<area>/conftest.py
    import time
    import pytest
    from tests.support.prometheus import (  # noqa: F401  (fixtures, used by name)
        PrometheusServer, nasa_series, prometheus_factory, session_prometheus_factory, StartPrometheus,
    )

    @pytest.fixture(scope="session")
    def nasa_prometheus(session_prometheus_factory: StartPrometheus) -> PrometheusServer:
        # 14 days of real 1-minute data ending about a minute ago, metric nasa_http_requests_per_minute
        return session_prometheus_factory(nasa_series(now=time.time(), days=14))

    def test_something(nasa_prometheus: PrometheusServer) -> None:
        url = nasa_prometheus.url            # http://127.0.0.1:PORT, for PrometheusConnect / PrometheusSource

The fixtures' names trip ruff's F811 when used as parameters in the module that imports them; in a test
module, either import them in the area's ``conftest.py`` instead, or build a fixture of your own on the
context manager behind them::

    @pytest.fixture(scope="module")
    def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
        with prometheus_servers(lambda: tmp_path_factory.mktemp("prometheus")) as start:
            yield start(nasa_series(now=time.time(), days=14))

Without pytest: ``with PrometheusServer.backfilled(tmp_dir, [series]) as server: ...``.

What works (measured on Prometheus 2.42 from Debian 12)
-------------------------------------------------------
- Backfilled samples up to a few seconds before ``now`` are queryable at once, by range and instant queries:
  a fresh server has an empty head, so blocks ending at ``now`` do not overlap it and no
  ``--storage.tsdb.allow-overlapping-blocks`` is needed (2.42 accepts overlapping blocks by default anyway).
- Instant queries only see a sample within the lookback delta (5 min): a series must end less than 5 min
  before the query time for ``fetch_latest`` to find it. :func:`nasa_series` ends 60-120 s before ``now``.
- Timestamps are seconds. Milliseconds would be accepted silently and land far in the future:
  :func:`write_openmetrics` refuses timestamps beyond year 3000 for that reason.
- ``promtool`` writes 2-hour blocks; Prometheus compacts them about a minute after start (harmless).
- Start-up with 14 days of 1-minute data (20k samples): ~6 s, mostly promtool; a restart well under 1 s.
- NaN values are stored and returned by Prometheus as ``"NaN"``.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

import numpy as np
import numpy.typing as npt
import pytest

FloatArray = npt.NDArray[np.float64]

PROMETHEUS_BINARY = os.environ.get("FORESIGHT_PROMETHEUS", "/usr/bin/prometheus")
PROMTOOL_BINARY = os.environ.get("FORESIGHT_PROMTOOL", "/usr/bin/promtool")

MINUTE_S = 60.0
DAY_S = 86_400.0
WEEK_S = 7 * DAY_S
_YEAR_3000_S = 32_503_680_000.0

NASA_METRIC = "nasa_http_requests_per_minute"
# The July 1995 log is clean from Jul 1 00:00 EDT until it stops early on Jul 28 17:33 UTC.
NASA_CLEAN_JULY_END_S = 806_952_780.0  # 1995-07-28T17:33:00Z


@dataclass(frozen=True)
class Series:
    """One series to backfill. ``timestamps`` in epoch seconds, strictly increasing; values may be NaN."""

    name: str
    timestamps: FloatArray
    values: FloatArray
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.timestamps) != len(self.values):
            raise ValueError(f"series {self.name}: {len(self.timestamps)} timestamps but {len(self.values)} values")


def series(
    name: str,
    timestamps: Sequence[float] | FloatArray,
    values: Sequence[float] | FloatArray,
    **labels: str,
) -> Series:
    """Shorthand: ``series("up", ts, vs, job="api")``."""
    return Series(
        name=name,
        timestamps=np.asarray(timestamps, dtype=np.float64),
        values=np.asarray(values, dtype=np.float64),
        labels=dict(labels),
    )


def binaries_missing() -> str | None:
    """Why Prometheus tests cannot run here, or None when both binaries are present."""
    missing = [b for b in (PROMETHEUS_BINARY, PROMTOOL_BINARY) if not shutil.which(b)]
    if missing:
        return f"{' and '.join(missing)} not installed (Debian package 'prometheus'; ./test.sh installs it)"
    return None


def require_binaries() -> None:
    reason = binaries_missing()
    if reason is not None:
        pytest.skip(reason)


def _format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _write_family(out: IO[str], name: str, members: list[Series]) -> None:
    out.write(f"# TYPE {name} gauge\n")
    for s in members:
        label_text = ",".join(f'{k}="{_escape_label(v)}"' for k, v in sorted(s.labels.items()))
        prefix = f"{name}{{{label_text}}}" if label_text else name
        ts = np.asarray(s.timestamps, dtype=np.float64)
        if len(ts) and ts.max() > _YEAR_3000_S:
            raise ValueError(f"series {name}: timestamps must be epoch seconds, got {ts.max():.0f} (milliseconds?)")
        if len(ts) > 1 and not np.all(np.diff(ts) > 0):
            raise ValueError(f"series {name}{s.labels}: timestamps must be strictly increasing")
        out.writelines(
            f"{prefix} {_format_value(v)} {t:.3f}\n" for t, v in zip(ts.tolist(), s.values.tolist(), strict=True)
        )


def write_openmetrics(all_series: Iterable[Series], path: Path) -> Path:
    """Write OpenMetrics text (gauges, one family per metric name, ``# EOF`` last) to ``path``."""
    families: dict[str, list[Series]] = {}
    for s in all_series:
        families.setdefault(s.name, []).append(s)
    with path.open("w", encoding="utf-8") as out:
        for name, members in families.items():
            _write_family(out, name, members)
        out.write("# EOF\n")
    return path


def backfill(openmetrics_file: Path, tsdb_dir: Path) -> None:
    """Create TSDB blocks in ``tsdb_dir`` from an OpenMetrics file (raises with promtool's output)."""
    tsdb_dir.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [PROMTOOL_BINARY, "tsdb", "create-blocks-from", "openmetrics", str(openmetrics_file), str(tsdb_dir)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"promtool backfill failed ({done.returncode}): {done.stderr.strip() or done.stdout}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


_EMPTY_CONFIG = "global:\n  scrape_interval: 1m\nscrape_configs: []\n"


class PrometheusServer:
    """A Prometheus process on 127.0.0.1 over ``tsdb_dir``; ``stop``/``start`` keep port and data."""

    def __init__(self, work_dir: Path, *, port: int | None = None, ready_timeout_s: float = 60.0) -> None:
        self.work_dir = work_dir
        self.tsdb_dir = work_dir / "tsdb"
        self.tsdb_dir.mkdir(parents=True, exist_ok=True)
        self.config_file = work_dir / "prometheus.yml"
        self.config_file.write_text(_EMPTY_CONFIG, encoding="utf-8")
        self.log_file = work_dir / "prometheus.log"
        self.port = port if port is not None else free_port()
        self.ready_timeout_s = ready_timeout_s
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def add_series(self, *all_series: Series) -> None:
        """Backfill more series (only while stopped: blocks are picked up at start)."""
        if self.running:
            raise RuntimeError("stop Prometheus before backfilling")
        with tempfile.NamedTemporaryFile("w", suffix=".om", dir=self.work_dir, delete=False) as tmp:
            path = Path(tmp.name)
        try:
            write_openmetrics(all_series, path)
            backfill(path, self.tsdb_dir)
        finally:
            path.unlink(missing_ok=True)

    def start(self) -> None:
        if self.running:
            return
        command = [
            PROMETHEUS_BINARY,
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={self.tsdb_dir}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--storage.tsdb.retention.time=100y",
            "--web.enable-lifecycle",
        ]
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self._process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1.0) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"prometheus not ready after {self.ready_timeout_s} s:\n{self.log_tail()}")

    def stop(self, timeout_s: float = 20.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> PrometheusServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @classmethod
    @contextlib.contextmanager
    def backfilled(cls, work_dir: Path, all_series: Iterable[Series]) -> Iterator[PrometheusServer]:
        """Backfill ``all_series`` into a new TSDB under ``work_dir``, start, yield, stop."""
        server = cls(work_dir)
        server.add_series(*all_series)
        with server:
            yield server


# --- real data -------------------------------------------------------------------------------------------


def load_nasa_trace() -> tuple[FloatArray, FloatArray]:
    """Raw NASA HTTP 1995 samples (epoch seconds, requests per minute; NaN in the outages)."""
    from forecasting.traces import load_trace_samples

    timestamps, values = load_trace_samples("nasa-http-1995")
    return np.asarray(timestamps, dtype=np.float64), np.asarray(values, dtype=np.float64)


def nasa_series(
    *,
    now: float,
    days: float = 14.0,
    name: str = NASA_METRIC,
    labels: Mapping[str, str] | None = None,
    end_margin_s: float = MINUTE_S,
    trace_end_s: float = NASA_CLEAN_JULY_END_S,
) -> Series:
    """``days`` of the NASA trace (1-min points) ending within a minute before ``now - end_margin_s``.

    The slice ends at the latest trace time <= ``trace_end_s`` whose weekday and time of day equal those of
    ``now - end_margin_s``, so the shift is a whole number of weeks. The default ``trace_end_s`` keeps up to
    21 days inside the clean July stretch (no gaps). NaN samples of the source are dropped.
    """
    if days * DAY_S > 3 * WEEK_S:
        raise ValueError(f"days={days}: the clean July stretch holds 27 days, of which 3 weeks are safe to use")
    timestamps, values = load_nasa_trace()
    target_end = now - end_margin_s
    slice_end = trace_end_s - ((trace_end_s - target_end) % WEEK_S)
    shift = target_end - slice_end
    keep = (timestamps > slice_end - days * DAY_S) & (timestamps <= slice_end) & ~np.isnan(values)
    return Series(
        name=name,
        timestamps=timestamps[keep] + shift,
        values=values[keep],
        labels=dict(labels or {}),
    )


# --- pytest fixtures ---------------------------------------------------------------------------------


class StartPrometheus(Protocol):
    def __call__(self, *all_series: Series) -> PrometheusServer: ...


@contextlib.contextmanager
def prometheus_servers(make_dir: Callable[[], Path]) -> Iterator[StartPrometheus]:
    """Context manager behind the fixtures: ``start(*series)`` servers, all stopped on exit.

    Skips the calling test when the binaries are missing. ``make_dir`` gives each server a fresh directory.
    """
    require_binaries()
    servers: list[PrometheusServer] = []

    def start(*all_series: Series) -> PrometheusServer:
        server = PrometheusServer(make_dir())
        servers.append(server)
        if all_series:
            server.add_series(*all_series)
        server.start()
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def prometheus_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartPrometheus]:
    """``start(*series) -> PrometheusServer``; servers are stopped when the test ends."""
    with prometheus_servers(lambda: tmp_path_factory.mktemp("prometheus")) as start:
        yield start


@pytest.fixture(scope="session")
def session_prometheus_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartPrometheus]:
    """``start(*series) -> PrometheusServer``; servers live until the end of the test session."""
    with prometheus_servers(lambda: tmp_path_factory.mktemp("prometheus")) as start:
        yield start
