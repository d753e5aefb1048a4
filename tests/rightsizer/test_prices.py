"""The Retail Prices parser on the real records bundled in rightsizer/catalogue/ (every trap of the facts file)."""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from rightsizer.catalogue import (
    SNAPSHOT_PRICES,
    build_price_snapshot_from_raw,
    bundled_price_snapshot,
    bundled_sizes,
)
from rightsizer.prices import (
    AmbiguousPriceError,
    PriceTable,
    items_from_radar_snapshot,
    load_items_file,
    normalise_size_name,
    parse_retail_price_items,
)

CATALOGUE = Path(__file__).resolve().parents[2] / "rightsizer" / "catalogue"
RAW_WEU = CATALOGUE / "retail-prices-raw-westeurope-2026-08-22.json.gz"
RAW_NEU = CATALOGUE / "retail-prices-raw-northeurope-2026-08-22.json.gz"


@pytest.fixture(scope="module")
def weu_items() -> list[dict[str, Any]]:
    return load_items_file(RAW_WEU)


@pytest.fixture(scope="module")
def neu_items() -> list[dict[str, Any]]:
    return load_items_file(RAW_NEU)


@pytest.fixture(scope="module")
def weu(weu_items: list[dict[str, Any]]) -> PriceTable:
    return parse_retail_price_items(weu_items)


@pytest.fixture(scope="module")
def neu(neu_items: list[dict[str, Any]]) -> PriceTable:
    return parse_retail_price_items(neu_items)


def _find(items: list[dict[str, Any]], **match: str) -> dict[str, Any]:
    for item in items:
        if all(item.get(k) == v for k, v in match.items()):
            return item
    raise AssertionError(f"no real record matches {match}")


def test_reference_prices_of_the_sources_file(neu: PriceTable) -> None:
    # SOURCES.md: northeurope Standard_D2s_v5 Linux 0.107, Linux Spot 0.034197, Windows 0.199, Windows Spot 0.0636.
    assert neu.hourly("Standard_D2s_v5", "northeurope") == pytest.approx(0.107)
    assert neu.hourly("Standard_D2s_v5", "northeurope", spot=True) == pytest.approx(0.034197)
    assert neu.hourly("Standard_D2s_v5", "northeurope", "windows") == pytest.approx(0.199)
    assert neu.hourly("Standard_D2s_v5", "northeurope", "windows", spot=True) == pytest.approx(0.0636)


def test_low_priority_is_not_spot(neu_items: list[dict[str, Any]], neu: PriceTable) -> None:
    low = _find(neu_items, meterName="D2s v5 Low Priority", productName="Virtual Machines Dsv5 Series")
    assert low["retailPrice"] == pytest.approx(0.0214)
    assert neu.hourly("Standard_D2s_v5", "northeurope", spot=True) != pytest.approx(low["retailPrice"])
    assert neu.dropped.low_priority > 1000


def test_cloud_services_and_dedicated_hosts_are_not_vm_prices(weu_items: list[dict[str, Any]], weu: PriceTable) -> None:
    cloud = _find(weu_items, productName="Dasv5 Series Cloud Services", meterName="D2as v5")
    assert cloud["retailPrice"] == pytest.approx(0.196)  # priced like Windows, but it is not a VM meter
    linux = weu.hourly("Standard_D2as_v5", "westeurope")
    assert linux is not None and linux != pytest.approx(0.196)
    assert weu.hourly("Standard_D2as_v5", "westeurope", "windows") is not None
    assert not any("Type1" in k.size for k in weu.prices)  # "Dsv5 Type1" dedicated host meters
    assert weu.dropped.not_a_vm > 200


def test_windows_is_found_inside_the_product_name_not_only_as_suffix(weu_items: list[dict[str, Any]]) -> None:
    # Real: "Virtual Machines NCCadsv5 Srs Win" (abbreviated) and "... Dsv7-series Windows" vs "... Linux".
    win = _find(weu_items, productName="Virtual Machines NCCadsv5 Srs Win", meterName="NCC40adsH100v5")
    table = parse_retail_price_items([win])
    assert table.hourly("Standard_NCC40adsH100v5", "westeurope", "windows") == pytest.approx(10.74)
    assert table.hourly("Standard_NCC40adsH100v5", "westeurope", "linux") is None
    # A "Windows VM" product name (the facts file's form) with the word not at the end.
    item = dict(_find(weu_items, meterName="D2s v5", productName="Virtual Machines Dsv5 Series Windows"))
    item["productName"] = "Virtual Machines Dsv5 Series Windows VM"
    assert parse_retail_price_items([item]).hourly("Standard_D2s_v5", "westeurope", "windows") is not None
    explicit_linux = _find(weu_items, productName="Virtual Machines Dsv7-series Linux", meterName="Standard_D2s_v7")
    assert parse_retail_price_items([explicit_linux]).hourly("Standard_D2s_v7", "westeurope") == pytest.approx(0.165)


def test_sku_name_formats_normalise_to_arm_names(weu: PriceTable) -> None:
    # "D2s v5" (meter form) and "Standard_D2s_v7 Spot" (ARM form + suffix) both appear in the real records.
    assert weu.hourly("Standard_D2s_v5", "westeurope") is not None
    assert weu.hourly("Standard_D2s_v7", "westeurope", spot=True) == pytest.approx(0.030492)
    assert normalise_size_name("D2s v5") == "Standard_D2s_v5"
    assert normalise_size_name("standard_D2s_v5") == "Standard_D2s_v5"
    assert normalise_size_name("Standard_D2s_v5") == "Standard_D2s_v5"


