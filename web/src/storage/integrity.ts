// SHA-256 of downloaded or cached bytes, in the form manifests use (lower-case hex).

export async function sha256Hex(data: Uint8Array | ArrayBuffer): Promise<string> {
  // crypto.subtle runs off the main thread in Chromium and needs a secure context
  // (https or http://localhost / 127.0.0.1), which the Cache API needs too.
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", data as BufferSource));
  let hex = "";
  for (const byte of digest) {
    hex += byte.toString(16).padStart(2, "0");
  }
  return hex;
}
