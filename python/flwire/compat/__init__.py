"""The old ``common`` package's API, path by path: migrate with one substitution,
``common.`` -> ``flwire.compat.`` (e.g. ``flwire.compat.serialization.weight_serializer``).

Same names, call shapes, returned keys and defaults; underneath, flwire's core
(:mod:`flwire.tensors`, :mod:`flwire.messages`, :mod:`flwire.transport`). The
models need PyTorch (``pip install 'flwire[compat]'``).
"""
