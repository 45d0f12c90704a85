"""ptalign: PT-ALIGN dual safety self-alignment (arXiv 2502.08657) with minimal human labels."""

__version__ = "0.1.0"
