"""The end-to-end benchmark (``python -m benchmarks.e2e``): one FL job over a private Apache
Kafka broker, flwire's SDK against the old JSON/base64 messages. See ``__main__`` for the
scenarios; the client processes run ``python -m benchmarks.e2e.client``.

Modules, each importing only those listed before it: :mod:`.wire` (what server and clients
share), :mod:`.results` (what the server records and sums up), :mod:`.phases` (settings,
plan, the client processes), :mod:`.broker`, :mod:`.report`, :mod:`.servers`; and
:mod:`.client`, which imports only :mod:`.wire`. The many-clients load scenario
(``python -m benchmarks.e2e --load``): :mod:`.load_worker` (its server and client
processes; imports only :mod:`.wire`) and :mod:`.load` (the run and its table; imports
:mod:`.wire`, :mod:`.broker` and :mod:`.load_worker`).
"""
