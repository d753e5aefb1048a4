"""How the scaler authenticates to Prometheus and verifies its certificate (as real deployments require).

Secrets come from files (a mounted Secret or a projected service-account token), never from flags or
environment values that show up in ``ps`` and pod specs. A file is read again when it changes, so a rotated
token is picked up without a restart; each read is bounded.
"""

from __future__ import annotations

import base64
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import requests

MAX_SECRET_BYTES = 16 * 1024
"""A token or password file larger than this is refused: it is not a secret but a wrong path."""


class AuthConfigError(ValueError):
    """Prometheus authentication is misconfigured (says which setting and what is accepted)."""


class _SecretFile:
    """The stripped text of a small file, re-read when its modification time or size changes."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self.what = what
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._value = ""

    def read(self) -> str:
        try:
            st = os.stat(self.path)
            with self._lock:
                if self._stamp != (st.st_mtime_ns, st.st_size):
                    if st.st_size > MAX_SECRET_BYTES:
                        raise AuthConfigError(f"{self.what} {self.path}: larger than {MAX_SECRET_BYTES} bytes")
                    with open(self.path, "rb") as fh:
                        value = fh.read(MAX_SECRET_BYTES + 1).decode("utf-8").strip()
                    if not value:
                        raise AuthConfigError(f"{self.what} {self.path} is empty")
                    self._value, self._stamp = value, (st.st_mtime_ns, st.st_size)
                return self._value
        except (OSError, UnicodeDecodeError) as exc:
            raise AuthConfigError(f"{self.what} {self.path} cannot be read: {exc}") from exc


class _BearerFromFile(requests.auth.AuthBase):
    def __init__(self, token: _SecretFile) -> None:
        self._token = token

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"Bearer {self._token.read()}"
        return r


class _BasicFromFile(requests.auth.AuthBase):
    def __init__(self, user: str, password: _SecretFile) -> None:
        self._user = user
        self._password = password

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        raw = f"{self._user}:{self._password.read()}".encode()
        r.headers["Authorization"] = "Basic " + base64.b64encode(raw).decode("ascii")
        return r


@dataclass(frozen=True, slots=True)
class PrometheusAuth:
    bearer_token_file: Path | None = None
    basic_auth_user: str | None = None
    basic_auth_password_file: Path | None = None
    ca_bundle: Path | None = None
    """PEM file of the CAs to trust for https:// Prometheus addresses (else the system's)."""

    def __post_init__(self) -> None:
        if (self.basic_auth_user is None) != (self.basic_auth_password_file is None):
            raise AuthConfigError(
                "prometheus_basic_auth_user and prometheus_basic_auth_password_file go together: set both or neither"
            )
        if self.bearer_token_file is not None and self.basic_auth_user is not None:
            raise AuthConfigError("set a Prometheus bearer token file or basic auth, not both")
        for what, path in (
            ("prometheus_bearer_token_file", self.bearer_token_file),
            ("prometheus_basic_auth_password_file", self.basic_auth_password_file),
            ("prometheus_ca_bundle", self.ca_bundle),
        ):
            if path is not None and not Path(path).is_file():
                raise AuthConfigError(f"{what}: {str(path)[:200]!r} is not a readable file")

    @property
    def configured(self) -> bool:
        return any(x is not None for x in (self.bearer_token_file, self.basic_auth_user, self.ca_bundle))

    def requests_auth(self) -> requests.auth.AuthBase | None:
        if self.bearer_token_file is not None:
            return _BearerFromFile(_SecretFile(Path(self.bearer_token_file), "prometheus_bearer_token_file"))
        if self.basic_auth_user is not None and self.basic_auth_password_file is not None:
            password = _SecretFile(Path(self.basic_auth_password_file), "prometheus_basic_auth_password_file")
            return _BasicFromFile(self.basic_auth_user, password)
        return None

    def verify(self) -> str | bool:
        """``requests``' ``verify``: the CA bundle's path, or True for the system's CAs."""
        return str(self.ca_bundle) if self.ca_bundle is not None else True


__all__ = ["AuthConfigError", "PrometheusAuth"]
