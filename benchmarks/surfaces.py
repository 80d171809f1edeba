"""The App Home, the start modal's type-ahead and 200 people opening their Home at once: the numbers issue 20 asks for.

Run from the repository root: ``python benchmarks/surfaces.py [--rounds 3] [--homes 200] [--commands 100]
[--postgres-url URL]`` (a few minutes; PostgreSQL from --postgres-url or VM_BOT_TEST_POSTGRES_URL, else SQLite only).
Everything binds 127.0.0.1 and stops every wait after a deadline. It prints:

1. **Type-ahead** with 20,000 instances at the simulator: the p50/p99 of the HTTP answer to a block_suggestion (the
   whole round trip, signed, through waitress and bolt) for a caller with a name-glob grant and one with a tag grant,
   typing a letter at a time; the first answer before the instance mirror was read, and what a live read costs
   instead (one filtered DescribeInstances page, and every page — what a tag or glob grant would need per letter).
   Goal: p99 < 300 ms.
2. **Home publish**: our time to render a Home with 50 runs and 20 requests waiting for approval (read the
   database, check the grants, render, encode), p50/p99 over 50 renders, as the rendering thread's CPU time (the
   machine is shared: its wall time, shown beside it, includes waiting for a core); and the views.publish round
   trip to the Slack stand-in for scale. Goal: p99 < 100 ms of our CPU time.
3. **200 Homes at once**: `vm-bot run` and the floor app (benchmarks/floor_app.py) as processes, a burst of
   `/vm start` commands alone, then the same burst released together with 200 app_home_opened events; the p99 of
   the commands' acks against the floor's under the same load. Goal: ratio <= 1.5 (the performance issue's bar),
   nothing failed; then how long until all 200 Homes were published (paced by the views.publish gate: bursts of
   20, then one every 0.5 s — Slack's Tier 4).
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import tempfile
from collections.abc import Sequence
from pathlib import Path

from surfaces_home import HOME_GOAL_MS, STORM_GOAL, home_publish, home_storm
from surfaces_typeahead import typeahead


def main(argv: Sequence[str] | None = None) -> int:
    """Run every part not skipped and print its numbers; return 1 when a goal is not met."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the Home storm (default 3)")
    parser.add_argument("--homes", type=int, default=200, help="Homes opened at once (default 200)")
    parser.add_argument("--commands", type=int, default=100, help="commands in each burst (default 100)")
    parser.add_argument("--repeats", type=int, default=15, help="times each typed word is sent (default 15)")
    parser.add_argument("--postgres-url", default=os.environ.get("VM_BOT_TEST_POSTGRES_URL", ""))
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: typeahead, home, storm")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    skip = set(filter(None, args.skip.split(",")))
    ok = True
    if "typeahead" not in skip:
        ok = typeahead(args.repeats) and ok
    with tempfile.TemporaryDirectory(prefix="vm-bot-surfaces-") as tmp_name:
        tmp = Path(tmp_name)
        databases = [("SQLite", lambda name: f"sqlite:///{tmp / name}.db")]
        if args.postgres_url:
            databases.append(("PostgreSQL", lambda name: schema_url(args.postgres_url, name)))
        if "home" not in skip:
            print(f"\n2. views.publish of a Home with 50 runs and 20 requests waiting (goal: < {HOME_GOAL_MS:.0f} ms)")
            for label, url in databases:
                ok = home_publish(url("home"), label) and ok
        if "storm" not in skip:
            print(f"\n3. {args.homes} Homes opened at once beside /vm start bursts (goal: ratio <= {STORM_GOAL})")
            for label, url in databases:
                ok = (
                    home_storm(
                        url("storm"), label, rounds=args.rounds, homes=args.homes, commands=args.commands, tmp=tmp
                    )
                    and ok
                )
    print(f"\n{'every goal met' if ok else 'SOME GOAL NOT MET'}")
    return 0 if ok else 1


def schema_url(base: str, name: str) -> str:
    """A fresh schema on the PostgreSQL server, named for this run (dropped by hand, or with the cluster)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    url = make_url(base)
    url = url.set(drivername="postgresql+psycopg") if url.drivername == "postgresql" else url
    schema = f"vmbot_bench_{name}_{secrets.token_hex(4)}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    admin.dispose()
    return url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)


if __name__ == "__main__":
    raise SystemExit(main())
