"""Observe: datapath events → flows that name the rule, kept, filtered, rendered, counted.

The pipeline reads like its modules: :mod:`flow` (the record, Hubble's field names) ←
:mod:`pipeline` (decode once → :mod:`enrich` → :mod:`attribute`, audit reclassification by
:mod:`audit`; a bounded ring and the durable :mod:`log`; :mod:`metrics`). Readers: :mod:`source`
(agent or log) → :mod:`filters` → :mod:`render`; :mod:`fromflows` writes least-privilege policy
from what was observed.
"""