def test_arm_sku_name_wins_when_present(weu_items: list[dict[str, Any]]) -> None:
    item = dict(_find(weu_items, meterName="D2s v5", productName="Virtual Machines Dsv5 Series"))
    item["skuName"] = "D2s v5 something odd"
    item["armSkuName"] = "Standard_D2s_v5"
    table = parse_retail_price_items([item])
    assert list(k.size for k in table.prices) == ["Standard_D2s_v5"]


def test_one_meter_for_two_sizes_prices_both(weu: PriceTable) -> None:
    # Real meter "D13 v2/DS13 v2" (skuName "D13 v2"): both sizes cost the same.
    assert weu.hourly("Standard_D13_v2", "westeurope") == pytest.approx(0.759)
    assert weu.hourly("Standard_DS13_v2", "westeurope") == pytest.approx(0.759)


def test_basic_tier_is_not_standard(weu: PriceTable) -> None:
    # Real: "A Series Basic" A1 0.027 vs "A Series" A1 0.06: two sizes, not a conflict.
    assert weu.hourly("Basic_A1", "westeurope") == pytest.approx(0.027)
    assert weu.hourly("Standard_A1", "westeurope") == pytest.approx(0.06)


def test_promotional_and_expired_meters_are_dropped(weu: PriceTable) -> None:
    # Real: "H Promo Series" H8 0.62 next to "H Series" H8 1.032; "D2 v2/DS2 v2 - Expired" promo meters.
    assert weu.hourly("Standard_H8", "westeurope") == pytest.approx(1.032)
    assert weu.hourly("Standard_D2_v2", "westeurope", "windows") is not None
    assert weu.dropped.promotional >= 40


def test_reservation_devtest_and_free_rows_are_not_pay_as_you_go(weu_items: list[dict[str, Any]]) -> None:
    base = _find(weu_items, meterName="D2s v5", productName="Virtual Machines Dsv5 Series")
    reservation = {**base, "type": "Reservation", "reservationTerm": "1 Year", "retailPrice": 526.0}
    devtest = {**base, "type": "DevTestConsumption", "retailPrice": 0.01}
    free = {**base, "meterName": "D2s v5", "retailPrice": 0.0, "productName": "Virtual Machines Dsv5 Series"}
    table = parse_retail_price_items([reservation, devtest, free, base])
    assert table.hourly("Standard_D2s_v5", "westeurope") == pytest.approx(base["retailPrice"])
    assert table.dropped.not_consumption == 2
    assert table.dropped.free == 1
    only_bad = parse_retail_price_items([reservation, devtest, free])
    assert len(only_bad) == 0


def test_reservation_type_is_recovered_from_the_snapshot_key() -> None:
    doc = {
        "X/1|meter|Reservation|1 Year": {
            "armRegionName": "westeurope",
            "meterName": "D2s v5",
            "productName": "Virtual Machines Dsv5 Series",
            "retailPrice": 526.0,
            "skuName": "D2s v5",
            "unitOfMeasure": "1 Hour",
        },
    }
    items = list(items_from_radar_snapshot(doc))
    assert items[0]["type"] == "Reservation" and items[0]["reservationTerm"] == "1 Year"
    assert len(parse_retail_price_items(items)) == 0


def test_identical_duplicate_rows_collapse(weu: PriceTable) -> None:
    # The real snapshot holds the same D2s v5 row twice (two product ids): not a conflict.
    assert weu.dropped.duplicates > 100


def test_two_different_linux_rows_fail_loudly(weu_items: list[dict[str, Any]]) -> None:
    base = _find(weu_items, meterName="D2s v5", productName="Virtual Machines Dsv5 Series")
    other = copy.deepcopy(base)
    other["retailPrice"] = base["retailPrice"] * 2
    with pytest.raises(AmbiguousPriceError, match=r"Standard_D2s_v5 westeurope linux.*refusing|refusing"):
        parse_retail_price_items([base, other])
    with pytest.raises(AmbiguousPriceError):
        parse_retail_price_items([other, base])  # never last-one-wins, whatever the order


def test_every_specified_size_has_a_linux_price_in_both_regions(weu: PriceTable, neu: PriceTable) -> None:
    sizes = bundled_sizes()
    missing_weu = [s for s in sizes if weu.hourly(s, "westeurope") is None]
    missing_neu = [s for s in sizes if neu.hourly(s, "northeurope") is None]
    assert missing_weu == []
    assert len(missing_neu) < 30  # northeurope lacks a few newer series
    assert all(v > 0 for v in weu.prices.values())


def test_bundled_snapshot_is_the_parse_of_the_bundled_raw_records() -> None:
    snapshot = bundled_price_snapshot()
    rebuilt = build_price_snapshot_from_raw()
    assert dict(snapshot.prices) == dict(rebuilt.prices)
    assert snapshot.regions() == {"westeurope", "northeurope"}
    assert SNAPSHOT_PRICES in snapshot.source


def test_price_table_json_round_trip(neu: PriceTable, tmp_path: Path) -> None:
    from rightsizer.prices import load_price_table, save_price_table

    path = tmp_path / "t.json.gz"
    save_price_table(neu, path)
    again = load_price_table(path)
    assert dict(again.prices) == dict(neu.prices)
    assert json.loads(gzip.decompress(path.read_bytes()))["format"] == "foresight.rightsizer.prices"


def test_non_numeric_price_names_the_record() -> None:
    from rightsizer.prices import PriceDataError

    with pytest.raises(PriceDataError, match="retailPrice is not a number"):
        parse_retail_price_items(
            [
                {
                    "armRegionName": "westeurope",
                    "meterName": "D2s v5",
                    "skuName": "D2s v5",
                    "productName": "Virtual Machines Dsv5 Series",
                    "retailPrice": "n/a",
                }
            ]
        )
