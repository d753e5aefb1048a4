"""The step a fit reads its history at: bounded points per fit, round coarser steps, a hard limit."""

from __future__ import annotations

import pytest

from scaler_service.fit_resolution import MAX_FIT_STEP_S, FitTooCoarse, fit_resolution

DAY = 86_400.0


def test_the_query_step_is_kept_when_the_history_fits() -> None:
    r = fit_resolution(14 * DAY, 60.0, 20_160)
    assert (r.step_s, r.points, r.coarsened) == (60.0, 20_160, False)


@pytest.mark.parametrize(
    ("history_s", "query_step_s", "step_s"),
    [
        (400 * DAY, 1.0, 1800.0),  # 34.6 M points at 1 s -> 19,200 at 30 min
        (28 * DAY, 60.0, 120.0),
        (14 * DAY, 7.0, 63.0),  # no round step is a multiple of 7 s: the smallest multiple that fits
    ],
)
def test_a_long_history_is_read_on_a_round_coarser_step(history_s: float, query_step_s: float, step_s: float) -> None:
    r = fit_resolution(history_s, query_step_s, 20_160)
    assert r.step_s == step_s and r.coarsened
    assert r.points <= 20_160
    assert r.step_s % query_step_s == 0


def test_a_step_beyond_the_hard_limit_is_refused() -> None:
    with pytest.raises(FitTooCoarse, match="shorten historyTimeWindow or raise --max-points-per-fit"):
        fit_resolution(400 * DAY, 60.0, 100)
    assert fit_resolution(400 * DAY, 60.0, 9_600).step_s <= MAX_FIT_STEP_S
