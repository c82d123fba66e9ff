"""Quality report of a shapes text-to-image model (see `train_image_model.py`).

    python -m webkiln.train.evaluate_image_model DIR [--prompts 20] [--steps 25] [--guidance 5]

Loads DIR with diffusers' StableDiffusionPipeline on CPU, samples the fixed prompt list
(`shapes.eval_prompts`) with fixed seeds, judges every image with `shapes.judge` (the
object's dominant colour and its position against the prompt) and prints the colour,
position and both-match rates; writes a contact sheet PNG (default DIR/../contact_sheet.png
is not assumed: --sheet PATH, default /tmp/t2i-train/contact_sheet.png) and, with --json,
the numbers.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import StableDiffusionPipeline
from PIL import Image

from . import shapes


def load_pipeline(folder, threads: int = 2):
    torch.set_num_threads(threads)
    pipe = StableDiffusionPipeline.from_pretrained(str(folder), torch_dtype=torch.float32, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe, prompts, *, steps: int = 25, guidance: float = 5.0, seed: int = 0) -> list[np.ndarray]:
    """One image per prompt (uint8 HxWx3), prompt i seeded with seed + i, in one batch."""
    gens = [torch.Generator().manual_seed(seed + i) for i in range(len(prompts))]
    out = pipe(list(prompts), num_inference_steps=steps, guidance_scale=guidance, generator=gens, output_type="np")
    return [np.clip(im * 255.0 + 0.5, 0, 255).astype(np.uint8) for im in out.images]


def score(images, prompts) -> dict:
    verdicts = [shapes.judge(im, p) for im, p in zip(images, prompts)]
    n = len(verdicts)
    rate = lambda f: sum(1 for v in verdicts if f(v)) / n  # noqa: E731
    return {
        "n": n,
        "colour_rate": rate(lambda v: v["colour_ok"]),
        "position_rate": rate(lambda v: v["position_ok"]),
        "both_rate": rate(lambda v: v["colour_ok"] and v["position_ok"]),
        "background_rate": rate(lambda v: v["background_ok"]),
        "verdicts": [
            {"prompt": p, "colour_ok": v["colour_ok"], "position_ok": v["position_ok"],
             "background_ok": v["background_ok"], "seen_colour": v["seen"]["colour"],
             "seen_position": v["seen"]["position"], "seen_background": v["seen"]["background"]}
            for p, v in zip(prompts, verdicts)
        ],
    }


def contact_sheet(images, verdicts, path, scale: int = 4, cols: int = 5) -> None:
    """Samples enlarged `scale`x, a green/red bar under each: colour ok, position ok."""
    h, w, _ = images[0].shape
    cell_h, cell_w = h * scale + 6, w * scale + 2
    rows = (len(images) + cols - 1) // cols
    sheet = np.full((rows * cell_h, cols * cell_w, 3), 40, np.uint8)
    for i, (im, v) in enumerate(zip(images, verdicts)):
        r, c = divmod(i, cols)
        y, x = r * cell_h, c * cell_w
        sheet[y:y + h * scale, x:x + w * scale] = np.kron(im, np.ones((scale, scale, 1), np.uint8))
        for k, ok in enumerate((v["colour_ok"], v["position_ok"])):
            x0 = x + k * (w * scale // 2)
            sheet[y + h * scale + 1:y + h * scale + 5, x0:x0 + w * scale // 2 - 1] = (40, 200, 60) if ok else (220, 40, 40)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("--prompts", type=int, default=20)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--guidance", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sheet", type=Path, default=Path("/tmp/t2i-train/contact_sheet.png"))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    pipe = load_pipeline(args.model, args.threads)
    prompts = shapes.eval_prompts(args.prompts)
    t0 = time.time()
    images = generate(pipe, prompts, steps=args.steps, guidance=args.guidance, seed=args.seed)
    res = score(images, prompts)
    res.update(steps=args.steps, guidance=args.guidance, seed=args.seed, seconds=round(time.time() - t0, 1))
    for v in res["verdicts"]:
        marks = ("colour " + ("ok" if v["colour_ok"] else f"NO ({v['seen_colour']})"),
                 "position " + ("ok" if v["position_ok"] else f"NO ({v['seen_position']})"))
        print(f"  {v['prompt']:<60} {marks[0]:<18} {marks[1]}")
    print(f"colour match {res['colour_rate']:.0%}, position match {res['position_rate']:.0%}, "
          f"both {res['both_rate']:.0%} (background {res['background_rate']:.0%}) over {res['n']} prompts, "
          f"{args.steps} Euler steps, guidance {args.guidance:g}, seed {args.seed}; {res['seconds']} s")
    contact_sheet(images, res["verdicts"], args.sheet)
    print(f"contact sheet: {args.sheet}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
