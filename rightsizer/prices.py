"""Azure Retail Prices API records -> one hourly price per (size, region, OS, Spot).

The API (https://prices.azure.com/api/retail/prices) returns many rows that are not "the pay-as-you-go price
of this VM size". Every rule below exists because real records carry that trap (see docs/rightsizer.md and
rightsizer/catalogue/DATA.md):

- ``type`` other than ``Consumption`` (``Reservation`` rows carry the whole term's price although
  ``unitOfMeasure`` says "1 Hour"; ``DevTestConsumption`` is a discounted offer): dropped.
- Cloud Services and Dedicated Host products share ``serviceName`` "Virtual Machines": dropped.
- "Low Priority" is a legacy batch meter, not Spot: dropped. Spot rows end in " Spot".
- Windows is detected anywhere in ``productName`` ("... Series Windows", "... Windows VM", "... Srs Win");
  everything else (including an explicit "... Linux") is Linux.
- Promotional products ("Promo" in the product name) and meters marked "- Expired": dropped (time-limited
  offers; the standard meter of the same size is present).
- The size comes from ``armSkuName`` when present, else from ``skuName``/``meterName``, normalised to the ARM
  form (``D2s v5`` -> ``Standard_D2s_v5``; Basic tier ``A1`` -> ``Basic_A1``). A meter naming two sizes
  (``D13 v2/DS13 v2``) prices both.
- Zero-priced ("Free") rows: dropped; no VM size is free, a 0 would make every size look cheapest.
- Several remaining rows for one (size, region, OS, Spot): identical prices collapse; different prices raise
  :class:`AmbiguousPriceError` naming the rows (never last-one-wins).
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RETAIL_PRICES_URL = "https://prices.azure.com/api/retail/prices"
PRICE_TABLE_FORMAT = "foresight.rightsizer.prices"
PRICE_TABLE_VERSION = 1

_WINDOWS_RE = re.compile(r"\bWin(dows)?\b", re.IGNORECASE)
_EXCLUDED_PRODUCT_RE = re.compile(r"Cloud\s*Services|Dedicated\s*Host", re.IGNORECASE)
_PROMO_RE = re.compile(r"\bpromo\b", re.IGNORECASE)
_SPOT_SUFFIX = " Spot"
_LOW_PRIORITY_SUFFIX = " Low Priority"


class PriceDataError(ValueError):
    """Price records that cannot be turned into a price table."""


class AmbiguousPriceError(PriceDataError):
    """Two rows with different prices remain for one (size, region, OS, Spot) after every filter."""


@dataclass(frozen=True, slots=True, order=True)
class PriceKey:
    size: str
    region: str
    os: str
    """``linux`` or ``windows``."""
    spot: bool


@dataclass(frozen=True, slots=True)
class PriceRow:
    """One accepted record, kept to explain where a price came from."""

    key: PriceKey
    hourly_usd: float
    product_name: str
    meter_name: str


@dataclass(frozen=True, slots=True)
class DroppedCounts:
    not_consumption: int = 0
    not_a_vm: int = 0
    low_priority: int = 0
    promotional: int = 0
    free: int = 0
    not_hourly: int = 0
    unnamed: int = 0
    duplicates: int = 0


@dataclass(frozen=True)
class PriceTable:
    """Hourly retail USD prices keyed by (ARM size, region, OS, Spot)."""

    prices: Mapping[PriceKey, float]
    source: str = ""
    """Where the table came from (snapshot name, cache file or API URL and time)."""
    dropped: DroppedCounts = field(default_factory=DroppedCounts)

    def hourly(self, size: str, region: str, os: str = "linux", *, spot: bool = False) -> float | None:
        return self.prices.get(PriceKey(normalise_size_name(size), region.lower(), os.lower(), spot))

    def regions(self) -> set[str]:
        return {k.region for k in self.prices}

    def sizes(self, region: str, os: str = "linux", *, spot: bool = False) -> set[str]:
        r, o = region.lower(), os.lower()
        return {k.size for k in self.prices if k.region == r and k.os == o and k.spot is spot}

    def __len__(self) -> int:
        return len(self.prices)

    def merged(self, other: PriceTable) -> PriceTable:
        """This table plus ``other``'s regions; a key present in both must agree."""
        out = dict(self.prices)
        for k, v in other.prices.items():
            if k in out and abs(out[k] - v) > 1e-9:
                raise AmbiguousPriceError(f"{k}: {out[k]} in {self.source} but {v} in {other.source}")
            out[k] = v
        return PriceTable(out, source=" + ".join(s for s in (self.source, other.source) if s))

    def with_source(self, source: str) -> PriceTable:
        return PriceTable(self.prices, source=source, dropped=self.dropped)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": PRICE_TABLE_FORMAT,
            "version": PRICE_TABLE_VERSION,
            "source": self.source,
            "currency": "USD",
            "unit": "1 Hour",
            "prices": [
                [k.size, k.region, k.os, "spot" if k.spot else "payg", v] for k, v in sorted(self.prices.items())
            ],
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> PriceTable:
        if doc.get("format") != PRICE_TABLE_FORMAT or doc.get("version") != PRICE_TABLE_VERSION:
            raise PriceDataError(
                f"not a price table of format {PRICE_TABLE_FORMAT} v{PRICE_TABLE_VERSION} "
                f"(got format={doc.get('format')!r} version={doc.get('version')!r})"
            )
        prices: dict[PriceKey, float] = {}
        for i, row in enumerate(doc.get("prices", [])):
            try:
                size, region, os, kind, price = row
                prices[PriceKey(str(size), str(region), str(os), kind == "spot")] = float(price)
            except (TypeError, ValueError) as exc:
                raise PriceDataError(f"price table row {i} malformed: {row!r} ({exc})") from exc
        return cls(prices, source=str(doc.get("source", "")))


