"""The default chat model built with build_web generates, in headless Chromium on
WebGPU (SwiftShader here), exactly the tokens `transformers` generates on the CPU
from the same GGUF (Q4_1 weights kept as they are, f32 activations)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import LiveServer
from conftest_models import smollm2_gguf  # noqa: F401  (session fixture)
from conftest_tiny import (  # noqa: F401  (tiny_llama: session fixture)
    GREEDY_TOKENS,
    MIN_TOP2_GAP,
    PROMPT,
    dequantized_state,
    export_params,
    hf_greedy,
    tiny_llama,
    with_weights,
)
from reference_lm import greedy
from webkiln.quant.convert import convert_params

PROMPTS = [
    "Write a short poem about the sea.",
    "Explain how a bicycle works in a few sentences.",
    "Give me three tips for learning a new language.",
]
NEW_TOKENS = 32
# When f32 rounding differs between two correct implementations, a greedy choice
# can flip only where the reference's top two logits are this close.
TIE_MARGIN = 1e-3


@pytest.fixture(scope="session")
def chat_site(tmp_path_factory, smollm2_gguf, test_site):  # noqa: F811
    from webkiln.package.chat_build import build_chat_model
    from webkiln.sources import load_source
    from webkiln.toolchain.link import LinkMode

    root = tmp_path_factory.mktemp("chat-site")
    shutil.copytree(test_site, root, dirs_exist_ok=True)
    model_dir = build_chat_model(load_source(smollm2_gguf), root / "models", "q4f32",
                                 link_mode=LinkMode.FAST, log=lambda _: None)
    return root, model_dir


# Each backend keeps its own exact-token test: WGSL kernels on WebGPU (SwiftShader here),
# and the WebAssembly SIMD library on the CPU.
BACKENDS = {"webgpu": "webgpu-f32", "wasm-cpu": "wasm-cpu"}


@pytest.fixture(scope="module", params=list(BACKENDS))
def chat_page(request, browser, chat_site):
    root, model_dir = chat_site
    with LiveServer(root) as server:
        context = browser.new_context()
        page = context.new_page()
        page.goto(f"{server.url}/chat.html")
        page.wait_for_function("window.webkilnChat !== undefined")
        info = page.evaluate("([u, b]) => window.webkilnChat.load(u, b)",
                             [f"models/{model_dir.name}/manifest.json", request.param])
        assert info["backend"] == BACKENDS[request.param]
        yield page
        context.close()


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_tokens_equal_transformers(chat_page, smollm2_gguf, prompt):  # noqa: F811
    ref = greedy(smollm2_gguf, prompt, NEW_TOKENS)
    assert len(ref.tokens) == NEW_TOKENS
    # The browser's tokenizer (converted from the GGUF at build time) agrees with transformers'.
    assert chat_page.evaluate("(t) => window.webkilnChat.encode(t)", ref.prompt_text) == ref.prompt_ids

    chat_page.evaluate("() => window.webkilnChat.reset()")
    got = chat_page.evaluate(
        "(ids) => window.webkilnChat.generate(ids, {maxTokens: %d, temperature: 0, stopTokenIds: [], recordMargins: true})"
        % NEW_TOKENS, ref.prompt_ids)
    tokens = got["tokens"]
    assert len(tokens) == NEW_TOKENS
    if tokens != ref.tokens:
        i = next(k for k, (a, b) in enumerate(zip(tokens, ref.tokens)) if a != b)
        logits = ref.logits[i]
        gap = float(logits[ref.tokens[i]] - logits[tokens[i]])
        assert gap <= TIE_MARGIN, (
            f"token {i} differs: browser {tokens[i]}, transformers {ref.tokens[i]}; "
            f"transformers' logit gap between them is {gap:.3g} (> {TIE_MARGIN}): a real difference"
        )
        pytest.xfail(f"tokens agree up to position {i}, where the reference's top two logits "
                     f"are within {gap:.2g} (f32 rounding tie)")
    # Streaming produced the text piece by piece, and the pieces add up to the whole.
    assert "".join(got["deltas"]) == got["text"]
    assert len([d for d in got["deltas"] if d]) > NEW_TOKENS // 2


def test_stop_token_and_max_tokens(chat_page, smollm2_gguf):  # noqa: F811
    ref = greedy(smollm2_gguf, "What is the capital of France?", 12)
    chat_page.evaluate("() => window.webkilnChat.reset()")
    got = chat_page.evaluate("(ids) => window.webkilnChat.generate(ids, {maxTokens: 12, temperature: 0})",
                             ref.prompt_ids)
    stop = ref.tokens.index(2) + 1 if 2 in ref.tokens else len(ref.tokens)
    assert got["tokens"] == ref.tokens[:stop]
    assert got["finishReason"] == "stop" and got["text"].strip() == "The capital of France is Paris."
    short = chat_page.evaluate("(ids) => window.webkilnChat.generate(ids, {maxTokens: 3, temperature: 0})",
                               ref.prompt_ids)
    assert short["tokens"] == ref.tokens[:3] and short["finishReason"] == "length"
    # The whole prompt was cached by the previous call: only its last token is computed again.
    assert short["prefilledTokens"] == 1


def test_seeded_sampling_is_reproducible(chat_page, smollm2_gguf):  # noqa: F811
    ref = greedy(smollm2_gguf, "Tell me a fun fact.", 1)
    runs = [chat_page.evaluate(
        "(ids) => window.webkilnChat.generate(ids, {maxTokens: 6, temperature: 0.9, topP: 0.95, seed: 1234})",
        ref.prompt_ids)["tokens"] for _ in range(2)]
    assert runs[0] == runs[1]


def test_manifest_describes_the_build(chat_site):
    _, model_dir = chat_site
    manifest = json.loads((model_dir / "manifest.json").read_text())
    assert manifest["task"] == "chat" and manifest["architecture"] == "llama"
    assert manifest["quantization"] == "q4f32"
    assert 2 in manifest["stop_token_ids"]
    assert "<|im_start|>" in manifest["chat_template"]
    assert all(np.isfinite(v) for v in manifest["memory"].values())


def test_prefix_reuse_matches_fresh_prefill(chat_page, smollm2_gguf):  # noqa: F811
    """A second conversation sharing the system prompt reuses the cached prefix and
    still generates what a fresh prefill generates."""
    first = greedy(smollm2_gguf, "What is the capital of France?", 2)
    second = greedy(smollm2_gguf, "Tell me a fun fact.", 4)
    shared = next(i for i, (x, y) in enumerate(zip(first.prompt_ids, second.prompt_ids)) if x != y)
    assert shared > 10  # the chat template's system prompt
    run = "(ids) => window.webkilnChat.generate(ids, {maxTokens: %d, temperature: 0, stopTokenIds: []})"
    chat_page.evaluate("() => window.webkilnChat.reset()")
    chat_page.evaluate(run % 2, first.prompt_ids)
    got = chat_page.evaluate(run % 4, second.prompt_ids)
    assert got["prefilledTokens"] == len(second.prompt_ids) - shared
    assert got["tokens"] == second.tokens


def test_q0f16_runs_on_the_f32_library(browser, test_site, tiny_llama, tmp_path):  # noqa: F811
    """q0f16 weights (f16 halves packed in uint32) run on the webgpu-f32 library, which
    needs no shader-f16: greedy tokens equal transformers' on the f16-rounded weights."""
    from webkiln.package.chat_build import build_chat_model
    from webkiln.quant.convert import plan_weights
    from webkiln.quant.schemes import get_scheme
    from webkiln.sources import load_source
    from webkiln.toolchain.link import LinkMode

    source = load_source(tiny_llama.folder)
    root = tmp_path / "site"
    shutil.copytree(test_site, root)
    model_dir = build_chat_model(source, root / "models", "q0f16", link_mode=LinkMode.FAST, log=lambda _: None)
    manifest = json.loads((model_dir / "manifest.json").read_text())
    assert {k: (v["device"], v["required_features"]) for k, v in manifest["backends"].items()} == {
        "webgpu-f32": ("webgpu", []), "webgpu-f16": ("webgpu", ["shader-f16"]), "wasm-cpu": ("cpu", [])}

    plan = plan_weights(source, get_scheme("q0f16"))
    params = dict(convert_params(source, plan, "float32", export_params(source, plan)))
    reference = with_weights(tiny_llama.model, dequantized_state(source, plan, params))
    expected, gap = hf_greedy(reference, PROMPT, GREEDY_TOKENS)
    assert gap > MIN_TOP2_GAP
    with LiveServer(root) as server:
        context = browser.new_context()
        page = context.new_page()
        page.goto(f"{server.url}/chat.html")
        page.wait_for_function("window.webkilnChat !== undefined")
        got = {}
        for backend in ("webgpu-f32", "wasm-cpu"):  # the f32 libraries, WebGPU and CPU
            info = page.evaluate("([u, b]) => window.webkilnChat.load(u, b)",
                                 [f"models/{model_dir.name}/manifest.json", backend])
            assert info["backend"] == backend
            got[backend] = page.evaluate(
                "(ids) => window.webkilnChat.generate(ids, {maxTokens: %d, temperature: 0, stopTokenIds: []})"
                % GREEDY_TOKENS, PROMPT)["tokens"]
        context.close()
    assert got == {"webgpu-f32": expected, "wasm-cpu": expected}


