"""What ARM answered, as JSON, for the gateway's reads.

The SDK's models reshape odd values as they are built (a list of objects sent as a string becomes a lazy iterator,
then the text of its repr) or raise on attribute access, so :mod:`rightsizer.azure.arm_json` reads the JSON of the
response instead. The SDK still does the call: authentication, paging (``nextLink``), and raising for a failed
page, which the gateway's retries and error types handle as before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any


def listed_json(list_call: Callable[..., Iterable[Any]]) -> list[Any]:
    """The items of a paged listing as ARM sent them; ``list_call(**kwargs)`` starts the SDK's pager."""
    pages: list[Any] = []

    def keep(pipeline_response: Any) -> None:
        response = pipeline_response.http_response
        if 200 <= response.status_code < 300:
            pages.append(response.json())

    for _ in list_call(raw_response_hook=keep):
        pass
    items: list[Any] = []
    for page in pages:
        value = page.get("value") if isinstance(page, dict) else None
        if isinstance(value, list):
            items.extend(value)
    return items


def got_json(get_call: Callable[..., Any]) -> Any:
    """The JSON of one resource read by name; ``get_call(**kwargs)`` makes the SDK's call."""
    return get_call(cls=lambda pipeline_response, _deserialized, _headers: pipeline_response.http_response.json())
