"""No raw librdkafka lines on stderr: an application that configures no logging,
pointed at a broker that is not there, sees flwire's own messages only."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import asyncio, time
    from flwire.exceptions import CommunicationException
    from flwire.transport import KafkaTransport

    async def main():
        t = KafkaTransport("127.0.0.1:1", connect_timeout_s=3)
        await t.start()
        started = time.monotonic()
        try:
            await t.ensure_topics(["x"])
        except CommunicationException as exc:
            print("FAILED", round(time.monotonic() - started, 1), exc)
        await t.stop()

    asyncio.run(main())
    """
)


def test_a_dead_broker_gives_one_clear_error_and_no_raw_librdkafka_lines():
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.strip()
    assert out.startswith("FAILED"), out
    seconds = float(out.split()[1])
    assert 2.5 <= seconds < 10, out
    assert "did not answer for 3 s" in out and "raise connect_timeout_s" in out
    assert "rdkafka#" not in proc.stderr and "[thrd:" not in proc.stderr, proc.stderr
