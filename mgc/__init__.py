"""mgc: distributed batch processing for music genre classification on Ray."""

__version__ = "0.1.0"
