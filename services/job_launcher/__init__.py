"""job-launcher: training.requested and dataset.arrived → training jobs (Vertex AI CustomJob or a local process)."""
