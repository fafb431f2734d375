"""The PostgreSQL offers sink (seed step 5): every offer also in PostgreSQL.

``jobpulse sink`` reads the offer-rows topic (:mod:`jobpulse.offer_row`, written by the
dataflow) as its own consumer group and keeps one row per offer in the table ``offers``:
:mod:`.schema` (the versioned schema), :mod:`.writer` (one batch, exactly once in effect),
:mod:`.sink` (the consumer loop), :mod:`.cli` (the command). It is decoupled from the
counting: a slow or stopped PostgreSQL only makes the sink lag, never the dataflow or Redis.
"""
