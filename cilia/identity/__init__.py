"""Labels, selectors and security identities."""
