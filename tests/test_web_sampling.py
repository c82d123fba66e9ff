"""web/src/llm/sampling.ts in headless Chromium against a Python reference of the same
sampler: for fixed logits and seeds the browser must pick exactly the same ids.

The reference below follows the specification at the top of sampling.ts step by step
(PCG32 generator, ranking, top-k, top-p, draw) and is meant to be read beside it."""

from __future__ import annotations

import bisect
import math
import shutil

import numpy as np
import pytest

from conftest import LiveServer

# ---------------------------------------------------------------- Python reference

MASK64 = (1 << 64) - 1


class Pcg32:
    """PCG-XSH-RR 64/32 seeded like pcg32_srandom_r(seed, stream)."""

    def __init__(self, seed: int, stream: int = 54) -> None:
        self.inc = ((stream << 1) | 1) & MASK64
        self.state = 0
        self._step()
        self.state = (self.state + (seed & MASK64)) & MASK64
        self._step()

    def _step(self) -> None:
        self.state = (self.state * 6364136223846793005 + self.inc) & MASK64

    def next_u32(self) -> int:
        old = self.state
        self._step()
        xorshifted = (((old >> 18) ^ old) >> 27) & 0xFFFFFFFF
        rot = old >> 59
        return ((xorshifted >> rot) | (xorshifted << (-rot & 31))) & 0xFFFFFFFF

    def next_float(self) -> float:
        high = self.next_u32() >> 5
        low = self.next_u32() >> 6
        return (high * 67108864 + low) / 9007199254740992


def reference_argmax(logits) -> int:
    best, best_value = 0, -math.inf
    for i, value in enumerate(logits):
        if value > best_value:  # NaN compares false: never wins
            best, best_value = i, value
    return best


def reference_sampler(logits, temperature: float, top_p: float = 1.0, top_k: int = 0):
    """Steps 1-6 of the specification (fixed for given logits); returns step 7, the draw."""
    keys = [-math.inf if math.isnan(x) else float(x) for x in logits]
    best = reference_argmax(logits)
    # 1. greedy cases
    if temperature <= 0 or top_k == 1 or not math.isfinite(keys[best]):
        return lambda rng: best
    # 2. ranking: highest logit first, ties by lower id
    order = sorted(range(len(keys)), key=lambda i: (-keys[i], i))
    # 3. weights
    top = keys[best]
    weight = [math.exp((k - top) / temperature) for k in keys]
    # 4. kept ids
    kept = order[:top_k] if 0 < top_k < len(keys) else order
    # 5. total, in ascending id order
    total = 0.0
    for i in sorted(kept):
        total += weight[i]
    # 6. nucleus
    if top_p < 1:
        target = top_p * total
        n, mass = len(kept), 0.0
        for j, i in enumerate(kept):
            mass += weight[i]
            if mass >= target:
                n = j + 1
                break
    else:
        n, mass = len(kept), total

    # 7. draw: the smallest j with r < c_{j+1} (bisect over the same running sums)
    cums, cum = [], 0.0
    for i in kept[:n]:
        cum += weight[i]
        cums.append(cum)

    def draw(rng: Pcg32) -> int:
        r = rng.next_float() * mass
        return kept[min(bisect.bisect_right(cums, r), n - 1)]

    return draw


def reference_many(logits, params: dict, seed: int, count: int) -> list[int]:
    draw = reference_sampler(logits, params["temperature"], params.get("top_p", 1.0), params.get("top_k", 0))
    rng = Pcg32(seed)
    return [draw(rng) for _ in range(count)]


def float32_list(values) -> list[float]:
    """Python floats holding float32 values exactly (what Float32Array.from keeps)."""
    return np.asarray(values, dtype=np.float32).tolist()


# ---------------------------------------------------------------- browser fixtures

