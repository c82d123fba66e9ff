// The Chat tab's controller: the chat model picker, the conversation on screen and in
// the sidebar (kept in IndexedDB), streaming replies (stop, regenerate, edit) and the
// settings. The engine renders the chat template; this only sends OpenAI messages.

import type {
  ChatCompletionRequest,
  ChatMessage,
  CompletionUsage,
  Engine,
  FinishReason,
  LoadedModel,
  ModelInfo,
} from "../engine/api";
import { ChatView, type StreamingReply } from "./chat_view";
import { ConversationStore, newConversation, titleFrom, type Conversation, type MessageStats } from "./conversations";
import type { DeviceInfo } from "../ui/device";
import { el } from "./dom";
import { ErrorBanner, isAbort } from "./errors";
import { listModels } from "./model_list";
import { rememberedModel, TabModelLoader } from "./model_load";
import { modelLabel, ModelPicker } from "./model_picker";
import { backendLabel, SettingsPanel } from "./settings";
import { Sidebar } from "./sidebar";

const NO_MODEL =
  "No model is built yet. Run ./scripts/serve.sh (it builds the default model) or build_web --model … to build one, then reload this page.";
const MODEL_KEY = "webkiln.model";
const finePointer = window.matchMedia("(pointer: fine)");

type Busy = "idle" | "loading" | "generating";

export class ChatController {
  private readonly prompt = el<HTMLTextAreaElement>("prompt");
  private readonly send = el<HTMLButtonElement>("send");
  private readonly stop = el<HTMLButtonElement>("stop");
  private readonly newChat = el<HTMLButtonElement>("new-chat");
  private readonly regenerate = el<HTMLButtonElement>("regenerate");
  private readonly editLast = el<HTMLButtonElement>("edit-last");
  private readonly status = el<HTMLElement>("status");
  private readonly composer = el<HTMLFormElement>("composer");
  private readonly view: ChatView;
  private readonly sidebar: Sidebar;
  private readonly errors: ErrorBanner;
  private readonly settings: SettingsPanel;
  private picker: ModelPicker | null = null;

  private conversation: Conversation = newConversation();
  private busy: Busy = "idle";
  private loaded: string | null = null;
  /** The model last asked for (what "Reload model" loads). */
  private wanted: string | null = null;
  private generation: AbortController | null = null;
  private loader: TabModelLoader | null = null;
  /** Messages taken off the end by "Edit last"; Escape puts them back. */
  private editing: Conversation["messages"] | null = null;
  /** Whether the Chat tab is shown (the engine holds one model: the shown tab's). */
  private active = true;
  /** What "Reload model" does while another tab is shown. */
  reloadOther: (() => void) | null = null;

  constructor(
    private readonly engine: Engine | null,
    private readonly store: ConversationStore,
  ) {
    this.view = new ChatView(el("chat"), (text) => {
      this.prompt.value = text;
      this.autosize();
      void this.submit();
    });
    this.sidebar = new Sidebar({
      onSelect: (id) => void this.open(id),
      onDelete: (id) => void this.remove(id),
    });
    this.errors = new ErrorBanner(() => {
      if (!this.active) this.reloadOther?.();
      else if (this.wanted) void this.load(this.wanted);
    });
    this.settings = new SettingsPanel({
      systemPrompt: el("system-prompt"),
      temperature: el("temperature"),
      topP: el("top-p"),
      maxTokens: el("max-tokens"),
      seed: el("seed"),
      backend: el("backend"),
      reset: el("settings-reset"),
    });
    this.bindInput();
  }

  // ---- startup -------------------------------------------------------------------

  get errorBanner(): ErrorBanner {
    return this.errors;
  }

  /** The settings panel (in the sidebar, for both tabs: the Images tab reads its Backend). */
  get settingsPanel(): SettingsPanel {
    return this.settings;
  }

  get generating(): boolean {
    return this.busy === "generating";
  }

  /** The Chat tab is shown: load its model unless it is loaded. */
  activate(): void {
    this.active = true;
    if (this.picker && this.picker.select.options.length === 0) this.setStatus(NO_MODEL, true);
    const id = this.wanted ?? this.picker?.select.value;
    if (this.loaded || this.busy !== "idle" || !id || !this.picker?.find(id)) {
      this.sync();
      return;
    }
    const fit = this.picker.fit(id);
    if (fit?.level === "no") {
      this.setStatus(`This model does not run here: ${fit.text}`, true);
      return;
    }
    void this.load(id);
  }

  /** The Images tab loaded a model (or let it go): the panel marks it and shows what is cached. */
  imageModelChanged(info: LoadedModel | null): void {
    if (!this.picker) return;
    this.picker.setLoaded(info?.id ?? null, info);
    void this.picker.refreshCache();
  }

