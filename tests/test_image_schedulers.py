"""web/src/image/ (schedulers/, latents.ts) in headless Chromium against diffusers.

* The seeded Gaussian generator gives bit-identical float32 values in TypeScript and in
  python/webkiln/image_noise.py.
* For Euler, Euler ancestral (also SD-Turbo's "trailing" config) and DPM-Solver++ 2M, over
  several configs and step counts, the timesteps, sigmas and init_noise_sigma equal
  diffusers', and a whole denoising loop with a fixed fake model (with classifier-free
  guidance), started from the same latents and, for ancestral sampling, fed the same
  noise (diffusers' randn_tensor replaced by our generator), ends where diffusers ends,
  and each step's predicted clean sample (what previews decode) equals diffusers'.
* Bad configs fail with an error that names the field.

The bundle is built with a one-off esbuild call into a temporary site, so this file does
not depend on web/build.mjs."""

from __future__ import annotations

import math
import shutil
import subprocess

import numpy as np
import pytest
from conftest import REPO, LiveServer

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from diffusers import (
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
)
from diffusers.schedulers import scheduling_euler_ancestral_discrete
from webkiln.image_noise import GaussianNoise

CLASSES = {
    "EulerDiscreteScheduler": EulerDiscreteScheduler,
    "EulerAncestralDiscreteScheduler": EulerAncestralDiscreteScheduler,
    "DPMSolverMultistepScheduler": DPMSolverMultistepScheduler,
}

SD = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}


def cfg(class_name: str, **fields) -> dict:
    return {"_class_name": class_name, **SD, **fields}


# name -> (config, exact): exact means sigmas and timesteps must match bit for bit; the
# others go through float64 pow/log/cos, which may differ in the last bit.
CASES: dict[str, tuple[dict, bool]] = {
    "euler_sd15": (cfg("EulerDiscreteScheduler", timestep_spacing="leading", steps_offset=1), True),
    "euler_linspace": (cfg("EulerDiscreteScheduler", timestep_spacing="linspace"), True),
    "euler_trailing_v": (cfg("EulerDiscreteScheduler", timestep_spacing="trailing", prediction_type="v_prediction"), True),
    "euler_linear_sigma_min": (
        {"_class_name": "EulerDiscreteScheduler", "beta_schedule": "linear", "final_sigmas_type": "sigma_min"}, True),
    "euler_karras": (cfg("EulerDiscreteScheduler", timestep_spacing="leading", steps_offset=1, use_karras_sigmas=True), False),
    "euler_a_sd15": (cfg("EulerAncestralDiscreteScheduler", timestep_spacing="leading", steps_offset=1), True),
    "euler_a_linspace_v": (cfg("EulerAncestralDiscreteScheduler", prediction_type="v_prediction"), True),
    "turbo": (None, True),  # sdTurboSchedulerConfig() from the page
    "turbo_as_euler": (cfg("EulerDiscreteScheduler", timestep_spacing="trailing", steps_offset=1), True),
    "dpm_sd15": (cfg("DPMSolverMultistepScheduler", timestep_spacing="leading", steps_offset=1), True),
    "dpm_linspace": (cfg("DPMSolverMultistepScheduler"), True),
    "dpm_trailing_v": (cfg("DPMSolverMultistepScheduler", timestep_spacing="trailing", prediction_type="v_prediction"), True),
    "dpm_karras": (cfg("DPMSolverMultistepScheduler", use_karras_sigmas=True), False),
    "dpm_heun_sigma_min": (
        cfg("DPMSolverMultistepScheduler", solver_type="heun", lower_order_final=False, final_sigmas_type="sigma_min"),
        True),
    "dpm_order1": (cfg("DPMSolverMultistepScheduler", solver_order=1), True),
    "dpm_cosine": ({"_class_name": "DPMSolverMultistepScheduler", "beta_schedule": "squaredcos_cap_v2"}, False),
}
STEPS = [1, 2, 3, 4, 16, 20]
SHAPE = (1, 4, 8, 8)
GUIDANCE = 3.0
SEED = 1234
LOOP_RTOL = 1e-5

# ------------------------------------------------------------------------ page


