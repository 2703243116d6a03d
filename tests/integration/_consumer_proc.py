"""A consumer that receives messages and never commits: killed by the test.

    python _consumer_proc.py BOOTSTRAP TOPIC GROUP

Prints "GOT <message id>" for each message, then keeps running (no commit)
until the test kills it with SIGKILL.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import TYPE_CHECKING

from flwire import messages
from flwire.transport import Channel

if TYPE_CHECKING:  # mypy checks this file as part of the integration package
    from ._helpers import transport
else:  # run as a script: its own directory is on sys.path
    from _helpers import transport


async def main(bootstrap: str, topic: str, group: str) -> None:
    t = transport(bootstrap)
    await t.start()
    async for delivery in Channel(t).receive([topic], group):
        msg = messages.decode_message(delivery.payload)
        print(f"GOT {msg.message_id}", flush=True)
        # Handling "takes forever": done() is never called, so nothing is committed.


if __name__ == "__main__":
    # flwire's logs on stderr, for the test to show if this consumer fails.
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    asyncio.run(main(*sys.argv[1:4]))
