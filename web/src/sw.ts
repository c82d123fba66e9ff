// The service worker (bundled to site/sw.js): keeps the app shell (pages, CSS,
// scripts) available offline. Network first, so a new version shows whenever the
// server is reachable; the stored copy when it is not.
//
// Requests under models/ are left alone: the engine serves model files from its own
// verified, content-addressed cache (web/src/storage/loader.ts) and manifests from
// fetchJsonCached's stored copies, so a second copy here would only double the disk use.

// The project's lib is DOM; these are the few service-worker types this file uses.
interface ExtendableEvent extends Event {
  waitUntil(promise: Promise<unknown>): void;
}
interface FetchEvent extends ExtendableEvent {
  readonly request: Request;
  respondWith(response: Response | Promise<Response>): void;
}
interface ExtendableMessageEvent extends ExtendableEvent {
  readonly data: unknown;
  readonly ports: readonly MessagePort[];
}
interface ServiceWorkerScope {
  readonly registration: ServiceWorkerRegistration;
  readonly clients: { claim(): Promise<void> };
  skipWaiting(): Promise<void>;
  addEventListener(type: "install" | "activate", listener: (event: ExtendableEvent) => void): void;
  addEventListener(type: "fetch", listener: (event: FetchEvent) => void): void;
  addEventListener(type: "message", listener: (event: ExtendableMessageEvent) => void): void;
}
declare const self: ServiceWorkerScope;

const CACHE_PREFIX = "webkiln-shell-";
const SHELL_CACHE = `${CACHE_PREFIX}v1`;
/** The app (site/index.html) and what it loads, relative to the worker's scope. */
const SHELL = ["./", "index.html", "style.css", "favicon.svg", "assets/app.js", "assets/engine-worker.js"];

const scope = () => self.registration.scope; // ends with "/"

/** Same origin, inside the scope, GET, and not a model file or manifest. */
function isShell(url: URL): boolean {
  const base = scope();
  return url.href.startsWith(base) && !url.href.startsWith(`${base}models/`) && /^https?:$/.test(url.protocol);
}

// Fetches `url` (past the HTTP cache) and stores it; failures are only logged: a
// missing file must not stop the worker from installing or the rest from caching.
async function store(cache: Cache, url: string): Promise<void> {
  try {
    const response = await fetch(url, { cache: "no-cache" });
    // A redirected response cannot answer a navigation later: leave those to the network.
    if (response.ok && !response.redirected) {
      await cache.put(url, response);
    }
  } catch (error) {
    console.warn(`webkiln sw: could not cache ${url}`, error);
  }
}

self.addEventListener("install", (event) => {
  event.waitUntil(
    (async () => {
      const cache = await caches.open(SHELL_CACHE);
      await Promise.all(SHELL.map((path) => store(cache, new URL(path, scope()).href)));
      await self.skipWaiting();
    })(),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    (async () => {
      for (const name of await caches.keys()) {
        if (name.startsWith(CACHE_PREFIX) && name !== SHELL_CACHE) {
          await caches.delete(name);
        }
      }
      // Serve pages opened before this worker took over too (the first visit).
      await self.clients.claim();
    })(),
  );
});

// A page (web/src/storage/offline.ts) asks for the files it loaded to be cached, so
// that it works offline after its first visit; the reply says they are.
self.addEventListener("message", (event) => {
  const data = event.data as { type?: unknown; urls?: unknown } | null;
  if (data?.type !== "webkiln-cache-shell" || !Array.isArray(data.urls)) {
    return;
  }
  event.waitUntil(
    (async () => {
      const cache = await caches.open(SHELL_CACHE);
      const urls = new Set<string>();
      for (const value of data.urls as unknown[]) {
        if (typeof value !== "string") continue;
        try {
          const url = new URL(value, scope());
          url.hash = "";
          if (isShell(url)) urls.add(url.href);
        } catch {
          // not a URL: skip it
        }
      }
      await Promise.all([...urls].map((url) => store(cache, url)));
      event.ports[0]?.postMessage({ type: "webkiln-cache-shell-done", cached: [...urls] });
    })(),
  );
});

self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (request.method !== "GET" || request.headers.has("Range")) {
    return;
  }
  const url = new URL(request.url);
  if (!isShell(url)) {
    return; // the network as usual (model files and manifests included)
  }
  event.respondWith(networkFirst(request, event));
});

async function networkFirst(request: Request, event: FetchEvent): Promise<Response> {
  try {
    const response = await fetch(request);
    if (response.ok && response.type === "basic" && !response.redirected) {
      // Pages are stored without their query (index.html?model=... is index.html), so
      // the store holds one copy of each.
      const key = request.mode === "navigate" ? withoutQuery(request.url) : request;
      const copy = response.clone();
      event.waitUntil(
        caches
          .open(SHELL_CACHE)
          .then((cache) => cache.put(key, copy))
          .catch(() => undefined),
      );
    }
    return response;
  } catch (error) {
    const cache = await caches.open(SHELL_CACHE);
    const cached =
      (await cache.match(request)) ??
      // A page opened with a query (index.html?model=...) still works offline.
      (request.mode === "navigate" ? await cache.match(request, { ignoreSearch: true }) : undefined);
    if (cached) {
      return cached;
    }
    throw error;
  }
}

function withoutQuery(url: string): string {
  const u = new URL(url);
  u.search = "";
  u.hash = "";
  return u.href;
}

export {};
