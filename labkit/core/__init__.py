"""What every lab stands on: the session (a run's scope, banner and replay), its results (atomic CSV +
provenance), the claims ledger and a lab's declaration (:mod:`labkit.core.lab`). The core never imports a lab
or the application."""
