"""The application around the labs: sessions and their results, the claims ledger, the runner, the CLI,
`labkit doctor` and the book. It drives the labs; the labs drive the instruments."""
