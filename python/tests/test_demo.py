"""``make demo``'s story, run against a migrated database: every beat it promises happens."""

from __future__ import annotations

import re

import pytest

from covenant.demo import run_demo


def test_the_demo_tells_the_whole_story(
    migrated_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run_demo(migrated_url)
    out = capsys.readouterr().out
    beats = [
        r"agent:coder resolves as cold \(source: database\)",
        r"asks for inference\.advanced: DENIED \(CAPABILITY_DENIED\) as cold; "
        r"lifecycle received -> validated -> failed",
        r"failed before anything was reserved: reserved \$0\n",
        r"asks for inference\.basic \(\$0\.80\) as cold: received -> validated -> reserved",
        r"reports \$0\.62: verified, jti redeemed, finalized \(consumed \$0\.62, released \$0\.18\)",
        r"sent again: refused REPLAY \(permanent=True\)",
        r"refused OVERSPEND; the request is still executing",
        r"expiry sweep expires 1 reservation\(s\): expired",
        r"warming after event 4, established after event 10",
        r"invalidated the cache: established \(source: database\)",
        r"as established: received -> validated -> reserved",
        r"established -> warming",
        r"the push invalidated the cache: warming \(source: database\)",
        r"DENIED \(CAPABILITY_DENIED\) as warming",
        r"distributes it 70/30: agent:coder \$2\.114, treasury \$0\.906",
        r"reconcile\(\): I-1 ok, I-2 ok, I-4 ok, I-10 ok, I-12 ok, I-13 ok, I-14 ok",
        r"entries, ok=True \(one per mutation\)",
        r"verify_audit_chain: ok=False, first bad seq 3",
        r"the next append is refused: CV001 AUDIT_QUARANTINE",
        r"GET /health -> 200 ok: database reachable=True, migrations current=True",
        r"GET /health/governance -> 503: \d+ quarantined domain\(s\), orders:demo-\w+ open",
        r'covenant_usage_reports_total\{outcome="REPLAY"\} [1-9][0-9]*\.0',
    ]
    missing = [b for b in beats if not re.search(b, out)]
    assert missing == [], out
    # The story is told in order.
    positions = [re.search(b, out).start() for b in beats]  # type: ignore[union-attr]
    assert positions == sorted(positions)
