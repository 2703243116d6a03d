"""The codec benchmark (``python -m benchmarks.codec``): flwire's tensor codec against the
old path and other formats, model by model. See ``__main__`` for what it measures.

Modules, each importing only those listed before it: :mod:`.fidelity` (is the decoded state
dict the one encoded), :mod:`.anchors` (the other formats), :mod:`.paths` (every row, as an
encode/decode pair), :mod:`.memory` (the first calls, in a fresh process), :mod:`.measure`
(the timed samples), :mod:`.report` (tables and targets), :mod:`.profiling` (``--profile``).
"""
