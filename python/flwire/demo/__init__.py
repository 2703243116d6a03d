"""What `flwire demo` runs: an old-style FedAvg job (compat models, core transport).

Needs the ``demo`` extra; importing this package says so when it is missing.
"""

from flwire import _optional

for _module in ("torch", "sklearn"):  # matplotlib: only for --report, imported then
    _optional.require(_module, extra="demo")