  /**
   * The Backend setting changed: the picker's lines follow it and, when this tab is shown,
   * its model loads again on the backend the setting now gives (unless that cannot run
   * here: then the model on screen stays loaded and the status line says why).
   */
  backendChanged(): void {
    const picker = this.picker;
    if (!picker) return;
    picker.setBackend(this.settings.backend);
    const id = this.wanted ?? picker.select.value;
    if (!this.active || !id || !picker.find(id) || this.busy === "generating") return;
    const fit = picker.fit(id);
    if (fit?.level === "no") {
      const kept = this.loaded ? " The model stays loaded as it was." : "";
      this.setStatus(`${backendLabel(this.settings.backend)}: ${fit.text.replace(/\.$/, "")}.${kept}`, true);
      return;
    }
    void this.load(id);
  }

  /** Another tab is shown (and loads its own model): chat's model is no longer loaded. */
  deactivate(): void {
    this.active = false;
    if (this.loader?.drop()) this.busy = "idle";
    this.loaded = null;
    this.picker?.setLoaded(null);
    this.setStatus("");
    this.sync();
  }

  async start(device: DeviceInfo, autoload = true): Promise<void> {
    const conversations = await this.store.list();
    if (conversations[0]) this.conversation = conversations[0];
    this.showConversation();
    this.sidebar.render(conversations, this.conversation.id);
    this.sync();

    if (!this.engine) return;
    const engine = this.engine;
    if (device.unavailable) {
      // Not an error: models with a CPU backend still run; the load's status line then says
      // which backend runs and why (and the picker which models need WebGPU).
      this.setStatus(`WebGPU is not available in this browser (${device.unavailable}): models with a CPU backend run on the CPU (wasm-cpu).`);
    }
    engine.onEvent((event) => {
      if (event.type === "device-lost" && this.active) {
        this.loaded = null;
        this.picker?.setLoaded(null);
        this.generation?.abort();
        this.errors.show({ name: "DeviceLostError", message: event.message }, { reload: true });
        this.setStatus("The GPU device was lost: reload the model to continue.", true);
        this.sync();
      } else if (event.type === "corrupt-cache-entry") {
        this.setStatus(`A cached file of ${event.model} (${event.path}) was corrupt; it is downloaded again.`, true);
      }
    });

    const all = await listModels(engine);
    const models = all.filter((m) => m.task === "chat");
    const picker = new ModelPicker(engine, device, {
      onChoose: (id) => void this.load(id),
      onError: (error) => this.errors.show(error),
    });
    this.picker = picker;
    picker.setBackend(this.settings.backend);
    this.loader = new TabModelLoader({
      picker,
      errors: this.errors,
      setStatus: (text, isError) => this.setStatus(text, isError),
      rememberAs: MODEL_KEY,
      backend: () => this.settings.backend,
    });
    picker.setModels(models);
    // One "Models & storage" panel for both tabs: every model, labelled Chat or Image.
    picker.setPanelModels(all);
    if (models.length === 0) {
      picker.select.closest("label")?.setAttribute("hidden", "");
      this.setStatus(NO_MODEL, true);
      this.sync();
      void picker.refreshCache();
      return;
    }
    void picker.refreshCache();
    const first = picker.initialChoice(rememberedModel(MODEL_KEY));
    if (!first) {
      picker.choose(models[0]!.id);
      const why = this.settings.backend === "auto" ? "" : ` with the ${backendLabel(this.settings.backend)}`;
      this.setStatus(
        `No model here runs on this device${why} (${picker.fit(models[0]!.id)?.text ?? "?"}): see Models & storage for what each needs.`,
        true,
      );
      this.sync();
      return;
    }
    picker.choose(first.id);
    this.wanted = first.id;
    if (autoload) void this.load(first.id);
    else this.setStatus("");
  }

  // ---- model loading ------------------------------------------------------------

  async load(id: string): Promise<void> {
    if (!this.engine || !this.picker || !this.loader || this.busy === "generating" || !this.active) return;
    const picker = this.picker;
    this.wanted = id;
    this.loaded = null;
    this.busy = "loading";
    this.errors.clear();
    picker.choose(id);
    picker.setLoaded(null);
    this.sync();
    await this.loader.load(this.engine, id, (info) => {
      if (info) {
        this.loaded = id;
        picker.setLoaded(id, info);
        this.showConversationIfEmpty();
      }
      this.busy = "idle";
      void picker.refreshCache();
      this.sync();
      // Not on touch screens, where focusing pops up the keyboard over the chat.
      if (this.loaded) this.focusPrompt();
    });
  }


  // ---- conversations ------------------------------------------------------------

