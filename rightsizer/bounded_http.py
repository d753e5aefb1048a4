"""A ``requests`` session whose answers are bounded in size: a body is read up to a cap (counted after
decompression, so a small gzip that inflates is caught too) and refused beyond it while it is read, before anyone
holds it whole or parses it. Redirects are handed back as they are, not followed: ``requests`` reads a redirect's
body whole before following it, which would go around the cap."""

from __future__ import annotations

from typing import Any

import requests

READ_CHUNK_BYTES = 64 * 1024


class ResponseTooLarge(requests.RequestException):
    """An answer's body passed the size cap while it was read. Permanent: the same query gets the same answer."""

    def __init__(self, limit_bytes: int) -> None:
        super().__init__(f"answer larger than {limit_bytes / 2**20:g} MiB")
        self.limit_bytes = limit_bytes


class BoundedSession(requests.Session):
    """Reads each answer's body up to ``max_bytes`` (decoded) and keeps it as the response's content."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__()
        self.max_bytes = max_bytes

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        return None

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        kwargs["stream"] = True
        response = super().send(request, **kwargs)
        try:
            declared = int(response.headers.get("Content-Length", "0") or 0)
        except ValueError:
            declared = 0
        body = bytearray()
        try:
            if declared > self.max_bytes:
                raise ResponseTooLarge(self.max_bytes)
            for chunk in response.iter_content(READ_CHUNK_BYTES):
                body += chunk
                if len(body) > self.max_bytes:
                    raise ResponseTooLarge(self.max_bytes)
        finally:
            response.close()
        response._content = bytes(body)  # requests serves .content/.text/.json() from it
        return response
