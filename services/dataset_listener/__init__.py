"""dataset-listener: GCS object-finalized events → dataset versions → `dataset.arrived`."""
