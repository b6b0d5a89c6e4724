"""masklet: segment and track anything with SAM 2 / SAM 2.1, SAM and MobileSAM in plain PyTorch."""
__version__ = "0.1.0"
