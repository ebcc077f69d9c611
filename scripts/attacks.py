"""Reruns the hardening attacks of docs/hardening.md against the real agent and regenerates its table.

    python scripts/attacks.py            # run every attack, print the table; exit 1 if one failed
    python scripts/attacks.py --write    # the same, then rewrite the table in docs/hardening.md
    python scripts/attacks.py --only 2,6 # run some attacks (by id); --list shows the ids

Each attack starts ``python -m agent run`` (or ``agent replay``) in a subprocess with a temporary
state dir, listening on free ports of 127.0.0.1, attacks it over real sockets and files, measures
a figure (counts, status codes, RSS, threads, seconds to exit) and decides whether the defence held
against a stated expectation. Loopback only; bounded in count and time (the whole run takes about
a minute or two). The *before* column is history: what the agent did when the issue was measured.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from attack_catalogue import ATTACKS, Attack, Result
from attack_lab import Lab

DOC = Path(__file__).resolve().parent.parent / "docs" / "hardening.md"
BEGIN, END = "<!-- attacks:begin -->", "<!-- attacks:end -->"


# -- running and the table -------------------------------------------------------------------------------------
def run_attacks(selected: list[Attack], keep: bool = False) -> list[tuple[Attack, Result, float]]:
    results = []
    lab = Lab(keep=keep)
    try:
        for item in selected:
            start = time.monotonic()
            try:
                result = item.run(lab)
            except Exception as err:  # an attack that crashes the harness counts as failed, with its error
                result = Result(f"error: {type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}",
                                False)
            took = time.monotonic() - start
            print(f"[{item.id}] {'held' if result.held else 'FAILED'} in {took:.1f}s: {result.figure}",
                  file=sys.stderr, flush=True)
            results.append((item, result, took))
    finally:
        lab.close()
    return results


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(results: list[tuple[Attack, Result, float]]) -> str:
    lines = ["| # | attack | before | defence | now (measured) | held | test |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for item, result, _ in results:
        lines.append(f"| {item.id} | {item.attack} | {item.before} | {item.defence} | {cell(result.figure)} | "
                     f"{'held' if result.held else '**failed**'} | {item.test} |")
    return "\n".join(lines) + "\n"


def rewrite(doc: Path, new_table: str) -> None:
    text = doc.read_text()
    head, sep1, rest = text.partition(BEGIN)
    _, sep2, tail = rest.partition(END)
    if not (sep1 and sep2):
        raise SystemExit(f"{doc}: no {BEGIN} ... {END} markers to write the table between")
    doc.write_text(f"{head}{BEGIN}\n{new_table}{END}{tail}")


def documented_ids(doc: Path = DOC) -> list[str]:
    """The ids of the table rows between the markers of ``doc``, in order."""
    rest = doc.read_text().partition(BEGIN)[2].partition(END)[0]
    rows = [line for line in rest.splitlines() if line.startswith("| ")]
    return [row.split("|")[1].strip() for row in rows[2:]]  # after the header and its separator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite the table in docs/hardening.md")
    parser.add_argument("--doc", type=Path, default=DOC, help="the document --write rewrites")
    parser.add_argument("--only", default="", help="comma-separated attack ids (not with --write)")
    parser.add_argument("--list", action="store_true", help="print the attack ids and exit")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (agents' logs)")
    args = parser.parse_args(argv)
    if args.list:
        for item in ATTACKS:
            print(f"{item.id}\t{item.attack}")
        return 0
    wanted = [i.strip() for i in args.only.split(",") if i.strip()]
    unknown = set(wanted) - {a.id for a in ATTACKS}
    if unknown:
        parser.error(f"unknown attack ids: {', '.join(sorted(unknown))}")
    if wanted and args.write:
        parser.error("--write regenerates the whole table: run every attack (drop --only)")
    selected = [a for a in ATTACKS if not wanted or a.id in wanted]
    start = time.monotonic()
    results = run_attacks(selected, keep=args.keep)
    rendered = table(results)
    print(rendered, end="")
    failed = [item.id for item, result, _ in results if not result.held]
    print(f"{len(results) - len(failed)} of {len(results)} held in {time.monotonic() - start:.0f}s"
          + (f"; failed: {', '.join(failed)}" if failed else ""), file=sys.stderr)
    if args.write:
        rewrite(args.doc, rendered)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
