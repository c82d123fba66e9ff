"""The engine API (web/src/engine) in headless Chromium, in a Web Worker (the default)
and on the page's thread: OpenAI-shaped completions and stream chunks, greedy output
equal to transformers', multi-turn KV reuse, stop strings, abort, typed errors for bad
requests, device loss and reload, and chat templates equal to transformers'."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import LiveServer
from conftest_models import smollm2_gguf  # noqa: F401  (session fixture)
from conftest_tiny import MIN_TOP2_GAP, hf_greedy, tiny_llama, tiny_qwen2  # noqa: F401  (session fixtures)
from test_chat_browser import chat_site  # noqa: F401  (session fixture)
from test_sources import transformers_tokenizer  # noqa: F401  (session fixture)

FINISH = {"stop", "length", "abort"}


# --- OpenAI shapes (from the Chat Completions API reference) -------------------------


def _check_usage(usage: dict) -> None:
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        assert isinstance(usage[key], int) and usage[key] >= 0, (key, usage)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def check_completion(c: dict) -> None:
    assert set(c) >= {"id", "object", "created", "model", "choices", "usage"}
    assert isinstance(c["id"], str) and c["id"].startswith("chatcmpl-")
    assert c["object"] == "chat.completion" and isinstance(c["created"], int) and isinstance(c["model"], str)
    (choice,) = c["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] in FINISH and choice["logprobs"] is None
    assert choice["message"]["role"] == "assistant" and isinstance(choice["message"]["content"], str)
    _check_usage(c["usage"])


def check_chunks(chunks: list[dict], include_usage: bool) -> str:
    """Validates a whole stream; returns the concatenated content."""
    assert chunks
    ids = {c["id"] for c in chunks}
    assert len(ids) == 1 and next(iter(ids)).startswith("chatcmpl-")
    for c in chunks:
        assert c["object"] == "chat.completion.chunk" and isinstance(c["created"], int) and isinstance(c["model"], str)
    body = chunks[:-1] if include_usage else chunks
    for c in body:
        (choice,) = c["choices"]
        assert choice["index"] == 0 and set(choice["delta"]) <= {"role", "content"}
        if include_usage:
            assert c["usage"] is None  # present and null on every chunk but the last
        else:
            assert "usage" not in c
    assert body[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(c["choices"][0]["finish_reason"] is None for c in body[:-1])
    assert body[-1]["choices"][0]["finish_reason"] in FINISH and body[-1]["choices"][0]["delta"] == {}
    if include_usage:
        assert chunks[-1]["choices"] == []
        _check_usage(chunks[-1]["usage"])
    return "".join(c["choices"][0]["delta"].get("content", "") for c in body)


# --- fixtures ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_site(tmp_path_factory, tiny_llama, test_site):  # noqa: F811
    from webkiln.package.chat_build import build_chat_model
    from webkiln.sources import load_source
    from webkiln.toolchain.link import LinkMode

    root = tmp_path_factory.mktemp("engine-site")
    shutil.copytree(test_site, root, dirs_exist_ok=True)
    source = load_source(tiny_llama.folder)
    model_dir = build_chat_model(source, root / "models", "q4f32", model_id="tiny-chat",
                                 link_mode=LinkMode.FAST, log=lambda _: None)
    build_chat_model(source, root / "models", "q4f16", model_id="tiny-chat-f16", link_mode=LinkMode.FAST,
                     log=lambda _: None)
    return root, model_dir


@pytest.fixture(scope="module")
def tiny_reference(tiny_site, tiny_llama):  # noqa: F811
    """transformers on the same 4-bit weights the build stores."""
    from conftest_tiny import dequantized_state, export_params, with_weights
    from webkiln.quant.convert import convert_params, plan_weights
    from webkiln.quant.schemes import get_scheme
    from webkiln.sources import load_source

    source = load_source(tiny_llama.folder)
    plan = plan_weights(source, get_scheme("q4f32"), notice=lambda _: None)
    params = dict(convert_params(source, plan, "float32", export_params(source, plan)))
    return with_weights(tiny_llama.model, dequantized_state(source, plan, params))


@pytest.fixture(scope="module")
def hf_tokenizer(tiny_llama):  # noqa: F811
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama.folder)


@pytest.fixture(scope="module")
def engine_page(browser, tiny_site):
    root, _ = tiny_site
    with LiveServer(root) as server:
        context = browser.new_context()
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{server.url}/chat.html")
        page.wait_for_function("window.webkilnChat !== undefined")
        page.evaluate("""async () => {
            window.engines = {worker: window.webkilnChat.createEngine(), page: window.webkilnChat.createEngine({worker: false})};
            window.events = {worker: [], page: []};
            for (const [k, e] of Object.entries(window.engines)) e.onEvent((ev) => window.events[k].push(ev));
        }""")
        page.server_url = server.url
        yield page
        assert errors == []
        context.close()


LOAD = """async ([which, model]) => {
    const e = window.engines[which];
    const models = await e.listModels();
    const progress = [];
    const info = await e.loadModel(model, {onProgress: (p) => progress.push(p)});
    return {models, progress, info};
}"""

CREATE = """async ([which, request]) => {
    const r = await window.engines[which].chat.completions.create(request);
    if (!request.stream) return r;
    const chunks = [];
    for await (const c of r) chunks.push(c);
    return chunks;
}"""

ERROR = """async ([which, request]) => {
    try { await window.engines[which].chat.completions.create(request); return null; }
    catch (e) { return {name: e.name, message: e.message, param: e.param ?? null,
                        typed: e instanceof Error && e.constructor.name === e.name}; }
}"""


def _reference_reply(model, tokenizer, messages, max_tokens):
    """transformers' greedy reply to `messages` (as text, without the stop token) and its ids."""
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt = tokenizer(text, add_special_tokens=False)["input_ids"]
    stop = [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    tokens, gap = hf_greedy(model, list(prompt), max_tokens, stop=stop)
    assert gap > MIN_TOP2_GAP  # no near-tie that f32 rounding could flip
    text_tokens = tokens[:-1] if tokens and tokens[-1] in stop else tokens
    return tokenizer.decode(text_tokens), list(prompt), tokens


MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "hello world"}]


