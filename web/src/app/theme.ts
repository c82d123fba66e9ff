// Light and dark themes: the system's preference (prefers-color-scheme) until the
// user picks one with the toggle; the pick is remembered.

const KEY = "webkiln.theme";
type Theme = "light" | "dark";

const media = window.matchMedia("(prefers-color-scheme: dark)");

function saved(): Theme | null {
  try {
    const value = localStorage.getItem(KEY);
    return value === "light" || value === "dark" ? value : null;
  } catch {
    return null;
  }
}

export function currentTheme(): Theme {
  return saved() ?? (media.matches ? "dark" : "light");
}

function apply(toggle: HTMLButtonElement): void {
  const theme = currentTheme();
  document.documentElement.dataset.theme = theme;
  const next = theme === "dark" ? "light" : "dark";
  toggle.setAttribute("aria-label", `Switch to the ${next} theme`);
  toggle.title = `Switch to the ${next} theme`;
  toggle.setAttribute("aria-pressed", String(theme === "dark"));
}

export function initTheme(toggle: HTMLButtonElement): void {
  apply(toggle);
  media.addEventListener("change", () => apply(toggle));
  toggle.addEventListener("click", () => {
    const next: Theme = currentTheme() === "dark" ? "light" : "dark";
    try {
      localStorage.setItem(KEY, next);
    } catch {
      // Not remembered; still applied below via the attribute.
    }
    document.documentElement.dataset.theme = next;
    apply(toggle);
  });
}
