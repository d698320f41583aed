"""Datasets and transforms."""

from .glyph_canvas import GlyphCanvasDataset, load_mnist5k

__all__ = ["GlyphCanvasDataset", "load_mnist5k"]
