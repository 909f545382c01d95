"""Every asset of the pipeline, one module per group."""
