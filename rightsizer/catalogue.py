"""The catalogue: what each VM size offers (specs) and costs (prices per region, OS, Spot).

Bundled data live in the ``rightsizer/catalogue/`` package directory (see its DATA.md): the size specs from
Microsoft's docs and a dated price snapshot parsed from real Azure Retail Prices API records. Prices refresh
from the live API through :func:`load_prices` when enabled and reachable.
"""

from __future__ import annotations

import csv
import io
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from rightsizer.prices import (
    RETAIL_PRICES_URL,
    PriceDataError,
    PriceTable,
    items_from_radar_snapshot,
    load_price_table,
    normalise_size_name,
    parse_retail_price_items,
    save_price_table,
)

SNAPSHOT_DATE = "2026-08-22"
SNAPSHOT_PRICES = f"prices-{SNAPSHOT_DATE}.json.gz"
SNAPSHOT_RAW = (
    f"retail-prices-raw-westeurope-{SNAPSHOT_DATE}.json.gz",
    f"retail-prices-raw-northeurope-{SNAPSHOT_DATE}.json.gz",
)
SIZES_CSV = "vm_sizes.csv"
CACHE_FILE = "prices-last-good.json.gz"

# Baseline CPU performance per vCPU of burstable sizes (fraction of a vCPU a size can use forever without
# spending credits), from the CPU-credit tables of Microsoft's B-series docs. The specs CSV does not carry it.
BURSTABLE_BASELINE: Mapping[str, float] = {
    "Standard_B1ls": 0.05,
    "Standard_B1s": 0.10,
    "Standard_B1ms": 0.20,
    "Standard_B2s": 0.20,
    "Standard_B2ms": 0.30,
    "Standard_B4ms": 0.225,
    "Standard_B8ms": 0.169,
    "Standard_B12ms": 0.169,
    "Standard_B16ms": 0.169,
    "Standard_B20ms": 0.169,
}
"""Bv1 values; the v2 burstables (Bsv2/Basv2/Bpsv2) follow a name rule, see :func:`burstable_baseline`."""


class CatalogueError(ValueError):
    """Bad or missing catalogue data."""


@dataclass(frozen=True, slots=True)
class VmSize:
    name: str
    series: str
    family_kind: str
    """general-purpose, compute-optimized, memory-optimized or burstable."""
    vcpus: int
    memory_gib: float
    temp_storage_gib: float
    premium_storage: bool
    accelerated_networking: bool
    max_data_disks: int
    max_nics: int
    cpu_arch: str
    """``x86-64`` or ``arm64``: an OS image runs on one only, so a resize never crosses it."""
    cpu_vendor: str

    @property
    def burstable(self) -> bool:
        return self.family_kind == "burstable"

    @property
    def has_temp_disk(self) -> bool:
        return self.temp_storage_gib > 0


def burstable_baseline(size: str) -> float | None:
    """Sustained CPU fraction per vCPU a burstable size may use without credits (None when not burstable)."""
    if size in BURSTABLE_BASELINE:
        return BURSTABLE_BASELINE[size]
    name = size.removeprefix("Standard_")
    if not (name.startswith("B") and name.endswith("_v2")):
        return None
    stem = name[:-3]
    # v2 burstables: "t" (tiny) 20%, "l" (low memory) 30%, the standard size 40% per vCPU.
    if stem.endswith("ts"):
        return 0.20
    if stem.endswith("ls"):
        return 0.30
    return 0.40


def _bool(text: str, *, row: int, column: str) -> bool:
    t = text.strip().lower()
    if t in ("true", "false"):
        return t == "true"
    raise CatalogueError(f"{SIZES_CSV} row {row}: {column}={text!r}, expected true or false")