  private showConversation(): void {
    const label = this.loaded ? modelLabel(this.picker?.find(this.loaded) ?? ({ id: this.loaded } as ModelInfo)) : null;
    this.view.show(this.conversation.messages, label);
  }

  private showConversationIfEmpty(): void {
    if (this.conversation.messages.length === 0) this.showConversation();
  }

  private async refreshList(): Promise<void> {
    this.sidebar.render(await this.store.list(), this.conversation.id);
    this.sidebar.setDisabled(this.busy === "generating");
  }

  private async save(): Promise<void> {
    this.conversation.updated = Date.now();
    try {
      await this.store.put(this.conversation);
    } catch (error) {
      this.errors.show(error);
    }
    await this.refreshList();
  }

  private startNew(): void {
    if (this.busy === "generating") return;
    this.editing = null;
    if (this.conversation.messages.length > 0) this.conversation = newConversation();
    this.showConversation();
    void this.refreshList();
    this.setStatus("New conversation.");
    this.sync();
    this.sidebar.closeIfNarrow();
    this.focusPrompt();
  }

  private async open(id: string): Promise<void> {
    if (this.busy === "generating" || id === this.conversation.id) return;
    const found = await this.store.get(id);
    if (!found) return;
    this.editing = null;
    this.conversation = found;
    this.showConversation();
    await this.refreshList();
    this.setStatus("");
    this.sync();
    this.focusPrompt();
  }

  private async remove(id: string): Promise<void> {
    if (this.busy === "generating") return;
    await this.store.delete(id);
    if (id === this.conversation.id) {
      const rest = await this.store.list();
      this.conversation = rest[0] ?? newConversation();
      this.editing = null;
      this.showConversation();
    }
    await this.refreshList();
    this.sync();
  }

  // ---- chatting -----------------------------------------------------------------

  private async submit(): Promise<void> {
    const text = this.prompt.value.trim();
    if (!text || this.busy !== "idle" || !this.loaded) return;
    this.editing = null;
    this.prompt.value = "";
    this.autosize();
    if (this.conversation.messages.length === 0) this.conversation.title = titleFrom(text);
    this.conversation.messages.push({ role: "user", content: text });
    this.view.append({ role: "user", content: text });
    this.view.scroll(true);
    await this.save();
    await this.generate();
  }

  private request(): ChatCompletionRequest {
    const s = this.settings.get();
    const messages: ChatMessage[] = this.conversation.messages.map((m) => ({ role: m.role, content: m.content }));
    if (s.systemPrompt.trim()) messages.unshift({ role: "system", content: s.systemPrompt });
    return {
      messages,
      temperature: s.temperature ?? undefined,
      top_p: s.topP ?? undefined,
      max_tokens: s.maxTokens ?? undefined,
      seed: s.seed ?? undefined,
    };
  }

  private async generate(): Promise<void> {
    if (!this.engine || !this.loaded || this.busy !== "idle") return;
    const conversation = this.conversation;
    const model = this.loaded;
    const controller = new AbortController();
    this.generation = controller;
    this.busy = "generating";
    this.errors.clear();
    this.sync();
    this.setStatus("Thinking…");
    const reply: StreamingReply = this.view.stream();
    const started = performance.now();
    let content = "";
    let chunks = 0;
    let usage: CompletionUsage | null = null;
    let finish: FinishReason | null = null;
    let failure: unknown = null;
    try {
      const stream = await this.engine.chat.completions.create(
        { ...this.request(), stream: true, stream_options: { include_usage: true } },
        { signal: controller.signal },
      );
      for await (const chunk of stream) {
        const choice = chunk.choices[0];
        const delta = choice?.delta.content;
        if (delta) {
          content += delta;
          chunks += 1;
          reply.update(content);
          if (chunks === 1) this.setStatus("Writing…");
        }
        if (choice?.finish_reason) finish = choice.finish_reason;
        if (chunk.usage) usage = chunk.usage;
      }
    } catch (error) {
      if (isAbort(error) || controller.signal.aborted) finish = "abort";
      else failure = error;
    }
    const seconds = (performance.now() - started) / 1000;
    this.generation = null;
    this.busy = "idle";

    if (!content && (failure || finish === "abort")) {
      // Nothing came: no empty reply is kept (Regenerate asks again).
      reply.node.remove();
      if (failure) {
        this.errors.show(failure);
        this.setStatus("The reply failed.", true);
      } else {
        this.setStatus("Stopped before the first token.");
      }
    } else {
      const stats: MessageStats = {
        model,
        promptTokens: usage?.prompt_tokens ?? null,
        cachedPromptTokens: usage?.extra?.cached_prompt_tokens ?? null,
        completionTokens: usage?.completion_tokens ?? chunks,
        decodeTokensPerS: usage?.extra?.decode_tokens_per_s ?? (seconds > 0 ? chunks / seconds : null),
        prefillTokensPerS: usage?.extra?.prefill_tokens_per_s ?? null,
        finishReason: failure ? "abort" : finish,
        seconds,
      };
      reply.finish(content, stats, failure !== null);
      conversation.messages.push({ role: "assistant", content, stats });
      if (failure) this.errors.show(failure);
      this.setStatus(finish === "abort" ? "Stopped." : failure ? "The reply was cut short." : "");
    }
    if (conversation === this.conversation) await this.save();
    else await this.store.put(conversation);
    this.sync();
    this.focusPrompt();
  }