@pytest.mark.parametrize("which", ["worker", "page"])
def test_load_then_greedy_completion_equals_transformers(engine_page, tiny_reference, hf_tokenizer, which):
    got = engine_page.evaluate(LOAD, [which, "tiny-chat"])
    model = next(m for m in got["models"] if m["id"] == "tiny-chat")
    assert {m["id"] for m in got["models"]} == {"tiny-chat", "tiny-chat-f16"}
    assert model["id"] == "tiny-chat" and model["task"] == "chat" and model["quantization"] == "q4f32"
    assert model["manifestUrl"].endswith("/models/tiny-chat/manifest.json") and model["download_bytes"] > 0
    # "auto" on SwiftShader (a CPU fallback adapter) runs the CPU backend, and says why.
    info = got["info"]
    assert info["id"] == "tiny-chat" and info["backend"] == "wasm-cpu" and info["device"] == "cpu"
    assert "is a CPU fallback" in info["backendReason"] and "swiftshader" in info["backendReason"].lower(), info
    assert model["backends"] == {"webgpu-f32": {"device": "webgpu", "required_features": []},
                                 "wasm-cpu": {"device": "cpu", "required_features": []}}
    progress = got["progress"]
    assert progress[-1]["stage"] == "ready" and progress[-1]["loadedBytes"] == progress[-1]["totalBytes"] > 0
    downloads = [p for p in progress if p["stage"] == "download"]
    assert downloads and [p["loadedBytes"] for p in downloads] == sorted(p["loadedBytes"] for p in downloads)
    assert all(p["model"] == "tiny-chat" and p["text"] for p in progress)

    expected, prompt, tokens = _reference_reply(tiny_reference, hf_tokenizer, MESSAGES, 12)
    c = engine_page.evaluate(CREATE, [which, {"messages": MESSAGES, "temperature": 0, "max_tokens": 12}])
    check_completion(c)
    assert c["model"] == "tiny-chat"
    assert c["choices"][0]["message"]["content"] == expected
    assert c["usage"]["prompt_tokens"] == len(prompt) and c["usage"]["completion_tokens"] == len(tokens)
    assert c["choices"][0]["finish_reason"] == ("stop" if len(tokens) < 12 else "length")