@pytest.fixture(scope="module")
def image_page(browser, tmp_path_factory):
    root = tmp_path_factory.mktemp("image-site")
    (root / "assets").mkdir()
    shutil.copy(REPO / "tests" / "site" / "test-image.html", root / "test-image.html")
    subprocess.run(
        [str(REPO / "web" / "node_modules" / ".bin" / "esbuild"), "tests/web/test_image_entry.ts", "--bundle",
         "--format=esm", "--target=es2022", f"--outfile={root / 'assets' / 'test-image.js'}", "--log-level=warning"],
        cwd=REPO, check=True,
    )
    with LiveServer(root) as server:
        context = browser.new_context()
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{server.url}/test-image.html")
        page.wait_for_function("window.webkilnImageTest !== undefined", timeout=10_000)
        yield page
        assert not errors, errors
        context.close()


@pytest.fixture(scope="module")
def cases(image_page) -> dict[str, tuple[dict, bool]]:
    turbo = image_page.evaluate("window.webkilnImageTest.sdTurboSchedulerConfig()")
    return {name: (turbo if config is None else config, exact) for name, (config, exact) in CASES.items()}


def from_bits(bits) -> np.ndarray:
    return np.asarray(bits, dtype=np.uint32).view(np.float32)


def ulp_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How many float32 steps apart (both non-negative here)."""
    assert np.all(a >= 0) and np.all(b >= 0)
    return np.abs(a.view(np.int32).astype(np.int64) - b.view(np.int32).astype(np.int64))


def diffusers_scheduler(config: dict):
    return CLASSES[config["_class_name"]].from_config(config)


# --------------------------------------------------------------- noise generator

NOISE_JS = """([seed, counts]) => {
  const T = window.webkilnImageTest;
  const noise = new T.GaussianNoise(BigInt(seed));
  return counts.map((n) => T.bits(noise.take(n)));
}"""


@pytest.mark.parametrize("seed", [0, 1, 1234, 2**32 + 7, 2**64 - 1])
def test_noise_bit_identical(image_page, seed):
    counts = [1, 2, 3, 1000, 5, 4096]
    chunks = image_page.evaluate(NOISE_JS, [str(seed), counts])
    noise = GaussianNoise(seed)
    for n, bits in zip(counts, chunks):
        expected = noise.normal(n)
        assert np.array_equal(np.asarray(bits, dtype=np.uint32), expected.view(np.uint32)), (seed, n)
    # the stream does not depend on how it is chunked
    whole = GaussianNoise(seed).normal(sum(counts))
    assert np.array_equal(np.concatenate([from_bits(b) for b in chunks]), whole)


def test_noise_looks_gaussian():
    values = GaussianNoise(99).normal(200_000).astype(np.float64)
    assert abs(values.mean()) < 0.01
    assert abs(values.std() - 1) < 0.01
    assert abs(np.mean(values**4) - 3) < 0.1  # kurtosis of a normal
    assert abs(np.mean(values > 1.959964) - 0.025) < 0.002


# ------------------------------------------------------------------- schedules

SCHEDULE_JS = """(jobs) => {
  const T = window.webkilnImageTest;
  return jobs.map(([config, steps]) => {
    const s = T.createScheduler(config);
    s.setTimesteps(steps);
    return { timesteps: Array.from(s.timesteps), sigmas: T.bits(s.sigmas), init: s.initNoiseSigma };
  });
}"""


def test_schedules_match_diffusers(image_page, cases):
    jobs = [(name, steps) for name in cases for steps in STEPS]
    results = image_page.evaluate(SCHEDULE_JS, [[cases[name][0], steps] for name, steps in jobs])
    worst = worst_exact = ulp_count = sigma_count = 0
    for (name, steps), got in zip(jobs, results):
        config, exact = cases[name]
        sched = diffusers_scheduler(config)
        sched.set_timesteps(steps)
        want_t = sched.timesteps.numpy().astype(np.float64)
        want_s = sched.sigmas.numpy().astype(np.float32)
        want_init = float(sched.init_noise_sigma)
        got_t = np.asarray(got["timesteps"], dtype=np.float64)
        got_s = from_bits(got["sigmas"])
        where = f"{name} steps={steps}"
        assert got_t.shape == want_t.shape, where
        assert got_s.shape == want_s.shape, where
        ulps = ulp_distance(got_s, want_s)
        if exact:
            assert np.array_equal(got_t, want_t), (where, got_t, want_t)
            # torch's float32 sqrt (MKL) is not always correctly rounded; Math.sqrt is
            assert ulps.max() <= 1, (where, got_s, want_s)
            assert abs(got["init"] - want_init) <= np.spacing(np.float32(want_init)), where
            worst_exact = max(worst_exact, int(ulps.max()))
        else:
            np.testing.assert_allclose(got_t, want_t, rtol=1e-6, atol=1e-4, err_msg=where)
            np.testing.assert_allclose(got_s, want_s, rtol=1e-6, err_msg=where)
            assert got["init"] == pytest.approx(want_init, rel=1e-6), where
            worst = max(worst, int(ulps.max()))
        ulp_count += int((ulps > 0).sum())
        sigma_count += ulps.size
    print(f"\nschedules: {len(jobs)} (config, steps) pairs, timesteps exact; sigmas differing: "
          f"{ulp_count}/{sigma_count}, worst {worst_exact} ulp (exact configs), {worst} ulp (pow/log/cos configs)")


# ----------------------------------------------------------------- full loops

LOOP_JS = """([config, steps, seed, shape, guidance]) => {
  const T = window.webkilnImageTest;
  const s = T.createScheduler(config);
  s.setTimesteps(steps);
  const noise = new T.GaussianNoise(seed);
  const size = shape.reduce((a, b) => a * b, 1);
  let x = T.initialLatents(noise, size, s.initNoiseSigma);
  if (s.predictedOriginal !== null) throw new Error("predictedOriginal before the first step");
  const predicted = [];
  const c = Math.fround(0.1);
  for (let i = 0; i < s.timesteps.length; i++) {
    const t = s.timesteps[i];
    const input = s.scaleModelInput(x, i);
    const su = Math.fround(Math.sin(t / 100));
    const sc = Math.fround(Math.cos(t / 100));
    const uncond = input.map((v) => Math.fround(c * v) + su);
    const cond = input.map((v) => Math.fround(c * v) + sc);
    const eps = T.classifierFreeGuidance(uncond, cond, guidance);
    x = s.step(eps, i, x, noise);
    predicted.push(T.bits(s.predictedOriginal));
  }
  return {x: T.bits(x), predicted};
}"""


def fake_model(x: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The same fake model as LOOP_JS: (uncond, cond) = 0.1 x + (sin, cos)(t / 100)."""
    return 0.1 * x + math.sin(t / 100), 0.1 * x + math.cos(t / 100)


