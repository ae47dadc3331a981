"""SPEC 1.5's post-processing numbers, importable without torch (the recipe schema holds them as
its defaults, and the command line parses before torch loads)."""

CANDIDATE_THRESHOLD = 0.005  # candidates scoring at most this before the maskness rescoring are dropped
MASK_THRESHOLD = 0.45
MAX_DETECTIONS = 100
