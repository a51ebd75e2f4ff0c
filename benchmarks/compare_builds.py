"""Old and new fused-op times from benchmarks/alternate_builds.sh, as a Markdown table.

    python benchmarks/compare_builds.py OUT

Per case and mode: the median over the runs of each run's median, new / old, and every
run's figure (the spread within one build is the noise that a ratio must stand out of).
"""

import glob
import json
import statistics
import sys
from collections import defaultdict


def main(out):
    times = {"old": defaultdict(list), "new": defaultdict(list)}
    for tag, by_case in times.items():
        for path in sorted(glob.glob(f"{out}/{tag}_*.json")):
            for row in json.load(open(path))["results"]:
                if row["implementation"] == "fused" and not row.get("error"):
                    by_case[(row["case"], row["mode"])].append(row["median_s"])
    print("| B x K | mode | old (us) | new (us) | new / old | old runs (us) | new runs (us) |")
    print("|---|---|---|---|---|---|---|")
    ratios = []
    for key, old in times["old"].items():
        new = times["new"].get(key)
        if not new:
            continue
        old_median, new_median = statistics.median(old), statistics.median(new)
        ratios.append(new_median / old_median)
        runs = lambda xs: ", ".join(f"{x * 1e6:.0f}" for x in xs)  # noqa: E731
        print(f"| {key[0]} | {key[1]} | {old_median * 1e6:.1f} | {new_median * 1e6:.1f} | "
              f"{new_median / old_median:.3f} | {runs(old)} | {runs(new)} |")
    if ratios:
        print(f"\ngeometric mean of new / old over {len(ratios)} rows: {statistics.geometric_mean(ratios):.3f}; "
              f"range {min(ratios):.3f} to {max(ratios):.3f}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
