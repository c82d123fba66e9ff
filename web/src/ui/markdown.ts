// Model output as sanitized markdown. Model text is untrusted: it must never run
// script or make the page load anything. Three layers keep it inert:
//  1. marked renders raw HTML in the text as escaped text (it shows, it never parses),
//     and images as plain links (a link loads nothing until the user clicks it);
//  2. DOMPurify then keeps only the tags and attributes markdown produces, and only
//     http(s)/mailto/#fragment URLs;
//  3. the page's Content-Security-Policy (site/index.html's; the host page's for the
//     widget) refuses remote images, frames, objects and inline script anyway.
// The app's chat view and the widget both render through this module.

import DOMPurify from "dompurify";
import { Marked, type Tokens } from "marked";

const escapes: Record<string, string> = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
export const escapeHtml = (text: string): string => text.replace(/[&<>"']/g, (c) => escapes[c]!);

const marked = new Marked({
  gfm: true,
  breaks: true,
  async: false,
  renderer: {
    // Raw HTML (block or inline) is shown as the text it is.
    html({ text }: Tokens.HTML | Tokens.Tag): string {
      return escapeHtml(text);
    },
    // ![alt](src) becomes a link: nothing is fetched.
    image({ href, text }: Tokens.Image): string {
      const label = `🖼 ${text || "image"}`;
      return `<a href="${escapeHtml(href)}">${escapeHtml(label)}</a>`;
    },
  },
});

const ALLOWED_TAGS = [
  "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "del", "s", "code", "pre",
  "blockquote", "ul", "ol", "li", "a", "table", "thead", "tbody", "tr", "th", "td", "span", "sup", "sub",
];
const ALLOWED_ATTR = ["href", "title", "class", "align", "start"];
const SAFE_URL = /^(?:https?:|mailto:|#)/i;
const SAFE_CLASS = /^language-[\w+#.-]{1,40}$/;

const purify = DOMPurify(window);
purify.addHook("uponSanitizeAttribute", (_node, data) => {
  if (data.attrName === "class") {
    data.attrValue = data.attrValue.split(/\s+/).filter((c) => SAFE_CLASS.test(c)).join(" ");
    if (!data.attrValue) data.keepAttr = false;
  }
});
purify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    const href = node.getAttribute("href");
    if (href !== null && !SAFE_URL.test(href.trim())) node.removeAttribute("href");
    if (node.hasAttribute("href") && !node.getAttribute("href")!.startsWith("#")) {
      node.setAttribute("target", "_blank");
      node.setAttribute("rel", "noopener noreferrer nofollow");
    }
  }
});

/** Markdown to sanitized HTML: safe to assign to innerHTML. */
export function renderMarkdown(text: string): string {
  const html = marked.parse(text) as string;
  return purify.sanitize(html, {
    ALLOWED_TAGS,
    ALLOWED_ATTR,
    ALLOWED_URI_REGEXP: SAFE_URL,
    ALLOW_DATA_ATTR: false,
    ALLOW_ARIA_ATTR: false,
    RETURN_TRUSTED_TYPE: false,
  });
}

/** Renders into `target` and gives each code block a header with its language and a Copy button. */
export function renderMarkdownInto(target: HTMLElement, text: string): void {
  target.innerHTML = renderMarkdown(text);
  for (const pre of Array.from(target.querySelectorAll("pre"))) {
    const code = pre.querySelector("code");
    const language = /language-([\w+#.-]+)/.exec(code?.className ?? "")?.[1] ?? "";
    const bar = document.createElement("div");
    bar.className = "code-bar";
    const label = document.createElement("span");
    label.textContent = language || "code";
    const copy = document.createElement("button");
    copy.type = "button";
    copy.className = "copy-code";
    copy.textContent = "Copy";
    copy.setAttribute("aria-label", `Copy ${language || "code"} to the clipboard`);
    bar.append(label, copy);
    const wrapper = document.createElement("div");
    wrapper.className = "code-block";
    pre.replaceWith(wrapper);
    wrapper.append(bar, pre);
  }
}

/** Copies a code block's text when its Copy button is clicked (one listener for the whole chat). */
export function handleCopyClicks(root: HTMLElement): void {
  root.addEventListener("click", (event) => {
    const button = (event.target as Element | null)?.closest<HTMLButtonElement>(".copy-code");
    if (!button) return;
    const code = button.closest(".code-block")?.querySelector("pre")?.textContent ?? "";
    void copyText(code).then((ok) => {
      button.textContent = ok ? "Copied" : "Copy failed";
      window.setTimeout(() => (button.textContent = "Copy"), 1500);
    });
  });
}

export async function copyText(text: string): Promise<boolean> {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    // No clipboard permission (or not a secure context): the old way.
    const area = document.createElement("textarea");
    area.value = text;
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.append(area);
    area.select();
    const ok = document.execCommand("copy");
    area.remove();
    return ok;
  }
}

/**
 * Re-renders a message's markdown as text streams in, at most once per animation
 * frame (with a timer fallback for background tabs, where frames stop).
 */
export class StreamingMarkdown {
  private text = "";
  private rendered = "";
  private frame: number | undefined;
  private timer: number | undefined;

  constructor(
    private readonly target: HTMLElement,
    private readonly onRender?: () => void,
  ) {}

  update(text: string): void {
    this.text = text;
    if (this.frame !== undefined) return;
    this.frame = requestAnimationFrame(() => this.flush());
    this.timer = window.setTimeout(() => this.flush(), 200);
  }

  /** Renders now (if anything changed) and cancels the pending frame. */
  flush(): void {
    if (this.frame !== undefined) cancelAnimationFrame(this.frame);
    if (this.timer !== undefined) window.clearTimeout(this.timer);
    this.frame = this.timer = undefined;
    if (this.text === this.rendered) return;
    this.rendered = this.text;
    renderMarkdownInto(this.target, this.text);
    this.onRender?.();
  }
}
