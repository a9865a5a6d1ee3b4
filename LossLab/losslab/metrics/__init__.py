"""Segmentation metrics: overlap, surface distances, the ICE editing metric and calibration."""

from .attention import DEFAULT_SIGMA, attention_map

__all__ = ["DEFAULT_SIGMA", "attention_map"]
