"""Analysis: COCO mask AP, TIDE error analysis and its plot, latency per module, and instance
activation map figures."""
