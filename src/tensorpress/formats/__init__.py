"""Compute-friendly tensor formats, one module each; every module registers its format on import."""
