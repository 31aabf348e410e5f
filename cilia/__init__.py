"""cilia: identity-based network policy for Linux workloads, with Cilium's semantics and an eBPF datapath."""

__version__ = "0.1.0"
