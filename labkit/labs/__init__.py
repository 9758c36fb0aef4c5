"""One module per notebook: ``run_*`` functions that perform an experiment and return a result.

A lab stands on :mod:`labkit.core` and the instruments; it never imports another lab or the application, and it
never plots (tests/test_structure.py lists the exceptions still to be removed)."""
