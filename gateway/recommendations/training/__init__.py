"""Offline: building the stored model (family selection, fitting) and evaluating it on held-out
data. Serving never imports this."""