def test_stream_chunks_equal_the_completion(engine_page, tiny_reference, hf_tokenizer):
    engine_page.evaluate(LOAD, ["worker", "tiny-chat"])
    expected, _, _ = _reference_reply(tiny_reference, hf_tokenizer, MESSAGES, 12)
    for include_usage in (True, False):
        request = {"messages": MESSAGES, "temperature": 0, "max_tokens": 12, "stream": True}
        if include_usage:
            request["stream_options"] = {"include_usage": True}
        chunks = engine_page.evaluate(CREATE, ["worker", request])
        assert check_chunks(chunks, include_usage) == expected
        assert len(chunks) >= 4  # role, several content pieces, finish (token by token)


def test_second_turn_prefills_only_the_new_tokens(engine_page, tiny_reference, hf_tokenizer):
    engine_page.evaluate(LOAD, ["worker", "tiny-chat"])
    engine_page.evaluate("() => window.engines.worker.resetChat()")
    first = engine_page.evaluate(CREATE, ["worker", {"messages": MESSAGES, "temperature": 0, "max_tokens": 6}])
    reply = first["choices"][0]["message"]["content"]
    assert first["usage"]["extra"]["cached_prompt_tokens"] == 0
    second_messages = [*MESSAGES, {"role": "assistant", "content": reply}, {"role": "user", "content": "how are you"}]
    expected, prompt2, _ = _reference_reply(tiny_reference, hf_tokenizer, second_messages, 6)
    second = engine_page.evaluate(CREATE, ["worker", {"messages": second_messages, "temperature": 0, "max_tokens": 6}])
    assert second["choices"][0]["message"]["content"] == expected
    # The KV cache holds turn one's prompt and reply: only what follows is computed.
    _, prompt1, tokens1 = _reference_reply(tiny_reference, hf_tokenizer, MESSAGES, 6)
    cached = prompt1 + tokens1[:-1]  # the last sampled token is never run through the model
    common = next((i for i, (a, b) in enumerate(zip(cached, prompt2)) if a != b), min(len(cached), len(prompt2)))
    extra = second["usage"]["extra"]
    assert extra["cached_prompt_tokens"] == common > len(prompt1)
    assert extra["prefilled_tokens"] == len(prompt2) - common


def test_stop_strings_and_max_tokens(engine_page, tiny_reference, hf_tokenizer):
    engine_page.evaluate(LOAD, ["worker", "tiny-chat"])
    expected, _, _ = _reference_reply(tiny_reference, hf_tokenizer, MESSAGES, 12)
    assert len(expected) >= 4
    stop = expected[2:4]
    c = engine_page.evaluate(CREATE, ["worker", {"messages": MESSAGES, "temperature": 0, "max_tokens": 12, "stop": [stop]}])
    assert c["choices"][0]["finish_reason"] == "stop"
    assert c["choices"][0]["message"]["content"] == expected[: expected.index(stop)]
    chunks = engine_page.evaluate(CREATE, ["worker", {"messages": MESSAGES, "temperature": 0, "max_tokens": 12,
                                                      "stop": stop, "stream": True}])
    assert check_chunks(chunks, False) == expected[: expected.index(stop)]
    short = engine_page.evaluate(CREATE, ["worker", {"messages": MESSAGES, "temperature": 0, "max_completion_tokens": 2}])
    assert short["choices"][0]["finish_reason"] == "length" and short["usage"]["completion_tokens"] == 2


