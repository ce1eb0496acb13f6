"""The edge worker: stdlib, httpx and the SDK only. It never imports ``tether.hub``."""
