"""Compares the lunar dates the provisional calendar uses (春节, 端午, 中秋, from
the tyme4rs crate, printed by `facevault holidays`) with the independent tables
of the Python `lunardate` package, for every year both cover from 1990 on.

Usage: check_lunar_dates.py FACEVAULT_BIN
Fails loudly when a date differs, a year is missing, or lunardate is absent.
"""

import json
import subprocess
import sys

from lunardate import LunarDate

FIRST_YEAR = 1990
LAST_YEAR = 2099  # lunardate covers 1900 up to, not including, 2100

LUNAR_ANCHORS = {"spring_festival": (1, 1), "dragon_boat": (5, 5), "mid_autumn": (8, 15)}


def main() -> int:
    binary = sys.argv[1]
    out = subprocess.run(
        [binary, "holidays", "--from-year", str(FIRST_YEAR), "--to-year", str(LAST_YEAR)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    years = {row["year"]: row for row in map(json.loads, out.splitlines())}
    if sorted(years) != list(range(FIRST_YEAR, LAST_YEAR + 1)):
        print(f"facevault holidays printed years {sorted(years)[:3]}...", file=sys.stderr)
        return 1
    mismatches = []
    for year, row in sorted(years.items()):
        for name, (month, day) in LUNAR_ANCHORS.items():
            expected = LunarDate(year, month, day).to_solar_date().isoformat()
            if row[name] != expected:
                mismatches.append(f"{year} {name}: facevault {row[name]}, lunardate {expected}")
    for line in mismatches:
        print(line, file=sys.stderr)
    if mismatches:
        return 1
    checked = len(years) * len(LUNAR_ANCHORS)
    print(f"lunar dates agree with lunardate: {checked} dates, {FIRST_YEAR}-{LAST_YEAR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
