"""The address of the shared store and its password: parsed and checked at the edge, without a Redis client."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit


class RedisConfigError(ValueError):
    """The ``--store`` address or the password cannot be used; the message says what is accepted."""


@dataclass(frozen=True, slots=True)
class RedisAddress:
    url: str
    """Without credentials (safe to log)."""
    tls: bool
    host: str
    port: int
    db: int


def parse_store_url(url: str) -> RedisAddress:
    """``redis://HOST[:PORT][/DB]`` or ``rediss://...`` (TLS). A password belongs in a file or the environment,
    not in the address (it would end up in logs and in the Deployment spec)."""
    shown = url[:80]
    accepted = "expected redis://HOST[:PORT][/DB] or rediss://HOST[:PORT][/DB]"
    try:
        parts = urlsplit(url.strip())
        port = parts.port or 6379
    except ValueError as exc:
        raise RedisConfigError(f"store {shown!r}: {exc}; {accepted}") from None
    if parts.scheme not in ("redis", "rediss"):
        raise RedisConfigError(f"store {shown!r}: scheme {parts.scheme!r} not supported; {accepted}")
    if not parts.hostname:
        raise RedisConfigError(f"store {shown!r}: no host; {accepted}")
    if parts.password is not None or parts.username is not None:
        raise RedisConfigError(
            f"store {parts.scheme}://...@{parts.hostname}: credentials in the address are refused; "
            "give the password with --redis-password-file or FORESIGHT_REDIS_PASSWORD"
        )
    if parts.query or parts.fragment:
        raise RedisConfigError(f"store {shown!r}: no query or fragment allowed; {accepted}")
    path = parts.path.strip("/")
    try:
        db = int(path) if path else 0
    except ValueError:
        raise RedisConfigError(f"store {shown!r}: database {path[:20]!r} is not a number; {accepted}") from None
    if not 0 <= db <= 10_000:
        raise RedisConfigError(f"store {shown!r}: database {db} out of range")
    tls = parts.scheme == "rediss"
    return RedisAddress(
        url=f"{parts.scheme}://{parts.hostname}:{port}/{db}", tls=tls, host=parts.hostname, port=port, db=db
    )


def read_password(path: Path | None, env_value: str | None) -> str | None:
    """The password from a file (first line, at most 1 KiB read) or else the environment variable's value."""
    if path is not None:
        try:
            with path.open("rb") as fh:
                raw = fh.read(1025)
        except OSError as exc:
            raise RedisConfigError(f"redis password file {path}: {exc.strerror}") from None
        if len(raw) > 1024:
            raise RedisConfigError(f"redis password file {path}: longer than 1 KiB, not a password")
        text = raw.decode("utf-8", errors="strict").splitlines()
        return text[0] if text and text[0] else None
    return env_value or None


__all__ = ["RedisAddress", "RedisConfigError", "parse_store_url", "read_password"]
