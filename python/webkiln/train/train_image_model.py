"""Train the offline default image model: a tiny Stable-Diffusion-architecture text-to-image
model on synthetic captioned shapes (see `shapes.py`), saved in the diffusers layout.

    python -m webkiln.train.train_image_model --out DIR [--minutes N] [--seed S]

Same classes as Stable Diffusion, at small sizes: a CLIP text encoder (CLIPTextModel) with a
CLIP BPE tokenizer built here from the caption words, an AutoencoderKL (32x32 RGB <-> 4x8x8
latent), a UNet2DConditionModel on the latents with cross-attention to the text, trained with
the v-prediction DDPM loss (as SD 2.x; --prediction epsilon for SD 1.x's) and 10% empty captions
(classifier-free guidance). Runs on CPU:

1. VAE: reconstruction MSE + a small KL term on generated shape images.
2. The latent scale (1 / std of the latents) goes in the VAE config as `scaling_factor`.
3. A pool of images is encoded once; the UNet and the text encoder then train jointly on
   latents drawn from those posteriors; an EMA of both is what gets saved.
4. StableDiffusionPipeline(...).save_pretrained(DIR) with fp16 safetensors weights.

Everything is seeded (torch, numpy); a checkpoint (DIR/checkpoint.pt) is written every few
minutes and picked up again by rerunning the same command; it is deleted at the end.
"""

from __future__ import annotations

import os

# Before torch loads OpenMP: busy-waiting threads are ruinous on a shared, niced CPU
# (measured 20x slower per step than passive waiting on a loaded 2-core machine).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import copy
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
from tokenizers import Tokenizer, pre_tokenizers, trainers
from tokenizers.models import BPE
from tqdm import tqdm
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from . import shapes

TEXT_MAX_LEN = 16
NUM_TRAIN_TIMESTEPS = 1000
SCHEDULE = dict(num_train_timesteps=NUM_TRAIN_TIMESTEPS, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)


# ------------------------------------------------------------------------------ tokenizer


def build_tokenizer(folder: Path):
    """A CLIP BPE tokenizer (vocab.json + merges.txt, `</w>` word ends, byte-level alphabet)
    in which every caption word is one token; other text falls back to byte-level pieces."""
    specials = ["<|startoftext|>", "<|endoftext|>"]
    bpe = Tokenizer(BPE(end_of_word_suffix="</w>", unk_token="<|endoftext|>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=10_000, special_tokens=specials, end_of_word_suffix="</w>",
        initial_alphabet=alphabet, show_progress=False,
    )
    bpe.train_from_iterator(shapes.WORDS, trainer)  # one word per item: no cross-word merges
    model = json.loads(bpe.to_str())["model"]
    vocab, merges = dict(model["vocab"]), [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    for ch in sorted(alphabet):  # every byte, inside and at the end of a word
        for tok in (ch, ch + "</w>"):
            vocab.setdefault(tok, len(vocab))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=0))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    tok = CLIPTokenizer.from_pretrained(str(folder), model_max_length=TEXT_MAX_LEN)
    for word in shapes.WORDS:
        ids = tok(word, add_special_tokens=False).input_ids
        assert len(ids) == 1, (word, ids)
    return tok


# --------------------------------------------------------------------------------- models


def build_models(tokenizer, unet_channels=(32, 64, 96)):
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=256, num_hidden_layers=3,
        num_attention_heads=4, max_position_embeddings=TEXT_MAX_LEN, projection_dim=64,
        hidden_act="quick_gelu", bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=shapes.IMAGE_SIZE,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 32), layers_per_block=1, norm_num_groups=8,
    )
    # Three levels (8x8, 4x4, 2x2 latents): at 2x2 every cell is one quadrant of the image and
    # knows which from its zero padding, which is what "at the top left" needs; cross-attention
    # at every level. (Two levels learned colours but placed objects at chance.)
    unet = UNet2DConditionModel(
        sample_size=shapes.IMAGE_SIZE // 4, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * len(unet_channels),
        up_block_types=("CrossAttnUpBlock2D",) * len(unet_channels),
        block_out_channels=tuple(unet_channels), layers_per_block=1, cross_attention_dim=64,
        attention_head_dim=8, norm_num_groups=16,
    )
    return text_encoder, vae, unet


def n_params(m) -> int:
    return sum(p.numel() for p in m.parameters())


