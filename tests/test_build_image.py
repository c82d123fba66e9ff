"""`build_web --model <diffusers folder>`: image models in the site/models format.

The tiny fixed-seed random pipeline of test_diffusion_native.py is built with build_web
(fast link) into a temporary site: manifest fields, files and hashes, shards that
reassemble into the loader's parameters, index.json entry, per-binding maximum within
the declared limit, compile-cache reuse on rebuild, and bad folders failing with one
paragraph and no output. The merged library's three entry points (with the CLIP token
table split into row blocks) are checked natively against diffusers.

An SD 1.5-shaped pipeline (public configs; weight files are sparse safetensors whose
headers come from diffusers / transformers models made on the meta device, so 4 GB
take no disk and are never read) is checked with --plan-only: everything but compiling
and writing weights.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from test_diffusion_native import SD15_UNET, SD21_UNET, SD21_UNET_PARAMS, make_tiny_pipeline, write_clip_tokenizer
from webkiln.cli import build_web_main
from webkiln.package.shards import MAX_SHARD_BYTES
from webkiln.sources import load_source

MIB = 2**20
REUSED = "reused from the compile cache"

SD15_VAE = {"_class_name": "AutoencoderKL", "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
            "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
            "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2,
            "norm_num_groups": 32, "sample_size": 512, "scaling_factor": 0.18215}
SD15_TEXT = {"architectures": ["CLIPTextModel"], "model_type": "clip_text_model", "hidden_act": "quick_gelu",
             "hidden_size": 768, "intermediate_size": 3072, "layer_norm_eps": 1e-05, "max_position_embeddings": 77,
             "num_attention_heads": 12, "num_hidden_layers": 12, "vocab_size": 49408, "bos_token_id": 0,
             "eos_token_id": 2, "pad_token_id": 1, "projection_dim": 768}
SD15_SCHEDULER = {"_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
                  "beta_start": 0.00085, "num_train_timesteps": 1000, "set_alpha_to_one": False,
                  "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None, "clip_sample": False}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def private_cache(tmp_path_factory):
    """WEBKILN_CACHE_DIR in a temporary folder with a copy of the built web runtime."""
    from webkiln.toolchain import runtime

    real = runtime.ensure_runtime()
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WEBKILN_CACHE_DIR", str(cache))
        entry = runtime.runtime_dir()
        entry.parent.mkdir(parents=True)
        shutil.copytree(real.directory, entry)
        yield cache


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_pipeline(tmp_path_factory.mktemp("diffusion"))


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    code = build_web_main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip()


@pytest.fixture(scope="module")
def built(private_cache, tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("site") / "models"
    code = build_web_main(["--model", str(tiny[1]), "--quantization", "f32", "--fast-link", "--id", "tiny-sd",
                           "--out", str(out)])
    assert code == 0
    return out, out / "tiny-sd"


def test_manifest_files_and_index(built, tiny):
    out, path = built
    m = json.loads((path / "manifest.json").read_text())
    loaded = load_source(tiny[1])
    assert m["task"] == "image" and m["architecture"] == "stable-diffusion" and m["quantization"] == "f32"
    assert m["image"] == {"height": 64, "width": 64, "latent_channels": 4, "latent_height": 32, "latent_width": 32,
                          "vae_scale_factor": 2}  # sample_size 32 x the 2-block VAE's 2x
    assert {c: v["entry"] for c, v in m["components"].items()} == {
        "text_encoder": "encode_text", "unet": "unet", "vae": "vae_decode"}
    assert m["components"]["vae"]["scaling_factor"] == pytest.approx(0.18215)
    assert m["components"]["unet"]["batch"] == 2 and m["generation"]["guidance_scale"] > 0
    assert m["components"]["unet"]["inputs"]["text_embeds"]["shape"] == [2, 77, 32]
    assert m["tokenizer"]["max_length"] == 77 and m["tokenizer"]["eos_token_id"] == loaded.tokenizer.eos_token_id
    assert m["scheduler"]["class"] == "PNDMScheduler" and m["scheduler"]["beta_schedule"] == "scaled_linear"
    assert m["scheduler"]["num_train_timesteps"] == 1000 and m["scheduler"]["prediction_type"] == "epsilon"
    assert list(m["backends"]) == ["webgpu-f32", "wasm-cpu"]
    backend = m["backends"]["webgpu-f32"]
    assert backend["wasm"] == "webgpu-f32.wasm" and backend["required_features"] == []
    assert backend["device"] == "webgpu"
    assert (path / "webgpu-f32.wasm").read_bytes()[:4] == b"\0asm"
    # The CPU library: its own .wasm, no WebGPU terms, and webgpu-f32's weight set (one set of shards).
    cpu = m["backends"]["wasm-cpu"]
    assert cpu["wasm"] == "wasm-cpu.wasm" and cpu["device"] == "cpu" and cpu["activation_dtype"] == "float32"
    assert cpu["required_features"] == [] and cpu["required_limits"] == {}
    assert cpu["tensors"] == backend["tensors"] == "float32" and list(m["tensors"]) == ["float32"]
    cpu_wasm = (path / "wasm-cpu.wasm").read_bytes()
    assert cpu_wasm[:4] == b"\0asm" and cpu_wasm != (path / "webgpu-f32.wasm").read_bytes()
    assert (path / "tokenizer.json").read_text() == loaded.tokenizer.tokenizer_json()

    # every file listed with its size and hash; shards content-addressed
    assert sorted([f["path"] for f in m["files"]] + ["manifest.json"]) == sorted(p.name for p in path.iterdir())
    for entry in m["files"]:
        file = path / entry["path"]
        assert file.stat().st_size == entry["size"] and _sha256(file) == entry["sha256"], entry["path"]
    weights = m["tensors"][backend["tensors"]]
    sizes = {f["path"]: f["size"] for f in m["files"]}
    for shard in weights["shards"]:
        assert shard == f"{_sha256(path / shard)}.bin" and sizes[shard] <= MAX_SHARD_BYTES

    # the shards reassemble into exactly the loader's parameters, in each entry point's order
    shards = [(path / s).read_bytes() for s in weights["shards"]]
    by_component: dict[str, list[np.ndarray]] = {}
    for record in weights["records"]:
        data = b"".join(shards[p["shard"]][p["offset"]: p["offset"] + p["nbytes"]] for p in record["pieces"])
        assert len(data) == record["nbytes"]
        by_component.setdefault(record["component"], []).append(
            np.frombuffer(data, record["dtype"]).reshape(record["shape"]))
    for name, component in loaded.components.items():
        for ours, expected in zip(by_component[name], component.params("float32"), strict=True):
            np.testing.assert_array_equal(ours, expected)

    # limits: the declared per-binding maximum covers every weight and every activation
    limit = backend["required_limits"]["maxStorageBufferBindingSize"]
    assert limit <= 128 * MIB and backend["required_limits"]["maxBufferSize"] == limit
    assert max(r["nbytes"] for r in weights["records"]) <= limit
    activations = backend["largest_activations"]
    assert max(a["bytes"] for a in activations.values()) == limit  # the UNet's attention scores here
    assert activations["unet"]["bytes"] == 2 * 8 * 256 * 256 * 4 and "[2, 8, 256, 256]" in activations["unet"]["what"]
    memory = m["memory"]
    assert memory == backend["memory"]  # the WebGPU backend's: the top-level estimate is the GPU's
    assert memory["weights_bytes"] == sum(sizes[s] for s in weights["shards"])
    assert limit <= memory["activations_bytes"]
    assert memory["total_bytes"] == memory["weights_bytes"] + memory["activations_bytes"]
    # The CPU's need is the whole wasm heap: the same weights and activations, the library and
    # the runtime's allowance (what the browser checks against wasm32's 4 GiB).
    from webkiln.package.chat_build import CPU_HEAP_OVERHEAD

    assert cpu["memory"] == {"weights_bytes": memory["weights_bytes"], "activations_bytes": memory["activations_bytes"],
                             "total_bytes": memory["total_bytes"] + len(cpu_wasm) + CPU_HEAP_OVERHEAD}

    index = json.loads((out / "index.json").read_text())
    [entry] = index["models"]
    assert entry["id"] == "tiny-sd" and entry["task"] == "image" and entry["manifest"] == "tiny-sd/manifest.json"
    assert entry["download_bytes"] == sum(sizes.values()) and entry["memory_bytes"] == memory["total_bytes"]
    assert entry["backends"] == {"webgpu-f32": {"device": "webgpu", "required_features": []},
                                 "wasm-cpu": {"device": "cpu", "required_features": []}}


def test_rebuild_reuses_the_compile_cache(built, tiny, capsys):
    out, path = built
    before = {name: (path / name).read_bytes() for name in ("webgpu-f32.wasm", "wasm-cpu.wasm")}
    code, log, err = _cli(capsys, "--model", str(tiny[1]), "--quantization", "f32", "--fast-link", "--id", "tiny-sd",
                          "--out", str(out))
    assert code == 0, err
    assert log.count(REUSED) == 2  # both libraries, each under its own target's key
    assert {name: (path / name).read_bytes() for name in before} == before
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no staging or old folder left


def _hub_repo(tiny, folder: Path) -> Path:
    """The tiny pipeline laid out as a Stable Diffusion repository on the Hub is: besides the
    diffusers folders, a whole-pipeline checkpoint at the top, a .bin and an fp16 variant of the
    UNet, a safety checker and a feature extractor, none of which a build needs (unless
    --variant fp16 asks for the UNet's)."""
    from safetensors.torch import load_file, save_file

    repo = folder / "repo"
    shutil.copytree(tiny[1], repo)
    (repo / "README.md").write_text("# tiny-sd\n")
    (repo / "v1-5-pruned.safetensors").write_bytes(b"not needed" * 100)
    for sub, name in (("safety_checker", "config.json"), ("feature_extractor", "preprocessor_config.json")):
        (repo / sub).mkdir()
        (repo / sub / name).write_text("{}")
    unet = repo / "unet" / "diffusion_pytorch_model.safetensors"
    (repo / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"not needed")
    save_file({k: v.half() for k, v in load_file(unet).items()}, repo / "unet" / "diffusion_pytorch_model.fp16.safetensors")
    return repo


def test_hub_pipeline_downloads_only_what_the_loader_reads(tiny, tmp_path, monkeypatch):
    import huggingface_hub.constants
    from local_hub import LocalHub
    from webkiln.sources import SourceError
    from webkiln.sources.hub import load_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    repo = _hub_repo(tiny, tmp_path)
    with LocalHub({"webkiln-test/tiny-sd-turbo": repo}) as hub:
        pipeline = load_hub("webkiln-test/tiny-sd-turbo", endpoint=hub.endpoint)
        local = load_source(tiny[1])
        loader_reads = sorted(str(p.relative_to(tiny[1])) for p in local.files)
        assert sorted(name for _, name in hub.downloaded) == loader_reads
        # the repository's name, not the snapshot folder's (a commit hash), names the model (and turns on Turbo)
        assert pipeline.origin == "webkiln-test/tiny-sd-turbo" and pipeline.name == "tiny-sd-turbo"
        for name, component in pipeline.components.items():
            for ours, expected in zip(component.params(), local.components[name].params(), strict=True):
                np.testing.assert_array_equal(ours, expected)

        hub.downloaded.clear()
        fp16 = load_hub("webkiln-test/tiny-sd-turbo", endpoint=hub.endpoint, variant="fp16")
        assert hub.downloaded == [("webkiln-test/tiny-sd-turbo", "unet/diffusion_pytorch_model.fp16.safetensors")]
        assert [p.name for p in fp16.unet.weight_files] == ["diffusion_pytorch_model.fp16.safetensors"]

        # a repository without UNet weights fails before any download, naming what is missing
        (repo / "unet" / "diffusion_pytorch_model.safetensors").unlink()
        (repo / "unet" / "diffusion_pytorch_model.bin").unlink()
        (repo / "unet" / "diffusion_pytorch_model.fp16.safetensors").unlink()
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache-2"))
        hub.downloaded.clear()
        with pytest.raises(SourceError) as info:
            load_hub("webkiln-test/tiny-sd-turbo", endpoint=hub.endpoint)
        assert "webkiln-test/tiny-sd-turbo" in str(info.value) and "unet/" in str(info.value)
        assert hub.downloaded == []


def test_build_web_from_a_hub_id(built, tiny, tmp_path, private_cache):
    """The whole command, as a user runs it against a Hub mirror (HF_ENDPOINT): the same
    weights and library as the folder build, Turbo defaults from the repository's name."""
    import os
    import subprocess
    import sys

    from local_hub import LocalHub

    repo = _hub_repo(tiny, tmp_path)
    out = tmp_path / "models"
    with LocalHub({"webkiln-test/tiny-sd-turbo": repo}) as hub:
        env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_HOME": str(tmp_path / "hf"),
               "WEBKILN_CACHE_DIR": str(private_cache)}
        proc = subprocess.run([str(Path(sys.executable).parent / "build_web"), "--model",
                               "webkiln-test/tiny-sd-turbo", "--quantization", "f32", "--fast-link", "--out", str(out)],
                              capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr
    [model] = [p for p in out.iterdir() if p.is_dir()]
    m = json.loads((model / "manifest.json").read_text())
    folder_build = json.loads((built[1] / "manifest.json").read_text())
    assert m["generation"]["guidance_scale"] == 0 and m["components"]["unet"]["batch"] == 1  # Turbo
    assert m["tensors"] == folder_build["tensors"] and (model / "tokenizer.json").read_bytes() == (
        built[1] / "tokenizer.json").read_bytes()


def test_merged_library_with_split_token_table_matches_diffusers(tiny, tmp_path):
    """The one-library export (three entry points, helper kernels renamed per component) with the CLIP
    token embedding split into 3 row blocks, compiled natively, against diffusers / transformers."""
    import tvm
    from tvm import relax
    from webkiln.compile.build import build_module
    from webkiln.package.image.buffers import analyze_buffers
    from webkiln.package.image.plan import BackendPlan
    from webkiln.package.image.shape import image_shape
    from webkiln.package.image.surgery import export_components
    from webkiln.package.image.weights import weight_arrays

    pipe, folder = tiny
    loaded = load_source(folder)
    shape = image_shape(loaded, None, turbo=False)
    row_bytes = 32 * 4
    mod, specs, splits = export_components(loaded, "float32", shape, split_bytes=400 * row_bytes)
    assert [(n, s) for n, (_, s, _) in splits["text_encoder"].items()] == [
        ("embeddings.token_embedding.parts.0.weight", 0), ("embeddings.token_embedding.parts.1.weight", 400),
        ("embeddings.token_embedding.parts.2.weight", 800)]
    plan = BackendPlan("native", "float32", mod, specs, splits, {})
    params: dict[str, list[np.ndarray]] = {}
    for name, array in weight_arrays(loaded, plan):
        params.setdefault(name.split("/")[0], []).append(array)
    assert analyze_buffers(mod, tvm.target.Target("llvm"))["vae"].largest_bytes == 1024 * 1024 * 4
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(build_module(mod, "native-cpu", tmp_path / "m.so"))),
                              tvm.cpu())

    def run(fn, component, *inputs):
        dev = tvm.cpu()
        args = [tvm.runtime.tensor(np.ascontiguousarray(x), dev) for x in inputs]
        return vm[fn](*args, [tvm.runtime.tensor(p, dev) for p in params[component]]).numpy()

    rng = np.random.default_rng(3)
    ids = np.array([[loaded.tokenizer.bos_token_id, 5, 999, 400, 399, 800, 0, 801] + [532] * 69], np.int32)
    latents = rng.standard_normal((2, 4, 32, 32)).astype(np.float32)
    timestep = np.array([999.0, 321.0], np.float32)
    with torch.no_grad():
        text = pipe.text_encoder(torch.from_numpy(ids).long())[0].numpy()
        noise = pipe.unet(torch.from_numpy(latents), torch.from_numpy(timestep),
                          encoder_hidden_states=torch.from_numpy(np.concatenate([text, text]))).sample.numpy()
        image = pipe.vae.decode(torch.from_numpy(latents[:1])).sample.numpy()
    ours_text = run("encode_text", "text_encoder", ids)
    for name, ours, ref in (("text", ours_text, text),
                            ("unet", run("unet", "unet", latents, timestep, np.concatenate([ours_text, ours_text])),
                             noise),
                            ("vae", run("vae_decode", "vae", latents[:1]), image)):
        err = float(np.abs(ours - ref).max())
        print(f"{name}: max abs error {err:.3g}")
        assert err <= 1e-4 * max(1.0, float(np.abs(ref).max())), name


