"""``python -m scaler_service.backtest ...``: the backtest without the rest of the scaler's command line."""

from scaler_service.backtest.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
