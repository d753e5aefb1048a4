"""A fake Azure Retail Prices API on 127.0.0.1 serving real records, paged with ``NextPageLink``.

Speaks the real API's shape: ``GET /api/retail/prices?$filter=...`` -> ``{"BillingCurrency": "USD",
"Items": [...], "NextPageLink": "<absolute url>" | null, "Count": n}``. The filter understood is the one the
rightsizer sends (``armRegionName eq '<r>'`` terms); other clauses are accepted and ignored, as the records
served are all Virtual Machines Consumption records already. ``fail_with`` makes every request answer that
HTTP status (to test the fallback to the last good copy).
"""

from __future__ import annotations

import gzip
import json
import re
import threading
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from rightsizer.prices import items_from_radar_snapshot

CATALOGUE_DIR = Path(__file__).resolve().parents[2] / "rightsizer" / "catalogue"


def real_items(regions: Sequence[str] = ("westeurope",)) -> list[dict[str, Any]]:
    """Real API items (bundled raw records of the named regions), with ``type`` restored from the key."""
    items: list[dict[str, Any]] = []
    for region in regions:
        path = next(CATALOGUE_DIR.glob(f"retail-prices-raw-{region}-*.json.gz"))
        doc = json.loads(gzip.decompress(path.read_bytes()))
        for item in items_from_radar_snapshot(doc):
            item.setdefault("serviceName", "Virtual Machines")
            item.setdefault("currencyCode", "USD")
            items.append(item)
    return items


class RetailPricesServer:
    def __init__(self, items: Sequence[Mapping[str, Any]], *, page_size: int = 1000) -> None:
        self.items = list(items)
        self.page_size = page_size
        self.fail_with: int | None = None
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                server.requests.append(self.path)
                if server.fail_with is not None:
                    self.send_response(server.fail_with)
                    self.end_headers()
                    return
                parsed = urllib.parse.urlsplit(self.path)
                if parsed.path != "/api/retail/prices":
                    self.send_response(404)
                    self.end_headers()
                    return
                query = urllib.parse.parse_qs(parsed.query)
                flt = query.get("$filter", [""])[0]
                skip = int(query.get("$skip", ["0"])[0])
                regions = set(re.findall(r"armRegionName eq '([^']+)'", flt))
                selected = [i for i in server.items if not regions or i.get("armRegionName") in regions]
                page = selected[skip : skip + server.page_size]
                next_link = None
                if skip + server.page_size < len(selected):
                    q = urllib.parse.urlencode({"$filter": flt, "$skip": skip + server.page_size})
                    next_link = f"{server.url}/api/retail/prices?{q}"
                body = json.dumps(
                    {
                        "BillingCurrency": "USD",
                        "CustomerEntityType": "Retail",
                        "Items": page,
                        "NextPageLink": next_link,
                        "Count": len(page),
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self.api_url = f"{self.url}/api/retail/prices"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def start(self) -> RetailPricesServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


@contextmanager
def retail_prices_server(items: Sequence[Mapping[str, Any]], *, page_size: int = 1000) -> Iterator[RetailPricesServer]:
    server = RetailPricesServer(items, page_size=page_size).start()
    try:
        yield server
    finally:
        server.stop()