# --- bad inputs --------------------------------------------------------------------------


def _copy(tiny, tmp_path) -> Path:
    folder = tmp_path / "pipe"
    shutil.copytree(tiny[1], folder)
    return folder


def _missing_vae(folder: Path) -> list[str]:
    shutil.rmtree(folder / "vae")
    return ["subfolder 'vae/' is missing"]


def _unsupported_unet(folder: Path) -> list[str]:
    path = folder / "unet" / "config.json"
    config = json.loads(path.read_text())
    config["down_block_types"] = ["DownBlock2D", "SimpleCrossAttnDownBlock2D"]
    path.write_text(json.dumps(config))
    return ["unet/config.json", "SimpleCrossAttnDownBlock2D", "CrossAttnDownBlock2D"]


def _shape_mismatch(folder: Path) -> list[str]:
    from safetensors.numpy import load_file, save_file

    path = folder / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(path)
    name = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight"
    state[name] = np.zeros((64, 16), np.float32)
    save_file(state, path)
    return [name, "[64, 16]", "[64, 32]"]


def _tokenizer_files_disagree(folder: Path) -> list[str]:
    # A tokenizer.json next to vocab.json whose ids of two tokens are swapped (as when one file
    # came from another tokenizer training).
    vocab = json.loads((folder / "tokenizer" / "vocab.json").read_text())
    a, b = list(vocab)[5], list(vocab)[6]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (folder / "tokenizer" / "tokenizer.json").write_text(json.dumps({"model": {"type": "BPE", "vocab": vocab,
                                                                               "merges": []}}))
    return ["vocab.json and tokenizer.json disagree", repr(a), "delete the other"]


