"""The proxy layer (design.md): between the datapath and the agent.

* :mod:`cilia.proxy.dns` — the DNS proxy of ``toFQDNs`` (its message codec, cache and the proxy).
* :mod:`cilia.proxy.http` — the HTTP/TLS proxy (HAProxy, configured and driven by cilia).
* :mod:`cilia.proxy.redirects` — which connections the datapath sends to a proxy: a redirect is
  keyed by (endpoint, direction, port, protocol) and carries the proxy port of its MapState entry.
* :mod:`cilia.proxy.host` — what a proxy needs from the agent, as a typed interface the agent
  implements (the identity of an address, an endpoint's DNS rules, learning, reporting flows).
* :mod:`cilia.proxy.records` — what proxies report (the flows ``cilia observe`` shows).

A proxy parses nothing the agent must trust without checking it: it decides on what it read
itself and hands the agent only checked, typed values.
"""
