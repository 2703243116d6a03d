"""A mutation fuzzer for flwire's public decode paths.

Seeds (:mod:`.corpus`): the golden vectors, envelopes built with
``flwire.messages``, and TransferParts cut by the transport's splitter. Each
input is a seed with a few mutations (:mod:`.mutate`, protobuf-aware through
:mod:`.wire`), fed to every public decoder of its kind (:mod:`.targets`), which
must return valid data or raise the SDK's own exception
(:class:`flwire.exceptions.FLException`). :mod:`.runner` bounds each input's
time (a watchdog) and memory (peak RSS growth, and an address-space cap),
writes a failing input to a file and names it with its seed.

Run ``python -m fuzz --help`` from ``tests/`` (``make fuzz`` runs it longer);
``test_fuzz.py`` runs it in ``make test`` within a small time budget. See
README.md.
"""