def test_abort_ends_the_stream_and_the_engine_goes_on(engine_page):
    engine_page.evaluate(LOAD, ["worker", "tiny-chat"])
    got = engine_page.evaluate("""async () => {
        const controller = new AbortController();
        const stream = await window.engines.worker.chat.completions.create(
            {messages: [{role: "user", content: "hello"}], temperature: 0, max_tokens: 64, stream: true},
            {signal: controller.signal});
        const chunks = [];
        for await (const c of stream) {
            chunks.push(c);
            if (chunks.length === 3) controller.abort();
        }
        const after = await window.engines.worker.chat.completions.create(
            {messages: [{role: "user", content: "hello"}], temperature: 0, max_tokens: 3});
        return {chunks, after};
    }""")
    chunks = got["chunks"]
    check_chunks(chunks, False)
    assert chunks[-1]["choices"][0]["finish_reason"] == "abort" and len(chunks) < 64
    assert got["after"]["usage"]["completion_tokens"] == 3


BAD_REQUESTS = [
    ({"messages": MESSAGES, "tools": []}, "tools", "not supported"),
    ({"messages": MESSAGES, "n": 2}, "n", "1"),
    ({"messages": MESSAGES, "temperature": 5}, "temperature", "0 to 2"),
    ({"messages": MESSAGES, "top_p": 0}, "top_p", "(0, 1]"),
    ({"messages": MESSAGES, "max_tokens": 0}, "max_tokens", ">= 1"),
    ({"messages": MESSAGES, "max_tokens": 4, "max_completion_tokens": 4}, "max_completion_tokens", "together"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role", "system, user, assistant"),
    ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content", "string"),
    ({"messages": []}, "messages", "at least one"),
    ({"messages": MESSAGES, "stream_options": {"include_usage": True}}, "stream_options", "stream"),
    ({"messages": MESSAGES, "stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
    ({"messages": MESSAGES, "frobnicate": 1}, "frobnicate", "not a Chat Completions field"),
]


@pytest.mark.parametrize("request_body,param,words", BAD_REQUESTS, ids=[b[1] for b in BAD_REQUESTS])
def test_bad_requests_are_typed_errors_naming_the_field(engine_page, request_body, param, words):
    for which in ("worker", "page"):
        err = engine_page.evaluate(ERROR, [which, request_body])
        assert err is not None, request_body
        assert err["name"] == "InvalidRequestError" and err["typed"], err
        assert err["param"] == param and f"'{param}'" in err["message"] and words in err["message"], err


def test_wrong_model_and_no_model_are_typed_errors(engine_page):
    engine_page.evaluate(LOAD, ["worker", "tiny-chat"])
    err = engine_page.evaluate(ERROR, ["worker", {"model": "other", "messages": MESSAGES}])
    assert err["name"] == "ModelNotLoadedError" and "'other'" in err["message"] and "loadModel" in err["message"]
    engine_page.evaluate("() => window.engines.worker.unloadModel()")
    assert engine_page.evaluate("() => window.engines.worker.loadedModel()") is None
    err = engine_page.evaluate(ERROR, ["worker", {"messages": MESSAGES}])
    assert err["name"] == "ModelNotLoadedError" and "No model is loaded" in err["message"]
    err = engine_page.evaluate("""async () => {
        try { await window.engines.worker.loadModel("no-such-model"); } catch (e) { return {name: e.name, message: e.message}; }
    }""")
    assert err["name"] == "ModelLoadError" and "no-such-model" in err["message"] and "listModels" in err["message"]


def test_missing_shader_f16_offers_the_f32_build(engine_page):
    """SwiftShader has no shader-f16: the f16 library is refused with a message naming
    the feature and the way out, and WebGPU's choice is the f32 library (Automatic runs
    the CPU backend here: SwiftShader is a fallback adapter)."""
    assert not engine_page.evaluate("async () => (await navigator.gpu.requestAdapter()).features.has('shader-f16')")
    err = engine_page.evaluate("""async () => {
        try { await window.engines.worker.loadModel("tiny-chat-f16", {backend: "webgpu-f16"}); }
        catch (e) { return {name: e.name, message: e.message}; }
    }""")
    assert err["name"] == "UnsupportedDeviceError", err
    assert "shader-f16" in err["message"] and "webgpu-f32" in err["message"]
    info = engine_page.evaluate("() => window.engines.worker.loadModel('tiny-chat-f16', {backend: 'webgpu'})")
    assert info["backend"] == "webgpu-f32" and info["device"] == "webgpu"
    info = engine_page.evaluate("() => window.engines.worker.loadModel('tiny-chat-f16')")
    assert info["backend"] == "wasm-cpu"  # the CPU library is f32 whatever the quantization's activations


LOAD_WEBGPU = LOAD.replace("{onProgress: (p) => progress.push(p)}", "{backend: 'webgpu', onProgress: (p) => progress.push(p)}")


def test_device_loss_is_reported_and_the_model_reloads(engine_page):
    # A CPU backend has no device to lose: the hook does nothing and the model keeps working.
    assert engine_page.evaluate(LOAD, ["worker", "tiny-chat"])["info"]["device"] == "cpu"
    engine_page.evaluate("() => { window.events.worker.length = 0; return window.engines.worker.simulateDeviceLoss(); }")
    c = engine_page.evaluate(CREATE, ["worker", {"messages": MESSAGES, "temperature": 0, "max_tokens": 2}])
    assert c["usage"]["completion_tokens"] >= 1
    assert engine_page.evaluate("window.events.worker.filter((e) => e.type === 'device-lost').length") == 0

    # On WebGPU, losing the device is reported and the model reloads.
    assert engine_page.evaluate(LOAD_WEBGPU, ["worker", "tiny-chat"])["info"]["backend"] == "webgpu-f32"
    engine_page.evaluate("() => { window.events.worker.length = 0; return window.engines.worker.simulateDeviceLoss(); }")
    engine_page.wait_for_function("window.events.worker.some((e) => e.type === 'device-lost')")
    event = engine_page.evaluate("window.events.worker.find((e) => e.type === 'device-lost')")
    assert event["model"] == "tiny-chat" and event["message"]
    err = engine_page.evaluate(ERROR, ["worker", {"messages": MESSAGES}])
    assert err["name"] == "DeviceLostError" and "loadModel" in err["message"] and "reload" in err["message"].lower()
    engine_page.evaluate(LOAD_WEBGPU, ["worker", "tiny-chat"])  # no page reload
    c = engine_page.evaluate(CREATE, ["worker", {"messages": MESSAGES, "temperature": 0, "max_tokens": 2}])
    assert c["usage"]["completion_tokens"] >= 1


def test_corrupt_cached_shard_is_refetched_and_reported(engine_page, tiny_site):
    _, model_dir = tiny_site
    manifest = json.loads((model_dir / "manifest.json").read_text())
    shard = manifest["tensors"]["shards"][0]
    sha = next(f["sha256"] for f in manifest["files"] if f["path"] == shard)
    engine_page.evaluate(LOAD, ["worker", "tiny-chat"])  # cached now
    engine_page.evaluate("""async (sha) => {
        const cache = await caches.open("webkiln-v1");
        const key = "https://webkiln.invalid/sha256/" + sha;
        const bytes = new Uint8Array(await (await cache.match(key)).arrayBuffer());
        bytes[7] ^= 0xff;
        await cache.put(key, new Response(bytes, {headers: {"Content-Length": String(bytes.length)}}));
        window.events.worker.length = 0;
    }""", sha)
    got = engine_page.evaluate(LOAD, ["worker", "tiny-chat"])
    assert got["info"]["id"] == "tiny-chat"
    (event,) = engine_page.evaluate("window.events.worker.filter((e) => e.type === 'corrupt-cache-entry')")
    assert event["path"] == shard and event["expectedSha256"] == sha and event["actualSha256"] != sha
    # The good copy replaced the bad one: the next load reads everything from the cache.
    again = engine_page.evaluate(LOAD, ["worker", "tiny-chat"])
    assert again["progress"][-1]["networkBytes"] == 0
    assert engine_page.evaluate("window.events.worker.filter((e) => e.type === 'corrupt-cache-entry').length") == 1


# --- chat templates against transformers ---------------------------------------------

CONVERSATIONS = [
    [{"role": "user", "content": "Hi!"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}],
    [{"role": "system", "content": "You help."}, {"role": "user", "content": "2+2?"},
     {"role": "assistant", "content": "4"}, {"role": "user", "content": "and 3+3?\nLine two: <b>é</b>"}],
    [{"role": "user", "content": ""}],  # empty (transformers, like the engine, refuses an empty list)
    [{"role": "system", "content": ""}, {"role": "user", "content": ""}],
]


def _render_all(page, manifest_url):
    return [page.evaluate("([u, m, g]) => window.webkilnChat.renderChat(u, m, g)", [manifest_url, conv, gen])
            for conv in CONVERSATIONS for gen in (True, False)]


def _expected(tokenizer):
    return [tokenizer.apply_chat_template(conv, add_generation_prompt=gen, tokenize=False)
            for conv in CONVERSATIONS for gen in (True, False)]


def test_chat_templates_render_as_transformers(browser, chat_site, tiny_qwen2, transformers_tokenizer,  # noqa: F811
                                               tmp_path):
    """SmolLM2's template from the GGUF (it adds a default system prompt when none is
    given) and a Qwen2 tokenizer_config's, rendered by @huggingface/jinja in the browser,
    against transformers' apply_chat_template on the same files; and templates in the style of
    Gemma's, Phi-3's and Qwen3's (with `enable_thinking` given as chat_template_kwargs would)."""
    from transformers import AutoTokenizer

    from webkiln.package.chat_build import build_chat_model
    from webkiln.sources import load_source
    from webkiln.toolchain.link import LinkMode

    root, smol_dir = chat_site
    qwen_dir = build_chat_model(load_source(tiny_qwen2.folder), tmp_path / "models", "q4f32", model_id="tiny-qwen2",
                                link_mode=LinkMode.FAST, log=lambda _: None)
    site = tmp_path / "site"
    shutil.copytree(root, site, ignore=shutil.ignore_patterns("models"))
    shutil.copytree(qwen_dir, site / "models" / "tiny-qwen2")
    shutil.copytree(smol_dir, site / "models" / smol_dir.name)
    with LiveServer(site) as server:
        page = browser.new_page()
        page.goto(f"{server.url}/chat.html")
        page.wait_for_function("window.webkilnChat !== undefined")
        qwen = _render_all(page, "models/tiny-qwen2/manifest.json")
        smol = _render_all(page, f"models/{smol_dir.name}/manifest.json")
        families = [page.evaluate("([u, m, g, v, t]) => window.webkilnChat.renderChat(u, m, g, v, t)",
                                  ["models/tiny-qwen2/manifest.json", conv, gen, variables, template])
                    for template, variables in FAMILY_TEMPLATES for conv in FAMILY_CONVERSATIONS
                    for gen in (True, False)]
        refused = page.evaluate("""async (t) => { try { await window.webkilnChat.renderChat(
            "models/tiny-qwen2/manifest.json", [{role: "assistant", content: "x"}], true, {}, t); return null; }
            catch (e) { return {name: e.name, param: e.param, message: e.message}; } }""", GEMMA_STYLE)
        page.close()
    qwen_tokenizer = AutoTokenizer.from_pretrained(tiny_qwen2.folder)
    assert qwen == _expected(qwen_tokenizer)
    assert "You are a helpful AI assistant named SmolLM" in smol[0]  # the template's default system prompt
    assert smol == _expected(transformers_tokenizer)
    expected = [qwen_tokenizer.apply_chat_template(conv, chat_template=template, add_generation_prompt=gen,
                                                   tokenize=False, **variables)
                for template, variables in FAMILY_TEMPLATES for conv in FAMILY_CONVERSATIONS for gen in (True, False)]
    assert families == expected
    assert "<start_of_turn>user\nBe brief.\n\nCapital of France?" in expected[2]  # Gemma: system folded in
    thinking_off = expected[3 * 2 * len(FAMILY_CONVERSATIONS)]  # QWEN3_STYLE, enable_thinking False, first turn
    assert thinking_off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert refused["name"] == "InvalidRequestError" and refused["param"] == "messages"
    assert "roles must alternate" in refused["message"]


# Chat templates in the style of the families' own (written here: no hub is reachable to fetch
# theirs): Gemma's folds a system message into the first user turn, calls the assistant "model"
# and refuses roles out of order; Phi-3's tags each role; Qwen3's closes an empty think block
# when `enable_thinking` is false (chat_template_kwargs).
GEMMA_STYLE = (
    "{{ bos_token }}{%- if messages[0]['role'] == 'system' -%}{%- set first_user_prefix = messages[0]['content'] + "
    "'\n\n' -%}{%- set loop_messages = messages[1:] -%}{%- else -%}{%- set first_user_prefix = '' -%}"
    "{%- set loop_messages = messages -%}{%- endif -%}{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{%- endif -%}"
    "{%- if message['role'] == 'assistant' -%}{%- set role = 'model' -%}{%- else -%}{%- set role = message['role'] -%}"
    "{%- endif -%}{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)
PHI3_STYLE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + "
    "'<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)
QWEN3_STYLE = (
    "{%- for message in messages %}{{ '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{ '<think>\n\n</think>\n\n' }}{%- endif %}"
    "{%- endif %}"
)
FAMILY_TEMPLATES = [(GEMMA_STYLE, {}), (PHI3_STYLE, {}), (QWEN3_STYLE, {}), (QWEN3_STYLE, {"enable_thinking": False}),
                    (QWEN3_STYLE, {"enable_thinking": True})]
FAMILY_CONVERSATIONS = [
    [{"role": "user", "content": " Hi! "}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}],
    [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}, {"role": "user", "content": "3+3?"}],
]


def test_interrupted_download_resumes_at_file_granularity(browser, tiny_site):
    """A load that fails part-way (one file's request dies) keeps the files verified so
    far; the next load downloads only what is missing."""
    root, model_dir = tiny_site
    manifest = json.loads((model_dir / "manifest.json").read_text())
    sizes = {f["path"]: f["size"] for f in manifest["files"]}
    with LiveServer(root) as server:
        context = browser.new_context()
        try:
            page = context.new_page()
            page.goto(f"{server.url}/chat.html")
            page.wait_for_function("window.webkilnChat !== undefined")
            # Fail the library this load uses ("auto": wasm-cpu on SwiftShader) once the shards are through.
            context.route("**/wasm-cpu.wasm", lambda route: route.abort("connectionreset"))
            err = page.evaluate("""async () => {
                window.e = window.webkilnChat.createEngine({worker: false});
                await window.e.listModels();
                try { await window.e.loadModel("tiny-chat"); } catch (err) { return {name: err.name, message: err.message}; }
            }""")
            assert err["name"] == "NetworkError" and "wasm-cpu.wasm" in err["message"], err
            cached = page.evaluate("""async () => (await caches.open("webkiln-v1")).keys().then((ks) => ks.map((k) => k.url.split("/").pop()))""")
            by_hash = {f["sha256"]: f["path"] for f in manifest["files"]}
            kept = {by_hash[h] for h in cached if h in by_hash}
            assert "wasm-cpu.wasm" not in kept and kept, kept
            assert "webgpu-f32.wasm" not in kept  # the other backend's library is not downloaded
            context.unroute("**/wasm-cpu.wasm")
            progress = page.evaluate("""async () => {
                const events = [];
                await window.e.loadModel("tiny-chat", {onProgress: (p) => events.push(p)});
                return events[events.length - 1];
            }""")
            needed = {manifest["backends"]["wasm-cpu"]["wasm"], "tokenizer.json", *manifest["tensors"]["shards"]}
            assert progress["networkBytes"] == sum(sizes[p] for p in needed - kept)
            assert progress["cachedBytes"] == sum(sizes[p] for p in needed & kept) > 0
        finally:
            context.close()
