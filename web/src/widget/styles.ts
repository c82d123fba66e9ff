// The widgets' styles: one constructable stylesheet, adopted by every widget's shadow root
// (no <style> element, so a host CSP without 'unsafe-inline' in style-src allows it).
// .root resets every property (all: initial) so nothing the host page sets on the element
// (inherited color, font-size, line-height...) reaches inside; the look comes only from
// the documented custom properties (--webkiln-*) and ::part() rules of the host.

const CSS = `
:host { display: block; }
:host([hidden]) { display: none; }
:host([layout="bubble"]) { display: contents; }
.root {
  all: initial;
  display: block;
  box-sizing: border-box;
  color: var(--webkiln-fg, #1c1e21);
  background: var(--webkiln-bg, #ffffff);
  font-family: var(--webkiln-font, system-ui, -apple-system, "Segoe UI", Roboto, sans-serif);
  font-size: var(--webkiln-font-size, 15px);
  line-height: 1.45;
  border: 1px solid var(--webkiln-border, #d0d4da);
  border-radius: var(--webkiln-radius, 12px);
  overflow: hidden;
  --accent: var(--webkiln-accent, #2563eb);
  --accent-fg: var(--webkiln-accent-fg, #ffffff);
  --muted: var(--webkiln-muted, #5f6670);
  --user-bg: var(--webkiln-user-bg, #e8eefc);
  --assistant-bg: var(--webkiln-assistant-bg, #f3f4f6);
  --error-bg: var(--webkiln-error-bg, #fdecec);
  --error-fg: var(--webkiln-error-fg, #8a1c1c);
  --code-bg: var(--webkiln-code-bg, #eef0f3);
}
.root.dark {
  color: var(--webkiln-fg, #e6e8eb);
  background: var(--webkiln-bg, #17191c);
  border-color: var(--webkiln-border, #3a3f46);
  --accent: var(--webkiln-accent, #5b8dff);
  --muted: var(--webkiln-muted, #a3aab4);
  --user-bg: var(--webkiln-user-bg, #243150);
  --assistant-bg: var(--webkiln-assistant-bg, #23262b);
  --error-bg: var(--webkiln-error-bg, #3b1d1d);
  --error-fg: var(--webkiln-error-fg, #ffb4b4);
  --code-bg: var(--webkiln-code-bg, #2b2f35);
}
*, *::before, *::after { box-sizing: border-box; }
[hidden] { display: none !important; }
.panel { display: flex; flex-direction: column; gap: 8px; padding: 10px; min-height: 0; }
.root.inline .panel { height: var(--webkiln-height, 420px); }
.header { display: flex; align-items: center; gap: 8px; font-weight: 600; }
.title { flex: 1; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
button {
  font: inherit; color: var(--accent-fg); background: var(--accent); border: 0;
  border-radius: 8px; padding: 6px 12px; cursor: pointer; display: inline-block;
}
button.secondary { color: inherit; background: transparent; border: 1px solid var(--webkiln-border, #d0d4da); }
button:disabled { opacity: 0.5; cursor: default; }
button:focus-visible, textarea:focus-visible, input:focus-visible, .log:focus-visible {
  outline: 2px solid var(--accent); outline-offset: 2px;
}
.info { font-size: 0.9em; color: var(--muted); display: flex; flex-wrap: wrap; gap: 6px 12px; align-items: center; }
.fit-no { color: var(--error-fg); }
.progress { display: flex; flex-direction: column; gap: 4px; font-size: 0.85em; color: var(--muted); }
.bar { height: 6px; border-radius: 3px; background: var(--assistant-bg); overflow: hidden; }
.fill { height: 100%; width: 0; background: var(--accent); transition: width 0.2s; }
.log { flex: 1; min-height: 80px; overflow-y: auto; display: flex; flex-direction: column; gap: 8px; }
.msg { padding: 8px 10px; border-radius: 10px; max-width: 92%; overflow-wrap: anywhere; }
.msg.user { align-self: flex-end; background: var(--user-bg); white-space: pre-wrap; }
.msg.assistant { align-self: flex-start; background: var(--assistant-bg); }
.msg p { margin: 0 0 0.5em; } .msg p:last-child { margin-bottom: 0; }
.msg pre { background: var(--code-bg); padding: 8px; border-radius: 6px; overflow-x: auto; margin: 0; }
.msg code { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 0.9em; }
.msg a { color: var(--accent); }
.msg table { border-collapse: collapse; } .msg th, .msg td { border: 1px solid var(--webkiln-border, #d0d4da); padding: 2px 6px; }
.code-bar { display: flex; justify-content: space-between; align-items: center; font-size: 0.8em; color: var(--muted); padding: 2px 0; }
.code-bar button { padding: 2px 8px; font-size: 0.9em; }
.error { background: var(--error-bg); color: var(--error-fg); border-radius: 8px; padding: 8px 10px; font-size: 0.9em; overflow-wrap: anywhere; }
.error strong { display: block; }
form { display: flex; gap: 6px; align-items: flex-end; margin: 0; }
textarea, input {
  font: inherit; color: inherit; background: var(--webkiln-input-bg, transparent); flex: 1; min-width: 0;
  border: 1px solid var(--webkiln-border, #d0d4da); border-radius: 8px; padding: 6px 8px; resize: none;
}
.status { font-size: 0.8em; color: var(--muted); min-height: 1.2em; }
.options { display: flex; flex-wrap: wrap; gap: 6px 12px; font-size: 0.85em; color: var(--muted); }
.image { display: flex; justify-content: center; align-items: center; min-height: 80px; flex: 1; }
.image img { max-width: 100%; max-height: 100%; image-rendering: pixelated; min-width: 128px; border-radius: 6px; }
.launcher {
  all: initial; display: inline-block; cursor: pointer; color: var(--webkiln-accent-fg, #ffffff);
  background: var(--webkiln-accent, #2563eb); line-height: 1.2;
  position: fixed; right: 16px; bottom: 16px; z-index: 2147483000; border-radius: 999px;
  padding: 12px 18px; box-shadow: 0 4px 16px rgba(0, 0, 0, 0.25);
  font-family: var(--webkiln-font, system-ui, sans-serif); font-size: var(--webkiln-font-size, 15px);
}
.root.bubble {
  position: fixed; right: 16px; bottom: 72px; z-index: 2147483000;
  width: min(var(--webkiln-width, 380px), calc(100vw - 32px));
  box-shadow: 0 8px 32px rgba(0, 0, 0, 0.3);
}
.root.bubble .panel { height: min(var(--webkiln-height, 520px), calc(100vh - 100px)); }
.launcher:focus-visible { outline: 3px solid var(--webkiln-accent, #2563eb); outline-offset: 3px; }
@media (max-width: 480px) {
  .root.bubble { right: 8px; left: 8px; bottom: 68px; width: auto; }
  .launcher { right: 8px; bottom: 8px; }
}
`;

let sheet: CSSStyleSheet | null = null;

/** The one stylesheet every widget adopts (made on first use: it needs a document). */
export function widgetStyles(): CSSStyleSheet {
  if (!sheet) {
    sheet = new CSSStyleSheet();
    sheet.replaceSync(CSS);
  }
  return sheet;
}
