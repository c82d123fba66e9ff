// The sidebar: conversation list (new / switch / delete) and, on narrow screens, its
// open/close toggle (it slides over the chat with a backdrop; Escape closes it).

import type { Conversation } from "./conversations";
import { confirmTwice, el, h } from "./dom";

export interface SidebarCallbacks {
  onSelect(id: string): void;
  onDelete(id: string): void;
}

const narrow = window.matchMedia("(max-width: 52rem)");

export class Sidebar {
  private readonly root = el<HTMLElement>("sidebar");
  private readonly list = el<HTMLUListElement>("conversation-list");
  private readonly toggle = el<HTMLButtonElement>("sidebar-toggle");
  private readonly backdrop = el<HTMLElement>("sidebar-backdrop");
  private disabled = false;

  constructor(private readonly callbacks: SidebarCallbacks) {
    this.toggle.addEventListener("click", () => this.setOpen(!this.isOpen()));
    el<HTMLButtonElement>("sidebar-close").addEventListener("click", () => this.setOpen(false));
    this.backdrop.addEventListener("click", () => this.setOpen(false));
    this.root.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && narrow.matches && this.isOpen()) {
        event.stopPropagation();
        this.setOpen(false);
      }
    });
    narrow.addEventListener("change", () => this.setOpen(false));
    this.setOpen(false);
  }

  isOpen(): boolean {
    return document.body.classList.contains("sidebar-open");
  }

  setOpen(open: boolean): void {
    document.body.classList.toggle("sidebar-open", open);
    this.toggle.setAttribute("aria-expanded", String(open || !narrow.matches));
    this.root.inert = narrow.matches && !open;
    if (open && narrow.matches) el<HTMLButtonElement>("sidebar-close").focus();
  }

  /** Closes the overlay after a choice on narrow screens. */
  closeIfNarrow(): void {
    if (narrow.matches) this.setOpen(false);
  }

  setDisabled(disabled: boolean): void {
    this.disabled = disabled;
    for (const b of Array.from(this.list.querySelectorAll("button"))) b.disabled = disabled;
  }

  render(conversations: Conversation[], currentId: string | null): void {
    if (conversations.length === 0) {
      this.list.replaceChildren(h("li", { class: "muted empty-list" }, "No conversations yet."));
      return;
    }
    this.list.replaceChildren(
      ...conversations.map((c) => {
        const date = new Date(c.updated);
        const when =
          date.toDateString() === new Date().toDateString()
            ? date.toLocaleTimeString(undefined, { hour: "numeric", minute: "2-digit" })
            : date.toLocaleDateString(undefined, { month: "short", day: "numeric" });
        const open = h(
          "button",
          { type: "button", class: "conversation", "aria-current": c.id === currentId ? "true" : undefined, title: c.title },
          h("span", { class: "conversation-title" }, c.title),
          h("span", { class: "conversation-date" }, when),
        );
        open.addEventListener("click", () => {
          this.callbacks.onSelect(c.id);
          this.closeIfNarrow();
        });
        const remove = h(
          "button",
          { type: "button", class: "icon-button conversation-delete", "aria-label": `Delete conversation “${c.title}”`, "data-icon-only": "" },
          trashIcon(),
        );
        confirmTwice(remove, `Click again to delete “${c.title}”`, () => this.callbacks.onDelete(c.id));
        open.disabled = remove.disabled = this.disabled;
        return h("li", { class: "conversation-item", "data-id": c.id }, open, remove);
      }),
    );
  }
}

function trashIcon(): SVGSVGElement {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
  path.setAttribute("d", "M4 7h16M9 7V4h6v3M6 7l1 13h10l1-13M10 11v6M14 11v6");
  svg.append(path);
  return svg;
}
