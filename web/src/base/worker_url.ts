// The URL a module Worker can be started from for a script that may be on another origin.
//
// `new Worker(url)` refuses a cross-origin URL outright (the embeddable widget: the host page
// on one origin, widget.js and engine-worker.js on the widget's). For such a script this gives
// a same-origin blob: module whose only line imports the real one: the import is an ordinary
// CORS module fetch (the script must be served with Access-Control-Allow-Origin), and inside
// it import.meta.url is the real URL, so what the worker loads relative to itself still comes
// from the script's origin. The host page's CSP must allow blob: in worker-src.

/** `url` itself when a Worker may start from it here, else a blob: bootstrap (`bootstrap: true`) that imports it. */
export function workerScriptUrl(url: string | URL): { href: string; bootstrap: boolean } {
  const target = new URL(url, globalThis.location?.href);
  if (globalThis.location === undefined || target.origin === globalThis.location.origin || target.protocol === "blob:") {
    return { href: target.href, bootstrap: false };
  }
  const blob = new Blob([`import ${JSON.stringify(target.href)};\n`], { type: "text/javascript" });
  return { href: URL.createObjectURL(blob), bootstrap: true };
}
