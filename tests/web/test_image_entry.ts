// Test-only bundle (tests/site/test-image.html, tests/test_image_schedulers.py): the image
// schedulers and the seeded noise generator on `window.webkilnImageTest`, so Playwright's
// page.evaluate can drive them against diffusers. No GPU code.

import * as latents from "../../web/src/image/latents";
import * as schedulers from "../../web/src/image/schedulers";

/** Float32Array contents as their IEEE bit patterns (exact, JSON-friendly). */
function bits(values: Float32Array): number[] {
  return Array.from(new Uint32Array(values.buffer, values.byteOffset, values.length));
}

const api = { ...latents, ...schedulers, bits };

declare global {
  interface Window {
    webkilnImageTest: typeof api;
  }
}

window.webkilnImageTest = api;
