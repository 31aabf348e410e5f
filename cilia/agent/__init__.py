"""The node agent: keeps one node's pods, identities and kernel maps equal to the desired state.

* :mod:`cilia.agent.reconcile` — the reconcile steps (controller → identities → policy →
  endpoints → datapath) and restart recovery; :mod:`cilia.agent.desired`, ``policystate``,
  ``endpoints`` hold their state.
* :mod:`cilia.agent.daemon` — the process: store watch loop, REST API (:mod:`cilia.agent.api`,
  client :mod:`cilia.agent.client`), flow sink (:mod:`cilia.agent.flows`), events
  (:mod:`cilia.agent.events`); :mod:`cilia.agent.process` runs it in the background.
* :mod:`cilia.agent.interfaces` — what the agent drives (a pod runtime, a node datapath), with
  root-free implementations in :mod:`cilia.agent.runtime` and :mod:`cilia.agent.datapaths`.
* :mod:`cilia.agent.manifests`, ``resources``, ``views`` — ``apply``/``delete``, names, and what
  ``get``/``describe`` show.
"""