  private async regenerateLast(): Promise<void> {
    if (this.busy !== "idle" || !this.loaded) return;
    const messages = this.conversation.messages;
    const last = messages[messages.length - 1];
    if (!last) return;
    if (last.role === "assistant") {
      messages.pop();
      this.view.removeLast(1);
    }
    this.editing = null;
    await this.generate();
  }

  private startEdit(): void {
    if (this.busy !== "idle" || this.editing) return;
    const messages = this.conversation.messages;
    let index = -1;
    for (let i = messages.length - 1; i >= 0; i--) {
      if (messages[i]!.role === "user") {
        index = i;
        break;
      }
    }
    if (index < 0) return;
    const removed = messages.splice(index);
    this.editing = removed;
    this.view.removeLast(removed.length);
    this.prompt.value = removed[0]!.content;
    this.autosize();
    this.prompt.focus();
    this.prompt.setSelectionRange(this.prompt.value.length, this.prompt.value.length);
    this.setStatus("Editing your last message: Enter sends it again, Escape cancels.");
    this.sync();
  }

  private cancelEdit(): void {
    if (!this.editing) return;
    for (const m of this.editing) {
      this.conversation.messages.push(m);
      this.view.append(m);
    }
    this.editing = null;
    this.prompt.value = "";
    this.autosize();
    this.setStatus("");
    this.sync();
  }

  // ---- input --------------------------------------------------------------------

  private bindInput(): void {
    this.composer.addEventListener("submit", (event) => {
      event.preventDefault();
      void this.submit();
    });
    this.prompt.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        void this.submit();
      }
    });
    this.prompt.addEventListener("input", () => {
      this.autosize();
      this.sync();
    });
    document.addEventListener("keydown", (event) => {
      if (event.key !== "Escape") return;
      if (this.busy === "generating") {
        event.preventDefault();
        this.generation?.abort();
      } else if (this.editing) {
        event.preventDefault();
        this.cancelEdit();
      }
    });
    this.stop.addEventListener("click", () => this.generation?.abort());
    el<HTMLButtonElement>("cancel-load").addEventListener("click", () => this.loader?.cancel());
    this.newChat.addEventListener("click", () => this.startNew());
    this.regenerate.addEventListener("click", () => void this.regenerateLast());
    this.editLast.addEventListener("click", () => this.startEdit());
  }

  /** Focuses the message box, except on touch screens (it would pop up the keyboard). */
  private focusPrompt(): void {
    if (finePointer.matches) this.prompt.focus();
  }

  private autosize(): void {
    this.prompt.style.height = "auto";
    this.prompt.style.height = `${Math.min(this.prompt.scrollHeight + 2, window.innerHeight * 0.4)}px`;
  }

  private setStatus(text: string, isError = false): void {
    this.status.textContent = text;
    this.status.classList.toggle("error", isError);
  }

  /** Enables and disables controls for the current state. */
  private sync(): void {
    const idle = this.busy === "idle";
    const ready = idle && this.loaded !== null;
    const messages = this.conversation.messages;
    const last = messages[messages.length - 1];
    this.prompt.disabled = this.loaded === null;
    this.send.disabled = !ready;
    this.stop.disabled = this.busy !== "generating";
    this.composer.dataset.busy = String(this.busy === "generating");
    this.regenerate.disabled = !ready || !last || this.editing !== null;
    this.editLast.disabled = !ready || this.editing !== null || !messages.some((m) => m.role === "user");
    this.newChat.disabled = this.busy === "generating";
    this.picker?.setDisabled(this.busy === "generating");
    this.sidebar.setDisabled(this.busy === "generating");
    // A backend change reloads the model: not under a reply being written.
    if (this.active) this.settings.setBackendDisabled(this.busy === "generating");
    el("chat").setAttribute("aria-busy", String(this.busy === "generating"));
  }

  startupFailed(error: unknown): void {
    this.errors.show(error);
    this.setStatus("The engine could not start.", true);
  }

  messages(): Array<{ role: string; content: string }> {
    return this.conversation.messages.map((m) => ({ role: m.role, content: m.content }));
  }
}