@pytest.fixture(scope="module")
def sampling_page(browser, tmp_path_factory, test_site):
    root = tmp_path_factory.mktemp("sampling-site")
    (root / "assets").mkdir()
    shutil.copy(test_site / "test.html", root / "test.html")
    shutil.copy(test_site / "assets" / "test-entry.js", root / "assets" / "test-entry.js")
    with LiveServer(root) as server:
        context = browser.new_context()
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{server.url}/test.html")
        page.wait_for_function("window.webkilnTest !== undefined")
        yield page
        assert not errors
        context.close()


def browser_many(page, logits, params: dict, seed: int, count: int) -> list[int]:
    return page.evaluate("([l, p, s, n]) => webkilnTest.sampling.sampleMany(l, p, s, n)", [logits, params, seed, count])


# ---------------------------------------------------------------- the generator

def test_python_pcg32_matches_the_published_reference():
    # pcg32-demo (pcg-c-basic) output for pcg32_srandom_r(&rng, 42, 54).
    rng = Pcg32(42, 54)
    assert [rng.next_u32() for _ in range(6)] == [
        0xA15C02B7, 0x7B47F409, 0xBA1D3330, 0x83D2F293, 0xBFA4784B, 0xCBED606E]


@pytest.mark.parametrize("seed", [0, 1, 42, 2**32 + 7, 2**53 - 1])
def test_browser_generator_equals_python(sampling_page, seed):
    rng = Pcg32(seed)
    want_u32 = [rng.next_u32() for _ in range(64)]
    assert sampling_page.evaluate("([s, n]) => webkilnTest.sampling.randomU32(s, n)", [seed, 64]) == want_u32
    rng = Pcg32(seed)
    want = [rng.next_float() for _ in range(64)]
    got = sampling_page.evaluate("([s, n]) => webkilnTest.sampling.randomFloats(s, n)", [seed, 64])
    assert got == want
    assert all(0.0 <= u < 1.0 for u in got)


# ---------------------------------------------------------------- argmax

def test_argmax_is_exact_with_ties_nan_and_inf(sampling_page):
    rng = np.random.default_rng(0)
    cases = [
        float32_list(rng.normal(size=1000)),
        [1.0, 3.0, 3.0, 2.0],  # tie: lowest index
        [math.nan, 0.5, math.nan, 0.5],  # NaN never wins
        [-math.inf, -math.inf, -math.inf],  # all masked: 0
        [-math.inf, -1e30, math.inf, math.inf],
        [7.0],
        float32_list(np.round(rng.normal(size=5000), 1)),  # many ties
    ]
    for logits in cases:
        got = sampling_page.evaluate("(l) => webkilnTest.sampling.argmax(l)", logits)
        assert got == reference_argmax(logits), logits[:8]
    assert [reference_argmax(c) for c in cases[1:6]] == [1, 1, 0, 2, 0]


def test_temperature_zero_is_greedy(sampling_page):
    logits = float32_list(np.random.default_rng(1).normal(size=500))
    best = reference_argmax(logits)
    for params in ({"temperature": 0}, {"temperature": 0, "top_p": 0.5}, {"temperature": 1.0, "top_k": 1}):
        assert browser_many(sampling_page, logits, params, seed=3, count=20) == [best] * 20


# ---------------------------------------------------------------- sampling parity

def logit_sets() -> dict[str, list[float]]:
    rng = np.random.default_rng(7)
    peaked = rng.normal(size=2000) * 2
    peaked[17] += 12
    masked = rng.normal(size=300) * 3
    masked[::3] = -np.inf
    ties = np.round(rng.normal(size=400), 1) * 4
    return {
        "normal-1000": float32_list(rng.normal(size=1000) * 3),
        "peaked-2000": float32_list(peaked),
        "masked-300": float32_list(masked),
        "ties-400": float32_list(ties),
        "flat-5000": float32_list(rng.normal(size=5000) * 0.01),  # the lazy ranking must reach every id
    }


