"""One plain-Python function per asset: read inputs from the store, do the work, write outputs, return a result.

The Dagster layer (rd_pipeline.defs) calls these; so can scripts and benchmarks, without Dagster.
"""
