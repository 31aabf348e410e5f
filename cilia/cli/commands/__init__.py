"""CLI command modules; each defines register(app). Discovered automatically by cilia.cli.main."""
