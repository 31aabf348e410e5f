"""Offline analysis: trace, connectivity, verify, lint — no store, no root, no kernel.

The pipeline reads like the commands: :mod:`manifests` (load + validate) → :mod:`cluster`
(:class:`~cilia.analyze.cluster.Analysis`: pods, identities, CIDR identities, peer resolution) →
:mod:`engine_adapter` (rules through :class:`cilia.policy.engine.PolicyEngine`, lookups through
:mod:`cilia.datapath.sim`) → :mod:`trace`, :mod:`connectivity` (with :mod:`portclasses` and
:mod:`matrix`), :mod:`verify`; :mod:`lint` with :mod:`lintraw`, :mod:`policydocs` and :mod:`findings`.
"""
