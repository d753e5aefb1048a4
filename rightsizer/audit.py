"""Append-only JSON Lines audit log with a hash chain (optionally keyed), its head file and its verification.

Each line is one JSON object::

    {"seq": 7, "ts": "2026-11-27T21:40:00+00:00", "kind": "change-done", ...fields..., "prev": "<hash of line 6>",
     "hash": "<sha256, or HMAC-SHA256 with the key, of this record without 'hash', as canonical JSON>"}

Canonical JSON: ``json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` in UTF-8. The
first record's ``prev`` is 64 zeros. Keyed records also carry ``"mac": "hmac-sha256"``; a log is keyed or not from
its first record to its last (appending in the other mode is refused).

What each mode protects against (see docs/rightsizer-acting.md):

- **Unkeyed chain** (SHA-256): accidental or careless damage. Editing, deleting, reordering or cutting records
  out of the middle is found and the first bad line named. Someone who can write the file can re-hash the whole
  chain after an edit: that is only found by comparing the head with a copy kept elsewhere.
- **Keyed chain** (HMAC-SHA256, key from ``FORESIGHT_AUDIT_KEY`` or ``--audit-key-file``): an edit cannot be
  re-hashed without the key, so edits are found even by someone who can write the file (but not the key).
- **Head file** (``<log>.head``, rewritten atomically after every append) and **anchored head** (the head hash
  printed by ``rightsizer audit verify``, logged and exported as ``rightsizer_audit_head_info{hash}`` after each
  run, to be stored elsewhere, then checked with ``--expect-head``): cutting records off the end, or emptying the
  log, leaves a valid shorter chain; the head file finds that when the log is damaged alone, an anchored head
  kept out of reach finds it even when both were changed.

Appends take an exclusive ``fcntl.flock`` on the file, so two runs cannot interleave or fork the chain.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import hmac
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import structlog

GENESIS_HASH = "0" * 64
KEYED_MAC = "hmac-sha256"
AUDIT_KEY_ENV = "FORESIGHT_AUDIT_KEY"
MIN_KEY_BYTES = 16
MAX_KEY_BYTES = 4096

# Not cached on first use: a CLI test configuring structlog must not pin these loggers to its stream.
log = structlog.wrap_logger(None, logger_factory_args=(__name__,), cache_logger_on_first_use=False)

# Record kinds written by the rightsizer (other kinds are allowed and counted as "other" in the report).
DECISION = "decision"
APPROVAL = "approval"
CHANGE_RECORDED = "change-recorded"
CHANGE_PHASE = "change-phase"
CHANGE_DONE = "change-done"
CHANGE_FAILED = "change-failed"
VALIDATION = "validation"
ROLLBACK = "rollback"
SLA_BREACH = "sla-breach"
RECOVERY = "recovery"
SPOT = "spot"


def canonical_json(record: Mapping[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def record_hash(record: Mapping[str, Any], key: bytes | None = None) -> str:
    """SHA-256 of the record without ``hash`` (canonical JSON), or its HMAC-SHA256 with ``key``."""
    body = canonical_json({k: v for k, v in record.items() if k != "hash"}).encode("utf-8")
    if key is not None:
        return hmac.new(key, body, hashlib.sha256).hexdigest()
    return hashlib.sha256(body).hexdigest()


class AuditKeyError(ValueError):
    """The audit key could not be read or is too short."""


def load_audit_key(
    key_file: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None
) -> bytes | None:
    """The key from ``key_file`` (e.g. a mounted Secret), else from ``$FORESIGHT_AUDIT_KEY``; None when neither is
    set (unkeyed chain). Surrounding whitespace is ignored; at least 16 bytes are required."""
    environ = os.environ if env is None else env
    if key_file is not None:
        path = Path(key_file)
        try:
            with open(path, "rb") as handle:
                raw = handle.read(MAX_KEY_BYTES + 1)
        except OSError as error:
            raise AuditKeyError(f"cannot read audit key file {path}: {error.strerror or error}") from None
        if len(raw) > MAX_KEY_BYTES:
            raise AuditKeyError(f"audit key file {path} is longer than {MAX_KEY_BYTES} bytes")
        where = f"audit key file {path}"
    elif environ.get(AUDIT_KEY_ENV):
        raw = environ[AUDIT_KEY_ENV].encode("utf-8")
        where = f"${AUDIT_KEY_ENV}"
    else:
        return None
    key = raw.strip()
    if len(key) < MIN_KEY_BYTES:
        raise AuditKeyError(f"{where}: the audit key must be at least {MIN_KEY_BYTES} bytes, got {len(key)}")
    return key


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    records: int
    first_bad_line: int | None = None
    """1-based line number of the first record that fails."""
    reason: str = ""
    last_hash: str = GENESIS_HASH
    keyed: bool = False

    def describe(self, path: str | os.PathLike[str]) -> str:
        mode = "keyed (HMAC-SHA256)" if self.keyed else "unkeyed (SHA-256)"
        if self.ok:
            return f"{path}: OK, {self.records} records, {mode}, chain head {self.last_hash}"
        where = f"at line {self.first_bad_line}" if self.first_bad_line is not None else "as a whole"
        return f"{path}: FAILED {where}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Head:
    """The last record's ``seq`` and ``hash``, as kept in the head file (``<log>.head``)."""

    seq: int
    hash: str