def diffusers_loop(config: dict, steps: int, monkeypatch) -> tuple[np.ndarray, list[np.ndarray]]:
    """-> (final sample, each step's predicted clean sample: pred_original_sample for the
    Euler samplers, the converted model output (data prediction) for DPM-Solver++)."""
    noise = GaussianNoise(SEED)
    monkeypatch.setattr(
        scheduling_euler_ancestral_discrete, "randn_tensor",
        lambda shape, **kwargs: torch.from_numpy(noise.tensor(tuple(shape))),
    )
    sched = diffusers_scheduler(config)
    sched.set_timesteps(steps)
    x = torch.from_numpy(noise.tensor(SHAPE)) * sched.init_noise_sigma  # as the pipelines do
    predicted = []
    for t in sched.timesteps:
        model_input = sched.scale_model_input(x, t)
        uncond, cond = fake_model(model_input, float(t))
        eps = uncond + GUIDANCE * (cond - uncond)
        out = sched.step(eps, t, x)
        x = out.prev_sample
        x0 = getattr(out, "pred_original_sample", None)
        predicted.append((sched.model_outputs[-1] if x0 is None else x0).numpy().reshape(-1))
    return x.numpy().reshape(-1), predicted


@pytest.mark.parametrize("name", list(CASES))
def test_denoising_loop_matches_diffusers(image_page, cases, name, monkeypatch):
    config, _ = cases[name]
    report = []
    for steps in STEPS:
        got = image_page.evaluate(LOOP_JS, [config, steps, SEED, list(SHAPE), GUIDANCE])
        want, want_predicted = diffusers_loop(config, steps, monkeypatch)
        assert np.all(np.isfinite(want)), (name, steps)
        err = float(np.max(np.abs(from_bits(got["x"]).astype(np.float64) - want)) / np.max(np.abs(want)))
        report.append(f"{steps}:{err:.1e}")
        assert err <= LOOP_RTOL, (name, steps, err)
        # What previews decode: the scheduler's predicted clean sample after each step.
        assert len(got["predicted"]) == len(want_predicted), (name, steps)
        for i, (bits, x0) in enumerate(zip(got["predicted"], want_predicted)):
            x0_err = float(np.max(np.abs(from_bits(bits).astype(np.float64) - x0)) / np.max(np.abs(x0)))
            assert x0_err <= LOOP_RTOL, (name, steps, i, x0_err)
    print(f"\n{name}: max |ts - diffusers| / max |diffusers| by steps: {' '.join(report)}")


