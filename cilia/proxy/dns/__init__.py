"""toFQDNs' DNS proxy: the message codec (:mod:`.msg`), the cache of learned names
(:mod:`.cache`) and the proxy itself (:mod:`.proxy`)."""
