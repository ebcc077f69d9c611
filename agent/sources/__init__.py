"""Where records come from. Each source hands the pipeline batches of raw items plus the
offset to persist with them (see :mod:`agent.sources.base`)."""
