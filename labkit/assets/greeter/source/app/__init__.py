"""greeter: a tiny web service."""
