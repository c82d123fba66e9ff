// The app of site/index.html: starts the engine (in a Web Worker), the Chat tab
// (chat_controller.ts) and the Images tab (images_view.ts), and switches between them.

import type { Engine } from "../engine/api";
import { registerServiceWorker } from "../storage/offline";
import { ChatController } from "./chat_controller";
import { ConversationStore } from "./conversations";
import { probeDevice } from "../ui/device";
import { el } from "./dom";
import { createWorkerEngine } from "./engine";
import { openGallery } from "./gallery";
import { ImagesView } from "./images_view";
import { renderMarkdown } from "../ui/markdown";
import { listModels } from "./model_list";
import { initTheme } from "./theme";

const TAB_KEY = "webkiln.tab";

interface AppHandle {
  engine: Engine | null;
  renderMarkdown: typeof renderMarkdown;
  /** Resolves once startup is done (models listed; the first load started). */
  ready: Promise<void>;
  /** The messages of the conversation on screen. */
  messages(): Array<{ role: string; content: string }>;
}

declare global {
  interface Window {
    webkilnApp: AppHandle;
  }
}

type Tab = "chat" | "images";

/** The Chat / Images switch in the top bar (a tablist: arrow keys move between the tabs). */
class Tabs {
  private readonly buttons: Record<Tab, HTMLButtonElement> = { chat: el("tab-chat"), images: el("tab-images") };
  private readonly chatParts = [el<HTMLElement>("chat"), el<HTMLElement>("chat-bottom"), el<HTMLElement>("chat-model-area")];
  current: Tab = "chat";

  constructor(
    private readonly app: ChatController,
    private readonly images: ImagesView,
  ) {
    for (const tab of ["chat", "images"] as const) {
      const button = this.buttons[tab];
      button.addEventListener("click", () => this.select(tab));
      button.addEventListener("keydown", (event) => {
        if (!["ArrowLeft", "ArrowRight", "Home", "End"].includes(event.key)) return;
        event.preventDefault();
        const next: Tab = event.key === "Home" ? "chat" : event.key === "End" ? "images" : tab === "chat" ? "images" : "chat";
        this.buttons[next].focus();
        this.select(next);
      });
    }
  }

  static rememberedTab(): Tab {
    try {
      return localStorage.getItem(TAB_KEY) === "images" ? "images" : "chat";
    } catch {
      return "chat";
    }
  }

  /** Shows a tab; the engine then loads that tab's model (one model at a time). */
  select(tab: Tab, force = false): void {
    if (tab === this.current && !force) return;
    if (this.app.generating || this.images.generating) return;
    this.current = tab;
    try {
      localStorage.setItem(TAB_KEY, tab);
    } catch {
      // Not remembered.
    }
    for (const [name, button] of Object.entries(this.buttons)) {
      const selected = name === tab;
      button.setAttribute("aria-selected", String(selected));
      button.tabIndex = selected ? 0 : -1;
    }
    for (const part of this.chatParts) part.hidden = tab !== "chat";
    this.images.root.hidden = tab !== "images";
    document.body.dataset.tab = tab;
    document.title = tab === "images" ? "webkiln images" : "webkiln chat";
    if (tab === "images") {
      this.app.deactivate();
      this.images.activate();
    } else {
      this.images.deactivate();
      this.app.activate();
    }
  }
}

async function main(): Promise<void> {
  initTheme(el<HTMLButtonElement>("theme-toggle"));
  let resolveReady!: () => void;
  const ready = new Promise<void>((resolve) => (resolveReady = resolve));
  let app: ChatController | null = null;
  window.webkilnApp = { engine: null, renderMarkdown, ready, messages: () => app?.messages() ?? [] };

  let engine: Engine | null = null;
  let startupError: unknown = null;
  try {
    engine = createWorkerEngine();
  } catch (error) {
    startupError = error;
  }
  window.webkilnApp.engine = engine;
  const [store, gallery, device] = await Promise.all([ConversationStore.open(), openGallery(), probeDevice()]);
  app = new ChatController(engine, store);
  const images = new ImagesView(engine, device, gallery, app.errorBanner, app.settingsPanel);
  app.reloadOther = () => images.reload();
  images.onModelChange = (info) => app!.imageModelChanged(info);
  const tabs = new Tabs(app, images);
  // One Backend setting for both tabs: the shown tab loads its model again with it.
  app.settingsPanel.onBackendChange = () => {
    app!.backendChanged();
    images.backendChanged();
  };
  const tab = Tabs.rememberedTab();
  if (startupError) app.startupFailed(startupError);
  if (tab === "images") tabs.select("images", true);
  await app.start(device, tab === "chat");
  if (engine) await images.start((await listModels(engine)).filter((m) => m.task === "image"));
  if (tab === "images") images.activate();
  resolveReady();
  // The app shell keeps working offline (never rejects; false where unsupported).
  void registerServiceWorker();
}

void main();
