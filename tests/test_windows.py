"""Rolling window means: a batch's values added at once sum exactly as added one by one."""

from __future__ import annotations

import random

from agent.windows import RollingMeans


def test_a_batch_added_per_key_gives_the_very_sums_of_values_added_one_by_one() -> None:
    one_by_one, per_key = RollingMeans(600.0), RollingMeans(600.0)
    rnd = random.Random(7)
    for ts in (1000.0, 1003.0, 1100.0, 1050.0, 2000.0):  # a new bucket, the same one, a late batch, a gap
        values = {("proxy", "p", key): [rnd.uniform(-1e3, 1e3) * 10 ** rnd.randint(-8, 8) for _ in range(50)]
                  for key in ("*", "billing")}
        values[("audit", "a", "*")] = [0.1] * 7
        for key, series in values.items():
            for value in series:
                one_by_one.add(key, ts, value)
        per_key.add_at(ts, values)
        means = one_by_one.means(ts), per_key.means(ts)
        assert means[0] == means[1] and len(means[0]) == 3  # equal to the last bit, not approximately
