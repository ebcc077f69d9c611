"""Best-of-n over-optimisation on real data: a reward model (proxy) and a gold model, both trained.

scikit-learn's bundled diabetes data (442 patients, 10 standardised measurements, a disease
progression score one year later; no download). The *gold* model is a random forest classifier
trained on 250 patients: the probability that a patient's progression is below the median (a
bounded audit in [0, 1]). The *proxy* is a reward model trained on only 60 other patients: a
ridge regression on degree-2 features predicting minus the progression (flexible, little data).
A *generator* proposes candidates: a real held-out patient plus Gaussian noise of a random
scale (uniform in [0, 1] feature s.d.), i.e. variations of real records of varying fidelity.

Best-of-n picks the candidate the proxy scores highest. For small n the proxy's choice is also
better under the gold model; as n grows the choice is driven by the proxy's errors (its
quadratic terms extrapolate on the noisier candidates, which the forest does not reward), so
the gold of the chosen candidate peaks and then falls while the proxy keeps climbing (Gao et
al. 2022, "Scaling laws for reward model overoptimization"). Nothing in the code prescribes
the peak: it comes from the two models and the selection (:func:`gold_curve` measures it).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

GOLD_PATIENTS, PROXY_PATIENTS = 250, 60
NOISE_MAX = 1.0  # largest generator noise, in feature s.d.
SPLIT_SEED = 0  # which patients train which model (fixed: the bench's seeds vary the sampling)


@dataclass(frozen=True)
class Models:
    gold: object  # predict_proba(X)[:, 1]: probability of a below-median progression
    proxy: object  # predict(X): the reward model's score
    pool: np.ndarray  # held-out patients the generator starts from


@lru_cache(maxsize=2)
def models(split_seed: int = SPLIT_SEED) -> Models:
    """Train both models once per process (about a second)."""
    from sklearn.datasets import load_diabetes
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import PolynomialFeatures, StandardScaler

    x, y = load_diabetes(return_X_y=True)
    x = StandardScaler().fit_transform(x)
    good = (y < np.median(y)).astype(int)
    target = -(y - y.mean()) / y.std()
    idx = np.random.default_rng(split_seed).permutation(len(x))
    g, p = idx[:GOLD_PATIENTS], idx[GOLD_PATIENTS:GOLD_PATIENTS + PROXY_PATIENTS]
    gold = RandomForestClassifier(200, min_samples_leaf=3, random_state=0, n_jobs=1).fit(x[g], good[g])
    proxy = make_pipeline(PolynomialFeatures(2), Ridge(alpha=1.0)).fit(x[p], target[p])
    return Models(gold, proxy, x[idx[GOLD_PATIENTS + PROXY_PATIENTS:]])


def best_of(n: np.ndarray, rng: np.random.Generator, m: Models | None = None) -> tuple[np.ndarray, np.ndarray]:
    """For each entry of ``n``, draw that many candidates and keep the one the proxy scores
    highest: (its proxy score, its gold probability)."""
    m = models() if m is None else m
    n = np.asarray(n, dtype=int)
    total = int(n.sum())
    dim = m.pool.shape[1]
    scale = NOISE_MAX * rng.random((total, 1))
    cand = m.pool[rng.integers(len(m.pool), size=total)] + scale * rng.normal(size=(total, dim))
    score = m.proxy.predict(cand)  # type: ignore[attr-defined]
    ends = np.cumsum(n)
    starts = ends - n
    pick = np.array([s + int(np.argmax(score[s:e])) for s, e in zip(starts, ends, strict=True)])
    gold = m.gold.predict_proba(cand[pick])[:, 1]  # type: ignore[attr-defined]
    return score[pick], gold


def gold_curve(ns: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024), reps: int = 400,
               seed: int = 12345) -> list[tuple[int, float, float]]:
    """(n, mean proxy of the pick, mean gold of the pick) over ``reps`` draws per n."""
    rng = np.random.default_rng(seed)
    out = []
    for n in ns:
        p, g = best_of(np.full(reps, n), rng)
        out.append((n, float(p.mean()), float(g.mean())))
    return out


def schedule(total: int = 2000, start: int = 500, doublings: float = 10.0) -> np.ndarray:
    """n per audited pair: 1 until ``start``, then doubling evenly to 2**doublings at the end."""
    t = np.arange(total)
    return np.where(t < start, 1, np.round(2.0 ** (doublings * (t - start) / (total - start)))).astype(int)


def stream_curve(seeds: int = 10, block: int = 100) -> list[tuple[int, int, float, float]]:
    """(first pair, n there, mean proxy, mean gold) per block of the bench's stream, over seeds."""
    n = schedule()
    runs = [best_of(n, np.random.default_rng(1000 + s)) for s in range(seeds)]
    p, g = np.mean([r[0] for r in runs], axis=0), np.mean([r[1] for r in runs], axis=0)
    return [(b, int(n[b]), float(p[b:b + block].mean()), float(g[b:b + block].mean()))
            for b in range(0, len(n), block)]


if __name__ == "__main__":
    for n, p, g in gold_curve():
        print(f"n={n:5d}  proxy {p:6.2f}  gold {g:.3f}")
    print("\nthe bench's stream (10 seeds), per block of 100 audited pairs:")
    for b, n, p, g in stream_curve():
        print(f"pairs {b:4d}+  n={n:5d}  proxy {p:6.2f}  gold {g:.3f}")