def _bad_size(folder: Path) -> list[str]:
    return ["--size", "image height 30", "multiple of 4"]


@pytest.mark.parametrize("case", [_missing_vae, _unsupported_unet, _shape_mismatch, _tokenizer_files_disagree,
                                  _bad_size])
def test_bad_input_fails_cleanly(case, tiny, tmp_path, capsys):
    folder = _copy(tiny, tmp_path)
    words = case(folder)
    out = tmp_path / "models"
    extra = ["--size", "30"] if case is _bad_size else []
    code, _, err = _cli(capsys, "--model", str(folder), "--quantization", "f32", "--fast-link", "--out", str(out),
                        *extra)
    assert code != 0
    assert err.startswith("error: ") and "Traceback" not in err and "\n\n" not in err and len(err.splitlines()) <= 2
    for word in words[1:] if case is _bad_size else words:
        assert word in err, (word, err)
    assert not out.exists() or list(out.iterdir()) == []


# --- SD 1.5-sized, plan only ----------------------------------------------------------------


def _sparse_safetensors(path: Path, shapes: dict[str, tuple[int, ...]]) -> int:
    """A safetensors file with these F32 tensors whose data is a hole (reads as zeros, takes no disk)."""
    header, offset = {}, 0
    for name, shape in shapes.items():
        nbytes = int(np.prod(shape, dtype=np.int64)) * 4
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(raw)) + raw)
        handle.truncate(8 + len(raw) + offset)
    return offset


