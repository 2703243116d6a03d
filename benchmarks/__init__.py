"""flwire's benchmarks: two programs, run from the repository root.

    python -m benchmarks.codec     # the tensor codec against the old path and other formats
    python -m benchmarks.e2e       # one FL job end to end over a private Kafka broker

``make bench`` runs both. What they share lives here: :mod:`.models` (the seeded state
dicts), :mod:`.legacy` (the old ``common`` package's pickle/JSON path, the baseline both
programs measure flwire against) and :mod:`.tables` (units, aligned tables, the host line).
"""
