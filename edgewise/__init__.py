"""edgewise: speech and recommendation models from cloud training to small devices."""

__version__ = "0.1.0"
