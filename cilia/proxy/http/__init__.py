"""The HTTP/TLS proxy: HAProxy, configured and driven by cilia.

* :mod:`.regex` — RE2 (Cilium's dialect) → PCRE2 (HAProxy's) as a whole-value match.
* :mod:`.rules` — the rules document (every L7 port policy of the node) the Lua action reads.
* :mod:`.config` — the node's ``haproxy.cfg``: static listeners per proxy port, Lua decision, 403.
* :mod:`.runtime` — the runtime API: load a rules document, swap the ipcache map.
* :mod:`.supervisor` — start HAProxy, restart it when it dies, stop it by PID.
* :mod:`.accesslog` — the access log socket → :class:`.accesslog.HttpRecord` per request.
* ``cilia.lua`` — the decision inside HAProxy (walks the rule table; HAProxy matches the regexes).
"""
