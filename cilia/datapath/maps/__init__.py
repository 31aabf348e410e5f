"""One module per BPF map: key/value layouts, limits and dumps."""
