// Small DOM helpers shared by the app's views.

export { formatBytes, formatSeconds } from "../ui/format";

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