def parse_sizes_csv(text: str) -> dict[str, VmSize]:
    sizes: dict[str, VmSize] = {}
    for i, r in enumerate(csv.DictReader(io.StringIO(text)), start=2):
        try:
            vendor = r["cpu_vendor"].strip()
            sizes[r["sku"]] = VmSize(
                name=r["sku"],
                series=r["series"],
                family_kind=r["family_kind"],
                vcpus=int(r["vcpus"]),
                memory_gib=float(r["memory_gib"]),
                temp_storage_gib=float(r["temp_storage_gib"] or 0),
                premium_storage=_bool(r["premium_storage"], row=i, column="premium_storage"),
                accelerated_networking=_bool(r["accelerated_networking"], row=i, column="accelerated_networking"),
                max_data_disks=int(r["max_data_disks"]),
                max_nics=int(r["max_nics"]),
                cpu_arch="arm64" if vendor == "arm" else "x86-64",
                cpu_vendor=vendor,
            )
        except (KeyError, ValueError) as exc:
            if isinstance(exc, CatalogueError):
                raise
            raise CatalogueError(f"{SIZES_CSV} row {i}: {exc}") from exc
    return sizes


def _package_file(name: str) -> bytes:
    return (resources.files("rightsizer") / "catalogue" / name).read_bytes()


def bundled_sizes() -> dict[str, VmSize]:
    return parse_sizes_csv(_package_file(SIZES_CSV).decode("utf-8"))


def bundled_price_snapshot() -> PriceTable:
    import gzip

    doc = json.loads(gzip.decompress(_package_file(SNAPSHOT_PRICES)))
    return PriceTable.from_json(doc).with_source(f"bundled snapshot {SNAPSHOT_PRICES}")


def build_price_snapshot_from_raw() -> PriceTable:
    """Parse the bundled raw API records (the snapshot's source) into one table for both regions."""
    import gzip

    table: PriceTable | None = None
    for name in SNAPSHOT_RAW:
        doc = json.loads(gzip.decompress(_package_file(name)))
        part = parse_retail_price_items(items_from_radar_snapshot(doc), source=name)
        table = part if table is None else table.merged(part)
    assert table is not None
    return table.with_source(f"Azure Retail Prices API records captured {SNAPSHOT_DATE} (westeurope, northeurope)")


# --- live refresh ---------------------------------------------------------------------------------------

Fetch = Callable[[str, float], Mapping[str, Any]]
"""(url, timeout_s) -> decoded JSON page; raises OSError/ValueError when unreachable or malformed."""


def http_fetch(url: str, timeout_s: float) -> Mapping[str, Any]:
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:
        doc = json.load(resp)
    if not isinstance(doc, dict):
        raise ValueError(f"{url}: expected a JSON object")
    return doc


def retail_price_filter(regions: Iterable[str]) -> str:
    region_terms = " or ".join(f"armRegionName eq '{r}'" for r in sorted(regions))
    return f"serviceName eq 'Virtual Machines' and priceType eq 'Consumption' and ({region_terms})"


def fetch_retail_price_items(
    base_url: str,
    regions: Iterable[str],
    *,
    fetch: Fetch = http_fetch,
    timeout_s: float = 30.0,
    max_pages: int = 500,
) -> Iterator[Mapping[str, Any]]:
    """Every item of the filtered query, following ``NextPageLink`` until it is null."""
    url: str | None = base_url + "?" + urllib.parse.urlencode({"$filter": retail_price_filter(regions)})
    pages = 0
    while url:
        pages += 1
        if pages > max_pages:
            raise PriceDataError(f"more than {max_pages} pages from {base_url}; refusing to loop forever")
        page = fetch(url, timeout_s)
        items = page.get("Items")
        if not isinstance(items, list):
            raise PriceDataError(f"{url}: page without an 'Items' list")
        yield from items
        nxt = page.get("NextPageLink")
        url = str(nxt) if nxt else None


@dataclass(frozen=True, slots=True)
class PriceLoad:
    table: PriceTable
    origin: str
    """``live``, ``cache`` or ``bundled``."""
    note: str
    """Human sentence for the output, e.g. why the live refresh was not used."""