def test_guidance_helper_matches_torch(image_page):
    rng = np.random.default_rng(5)
    uncond = rng.standard_normal(512).astype(np.float32)
    cond = rng.standard_normal(512).astype(np.float32)
    got = from_bits(image_page.evaluate(
        """([u, c, g]) => { const T = window.webkilnImageTest;
             return T.bits(T.guidanceFromBatch(Float32Array.from(u.concat(c)), g)); }""",
        [uncond.tolist(), cond.tolist(), 7.5]))
    u, c = torch.from_numpy(uncond), torch.from_numpy(cond)
    want = (u + 7.5 * (c - u)).numpy()
    assert np.array_equal(got, want)


# ------------------------------------------------------------------ bad configs

ERROR_JS = """(config) => {
  try { window.webkilnImageTest.createScheduler(config); return null; }
  catch (e) { return { name: e.name, message: e.message, field: e.field ?? null }; }
}"""


@pytest.mark.parametrize("config, field", [
    ({"_class_name": "EulerDiscreteScheduler", "beta_schedule": "cosine"}, "beta_schedule"),
    ({"_class_name": "EulerAncestralDiscreteScheduler", "beta_schedule": "sigmoid"}, "beta_schedule"),
    ({"_class_name": "DPMSolverMultistepScheduler", "beta_schedule": 3}, "beta_schedule"),
    ({"_class_name": "EulerDiscreteScheduler", "prediction_type": "x0"}, "prediction_type"),
    ({"_class_name": "EulerAncestralDiscreteScheduler", "prediction_type": "sample"}, "prediction_type"),
    ({"_class_name": "DPMSolverMultistepScheduler", "prediction_type": "flow_prediction"}, "prediction_type"),
    ({"_class_name": "EulerDiscreteScheduler", "timestep_spacing": "uniform"}, "timestep_spacing"),
    ({"_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "sde-dpmsolver++"}, "algorithm_type"),
    ({"_class_name": "DPMSolverMultistepScheduler", "solver_order": 3}, "solver_order"),
    ({"_class_name": "DPMSolverMultistepScheduler", "thresholding": True}, "thresholding"),
    ({"_class_name": "EulerDiscreteScheduler", "final_sigmas_type": "one"}, "final_sigmas_type"),
    ({"_class_name": "EulerDiscreteScheduler", "rescale_betas_zero_snr": True}, "rescale_betas_zero_snr"),
    ({"_class_name": "PNDMScheduler"}, "_class_name"),
])
def test_bad_config_names_the_field(image_page, config, field):
    error = image_page.evaluate(ERROR_JS, config)
    assert error is not None, config
    assert error["name"] == "SchedulerConfigError"
    assert error["field"] == field
    assert field in error["message"]


def test_steps_and_noise_are_checked(image_page):
    result = image_page.evaluate("""() => {
      const T = window.webkilnImageTest;
      const out = {};
      const s = T.createScheduler(T.sdTurboSchedulerConfig());
      try { s.setTimesteps(0); } catch (e) { out.zero = e.message; }
      s.setTimesteps(1);
      try { s.step(new Float32Array(4), 0, new Float32Array(4)); } catch (e) { out.noNoise = e.message; }
      try { s.step(new Float32Array(4), 1, new Float32Array(4), new T.GaussianNoise(1)); } catch (e) { out.index = e.message; }
      return out;
    }""")
    assert "inference steps" in result["zero"]
    assert "noise source" in result["noNoise"]
    assert "step index" in result["index"]
