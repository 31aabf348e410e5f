"""Datapaths that consume MapState: the kernel (bpf) and the pure-Python mirror (sim)."""
