// A small PNG encoder: 8-bit RGB (alpha dropped when fully opaque, else RGBA), no row
// filters, zlib through CompressionStream("deflate") (pages and Workers alike), and
// text chunks (tEXt when the value is Latin-1, else iTXt in UTF-8) for metadata such
// as the A1111-style "parameters" of a generated image.

let crcTable: Uint32Array | null = null;

function crc32(bytes: Uint8Array): number {
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = (crcTable[(c ^ (bytes[i] as number)) & 0xff] as number) ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type: string, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, data.length);
  for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
  out.set(data, 8);
  view.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)));
  return out;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function latin1(text: string): Uint8Array | null {
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c > 0xff) return null;
    out[i] = c;
  }
  return out;
}

function textChunk(keyword: string, value: string): Uint8Array {
  const key = latin1(keyword);
  if (!key || key.length < 1 || key.length > 79) throw new RangeError(`bad PNG text keyword ${JSON.stringify(keyword)}`);
  const plain = latin1(value);
  if (plain) return chunk("tEXt", concat([key, new Uint8Array([0]), plain]));
  // iTXt: keyword, 0, compression flag 0, method 0, language "", 0, translated keyword "", 0, UTF-8 text
  return chunk("iTXt", concat([key, new Uint8Array([0, 0, 0, 0, 0]), new TextEncoder().encode(value)]));
}

/** zlib-wrapped deflate of `data`. */
export async function zlibDeflate(data: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([data as BlobPart]).stream().pipeThrough(new CompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/**
 * A PNG file of an RGBA image (row-major, 4 bytes a pixel, as ImageData). Fully opaque
 * images are stored as RGB. `text` entries become tEXt / iTXt chunks, in order.
 */
export async function encodePng(
  rgba: Uint8Array | Uint8ClampedArray,
  width: number,
  height: number,
  text: Record<string, string> = {},
): Promise<Uint8Array> {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new RangeError(`bad image size ${width}x${height}`);
  }
  if (rgba.length !== width * height * 4) throw new RangeError(`expected ${width * height * 4} RGBA bytes, got ${rgba.length}`);
  let opaque = true;
  for (let i = 3; i < rgba.length; i += 4) {
    if (rgba[i] !== 255) {
      opaque = false;
      break;
    }
  }
  const channels = opaque ? 3 : 4;
  const stride = width * channels + 1;
  const raw = new Uint8Array(stride * height);
  for (let y = 0; y < height; y++) {
    const row = y * stride; // filter byte 0 (none)
    for (let x = 0; x < width; x++) {
      const src = (y * width + x) * 4;
      const dst = row + 1 + x * channels;
      raw[dst] = rgba[src] as number;
      raw[dst + 1] = rgba[src + 1] as number;
      raw[dst + 2] = rgba[src + 2] as number;
      if (channels === 4) raw[dst + 3] = rgba[src + 3] as number;
    }
  }
  const ihdr = new Uint8Array(13);
  const view = new DataView(ihdr.buffer);
  view.setUint32(0, width);
  view.setUint32(4, height);
  ihdr[8] = 8; // bit depth
  ihdr[9] = opaque ? 2 : 6; // color type: RGB / RGBA
  ihdr[10] = 0; // compression
  ihdr[11] = 0; // filter method
  ihdr[12] = 0; // no interlace
  const signature = new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10]);
  return concat([
    signature,
    chunk("IHDR", ihdr),
    ...Object.entries(text).map(([k, v]) => textChunk(k, v)),
    chunk("IDAT", await zlibDeflate(raw)),
    chunk("IEND", new Uint8Array(0)),
  ]);
}

/** Standard base64 of bytes (btoa over Latin-1 pieces: no stack limits on large images). */
export function toBase64(bytes: Uint8Array): string {
  let out = "";
  const piece = 0x6000; // a multiple of 3: pieces encode without padding in between
  for (let i = 0; i < bytes.length; i += piece) {
    out += btoa(String.fromCharCode(...bytes.subarray(i, i + piece)));
  }
  return out;
}
