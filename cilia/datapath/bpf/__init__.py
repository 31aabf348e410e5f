"""The kernel datapath: C programs (datapath.c, layouts in cilia.h), their build, a ctypes libbpf
binding, the loader (spec → loaded object → attached tc programs) and :class:`Datapath` (sync.py),
which keeps the pinned maps equal to the engine's MapState."""