class AuditLogError(ValueError):
    pass


class AuditLog:
    """The audit log at ``path`` (created on first append). Safe across threads and processes.

    ``key``: the HMAC key for a keyed chain (see :func:`load_audit_key`); None for an unkeyed one.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        now_fn: Callable[[], dt.datetime] | None = None,
        key: bytes | None = None,
    ) -> None:
        self.path = Path(path)
        self.head_path = self.path.with_name(self.path.name + ".head")
        self._now_fn = now_fn or (lambda: dt.datetime.now(dt.UTC))
        self._key = key

    @property
    def keyed(self) -> bool:
        return self._key is not None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[IO[bytes]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield handle
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    @staticmethod
    def _last_line(handle: IO[bytes]) -> bytes | None:
        handle.seek(0, os.SEEK_END)
        end = handle.tell()
        if end == 0:
            return None
        block = 4096
        position = end
        data = b""
        while position > 0:
            step = min(block, position)
            position -= step
            handle.seek(position)
            data = handle.read(step) + data
            stripped = data.rstrip(b"\n")
            if b"\n" in stripped:
                return stripped.rsplit(b"\n", 1)[1]
        return data.rstrip(b"\n") or None

    def append(self, kind: str, *, ts: dt.datetime | None = None, **fields: Any) -> dict[str, Any]:
        """Append one record and return it (with ``seq``, ``ts``, ``prev`` and ``hash``)."""
        if not kind:
            raise AuditLogError("audit record kind must be a non-empty string")
        reserved = {"seq", "ts", "kind", "prev", "hash", "mac"} & fields.keys()
        if reserved:
            raise AuditLogError(f"audit fields {sorted(reserved)} are reserved; rename them")
        when = (ts or self._now_fn()).astimezone(dt.UTC)
        with self._locked() as handle:
            last = self._last_line(handle)
            if last is None:
                seq, prev = 1, GENESIS_HASH
            else:
                try:
                    previous = json.loads(last)
                    seq, prev = int(previous["seq"]) + 1, str(previous["hash"])
                except (ValueError, KeyError, TypeError) as error:
                    raise AuditLogError(
                        f"{self.path}: the last line is not an audit record ({error}); run `rightsizer audit verify`"
                    ) from error
                if (previous.get("mac") == KEYED_MAC) != self.keyed:
                    raise AuditLogError(
                        f"{self.path} is {'keyed' if previous.get('mac') == KEYED_MAC else 'unkeyed'} but this run "
                        f"is {'keyed' if self.keyed else 'unkeyed'} (${AUDIT_KEY_ENV} / --audit-key-file): a log "
                        "keeps one mode; start a new log file to change it"
                    )
            record: dict[str, Any] = {
                "seq": seq,
                "ts": when.isoformat(),
                "kind": kind,
                **fields,
                "prev": prev,
            }
            if self.keyed:
                record["mac"] = KEYED_MAC
            record = json.loads(canonical_json(record))
            record["hash"] = record_hash(record, self._key)
            handle.seek(0, os.SEEK_END)
            handle.write((canonical_json(record) + "\n").encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
            self._write_head(Head(seq, record["hash"]))
        log.info("audit." + kind, **{k: v for k, v in record.items() if k not in ("prev", "hash", "kind", "mac")})
        return record

    def _write_head(self, head: Head) -> None:
        """Atomic replace, under the log's lock: the head file names the last record written."""
        handle, temp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.head_path.name}.")
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            json.dump({"seq": head.seq, "hash": head.hash}, file)
            file.write("\n")
        os.replace(temp, self.head_path)

    def read_head(self) -> Head | None:
        """The head file's record, None when there is none; AuditLogError when it is unreadable."""
        try:
            text = self.head_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as error:
            raise AuditLogError(f"cannot read {self.head_path}: {error.strerror or error}") from None
        try:
            doc = json.loads(text)
            return Head(int(doc["seq"]), str(doc["hash"]))
        except (ValueError, KeyError, TypeError):
            raise AuditLogError(f"{self.head_path}: not a head file ({text[:40]!r})") from None

    def records(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        result = []
        with open(self.path, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    result.append(json.loads(line))
        return result

    def verify(
        self,
        *,
        expect_head: str | None = None,
        min_records: int = 0,
        use_head_file: bool = True,
    ) -> VerifyResult:
        """Check every record's hash (or HMAC) and its link to the one before; name the first bad line. Then the
        expectations: the head file's record must be in the chain (the log was not cut or emptied behind it),
        ``expect_head`` (a head anchored elsewhere) must be a record's hash, and at least ``min_records``."""
        chain = self._verify_chain()
        if not chain.ok:
            return chain
        hashes = self._hashes() if (expect_head or use_head_file) else {}
        if use_head_file:
            head = self.read_head()
            if head is not None and hashes.get(head.seq) != head.hash:
                return VerifyResult(
                    False,
                    chain.records,
                    None,
                    f"the head file {self.head_path.name} names record {head.seq} ({head.hash[:16]}...), which is "
                    f"not in the log of {chain.records} records: records were cut off the end or the log replaced",
                    chain.last_hash,
                    chain.keyed,
                )
        if expect_head:
            wanted = expect_head.strip().lower()
            found = [seq for seq, value in hashes.items() if value == wanted]
            if not found:
                return VerifyResult(
                    False,
                    chain.records,
                    None,
                    f"the expected head {wanted[:16]}... is not in the chain of {chain.records} records: the log "
                    "was cut, replaced or re-hashed since that head was recorded",
                    chain.last_hash,
                    chain.keyed,
                )
        if chain.records < min_records:
            return VerifyResult(
                False,
                chain.records,
                None,
                f"{chain.records} records, at least {min_records} expected: the log was emptied or replaced",
                chain.last_hash,
                chain.keyed,
            )
        return chain

    def _hashes(self) -> dict[int, str]:
        return {int(r["seq"]): str(r["hash"]) for r in self.records()}

    def _verify_chain(self) -> VerifyResult:
        if not self.path.exists():
            return VerifyResult(True, 0, keyed=self.keyed)
        prev = GENESIS_HASH
        count = 0
        with open(self.path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    return VerifyResult(False, count, number, "empty line", prev, self.keyed)
                try:
                    record = json.loads(line)
                except ValueError as error:
                    return VerifyResult(False, count, number, f"not JSON ({error})", prev, self.keyed)
                if not isinstance(record, dict) or "hash" not in record or "prev" not in record:
                    return VerifyResult(False, count, number, "not an audit record (no hash/prev)", prev, self.keyed)
                if record.get("seq") != number:
                    return VerifyResult(
                        False,
                        count,
                        number,
                        f"seq is {record.get('seq')!r}, expected {number} (deleted/reordered)",
                        prev,
                        self.keyed,
                    )
                if record["prev"] != prev:
                    return VerifyResult(
                        False,
                        count,
                        number,
                        "prev does not match the previous record's hash (deleted/reordered)",
                        prev,
                        self.keyed,
                    )
                keyed_record = record.get("mac") == KEYED_MAC
                if keyed_record and not self.keyed:
                    return VerifyResult(
                        False,
                        count,
                        number,
                        f"a keyed record (HMAC-SHA256): pass the key (${AUDIT_KEY_ENV} or --audit-key-file) to verify",
                        prev,
                        False,
                    )
                if self.keyed and not keyed_record:
                    return VerifyResult(
                        False,
                        count,
                        number,
                        "an unkeyed record in a keyed check: the log was started without the key, or re-written "
                        "without it",
                        prev,
                        True,
                    )
                if not hmac.compare_digest(record_hash(record, self._key), str(record["hash"])):
                    what = "HMAC" if self.keyed else "hash"
                    return VerifyResult(
                        False, count, number, f"{what} does not match the content (edited)", prev, self.keyed
                    )
                prev = record["hash"]
                count += 1
        return VerifyResult(True, count, last_hash=prev, keyed=self.keyed)
