"""Price refresh over HTTP from a fake Retail Prices API serving real records, and the fallbacks."""

from __future__ import annotations

from pathlib import Path

import pytest

from rightsizer.catalogue import CACHE_FILE, load_catalogue, load_prices
from tests.fakes.retail_prices import real_items, retail_prices_server


def test_live_refresh_follows_next_page_links_and_keeps_a_last_good_copy(tmp_path: Path) -> None:
    items = real_items(("westeurope",))
    with retail_prices_server(items, page_size=1000) as server:
        load = load_prices(refresh=True, regions=["westeurope"], cache_dir=tmp_path, api_url=server.api_url)
        pages = len(server.requests)
    assert load.origin == "live"
    assert pages == -(-len(items) // 1000)  # every page fetched, no more
    assert load.table.hourly("Standard_D2s_v5", "westeurope") is not None
    assert (tmp_path / CACHE_FILE).exists()
    assert "refreshed from" in load.note


def test_unreachable_api_uses_the_last_good_copy_and_says_so(tmp_path: Path) -> None:
    with retail_prices_server(real_items(("westeurope",)), page_size=5000) as server:
        first = load_prices(refresh=True, regions=["westeurope"], cache_dir=tmp_path, api_url=server.api_url)
        server.fail_with = 503
        second = load_prices(refresh=True, regions=["westeurope"], cache_dir=tmp_path, api_url=server.api_url)
    assert first.origin == "live"
    assert second.origin == "cache"
    assert "live refresh failed" in second.note and "last good copy" in second.note
    assert dict(second.table.prices) == dict(first.table.prices)


def test_no_cache_falls_back_to_the_bundled_snapshot(tmp_path: Path) -> None:
    with retail_prices_server(real_items(("westeurope",))) as server:
        server.fail_with = 500
        load = load_prices(refresh=True, regions=["westeurope"], cache_dir=tmp_path, api_url=server.api_url)
    assert load.origin == "bundled"
    assert "bundled snapshot" in load.note and "live refresh failed" in load.note
    assert not (tmp_path / CACHE_FILE).exists()


def test_a_region_the_api_does_not_price_is_not_a_good_copy(tmp_path: Path) -> None:
    with retail_prices_server(real_items(("westeurope",))) as server:
        load = load_prices(
            refresh=True, regions=["westeurope", "northeurope"], cache_dir=tmp_path, api_url=server.api_url
        )
    assert load.origin == "bundled"
    assert "northeurope" in load.note
    assert not (tmp_path / CACHE_FILE).exists()


def test_refresh_disabled_uses_the_bundled_snapshot() -> None:
    load = load_prices(refresh=False, regions=["westeurope"], cache_dir=None)
    assert load.origin == "bundled"
    catalogue = load_catalogue(load)
    assert catalogue.monthly("Standard_D2s_v5", "westeurope") == pytest.approx(
        730 * (catalogue.hourly("Standard_D2s_v5", "westeurope") or 0)
    )