def _random_sd_folder(folder: Path, unet: dict, text: dict, scheduler: dict) -> Path:
    """A diffusers folder with these public configs and sparse random-free weights; the
    text encoder's and UNet's parameter counts as transformers / diffusers give them are
    written to counts.json for the tests to compare with ours."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    strip = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}
    with init_empty_weights():  # names and shapes only
        models = {"unet": UNet2DConditionModel.from_config(strip(unet)),
                  "vae": AutoencoderKL.from_config(strip(SD15_VAE)),
                  "text_encoder": CLIPTextModel(CLIPTextConfig(**text))}
    configs = {"unet": unet, "vae": SD15_VAE, "text_encoder": text}
    total = 0
    for name, model in models.items():
        shapes = {k: tuple(v.shape) for k, v in model.state_dict().items() if v.is_floating_point()}
        file = "model.safetensors" if name == "text_encoder" else "diffusion_pytorch_model.safetensors"
        total += _sparse_safetensors(folder / name / file, shapes)
        (folder / name / "config.json").write_text(json.dumps(configs[name]))
    assert total > 4_000_000_000  # f32 text encoder + UNet + full VAE
    (folder / "scheduler").mkdir()
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler))
    write_clip_tokenizer(folder / "tokenizer")
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    (folder / "counts.json").write_text(json.dumps(
        {name: sum(p.numel() for p in models[name].parameters()) for name in ("unet", "text_encoder")}))
    return folder


@pytest.fixture(scope="module")
def sd15(tmp_path_factory) -> Path:
    return _random_sd_folder(tmp_path_factory.mktemp("sd15") / "sd15-random", SD15_UNET, SD15_TEXT, SD15_SCHEDULER)


def test_sd15_impossible_binding_limit_fails_naming_the_tensor(sd15, tmp_path, capsys):
    """2 MiB cannot hold one norm group of the VAE's 512-channel 256x256 maps ([1, 16, 256, 256] f32 = 4 MiB): no
    tiling helps, and the error says which tensor and what to do; nothing is written."""
    out = tmp_path / "models"
    code, _, err = _cli(capsys, "--model", str(sd15), "--plan-only", str(tmp_path / "plan.json"), "--max-binding-mib",
                        "2", "--out", str(out))
    assert code == 1
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "Traceback" not in err
    for word in ("vae", "feature map slice", "[1, 16, 256, 256]", "--max-binding-mib 2", "Raise --max-binding-mib",
                 "--size"):
        assert word in err, (word, err)
    assert not out.exists() and not (tmp_path / "plan.json").exists()


def test_sd15_plan_f16_at_512_fits_the_default_128_mib_bindings(sd15, tmp_path, capsys):
    """With the default limit, the UNet's self-attention at 64x64 latents ([2, 8, 4096, 4096] f32 scores,
    1 GiB whole) runs in query chunks of 512 rows ([2, 8, 512, 4096] = 128 MiB), the VAE's 256-channel
    512x512 maps (256 MiB in f32) are carried as 128-channel parts, and the 144.8 MiB f32 CLIP token
    table is split into row blocks: every binding of both backends is within 128 MiB."""
    from webkiln.models.diffusion.params import param_specs, parameter_count

    plan_file = tmp_path / "plan.json"
    out = tmp_path / "models"
    code, log, err = _cli(capsys, "--model", str(sd15), "--plan-only", str(plan_file), "--out", str(out))
    assert code == 0, err
    print(log)
    assert not out.exists()  # plan only: nothing written but the plan
    m = json.loads(plan_file.read_text())
    assert m["plan_only"] and m["files"] == [] and m["image"]["width"] == 512 and m["image"]["latent_width"] == 64
    loaded = load_source(sd15)
    n_params = {c: parameter_count(param_specs(c, loaded.components[c].config)) for c in loaded.components}
    assert n_params["unet"] == 859_520_964
    assert list(m["backends"]) == ["webgpu-f32", "webgpu-f16", "wasm-cpu"]
    cpu = m["backends"].pop("wasm-cpu")
    for name, backend in m["backends"].items():
        limit = backend["required_limits"]["maxStorageBufferBindingSize"]
        records = m["tensors"][backend["tensors"]]["records"]
        assert limit <= 128 * MIB and backend["required_limits"]["maxBufferSize"] == limit
        assert max(r["nbytes"] for r in records) <= limit
        activations = backend["largest_activations"]
        assert max(a["bytes"] for a in activations.values()) <= limit
        assert activations["unet"]["bytes"] == 2 * 8 * 512 * 4096 * 4  # one query chunk's scores
        assert "[2, 8, 512, 4096] float32" in activations["unet"]["what"]
        memory = backend["memory"]
        print(f"{name}: largest binding {limit / MIB:.1f} MiB, weights {memory['weights_bytes'] / MIB:.1f} MiB, "
              f"activations {memory['activations_bytes'] / MIB:.1f} MiB, total {memory['total_bytes'] / MIB:.1f} MiB")
        assert memory["weights_bytes"] == sum(r["nbytes"] for r in records)
        assert limit <= memory["activations_bytes"] <= 8 * limit
        assert memory["total_bytes"] == memory["weights_bytes"] + memory["activations_bytes"]
    parts = [r for r in m["tensors"]["float32"]["records"] if "split" in r]
    assert [r["split"]["rows"] for r in parts] == [[0, 43690], [43690, 49408]]  # 49408 x 768 f32 = 144.8 MiB
    assert {r["split"]["of"] for r in parts} == {"embeddings.token_embedding.weight"}
    assert not any("split" in r for r in m["tensors"]["float16"]["records"])  # 72.4 MiB in f16
    f16, f32 = m["backends"]["webgpu-f16"]["memory"], m["backends"]["webgpu-f32"]["memory"]
    assert f32["weights_bytes"] == 4 * sum(n_params.values())
    assert 0.5 * f32["weights_bytes"] < f16["weights_bytes"] < 0.51 * f32["weights_bytes"]  # norms stay f32
    assert m["memory"] == f16 and f16["total_bytes"] < 4 * 2**30
    # The CPU library reads the float32 set (WebAssembly has no f16 arithmetic): 3.8 GiB of weights
    # alone, so SD 1.5 cannot fit wasm32's 4 GiB; it is listed with that need (the browser refuses
    # it by it, before any download) and the build says so.
    assert cpu["device"] == "cpu" and cpu["tensors"] == "float32" and cpu["required_limits"] == {}
    assert cpu["memory"]["weights_bytes"] == f32["weights_bytes"]
    assert cpu["memory"]["activations_bytes"] == f32["activations_bytes"]
    assert cpu["memory"]["total_bytes"] > 4 * 2**30
    assert "wasm-cpu needs 4.53 GiB" in log and "more than wasm32's 4 GiB" in log, log


# --- SD 2.1 (768x768, v-prediction) and SD-Turbo (SD 2.1 base at 512x512), plan only ------------

# OpenCLIP ViT-H/14's text tower as SD 2.x ships it (transformers' CLIPTextModel).
SD2_TEXT = {**SD15_TEXT, "hidden_act": "gelu", "hidden_size": 1024, "intermediate_size": 4096,
            "num_attention_heads": 16, "num_hidden_layers": 23, "projection_dim": 512}
SD21_SCHEDULER = {**SD15_SCHEDULER, "_class_name": "DDIMScheduler", "prediction_type": "v_prediction"}
TURBO_SCHEDULER = {"_class_name": "EulerDiscreteScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
                   "beta_start": 0.00085, "num_train_timesteps": 1000, "prediction_type": "epsilon",
                   "steps_offset": 1, "timestep_spacing": "trailing", "trained_betas": None, "clip_sample": False,
                   "set_alpha_to_one": False, "interpolation_type": "linear", "use_karras_sigmas": False}
SD2_CASES = {  # name: (UNet config, scheduler, pixels, turbo)
    "sd21-random": ({**SD21_UNET}, SD21_SCHEDULER, 768, False),
    "sd-turbo-random": ({**SD21_UNET, "sample_size": 64}, TURBO_SCHEDULER, 512, True),
}


@pytest.mark.parametrize("name", list(SD2_CASES))
def test_sd2_and_turbo_plans_fit_the_default_128_mib_bindings(name, tmp_path, capsys):
    """SD 2.1 at 768x768 (96x96 latents: 9216-token self-attention, [2, 5, 9216, 9216] f32 scores are
    3.2 GiB whole) and SD-Turbo (its name turns on the Turbo defaults: one step, no guidance,
    a batch-1 UNet) build plans whose every binding is within 128 MiB, for f16 and f32, with
    diffusers' / transformers' parameter counts."""
    from webkiln.models.diffusion.params import param_specs, parameter_count

    unet, scheduler, pixels, turbo = SD2_CASES[name]
    folder = _random_sd_folder(tmp_path / name, unet, SD2_TEXT, scheduler)
    plan_file = tmp_path / "plan.json"
    code, log, err = _cli(capsys, "--model", str(folder), "--plan-only", str(plan_file), "--out", str(tmp_path / "m"))
    assert code == 0, err
    print(log)
    m = json.loads(plan_file.read_text())
    loaded = load_source(folder)
    counts = json.loads((folder / "counts.json").read_text())
    for component in ("unet", "text_encoder"):
        assert parameter_count(param_specs(component, loaded.components[component].config)) == counts[component]
    assert counts["unet"] == SD21_UNET_PARAMS
    assert m["image"]["width"] == m["image"]["height"] == pixels and m["image"]["latent_width"] == pixels // 8
    assert m["components"]["text_encoder"]["output"]["shape"][-1] == 1024
    assert m["scheduler"]["prediction_type"] == scheduler["prediction_type"]
    assert m["generation"]["turbo"] is turbo and m["components"]["unet"]["batch"] == (1 if turbo else 2)
    if turbo:
        assert m["generation"]["steps"] == 1 and m["generation"]["guidance_scale"] == 0
        assert m["scheduler"]["timestep_spacing"] == "trailing"
    assert list(m["backends"]) == ["webgpu-f32", "webgpu-f16", "wasm-cpu"]
    cpu = m["backends"].pop("wasm-cpu")
    assert cpu["tensors"] == "float32" and cpu["memory"]["total_bytes"] > 4 * 2**30  # f32 SD 2.x: over wasm32
    for backend in m["backends"].values():
        limit = backend["required_limits"]["maxStorageBufferBindingSize"]
        records = m["tensors"][backend["tensors"]]["records"]
        assert limit <= 128 * MIB
        assert max(r["nbytes"] for r in records) <= limit
        assert max(a["bytes"] for a in backend["largest_activations"].values()) <= limit
        memory = backend["memory"]
        assert memory["weights_bytes"] == sum(r["nbytes"] for r in records)
        assert memory["total_bytes"] == memory["weights_bytes"] + memory["activations_bytes"]
    f32 = m["backends"]["webgpu-f32"]["memory"]
    assert f32["weights_bytes"] == 4 * sum(parameter_count(param_specs(c, loaded.components[c].config))
                                           for c in loaded.components)
