"""The image itself, built and run without a registry or a Docker daemon (opt-in: 10-20 minutes on 2 cores).

The base is made here: a Debian bookworm root filesystem from Debian's mirror by `mmdebstrap` (python3 3.11 with
venv and pip), imported with `buildah` and passed as BASE_IMAGE, since the pinned python image needs a registry.
Then the real Dockerfile is built with `buildah bud` and the image is run with `buildah run` as uid 10001: both
entry points, the rightsizer's dry run, and the scaler serving a ScaledObject through a real fit.

Runs only with FORESIGHT_IMAGE_BUILD=1 and Debian's buildah and mmdebstrap installed (CI skips it otherwise).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from scaler_service.client import ScalerClient, channel
from tests.deploy.conftest import OBJECTS, REGISTER_DEADLINE_S, RunningScaler, fitted
from tests.deploy.render import ROOT
from tests.support.prometheus import free_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.image_build,
    pytest.mark.skipif(
        os.environ.get("FORESIGHT_IMAGE_BUILD") != "1", reason="opt-in: set FORESIGHT_IMAGE_BUILD=1 (10-20 min)"
    ),
    pytest.mark.skipif(
        shutil.which("buildah") is None or shutil.which("mmdebstrap") is None,
        reason="needs Debian's buildah and mmdebstrap",
    ),
]
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
FIT_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Buildah:
    root: Path

    def __call__(self, *args: str, timeout: float = 1500, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = ["buildah", "--root", str(self.root / "storage"), "--runroot", str(self.root / "run")]
        command += ["--storage-driver", "vfs", *args]
        env = {**os.environ, "BUILDAH_ISOLATION": "chroot"}
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, check=False)
        if check:
            assert done.returncode == 0, f"{' '.join(args[:2])} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        return done

    def popen(self, *args: str, log: Path) -> subprocess.Popen[bytes]:
        command = ["buildah", "--root", str(self.root / "storage"), "--runroot", str(self.root / "run")]
        env = {**os.environ, "BUILDAH_ISOLATION": "chroot"}
        with log.open("wb") as out:
            return subprocess.Popen(
                [*command, "--storage-driver", "vfs", *args], stdout=out, stderr=subprocess.STDOUT, env=env
            )


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Buildah, str]]:
    work = tmp_path_factory.mktemp("image")
    buildah = Buildah(work)
    base_tar = work / "base.tar"
    debootstrap = ["mmdebstrap", "--variant=minbase", "--include=python3,python3-venv,python3-pip,ca-certificates"]
    made = subprocess.run(
        [*debootstrap, "bookworm", str(base_tar)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert made.returncode == 0, made.stderr[-3000:]
    base = buildah("from", "scratch").stdout.strip()
    buildah("add", base, str(base_tar), "/")
    buildah("config", "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", base)
    buildah("commit", "-q", base, "localhost/foresight-test-base:bookworm")
    buildah("rm", base)
    base_tar.unlink()
    build = ["bud", "--layers=false", "--build-arg", "BASE_IMAGE=localhost/foresight-test-base:bookworm"]
    if HOST_CA_BUNDLE.is_file():  # a build machine behind a TLS-intercepting proxy trusts its CA
        build += ["--volume", f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro"]
    buildah(*build, "-t", "localhost/foresight:test", "-f", str(ROOT / "Dockerfile"), str(ROOT))
    container = buildah("from", "localhost/foresight:test").stdout.strip()
    try:
        yield buildah, container
    finally:
        buildah("rm", container, check=False)
        shutil.rmtree(work, ignore_errors=True)


def test_image_runs_as_the_manifests_user_with_tmpdir_and_no_compiler(image: tuple[Buildah, str]) -> None:
    buildah, container = image
    config = json.loads(buildah("inspect", "--type", "image", "localhost/foresight:test").stdout)["OCIv1"]["config"]
    assert config["User"] == "10001:10001"
    assert "TMPDIR=/tmp" in config["Env"]
    assert config["Cmd"] == ["foresight-scaler", "serve"]
    who = buildah("run", "--user", "10001:10001", container, "--", "id", "-u").stdout.strip()
    assert who == "10001"
    missing = buildah("run", container, "--", "sh", "-c", "for c in gcc cc g++ make; do command -v $c; done; true")
    assert missing.stdout.strip() == ""  # no compiler in the runtime image


def test_both_entry_points_and_the_rightsizer_dry_run_work_in_the_image(image: tuple[Buildah, str]) -> None:
    buildah, container = image
    for script in ("foresight-scaler", "rightsizer"):
        assert "usage:" in buildah("run", "--user", "10001:10001", container, "--", script, "--help").stdout
    report = buildah("run", "--user", "10001:10001", container, "--", "rightsizer", "recommend", "--output", "json")
    assert len(json.loads(report.stdout)["recommendations"]) == 50


def test_scaler_in_the_image_fits_and_serves(image: tuple[Buildah, str], tmp_path: Path) -> None:
    buildah, container = image
    grpc_port, http_port = free_port(), free_port()
    proc = buildah.popen(
        "run", "--user", "10001:10001", container, "--", "foresight-scaler", "serve", "--source", "replay",
        "--bind-address", "127.0.0.1", "--grpc-port", str(grpc_port), "--http-port", str(http_port),
        "--kube-annotations", "false",
        log=tmp_path / "serve.log",
    )  # fmt: skip
    scaler = RunningScaler(f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{http_port}", tmp_path / "serve.log")
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, scaler.log.read_text()[-3000:]
            try:
                scaler.get("/healthz")
                break
            except OSError:
                assert time.monotonic() < deadline, scaler.log.read_text()[-3000:]
                time.sleep(0.5)
        client = ScalerClient(channel(scaler.grpc_address))
        try:
            answer = client.keda_poll("image-test", "web", OBJECTS["web"], deadline_s=REGISTER_DEADLINE_S)
            assert answer.value_float >= 0
        finally:
            client.close()
        deadline = time.monotonic() + FIT_TIMEOUT_S
        while not fitted(scaler):
            assert proc.poll() is None, scaler.log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"no fit in the image:\n{scaler.log.read_text()[-3000:]}"
            time.sleep(2)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
