"""One module per notebook: ``run_*`` functions that perform an experiment and return a result."""
