"""The scaler's live view in a browser: server-rendered HTML and SVG on the HTTP port."""
