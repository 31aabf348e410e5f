"""The cilia command line: a thin face over the library."""
