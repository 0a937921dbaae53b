// Pure trimap-preview logic for the BEN2 "Show Trimap" widget: decode the node's preview payload,
// recompute the confidence trimap (Algorithms 1 + 2) in the browser, and paint it into RGBA pixels.
// No ComfyUI / LiteGraph dependency and no side effects at import time (ComfyUI loads every .js file
// of WEB_DIRECTORY as an extension, so this module must be inert on its own).
//
// Payload (built by nodes/trimap_preview.py; the widget tests keep the two sides in sync): width, height
// (ints); image and probs, each a file in ComfyUI's temp folder {filename, subfolder, type} served by /view:
// a JPEG (image_format "jpeg", RGB at width x height) and zlib-compressed little-endian uint16, row-major,
// value = round(p * 65535) (probs_encoding "zlib-uint16le"); t_low, t_high, t_min, t_max, step,
// min_unknown_fraction (the run's parameters); final_t_low, final_t_high, unknown_count, full_width,
// full_height. Decoding is async (the files are fetched, zlib inflated with DecompressionStream); the caller
// supplies the fetching (ComfyUI's api in trimap_preview.js, a test server in the tests).

/** Trimap labels used in the Uint8Array returned by {@link classify}. */
export const BG = 0;
export const UNKNOWN = 1;
export const FG = 2;

/** Display colours [r, g, b] (0..255) of the three trimap regions. */
export const COLORS = Object.freeze({
  fg: Object.freeze([0, 200, 83]), // green
  bg: Object.freeze([41, 98, 255]), // blue
  unknown: Object.freeze([255, 171, 0]), // amber
});

/** View modes of the widget. */
export const MODES = Object.freeze(["overlay", "image", "mask", "trimap"]);

/** payload.probs_encoding understood by {@link decodeProbs}. */
export const PROBS_ENCODING = "zlib-uint16le";
/** payload.image_format -> MIME type of the data URL. */
export const IMAGE_MIME = Object.freeze({ jpeg: "image/jpeg" });

const U16_LEVELS = 65536;
const U16_MAX = 65535;

/**
 * Python's built-in round() for a float64: nearest integer, ties to even (round(2.5) == 2).
 * @param {number} x finite number
 * @returns {number} integer-valued number
 */
export function pyRound(x) {
  if (!Number.isFinite(x)) throw new RangeError(`pyRound: expected a finite number, got ${x}`);
  const f = Math.floor(x);
  const diff = x - f; // exact for |x| < 2**52
  if (diff > 0.5) return f + 1;
  if (diff < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/**
 * Minimum unknown-pixel count on a width x height map, as the contract defines it:
 * Python `round(fraction * width * height)` (evaluated left to right in float64, ties to even).
 * @param {number} fraction >= 0, fraction of the map's area
 * @param {number} width positive int
 * @param {number} height positive int
 * @returns {number} non-negative integer
 */
export function minUnknownCount(fraction, width, height) {
  if (!Number.isFinite(fraction) || fraction < 0) {
    throw new RangeError(`min_unknown_fraction must be a finite number >= 0, got ${fraction}`);
  }
  return pyRound(fraction * width * height);
}

/**
 * Inflate zlib-wrapped deflate data (RFC 1950, what Python's zlib.compress writes) with the browser's
 * DecompressionStream("deflate"). Stops (RangeError) as soon as the output exceeds maxBytes.
 * @param {Uint8Array} bytes compressed
 * @param {number} maxBytes largest accepted output size
 * @returns {Promise<Uint8Array>} the inflated bytes
 */
export async function inflateZlib(bytes, maxBytes) {
  if (typeof DecompressionStream !== "function") {
    throw new Error("this browser has no DecompressionStream (needed for zlib-compressed previews); update the browser");
  }
  const ds = new DecompressionStream("deflate");
  const writer = ds.writable.getWriter();
  // Errors of the stream surface on the reading side; swallow the writer's copy (no unhandled rejection).
  const written = writer
    .write(bytes)
    .then(() => writer.close())
    .catch(() => {});
  const reader = ds.readable.getReader();
  const chunks = [];
  let total = 0;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      total += value.length;
      if (total > maxBytes) {
        reader.cancel().catch(() => {});
        throw new RangeError(`inflates to more than ${maxBytes} bytes`);
      }
      chunks.push(value);
    }
  } finally {
    reader.releaseLock();
  }
  await written;
  const out = new Uint8Array(total);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.length;
  }
  return out;
}