# --------------------------------------------------------------------------- CPU threads
# The engine in its Worker (createEngine), the default model on wasm-cpu. On a cross-origin
# isolated page the threaded link of the library runs the matmul kernels' rows on 2 threads
# (python/webkiln/compile/cpu_kernels/quant_matmul.c); the greedy reply must be the one a
# single thread writes (each output row is computed the same way whichever thread takes it).

THREADS_CHAT = """async ([manifest, threads]) => {
    window.threadEngine ??= window.webkilnChat.createEngine();
    const e = window.threadEngine;
    const info = await e.loadModel(manifest, {backend: "wasm-cpu", threads});
    const reply = await e.chat.completions.create({
        messages: [{role: "user", content: %s}], temperature: 0, max_tokens: %d});
    return {info, after: await e.loadedModel(), content: reply.choices[0].message.content, usage: reply.usage};
}""" % (json.dumps(PROMPTS[0]), NEW_TOKENS)


def _thread_runs(browser, root, model_dir, isolated: bool, counts: list[int]) -> list[dict]:
    manifest = f"models/{model_dir.name}/manifest.json"
    with LiveServer(root, cross_origin_isolated=isolated) as server:
        context = browser.new_context()
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{server.url}/chat.html")
        page.wait_for_function("window.webkilnChat !== undefined")
        assert page.evaluate("() => crossOriginIsolated") is isolated
        runs = [page.evaluate(THREADS_CHAT, [manifest, n]) for n in counts]
        # A thread count that is not one is refused by name, typed across the Worker boundary,
        # and the loaded model stays loaded.
        for bad in (0, 1.5):
            got = page.evaluate(BAD_THREADS, [manifest, bad])
            assert got is not None and got["name"] == "InvalidRequestError" and got["param"] == "threads", got
            assert "positive whole number" in got["message"], got
        assert page.evaluate("() => window.threadEngine.loadedModel()")["backend"] == "wasm-cpu"
        context.close()
    assert errors == []
    return runs


