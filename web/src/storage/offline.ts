// Registering the service worker (site/sw.js, from web/src/sw.ts) that keeps the app
// shell (pages, CSS, scripts) available offline. Model files need no service worker:
// the loader serves them from its own verified cache, and manifests come from
// fetchJsonCached's stored copies.

/** The message a page sends the service worker: cache these URLs of the app shell. */
export interface CacheShellMessage {
  type: "webkiln-cache-shell";
  urls: string[];
}

export interface RegisterOptions {
  /** Most milliseconds to wait for the worker to cache this page's files. Default 30000. */
  timeoutMs?: number;
}

/**
 * Registers the service worker at `url` (relative to this page), then hands it this
 * page and the scripts and style sheets it loaded, so that this very page works
 * offline after its first visit. Resolves true once that is done (or after
 * `timeoutMs`, the worker being registered); false where service workers are
 * unsupported (insecure context, Web Worker, some private modes) or registration
 * failed. Never rejects.
 */
export async function registerServiceWorker(url = "sw.js", options: RegisterOptions = {}): Promise<boolean> {
  const container = typeof navigator === "undefined" ? undefined : navigator.serviceWorker;
  if (!container || typeof container.register !== "function" || typeof document === "undefined") {
    return false;
  }
  let registration: ServiceWorkerRegistration;
  try {
    registration = await container.register(url);
  } catch (error) {
    console.warn("webkiln: the offline service worker could not be registered; the app needs the network.", error);
    return false;
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, options.timeoutMs ?? 30_000);
  });
  await Promise.race([cacheThisPage(container, registration), timeout]);
  clearTimeout(timer);
  return true;
}

// Waits for the worker to be active and asks it to cache what this page loaded.
async function cacheThisPage(container: ServiceWorkerContainer, registration: ServiceWorkerRegistration): Promise<void> {
  try {
    await container.ready;
    const worker = registration.active;
    if (!worker) {
      return;
    }
    const message: CacheShellMessage = { type: "webkiln-cache-shell", urls: pageResources() };
    const channel = new MessageChannel();
    const done = new Promise<void>((resolve) => {
      channel.port1.onmessage = () => resolve();
    });
    worker.postMessage(message, [channel.port2]);
    await done;
  } catch (error) {
    console.warn("webkiln: could not cache this page for offline use.", error);
  }
}

// This page and the same-origin scripts and style sheets it loaded (the worker keeps
// only those inside its scope and outside models/).
function pageResources(): string[] {
  // The page without its query: the worker keeps one copy per page, used for any query.
  const page = new URL(location.href);
  page.search = "";
  page.hash = "";
  const urls = new Set<string>([page.href]);
  const add = (value: string | null | undefined) => {
    if (!value) return;
    const resolved = new URL(value, location.href);
    if (resolved.origin === location.origin) urls.add(resolved.href.split("#")[0]!);
  };
  for (const script of Array.from(document.querySelectorAll<HTMLScriptElement>("script[src]"))) add(script.src);
  for (const link of Array.from(document.querySelectorAll<HTMLLinkElement>('link[rel~="stylesheet"][href], link[rel~="modulepreload"][href], link[rel~="icon"][href], link[rel="manifest"][href]'))) {
    add(link.href);
  }
  if (typeof performance !== "undefined" && typeof performance.getEntriesByType === "function") {
    for (const entry of performance.getEntriesByType("resource") as PerformanceResourceTiming[]) {
      if (["script", "link", "css", "other"].includes(entry.initiatorType) && /\.(m?js|css|wasm|json|svg|png|ico)(\?|$)/.test(entry.name)) {
        add(entry.name);
      }
    }
  }
  return [...urls];
}
