"""Storage and signal codecs, one module each; every module registers its codec on import."""
