"""Shipped assets: the embedded default model (weights + serving bundle) and the script that rebuilds them."""
