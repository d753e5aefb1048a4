"""Reading an operator's input files with bounds checked before anything is parsed.

Every offline file (inventory JSON, metrics CSV, optionally gzipped) goes through :func:`read_text`:

- a regular file only (a FIFO, a device such as ``/dev/zero`` or a directory is refused before it is opened,
  so nothing can block the run or feed it without end);
- at most ``max_bytes`` read, counted after decompression (a gzip bomb stops at the cap);
- a corrupt or truncated ``.gz`` and text that is not UTF-8 are refused with the byte offset;
- JSON nested too deeply for the decoder is refused, not a traceback (an inventory is four levels deep).

Every refusal is a :class:`FileProblem` (a ``ValueError``) whose message names the file and quotes at most a
short prefix of the offending content; the command line turns it into one line on stderr and exit code 2.
"""

from __future__ import annotations

import codecs
import gzip
import json
import stat
import zlib
from pathlib import Path
from typing import Any

DEFAULT_MAX_BYTES = 512 * 1024 * 1024
"""512 MiB of (decompressed) text: about 12 million metric rows, within the CronJob's 2 GiB memory limit once
parsed. ``--max-file-mb`` raises or lowers it."""
_CHUNK = 1 << 20


class FileProblem(ValueError):
    """An input file that cannot be used as a whole (unreadable, too big, corrupt, not UTF-8, not JSON)."""


def _check_regular(path: Path, what: str) -> None:
    try:
        info = path.stat()
    except OSError as exc:
        raise FileProblem(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise FileProblem(f"{what} {path} is not a regular file (a FIFO, device or directory is refused)")


def read_bytes(path: Path, what: str, *, max_bytes: int = DEFAULT_MAX_BYTES, utf8: bool = False) -> bytes:
    """The file's bytes (decompressed when its name ends in ``.gz``), refused beyond ``max_bytes``; with
    ``utf8`` also checked to be UTF-8 as they are read (without holding a decoded copy of the whole file)."""
    _check_regular(path, what)
    limit_note = f"{max_bytes / 1048576:.3g} MiB"
    chunks: list[bytes] = []
    total = 0
    decoder = codecs.getincrementaldecoder("utf-8")() if utf8 else None
    try:
        with open(path, "rb", buffering=0) as raw:
            handle: Any = gzip.GzipFile(fileobj=raw, mode="rb") if path.suffix == ".gz" else raw
            while True:
                chunk = handle.read(min(_CHUNK, max_bytes + 1 - total))
                if not chunk:
                    if decoder is not None:
                        _check_utf8(decoder, b"", total, path, what, final=True)
                    break
                if decoder is not None:
                    _check_utf8(decoder, chunk, total, path, what)
                chunks.append(chunk)
                total += len(chunk)
                if total > max_bytes:
                    kind = "decompresses to" if path.suffix == ".gz" else "is"
                    raise FileProblem(f"{what} {path} {kind} more than {limit_note} (--max-file-mb)")
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise FileProblem(f"{what} {path}: corrupt or truncated gzip data after {total} bytes ({exc})") from None
    except OSError as exc:
        raise FileProblem(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    return b"".join(chunks)


def _check_utf8(
    decoder: codecs.IncrementalDecoder, chunk: bytes, offset: int, path: Path, what: str, *, final: bool = False
) -> None:
    try:
        decoder.decode(chunk, final)
    except UnicodeDecodeError as exc:
        # The decoder's buffer is the (at most 3) bytes of an unfinished character held back from the previous
        # chunk, then this chunk: its first byte is at offset - held back.
        held_back = len(exc.object) - len(chunk)
        at = offset - held_back + exc.start
        bad = exc.object[exc.start : exc.start + 1]
        raise FileProblem(
            f"{what} {path}: not UTF-8 text (byte 0x{bad.hex()} at offset {at}); save it as UTF-8"
        ) from None


def decode_utf8(data: bytes, path: Path, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = data[exc.start : exc.start + 4]
        raise FileProblem(
            f"{what} {path}: not UTF-8 text (byte 0x{bad[:1].hex()} at offset {exc.start}); save it as UTF-8"
        ) from None


def read_text(path: Path, what: str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    return decode_utf8(read_bytes(path, what, max_bytes=max_bytes), path, what)


def load_json(path: Path, what: str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    """A JSON document from a bounded, UTF-8, not too deeply nested file."""
    text = read_text(path, what, max_bytes=max_bytes)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise FileProblem(f"{what} {path}: not valid JSON ({exc})") from None
    except RecursionError:
        # The C decoder stops at the interpreter's recursion limit (about 1,000 levels) with this error.
        raise FileProblem(f"{what} {path}: JSON nested too deeply (an inventory is four levels deep)") from None
