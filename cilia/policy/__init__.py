"""The policy engine: the only place that interprets rules (repository -> selector cache -> MapState)."""
