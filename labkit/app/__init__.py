"""The application around the labs: the CLI, the runner, `labkit doctor`, the bench, the book, JupyterLab and the
catalogue of labs (:mod:`labkit.app.catalog`, the only code that finds every lab). It drives the labs; the labs
stand on :mod:`labkit.core` and drive the instruments."""