# ------------------------------------------------------------------------------- training


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def encode_text(tokenizer, text_encoder, captions):
    ids = tokenizer(captions, padding="max_length", max_length=TEXT_MAX_LEN, truncation=True, return_tensors="pt").input_ids
    return text_encoder(ids)[0]


def lr_at(step: int, total: int, base: float, warmup: int = 100, time_frac: float = 0.0) -> float:
    """Linear warmup, then cosine to 10% of `base`; progress is the step fraction or the
    fraction of the phase's time budget used, whichever is further along (the time cap
    then ends the phase with the learning rate annealed)."""
    if step < warmup:
        return base * (step + 1) / warmup
    t = max((step - warmup) / max(1, total - warmup), time_frac)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


class Checkpointer:
    def __init__(self, path: Path, every_s: float):
        self.path, self.every_s, self.last = path, every_s, time.time()

    def maybe(self, state_fn, force=False):
        if force or time.time() - self.last > self.every_s:
            tmp = self.path.with_suffix(".tmp")
            torch.save(state_fn(), tmp)
            os.replace(tmp, self.path)
            self.last = time.time()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vae-fraction", type=float, default=0.22, help="share of --minutes for the VAE phase")
    ap.add_argument("--minutes", type=float, default=30.0, help="wall-clock cap; phases stop early when it runs out")
    ap.add_argument("--vae-steps", type=int, default=3000)
    ap.add_argument("--unet-steps", type=int, default=20000)
    ap.add_argument("--vae-batch", type=int, default=32)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--pool", type=int, default=4096, help="images encoded once for the UNet phase")
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--vae-lr", type=float, default=2e-3)
    ap.add_argument("--kl-weight", type=float, default=1e-5)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--unet-channels", default="32,64,96",
                    help="UNet block_out_channels, one CrossAttn block per entry (each halves the latent side)")
    ap.add_argument("--prediction", choices=("v_prediction", "epsilon"), default="v_prediction",
                    help="what the UNet predicts; v weights the high-noise steps, where the layout is decided, "
                         "far more than epsilon does")
    ap.add_argument("--vae-from", type=Path, default=None,
                    help="take the VAE (and its scaling_factor) from a pipeline this script saved and skip the "
                         "VAE phase; the UNet and the text encoder start fresh")
    ap.add_argument("--init", type=Path, default=None,
                    help="continue from a pipeline this script saved: its VAE is kept (no VAE phase), "
                         "its UNet and text encoder train on")
    ap.add_argument("--checkpoint-every", type=float, default=300.0, help="seconds")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    t_start = time.time()
    deadline = t_start + args.minutes * 60
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.pt"

    tok_dir = Path(tempfile.mkdtemp(prefix="t2i-tokenizer-"))
    tokenizer = build_tokenizer(tok_dir)
    text_encoder, vae, unet = build_models(tokenizer, tuple(int(c) for c in args.unet_channels.split(",")))
    print(f"params: text_encoder {n_params(text_encoder):,}  vae {n_params(vae):,}  unet {n_params(unet):,}", flush=True)

    state = {"phase": "vae", "step": 0, "log": {"vae": [], "unet": []}, "elapsed_before": 0.0}
    init_log = None
    vae_log = None
    if args.vae_from is not None:
        if args.init is not None:
            ap.error("--vae-from and --init exclude each other (--init keeps the VAE already)")
        vae = AutoencoderKL.from_pretrained(args.vae_from / "vae", torch_dtype=torch.float32)
        vae_log = json.loads((args.vae_from / "training_log.json").read_text())
        state.update(phase="unet", vae_steps_done=vae_log["vae_steps"])
        state["log"]["vae"] = vae_log["loss_log"]["vae"]
        print(f"VAE from {args.vae_from} ({vae_log['vae_steps']} VAE steps there)", flush=True)
    if args.init is not None:
        vae = AutoencoderKL.from_pretrained(args.init / "vae", torch_dtype=torch.float32)
        unet.load_state_dict(UNet2DConditionModel.from_pretrained(args.init / "unet", torch_dtype=torch.float32).state_dict())
        text_encoder.load_state_dict(CLIPTextModel.from_pretrained(args.init / "text_encoder", torch_dtype=torch.float32).state_dict())
        init_log = json.loads((args.init / "training_log.json").read_text())
        state.update(phase="unet", vae_steps_done=init_log["vae_steps"])
        state["log"]["vae"] = init_log["loss_log"]["vae"]
        print(f"initialised from {args.init} ({init_log['unet_steps']} UNet steps there)", flush=True)
    vae_opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    ddpm = DDPMScheduler(**SCHEDULE, prediction_type=args.prediction)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-2)
    ema_unet, ema_text = copy.deepcopy(unet).requires_grad_(False), copy.deepcopy(text_encoder).requires_grad_(False)

    def snapshot():
        state["elapsed_before"] = prior_elapsed + (time.time() - t_start)
        return {
            "state": state, "args": vars(args), "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
            "vae": vae.state_dict(), "vae_opt": vae_opt.state_dict(), "unet": unet.state_dict(),
            "text_encoder": text_encoder.state_dict(), "opt": opt.state_dict(),
            "ema_unet": ema_unet.state_dict(), "ema_text": ema_text.state_dict(),
        }

    if ckpt_path.exists():
        ck = torch.load(ckpt_path, weights_only=False)
        state = ck["state"]
        rng.bit_generator.state = ck["rng"]
        torch.set_rng_state(ck["torch_rng"])
        for name, obj in [("vae", vae), ("vae_opt", vae_opt), ("unet", unet), ("text_encoder", text_encoder),
                          ("opt", opt), ("ema_unet", ema_unet), ("ema_text", ema_text)]:
            obj.load_state_dict(ck[name])
        print(f"resumed from {ckpt_path}: phase {state['phase']} step {state['step']}", flush=True)
        # the cap covers this run; the time spent before is added to the report
    prior_elapsed = state.get("elapsed_before", 0.0)
    deadline -= prior_elapsed  # the cap covers all runs of this training together
    checkpointer = Checkpointer(ckpt_path, args.checkpoint_every)

    # -------------------------------------------------------------- phase 1: the VAE
    if state["phase"] == "vae":
        vae_budget = args.minutes * 60 * args.vae_fraction - prior_elapsed
        vae_deadline = t_start + vae_budget
        vae.train()
        bar = tqdm(range(state["step"], args.vae_steps), desc="vae", initial=state["step"], total=args.vae_steps, mininterval=5)
        for step in bar:
            for g in vae_opt.param_groups:
                g["lr"] = lr_at(step, args.vae_steps, args.vae_lr, warmup=50,
                                time_frac=1 - (vae_deadline - time.time()) / max(1.0, vae_budget))
            x = images_to_tensor(shapes.sample_batch(rng, args.vae_batch)[0])
            post = vae.encode(x).latent_dist
            rec = vae.decode(post.sample()).sample
            mse = F.mse_loss(rec, x)
            kl = post.kl().mean()
            loss = mse + args.kl_weight * kl
            vae_opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
            vae_opt.step()
            state["step"] = step + 1
            if step % 25 == 0:
                state["log"]["vae"].append((step, float(mse), float(kl)))
                bar.set_postfix(mse=f"{float(mse):.4f}", kl=f"{float(kl):.0f}")
            checkpointer.maybe(snapshot)
            if time.time() > vae_deadline:
                print(f"vae: time cap reached at step {step + 1}", flush=True)
                break
        state["vae_steps_done"] = state["step"]
        state["phase"], state["step"] = "unet", 0
        checkpointer.maybe(snapshot, force=True)

    vae.eval().requires_grad_(False)

    # --------------------------------------- the latent pool and the latent scale
    pool_rng = np.random.default_rng(args.seed + 1)
    means, stds, captions = [], [], []
    with torch.no_grad():
        for i in tqdm(range(0, args.pool, 256), desc="encode pool", mininterval=5):
            imgs, caps = shapes.sample_batch(pool_rng, min(256, args.pool - i))
            d = vae.encode(images_to_tensor(imgs)).latent_dist
            means.append(d.mean)
            stds.append(d.std)
            captions += caps
    means, stds = torch.cat(means), torch.cat(stds)
    scaling = float(1.0 / (means + stds * torch.randn_like(stds)).std())
    if init_log is not None or vae_log is not None:
        scaling = float(vae.config.scaling_factor)  # what the UNet (or the first run) was trained with
    vae.register_to_config(scaling_factor=scaling)
    with torch.no_grad():  # reconstruction quality of the VAE, judged like generated images
        recon = vae.decode(means[:200]).sample.clamp(-1, 1).add(1).mul(127.5).round().byte().permute(0, 2, 3, 1).numpy()
    recon_ok = np.mean([all(v for k, v in shapes.judge(r, c).items() if k.endswith("_ok"))
                        for r, c in zip(recon, captions[:200])])
    state["vae_recon_judge_rate"] = float(recon_ok)
    print(f"latent scaling_factor {scaling:.4f}; VAE reconstructions pass the judge: {recon_ok:.1%}", flush=True)

    # ------------------------------------------- phase 2: UNet + text encoder (DDPM)
    unet.train()
    text_encoder.train()
    unet_t0, unet_budget = time.time(), max(1.0, deadline - time.time())
    gen = torch.Generator().manual_seed(args.seed + 2 + state["step"])
    bar = tqdm(range(state["step"], args.unet_steps), desc="unet", initial=state["step"], total=args.unet_steps, mininterval=5)
    run_loss = None
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.unet_steps, args.lr, time_frac=(time.time() - unet_t0) / unet_budget)
        idx = torch.randint(0, len(captions), (args.batch,), generator=gen)
        z = (means[idx] + stds[idx] * torch.randn(means[idx].shape, generator=gen)) * scaling
        caps = [captions[i] if torch.rand((), generator=gen) >= 0.1 else "" for i in idx.tolist()]
        noise = torch.randn(z.shape, generator=gen)
        t = torch.randint(0, NUM_TRAIN_TIMESTEPS, (args.batch,), generator=gen)
        noisy = ddpm.add_noise(z, noise, t)
        pred = unet(noisy, t, encoder_hidden_states=encode_text(tokenizer, text_encoder, caps)).sample
        target = noise if args.prediction == "epsilon" else ddpm.get_velocity(z, noise, t)
        loss = F.mse_loss(pred, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for ema_m, m in ((ema_unet, unet), (ema_text, text_encoder)):
                for pe, p in zip(ema_m.parameters(), m.parameters()):
                    pe.lerp_(p, 1 - decay)
        state["step"] = step + 1
        run_loss = float(loss) if run_loss is None else 0.98 * run_loss + 0.02 * float(loss)
        if step % 25 == 0:
            state["log"]["unet"].append((step, run_loss))
            bar.set_postfix(loss=f"{run_loss:.4f}")
        checkpointer.maybe(snapshot)
        if time.time() > deadline:
            print(f"unet: time cap reached at step {step + 1}", flush=True)
            break
    state["unet_steps_done"] = state["step"]

    # ------------------------------------------------------------------- save
    scheduler = EulerDiscreteScheduler(**SCHEDULE, timestep_spacing="trailing", prediction_type=args.prediction)
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=ema_text, tokenizer=tokenizer, unet=ema_unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.to(torch.float16)
    pipe.save_pretrained(str(out), safe_serialization=True)
    for name in ("vocab.json", "merges.txt"):  # the slow-tokenizer files too, for other loaders
        shutil.copyfile(tok_dir / name, out / "tokenizer" / name)
    shutil.rmtree(tok_dir, ignore_errors=True)
    elapsed = prior_elapsed + (time.time() - t_start)
    summary = {
        "command": "python -m webkiln.train.train_image_model " + " ".join(sys.argv[1:] if argv is None else argv),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "train_seconds": round(elapsed + (init_log["train_seconds"] if init_log else 0.0), 1),
        "init": ({"from": str(args.init), "command": init_log["command"], "train_seconds": init_log["train_seconds"],
                  "unet_steps": init_log["unet_steps"], "unet_final_loss": init_log["unet_final_loss"]}
                 if init_log else None),
        "vae_from": ({"from": str(args.vae_from), "command": vae_log["command"], "vae_steps": vae_log["vae_steps"]}
                     if vae_log else None),
        "vae_steps": state.get("vae_steps_done"),
        "unet_steps": state.get("unet_steps_done") + (init_log["unet_steps"] if init_log else 0),
        "vae_final_mse": state["log"]["vae"][-1][1] if state["log"]["vae"] else None,
        "unet_final_loss": run_loss,
        "scaling_factor": scaling,
        "vae_recon_judge_rate": state["vae_recon_judge_rate"],
        "params": {"text_encoder": n_params(text_encoder), "vae": n_params(vae), "unet": n_params(unet)},
        "torch": torch.__version__,
        "loss_log": state["log"],
    }
    (out / "training_log.json").write_text(json.dumps(summary, indent=1))
    ckpt_path.unlink(missing_ok=True)
    print(f"saved {out} after {elapsed / 60:.1f} min; unet loss {run_loss:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
