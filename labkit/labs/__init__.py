"""One lab per notebook, named after it: ``notebooks/07-cgroups-and-limits.ipynb`` → ``labkit.labs.cgroups_and_limits``
(the stem without its number, ``-`` → ``_``); a lab over ~500 lines is a package split by the notebook's sections.
Its ``run_*`` functions perform an experiment and return a result.

A lab stands on :mod:`labkit.core`, the instruments and :mod:`labkit.assets`; it never imports another lab or the
application, and it never plots (tests/test_structure.py lists the exceptions still to be removed)."""