def normalise_size_name(name: str) -> str:
    """``D2s v5`` / ``Standard_D2s_v5`` / ``standard_d2s_v5`` -> ``Standard_D2s_v5`` (ARM form)."""
    if name.startswith("Standard_") and " " not in name:
        return name  # already normal: the hot path of every price lookup
    n = name.strip()
    for prefix in ("Standard_", "standard_", "STANDARD_"):
        if n.startswith(prefix):
            n = n[len(prefix) :]
            break
    else:
        if n.lower().startswith("basic_"):
            return "Basic_" + n[6:].replace(" ", "_")
    return "Standard_" + re.sub(r"\s+", "_", n)


def _strip_meter_suffixes(name: str) -> str:
    n = name.strip()
    for suffix in (_SPOT_SUFFIX, _LOW_PRIORITY_SUFFIX):
        if n.endswith(suffix):
            n = n[: -len(suffix)]
    return n.strip()


def _sizes_of(item: Mapping[str, Any], *, basic_tier: bool) -> list[str]:
    arm = str(item.get("armSkuName") or "").strip()
    if arm:
        return [normalise_size_name(arm)]
    meter = _strip_meter_suffixes(str(item.get("meterName") or ""))
    sku = _strip_meter_suffixes(str(item.get("skuName") or ""))
    # The meter name is the only place that lists every size a shared meter covers ("D13 v2/DS13 v2").
    raw = meter.split("/") if "/" in meter else [sku or meter]
    names = [r.strip() for r in raw if r.strip()]
    if basic_tier:
        return ["Basic_" + re.sub(r"\s+", "_", n) for n in names]
    return [normalise_size_name(n) for n in names]


def _is_spot(item: Mapping[str, Any]) -> bool:
    return any(str(item.get(f) or "").strip().endswith(_SPOT_SUFFIX) for f in ("meterName", "skuName"))


def _is_low_priority(item: Mapping[str, Any]) -> bool:
    return any(str(item.get(f) or "").strip().endswith(_LOW_PRIORITY_SUFFIX) for f in ("meterName", "skuName"))


def os_of_product(product_name: str) -> str:
    return "windows" if _WINDOWS_RE.search(product_name) else "linux"