def test_two_cpu_threads_write_the_reply_of_one_on_an_isolated_page(browser, chat_site):
    root, model_dir = chat_site
    manifest = json.loads((model_dir / "manifest.json").read_text())
    assert manifest["backends"]["wasm-cpu"]["threads_wasm"] == "wasm-cpu-threads.wasm"
    two, one = _thread_runs(browser, root, model_dir, True, [2, 1])
    assert two["info"]["backend"] == "wasm-cpu" and two["info"]["threads"] == 2, two["info"]
    assert "2 threads (cross-origin isolated)" in two["info"]["backendReason"]
    # The helper thread really ran kernel tasks (a decode step alone launches ~200).
    assert two["after"]["threadTasks"] > NEW_TOKENS * 100, two["after"]
    assert one["info"]["threads"] == 1 and "1 thread, as asked" in one["info"]["backendReason"]
    assert one["after"]["threadTasks"] == 0
    assert two["usage"]["completion_tokens"] == one["usage"]["completion_tokens"] == NEW_TOKENS
    assert two["content"] == one["content"] and two["content"].strip()


BAD_THREADS = """async ([manifest, threads]) => {
    try { await window.threadEngine.loadModel(manifest, {backend: "wasm-cpu", threads}); return null; }
    catch (e) { return {name: e.name, message: e.message, param: e.param ?? null}; }
}"""


def test_cpu_backend_runs_one_thread_and_says_why_without_isolation(browser, chat_site):
    root, model_dir = chat_site
    (run,) = _thread_runs(browser, root, model_dir, False, [2])
    assert run["info"]["threads"] == 1, run["info"]
    reason = run["info"]["backendReason"]
    assert "1 thread: the page is not cross-origin isolated" in reason and "webkiln serve --isolate" in reason
    assert run["usage"]["completion_tokens"] == NEW_TOKENS and run["content"].strip()