PARAMS = [
    {"temperature": 1.0},
    {"temperature": 0.7, "top_p": 0.9},
    {"temperature": 1.3, "top_p": 0.5},
    {"temperature": 0.05, "top_p": 0.95},
    {"temperature": 1.0, "top_k": 40},
    {"temperature": 0.8, "top_p": 0.8, "top_k": 20},
    {"temperature": 2.0, "top_p": 0.999},
    {"temperature": 1.2, "top_k": 1500, "top_p": 0.97},  # a large k takes the lazy-ranking path
    {"temperature": 1.0, "top_p": 1.0, "top_k": 100000},  # k larger than the vocabulary: off
]


@pytest.mark.parametrize("name", list(logit_sets()))
def test_browser_sampler_equals_python_reference(sampling_page, name):
    logits = logit_sets()[name]
    for params in PARAMS:
        for seed in (0, 12345):
            want = reference_many(logits, params, seed, count=60)
            got = browser_many(sampling_page, logits, params, seed, count=60)
            assert got == want, (name, params, seed)
            assert len(set(got)) > 1 or params["temperature"] < 0.1 or name == "peaked-2000"


def test_top_p_masks_the_tail(sampling_page):
    probs = np.array([0.5, 0.3, 0.15, 0.05])
    logits = float32_list(np.log(probs))
    # c_1 = 0.5 < 0.75 <= c_2 = 0.8: the nucleus is {0, 1}.
    got = browser_many(sampling_page, logits, {"temperature": 1.0, "top_p": 0.75}, seed=9, count=4000)
    assert set(got) == {0, 1}
    assert abs(got.count(0) / len(got) - 0.5 / 0.8) < 0.03  # renormalised inside the nucleus
    # top_p just above c_2 takes in the third token, never the fourth.
    got = browser_many(sampling_page, logits, {"temperature": 1.0, "top_p": 0.81}, seed=9, count=4000)
    assert set(got) == {0, 1, 2}
    # No top_p: every token, at its probability.
    got = browser_many(sampling_page, logits, {"temperature": 1.0}, seed=9, count=20000)
    freq = np.bincount(got, minlength=4) / len(got)
    assert np.abs(freq - probs).max() < 0.015, freq


def test_top_k_masks_the_tail(sampling_page):
    logits = float32_list([0.0, 3.0, 1.0, 2.5, -1.0, 2.9])
    got = browser_many(sampling_page, logits, {"temperature": 5.0, "top_k": 3}, seed=4, count=3000)
    assert set(got) == {1, 5, 3}


def test_invalid_parameters_are_refused(sampling_page):
    for params in ({"temperature": -1}, {"temperature": math.nan}, {"temperature": 1, "top_p": 0},
                   {"temperature": 1, "top_p": 1.5}, {"temperature": 1, "top_k": 2.5}):
        error = sampling_page.evaluate(
            "(p) => { try { webkilnTest.sampling.sampleMany([1, 2], p, 0, 1); return null } catch (e) { return e.name } }",
            params)
        assert error == "RangeError", params


def test_large_vocabulary_speed(sampling_page):
    """One draw from a 152k vocabulary (Qwen-sized) with typical settings stays cheap."""
    timings = sampling_page.evaluate(
        """() => {
             const V = 151936, flat = new Float32Array(V), rng = new webkilnTest.Pcg32(1);
             for (let i = 0; i < V; i++) flat[i] = 4 * (rng.nextFloat() + rng.nextFloat() + rng.nextFloat() - 1.5);
             // Like a trained model's: a few clear candidates above a broad floor.
             const peaked = flat.map((x, i) => (i % 5000 === 7 ? 20 + (i % 7) : x));
             const time = (logits, params) => {
               const t0 = performance.now();
               for (let k = 0; k < 10; k++) webkilnTest.sample(logits, params, rng);
               return +((performance.now() - t0) / 10).toFixed(2);
             };
             const run = (logits) => ({ argmax: time(logits, { temperature: 0 }),
               top_p: time(logits, { temperature: 0.7, top_p: 0.9 }), full: time(logits, { temperature: 1.0 }),
               top_k: time(logits, { temperature: 1.0, top_k: 50 }) });
             return { flat: run(flat), peaked: run(peaked) };
           }""")
    print("ms per token:", timings)
    assert max(max(t.values()) for t in timings.values()) < 250, timings