def parse_retail_price_items(items: Iterable[Mapping[str, Any]], *, source: str = "") -> PriceTable:
    """Turn raw Retail Prices API items into a :class:`PriceTable` (rules in the module docstring).

    Items lacking ``type`` are taken as Consumption (snapshots of Consumption rows only drop the field).
    """
    rows: dict[PriceKey, list[PriceRow]] = {}
    dropped: dict[str, int] = {}

    def drop(why: str) -> None:
        dropped[why] = dropped.get(why, 0) + 1

    for item in items:
        price_type = str(item.get("type") or "Consumption")
        if price_type != "Consumption" or item.get("reservationTerm"):
            drop("not_consumption")
            continue
        product = str(item.get("productName") or "")
        service = item.get("serviceName")
        if (service is not None and service != "Virtual Machines") or _EXCLUDED_PRODUCT_RE.search(product):
            drop("not_a_vm")
            continue
        if _is_low_priority(item):
            drop("low_priority")
            continue
        meter = str(item.get("meterName") or "")
        if _PROMO_RE.search(product) or "expired" in meter.lower():
            drop("promotional")
            continue
        unit = str(item.get("unitOfMeasure") or "1 Hour")
        if unit != "1 Hour":
            drop("not_hourly")
            continue
        try:
            price = float(item.get("retailPrice", item.get("unitPrice")))  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:
            raise PriceDataError(f"record {dict(item)!r}: retailPrice is not a number") from exc
        if price <= 0.0:
            drop("free")
            continue
        region = str(item.get("armRegionName") or "").strip().lower()
        basic = bool(re.search(r"\bBasic\b", product))
        sizes = _sizes_of(item, basic_tier=basic)
        if not region or not sizes:
            drop("unnamed")
            continue
        spot = _is_spot(item)
        os = os_of_product(product)
        for size in sizes:
            key = PriceKey(size, region, os, spot)
            rows.setdefault(key, []).append(PriceRow(key, price, product, meter))

    prices: dict[PriceKey, float] = {}
    conflicts: list[str] = []
    for key, candidates in rows.items():
        distinct = sorted({r.hourly_usd for r in candidates})
        if len(distinct) > 1:
            conflicts.append(
                f"{key.size} {key.region} {key.os}{' spot' if key.spot else ''}: "
                + "; ".join(f"{r.hourly_usd} ({r.product_name!r}, meter {r.meter_name!r})" for r in candidates)
            )
            continue
        prices[key] = distinct[0]
        if len(candidates) > 1:
            dropped["duplicates"] = dropped.get("duplicates", 0) + len(candidates) - 1
    if conflicts:
        raise AmbiguousPriceError(
            f"{len(conflicts)} (size, region, os, spot) keys have rows with different prices after "
            "filtering; "
            "refusing to pick one: " + " | ".join(conflicts[:5])
        )
    return PriceTable(prices, source=source, dropped=DroppedCounts(**dropped))


# --- snapshot formats ----------------------------------------------------------------------------------


def items_from_radar_snapshot(doc: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Items of an azure-pricing-radar snapshot: ``{"<product/sku>|<meter>|<type>|<term>": item}``.

    The key carries the price type and reservation term the stored item lost; they are put back so the
    parser's type rule sees them.
    """
    for key, item in doc.items():
        if not isinstance(item, Mapping):
            raise PriceDataError(f"snapshot entry {key!r} is not an object")
        parts = str(key).split("|")
        out = dict(item)
        if len(parts) >= 3 and parts[2]:
            out.setdefault("type", parts[2])
        if len(parts) >= 4 and parts[3]:
            out.setdefault("reservationTerm", parts[3])
        yield out


def load_items_file(path: Path) -> list[dict[str, Any]]:
    """Raw items from a JSON(.gz) file: an API page (``{"Items": [...]}``), a list, or a radar snapshot."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        doc = json.load(fh)
    if isinstance(doc, list):
        return [dict(i) for i in doc]
    if isinstance(doc, dict) and isinstance(doc.get("Items"), list):
        return [dict(i) for i in doc["Items"]]
    if isinstance(doc, dict):
        return list(items_from_radar_snapshot(doc))
    raise PriceDataError(f"{path}: expected a list of items, an API page or a snapshot object")


def load_price_table(path: Path) -> PriceTable:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return PriceTable.from_json(json.load(fh))


def save_price_table(table: PriceTable, path: Path) -> None:
    """Write atomically (tmp + rename) so a crash never leaves a half-written last good copy."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    data = json.dumps(table.to_json(), separators=(",", ":")).encode()
    tmp.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)
    tmp.replace(path)
