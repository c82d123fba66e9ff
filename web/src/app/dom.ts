// Small DOM helpers shared by the app's views.

/** The element with this id (the page is static, so a missing one is a bug). */
export function el<T extends HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (!found) throw new Error(`the page has no #${id}`);
  return found as T;
}

type Child = Node | string | null | undefined | false;

/** Creates an element: h("button", { class: "x", "aria-label": "y" }, "text"). Text is always textContent. */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string | number | boolean | undefined> = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === false) continue;
    node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child);
  }
  return node;
}

/** "119.8 MB", "1.2 GB", "512 kB". */
export function formatBytes(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined || !Number.isFinite(bytes)) return "?";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${value >= 100 || unit === 0 ? value.toFixed(0) : value.toFixed(1)} ${units[unit]}`;
}

/** "45 s", "3 min 5 s". */
export function formatSeconds(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

/** A button that asks for a second click within a few seconds before acting. */
export function confirmTwice(button: HTMLButtonElement, confirmLabel: string, action: () => void | Promise<void>): void {
  let armed: number | undefined;
  const original = { text: button.textContent ?? "", label: button.getAttribute("aria-label") };
  const disarm = () => {
    if (armed === undefined) return;
    window.clearTimeout(armed);
    armed = undefined;
    button.classList.remove("armed");
    if (button.dataset.iconOnly === undefined) button.textContent = original.text;
    if (original.label !== null) button.setAttribute("aria-label", original.label);
  };
  button.addEventListener("click", (event) => {
    event.stopPropagation();
    if (armed === undefined) {
      button.classList.add("armed");
      if (button.dataset.iconOnly === undefined) button.textContent = confirmLabel;
      button.setAttribute("aria-label", confirmLabel);
      armed = window.setTimeout(disarm, 4000);
      return;
    }
    disarm();
    void action();
  });
  button.addEventListener("blur", disarm);
}