/**
 * Little-endian uint16 bytes -> Uint16Array of width*height values (RangeError on a size mismatch).
 * @param {Uint8Array} bytes
 * @param {number} width
 * @param {number} height
 * @param {string} [what] how the error message names the bytes
 * @returns {Uint16Array}
 */
export function bytesToCodes(bytes, width, height, what = "probs has") {
  const n = width * height;
  if (bytes.length !== 2 * n) {
    throw new RangeError(
      `${what} ${bytes.length} bytes but width*height*2 = ${2 * n} (width=${width}, height=${height}); ` +
        "the node must send little-endian uint16, one value per pixel",
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Uint16Array(n);
  for (let i = 0; i < n; i++) out[i] = view.getUint16(2 * i, true);
  return out;
}

/**
 * Throw unless `encoding` is the one this widget reads ({@link PROBS_ENCODING}).
 * @param {string} encoding payload.probs_encoding
 */
function requireProbsEncoding(encoding) {
  if (encoding !== PROBS_ENCODING) {
    throw new TypeError(
      `trimap preview payload: unknown probs_encoding ${JSON.stringify(encoding)}, expected ` +
        `${JSON.stringify(PROBS_ENCODING)}; reload the page after updating the BEN2 pack`,
    );
  }
}

/**
 * Decode the probability map: zlib-compressed little-endian uint16, row-major, width*height values.
 * @param {Uint8Array} compressed the file's bytes
 * @param {number} width
 * @param {number} height
 * @param {string} encoding payload.probs_encoding, must be {@link PROBS_ENCODING}
 * @returns {Promise<Uint16Array>} length width*height, values 0..65535 (probability = value / 65535)
 */
export async function decodeProbs(compressed, width, height, encoding) {
  requireProbsEncoding(encoding);
  let bytes;
  try {
    bytes = await inflateZlib(compressed, 2 * width * height);
  } catch (err) {
    throw new RangeError(
      `probs (${PROBS_ENCODING}) could not be decompressed to width*height*2 = ${2 * width * height} bytes ` +
        `(width=${width}, height=${height}): ${err?.message || err}`,
    );
  }
  return bytesToCodes(bytes, width, height, `probs (${PROBS_ENCODING}) inflates to`);
}

/**
 * The /view route of a file reference {filename, subfolder, type} (how ComfyUI serves temp/output files).
 * @param {object} ref
 * @param {string} what which payload field, for the error message
 * @returns {string} e.g. "/view?filename=a.jpg&type=temp&subfolder="
 */
export function viewPath(ref, what = "image") {
  if (ref === null || typeof ref !== "object" || typeof ref.filename !== "string" || !ref.filename) {
    throw new TypeError(`trimap preview payload: '${what}' must be a file reference {filename, subfolder, type}, ` +
      `got ${JSON.stringify(ref)}; reload the page after updating the BEN2 pack`);
  }
  const q = new URLSearchParams({ filename: ref.filename, type: ref.type || "temp", subfolder: ref.subfolder || "" });
  return `/view?${q.toString()}`;
}

function requireNumber(p, key, { integer = false, min = -Infinity } = {}) {
  const v = p[key];
  if (typeof v !== "number" || !Number.isFinite(v) || (integer && !Number.isInteger(v)) || v < min) {
    throw new TypeError(
      `trimap preview payload: '${key}' must be a finite ${integer ? "integer" : "number"}` +
        `${min > -Infinity ? ` >= ${min}` : ""}, got ${JSON.stringify(v)}`,
    );
  }
  return v;
}

/**
 * Validate a payload, fetch and decode its probability map (the image is fetched later; see {@link decodeImage}).
 * @param {object} payload one element of message.ben2_trimap
 * @param {(path: string) => Promise<ArrayBuffer>} fetchBytes fetches a /view path (ComfyUI's api.fetchApi)
 * @returns {Promise<{width:number,height:number,probs:Uint16Array,params:object,full:object,imagePath:string,
 *   imageMime:string}>}
 * @throws {TypeError|RangeError|Error} (as a rejection) naming the bad field, or the file that could not be read
 */
export async function decodePayload(payload, fetchBytes) {
  if (payload === null || typeof payload !== "object") {
    throw new TypeError(`trimap preview payload must be an object, got ${payload === null ? "null" : typeof payload}`);
  }
  const width = requireNumber(payload, "width", { integer: true, min: 1 });
  const height = requireNumber(payload, "height", { integer: true, min: 1 });
  const imagePath = viewPath(payload.image, "image");
  const format = payload.image_format;
  if (typeof format !== "string" || !Object.hasOwn(IMAGE_MIME, format)) {
    throw new TypeError(
      `trimap preview payload: unknown image_format ${JSON.stringify(format)}, expected one of ` +
        `${Object.keys(IMAGE_MIME).join(", ")}; reload the page after updating the BEN2 pack`,
    );
  }
  const probsPath = viewPath(payload.probs, "probs");
  const params = {
    t_low: requireNumber(payload, "t_low"),
    t_high: requireNumber(payload, "t_high"),
    t_min: requireNumber(payload, "t_min"),
    t_max: requireNumber(payload, "t_max"),
    step: requireNumber(payload, "step"),
    min_unknown_fraction: requireNumber(payload, "min_unknown_fraction", { min: 0 }),
  };
  requireProbsEncoding(payload.probs_encoding); // before fetching anything
  let compressed;
  try {
    compressed = new Uint8Array(await fetchBytes(probsPath));
  } catch (err) {
    throw new Error(`could not read the preview's probability map (${payload.probs.filename}; ComfyUI clears its ` +
      `temp folder on restart: run the node again): ${err?.message || err}`);
  }
  const probs = await decodeProbs(compressed, width, height, payload.probs_encoding);
  const opt = (k) => (typeof payload[k] === "number" && Number.isFinite(payload[k]) ? payload[k] : null);
  const full = {
    final_t_low: opt("final_t_low"),
    final_t_high: opt("final_t_high"),
    unknown_count: opt("unknown_count"),
    full_width: opt("full_width"),
    full_height: opt("full_height"),
  };
  return { width, height, probs, params, full, imagePath, imageMime: IMAGE_MIME[format] };
}

/**
 * Cumulative histogram of a uint16 map: cum[k] = number of values < k, for k in 0..65536.
 * Lets every threshold's counts be read in O(1) after one pass over the pixels.
 * @param {Uint16Array} probs
 * @returns {Uint32Array} length 65537
 */
export function cumulativeHistogram(probs) {
  const counts = new Uint32Array(U16_LEVELS);
  for (let i = 0; i < probs.length; i++) counts[probs[i]]++;
  const cum = new Uint32Array(U16_LEVELS + 1);
  for (let k = 0; k < U16_LEVELS; k++) cum[k + 1] = cum[k] + counts[k];
  return cum;
}

/**
 * Smallest code v in 0..65535 with v / 65535 >= t (float64), or 65536 if none.
 * v / 65535 is monotone in v, so a binary search gives exactly the float64 comparison's answer.
 */
export function firstCodeAtLeast(t) {
  let lo = 0;
  let hi = U16_LEVELS; // invariant: answer in [lo, hi]
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (mid / U16_MAX >= t) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/** Largest code v in 0..65535 with v / 65535 <= t (float64), or -1 if none. */
export function lastCodeAtMost(t) {
  return firstCodeAbove(t) - 1;
}

function firstCodeAbove(t) {
  let lo = 0;
  let hi = U16_LEVELS;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (mid / U16_MAX > t) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/**
 * Region counts for thresholds (Algorithm 1: fg if p >= t_high, else bg if p <= t_low, else unknown).
 * @param {Uint32Array} cum from {@link cumulativeHistogram}
 * @param {number} tLow
 * @param {number} tHigh
 * @returns {{fg:number,bg:number,unknown:number,fgCode:number,bgCode:number}} fgCode = first fg code,
 *   bgCode = last bg code (codes are uint16 values)
 */
export function regionCounts(cum, tLow, tHigh) {
  const n = cum[U16_LEVELS];
  const fgCode = firstCodeAtLeast(tHigh);
  const bgCode = lastCodeAtMost(tLow);
  const fg = n - cum[fgCode];
  // background = codes <= bgCode that are not already foreground (fg wins, it is tested first)
  const bg = cum[Math.min(bgCode + 1, fgCode)];
  return { fg, bg, unknown: n - fg - bg, fgCode, bgCode };
}

/**
 * Algorithm 2 (adaptive thresholds) on a cumulative histogram, identical to the naive loop:
 *   unknown = count(t_low < p < t_high) [with fg tested first]
 *   while unknown < min_unknown and (t_low > t_min or t_high < t_max):
 *       t_low = max(t_low - step, t_min); t_high = min(t_high + step, t_max); recount
 * All arithmetic in float64 (JS numbers), so the threshold sequence equals Python's.
 * @param {Uint32Array} cum
 * @param {{t_low:number,t_high:number,t_min:number,t_max:number,step:number}} params
 * @param {number} minUnknown integer >= 0
 * @returns {{tLow:number,tHigh:number,iterations:number,fg:number,bg:number,unknown:number,fgCode:number,bgCode:number}}
 */
export function adaptiveThresholds(cum, params, minUnknown) {
  const { t_low, t_high, t_min, t_max, step } = params;
  for (const [k, v] of Object.entries({ t_low, t_high, t_min, t_max, step })) {
    if (typeof v !== "number" || !Number.isFinite(v)) throw new TypeError(`${k} must be a finite number, got ${v}`);
  }
  if (!(step > 0)) throw new RangeError(`step must be > 0, got ${step}`);
  let tLow = t_low;
  let tHigh = t_high;
  let counts = regionCounts(cum, tLow, tHigh);
  let iterations = 0;
  while (counts.unknown < minUnknown && (tLow > t_min || tHigh < t_max)) {
    tLow = Math.max(tLow - step, t_min);
    tHigh = Math.min(tHigh + step, t_max);
    counts = regionCounts(cum, tLow, tHigh);
    iterations++;
  }
  return { tLow, tHigh, iterations, ...counts };
}

/**
 * Label every pixel with final thresholds (Algorithm 1).
 * @param {Uint16Array} probs
 * @param {number} tLow
 * @param {number} tHigh
 * @returns {Uint8Array} same length, values BG=0 / UNKNOWN=1 / FG=2
 */
export function classify(probs, tLow, tHigh) {
  const fgCode = firstCodeAtLeast(tHigh);
  const bgCode = lastCodeAtMost(tLow);
  const out = new Uint8Array(probs.length);
  for (let i = 0; i < probs.length; i++) {
    const v = probs[i];
    out[i] = v >= fgCode ? FG : v <= bgCode ? BG : UNKNOWN;
  }
  return out;
}

/**
 * Full recompute: Algorithm 2 thresholds, then the labels.
 * @param {Uint16Array} probs decoded map (width*height)
 * @param {Uint32Array|null} cum its cumulative histogram (pass it to avoid recounting; null = build)
 * @param {{t_low,t_high,t_min,t_max,step,min_unknown_fraction}} params
 * @param {number} width
 * @param {number} height
 * @returns {{labels:Uint8Array,tLow:number,tHigh:number,unknown:number,fg:number,bg:number,minUnknown:number,iterations:number}}
 */
export function computeTrimap(probs, cum, params, width, height) {
  if (probs.length !== width * height) {
    throw new RangeError(`probs has ${probs.length} values, expected width*height = ${width * height}`);
  }
  const histogram = cum || cumulativeHistogram(probs);
  const minUnknown = minUnknownCount(params.min_unknown_fraction, width, height);
  const r = adaptiveThresholds(histogram, params, minUnknown);
  return {
    labels: classify(probs, r.tLow, r.tHigh),
    tLow: r.tLow,
    tHigh: r.tHigh,
    unknown: r.unknown,
    fg: r.fg,
    bg: r.bg,
    minUnknown,
    iterations: r.iterations,
  };
}

/**
 * Paint one view into RGBA pixels.
 * @param {Uint8ClampedArray} out RGBA, length 4*n (e.g. ImageData.data); fully overwritten, alpha 255
 * @param {Uint8ClampedArray|null} image RGBA of the payload image (length 4*n) or null if not decoded yet
 * @param {Uint16Array} probs n values
 * @param {Uint8Array} labels n labels from {@link classify}
 * @param {string} mode one of MODES: "image" | "mask" (probabilities as grey) | "trimap" (region colours)
 *   | "overlay" (image blended with region colours: round(img*(1-a) + colour*a))
 * @param {number} opacity 0..1, overlay only
 */
export function renderPixels(out, image, probs, labels, mode, opacity) {
  const n = probs.length;
  if (out.length !== 4 * n) throw new RangeError(`output has ${out.length} bytes, expected ${4 * n}`);
  const a = Math.min(1, Math.max(0, Number.isFinite(opacity) ? opacity : 0.5));
  const pal = [COLORS.bg, COLORS.unknown, COLORS.fg];
  if ((mode === "image" || mode === "overlay") && !image) mode = "trimap";
  for (let i = 0, j = 0; i < n; i++, j += 4) {
    let r, g, b;
    if (mode === "mask") {
      r = g = b = Math.round((probs[i] * 255) / U16_MAX);
    } else if (mode === "image") {
      r = image[j];
      g = image[j + 1];
      b = image[j + 2];
    } else if (mode === "overlay") {
      const c = pal[labels[i]];
      r = Math.round(image[j] * (1 - a) + c[0] * a);
      g = Math.round(image[j + 1] * (1 - a) + c[1] * a);
      b = Math.round(image[j + 2] * (1 - a) + c[2] * a);
    } else if (mode === "trimap") {
      const c = pal[labels[i]];
      r = c[0];
      g = c[1];
      b = c[2];
    } else {
      throw new RangeError(`unknown view mode '${mode}', expected one of ${MODES.join(", ")}`);
    }
    out[j] = r;
    out[j + 1] = g;
    out[j + 2] = b;
    out[j + 3] = 255;
  }
}

/**
 * Load the payload's image into RGBA pixels at width x height (browser only; async).
 * @param {string} src its URL (ComfyUI's api.apiURL of the payload's /view path)
 * @param {number} width
 * @param {number} height
 * @returns {Promise<Uint8ClampedArray>} RGBA, length 4*width*height
 */
export async function decodeImage(src, width, height) {
  const img = new Image();
  img.src = src;
  await img.decode();
  if (img.naturalWidth !== width || img.naturalHeight !== height) {
    console.warn(
      `[BEN2] preview image is ${img.naturalWidth}x${img.naturalHeight}, payload says ${width}x${height}; scaling it`,
    );
  }
  const c = document.createElement("canvas");
  c.width = width;
  c.height = height;
  const ctx = c.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(img, 0, 0, width, height);
  return ctx.getImageData(0, 0, width, height).data;
}

/** Format a threshold for display (3 decimals, trailing zeros kept). */
export function fmt(t) {
  return typeof t === "number" && Number.isFinite(t) ? t.toFixed(3) : "–";
}