def load_prices(
    *,
    refresh: bool,
    regions: Iterable[str],
    cache_dir: Path | None,
    api_url: str = RETAIL_PRICES_URL,
    fetch: Fetch = http_fetch,
    timeout_s: float = 30.0,
    now: datetime | None = None,
) -> PriceLoad:
    """Live prices when ``refresh`` and reachable (saved as the last good copy), else cache, else bundled."""
    regions = sorted({r.lower() for r in regions})
    problem = "live refresh disabled"
    if refresh:
        try:
            items = list(fetch_retail_price_items(api_url, regions, fetch=fetch, timeout_s=timeout_s))
            stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%MZ")
            table = parse_retail_price_items(items, source=f"{api_url} at {stamp}")
            missing = [r for r in regions if r not in table.regions()]
            if missing:
                raise PriceDataError(f"no prices for region(s) {', '.join(missing)}")
            if cache_dir is not None:
                save_price_table(table, cache_dir / CACHE_FILE)
            return PriceLoad(table, "live", f"prices refreshed from {api_url} at {stamp}")
        except (OSError, ValueError, urllib.error.URLError) as exc:
            problem = f"live refresh failed ({type(exc).__name__}: {exc})"
    if cache_dir is not None and (cache_dir / CACHE_FILE).exists():
        try:
            cached = load_price_table(cache_dir / CACHE_FILE)
            return PriceLoad(cached, "cache", f"{problem}; using last good copy: {cached.source}")
        except (OSError, ValueError) as exc:
            problem += f"; cache unreadable ({exc})"
    bundled = bundled_price_snapshot()
    return PriceLoad(bundled, "bundled", f"{problem}; using {bundled.source}")


# --- the catalogue ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Catalogue:
    sizes: Mapping[str, VmSize]
    prices: PriceTable
    price_note: str = ""
    _priced: dict[tuple[str, str], list[tuple[VmSize, float]]] = field(default_factory=dict, repr=False, compare=False)
    """Memo of :meth:`priced_sizes` (the catalogue is immutable, so the lists never go stale)."""

    def size(self, name: str) -> VmSize | None:
        return self.sizes.get(normalise_size_name(name))

    def hourly(self, size: str, region: str, os: str = "linux", *, spot: bool = False) -> float | None:
        return self.prices.hourly(size, region, os, spot=spot)

    def monthly(self, size: str, region: str, os: str = "linux", *, spot: bool = False) -> float | None:
        from rightsizer.domain import HOURS_PER_MONTH

        h = self.hourly(size, region, os, spot=spot)
        return None if h is None else h * HOURS_PER_MONTH

    def priced_sizes(self, region: str, os: str = "linux") -> list[tuple[VmSize, float]]:
        """Sizes with specs and a pay-as-you-go price in ``region``/``os``, cheapest first."""
        memo = self._priced.get((region, os))
        if memo is not None:
            return memo
        out = []
        for name in self.prices.sizes(region, os):
            spec = self.sizes.get(name)
            price = self.prices.hourly(name, region, os)
            if spec is not None and price is not None:
                out.append((spec, price))
        out.sort(key=lambda sp: (sp[1], sp[0].name))
        self._priced[(region, os)] = out
        return out


def load_catalogue(price_load: PriceLoad | None = None) -> Catalogue:
    load = price_load or PriceLoad(bundled_price_snapshot(), "bundled", "")
    note = load.note or f"prices: {load.table.source}"
    return Catalogue(bundled_sizes(), load.table, note)


def write_bundled_snapshot(directory: Path) -> Path:
    """Rebuild ``prices-<date>.json.gz`` from the bundled raw records (run after updating them)."""
    path = directory / SNAPSHOT_PRICES
    save_price_table(build_price_snapshot_from_raw(), path)
    return path


if __name__ == "__main__":
    print(write_bundled_snapshot(Path(__file__).parent / "catalogue"))
