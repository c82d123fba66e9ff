// The embeddable widget's public entry: define() registers <webkiln-chat> and
// <webkiln-image>. site/widget.js (./entry.ts) calls it on import; bundler users import
// define from the package and call it themselves, with the URLs of their webkiln site.

import { locations } from "./element";
import { WebkilnChatElement } from "./chat";
import { WebkilnImageElement } from "./image";

export interface DefineOptions {
  /** The folder holding models/index.json (default: models/ next to widget.js). An element's models-url overrides it. */
  modelsUrl?: string;
  /** The engine's Worker script (default: assets/engine-worker.js next to widget.js). */
  workerUrl?: string;
}

/** Registers both elements (each only if not yet defined, so a second copy of the script is harmless). */
export function define(options: DefineOptions = {}): void {
  const base = document.baseURI;
  if (options.modelsUrl) locations.modelsUrl = new URL(options.modelsUrl.replace(/\/?$/, "/"), base).href;
  if (options.workerUrl) locations.workerUrl = new URL(options.workerUrl, base).href;
  if (!customElements.get("webkiln-chat")) customElements.define("webkiln-chat", WebkilnChatElement);
  if (!customElements.get("webkiln-image")) customElements.define("webkiln-image", WebkilnImageElement);
}

export { WebkilnChatElement, WebkilnImageElement };
export type { ReplyDetail } from "./chat";
export type { ImageReplyDetail } from "./image";
export type { ErrorDetail } from "./element";
