// ComfyUI glue for the BEN2 "Show Trimap" node: a DOM widget that shows the image with the confidence
// trimap overlaid and lets the user move t_low / t_high / min unknown area, recomputing the trimap in the
// browser from the downsampled probability map the node sends (message.ben2_trimap = [payload, ...]).
// Chosen values are written back into the node's own widgets so the next run uses them.
//
// The pack's __init__.py sets WEB_DIRECTORY = "./web", so ComfyUI serves this file as
// /extensions/<pack>/js/trimap_preview.js and its app shim is /scripts/app.js = "../../../scripts/app.js".
// (If WEB_DIRECTORY ever becomes "./web/js", this must become "../../scripts/app.js"; the widget test
// reads WEB_DIRECTORY and serves the files the same way, so it fails on a mismatch.)
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";
import * as core from "./trimap_core.js";

/** Fetch a /view path of ComfyUI's server as bytes (the preview's probability map). */
async function fetchBytes(path) {
  const response = await api.fetchApi(path);
  if (!response.ok) throw new Error(`HTTP ${response.status} for ${path}`);
  return response.arrayBuffer();
}

export const NODE_NAME = "BEN2_ShowTrimap";
export const WIDGET_NAME = "ben2_trimap_preview";

/** Sliders of the widget: key = name of the node widget they write back into. */
const SLIDERS = [
  { key: "t_low", label: "t_low", min: 0, max: 1, step: 0.001, digits: 3 },
  { key: "t_high", label: "t_high", min: 0, max: 1, step: 0.001, digits: 3 },
  { key: "min_unknown_fraction", label: "min unknown", min: 0, max: 0.5, step: 0.0001, digits: 4 },
];
/** Node widgets whose edits change the browser recompute (hooked via their callbacks). */
const WATCHED = ["t_low", "t_high", "min_unknown_fraction", "t_min", "t_max"];

const STYLE = `
.ben2-trimap{display:flex;flex-direction:column;gap:4px;width:100%;height:100%;box-sizing:border-box;
  font:11px sans-serif;color:var(--input-text,#ddd);overflow:hidden}
.ben2-trimap canvas{flex:1 1 auto;min-height:60px;width:100%;object-fit:contain;image-rendering:pixelated;
  background:repeating-conic-gradient(#555 0% 25%,#777 0% 50%) 50%/16px 16px}
.ben2-trimap .row{display:flex;align-items:center;gap:4px;flex:0 0 auto}
.ben2-trimap .row label{flex:0 0 78px;white-space:nowrap}
.ben2-trimap .row input[type=range]{flex:1 1 auto;min-width:40px}
.ben2-trimap .row .val{flex:0 0 46px;text-align:right;font-variant-numeric:tabular-nums}
.ben2-trimap button{font:inherit;padding:1px 6px;border:1px solid #666;border-radius:3px;
  background:var(--comfy-input-bg,#222);color:inherit;cursor:pointer}
.ben2-trimap button[aria-pressed=true]{background:#3a6ea5;border-color:#5b8fd0}
.ben2-trimap .sw{display:inline-block;width:9px;height:9px;margin:0 2px 0 6px;border:1px solid #000}
.ben2-trimap .info,.ben2-trimap .status{flex:0 0 auto;white-space:pre-wrap}
.ben2-trimap .status:empty{display:none}`;

function el(tag, attrs = {}, children = []) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") e.textContent = v;
    else if (k === "dataset") Object.assign(e.dataset, v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function rgb(c) {
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

function findWidget(node, name) {
  return Array.isArray(node?.widgets) ? node.widgets.find((w) => w && w.name === name) : undefined;
}

/**
 * The defaults of the watched widgets from the node definition the server sends (Python reads them from
 * ben_core.trimap.PAPER_DEFAULTS; this file holds no copy): {t_low: 0.1, ...} for those it declares.
 */
export function definitionDefaults(nodeData) {
  const out = {};
  const inputs = { ...nodeData?.input?.required, ...nodeData?.input?.optional };
  for (const key of WATCHED) {
    const value = Number(inputs[key]?.[1]?.default);
    if (inputs[key] && Number.isFinite(value)) out[key] = value;
  }
  return out;
}

/** One preview per node: owns the DOM, the decoded payloads and the listeners (disposed on removal). */
export class TrimapPreview {
  /**
   * @param {object} node the LiteGraph node
   * @param {object} defaults slider values until the node's widgets or a run say otherwise ({@link definitionDefaults})
   */
  constructor(node, defaults = {}) {
    this.node = node;
    this.defaults = defaults;
    this.abort = new AbortController();
    this.hooks = [];
    this.payloads = [];
    this.index = 0;
    this.decoded = null; // {width,height,probs,cum,params,full,imagePath,imageMime}
    this.image = null; // RGBA of the current payload image
    this.result = null; // last computeTrimap() result
    this.mode = "overlay";
    this.opacity = 0.5;
    this.values = {}; // slider values (t_low, t_high, min_unknown_fraction)
    this.generation = 0;
    this.writing = false;
    this.disposed = false;
    this.ready = Promise.resolve();
    this.buildDom();
    this.hookNodeWidgets();
    this.attach();
  }

  buildDom() {
    const on = (target, type, fn) => target.addEventListener(type, fn, { signal: this.abort.signal });
    this.root = el("div", { class: "ben2-trimap", dataset: { role: "root", ready: "0" } });
    this.root.append(el("style", { text: STYLE }));

    this.imageSelect = el("select", { dataset: { role: "image-select" }, title: "Which image of the batch" });
    this.imageSelect.style.display = "none";
    on(this.imageSelect, "change", () => this.select(Number(this.imageSelect.value)));

    this.modeButtons = {};
    const modeRow = el("div", { class: "row" });
    for (const m of core.MODES) {
      const b = el("button", { type: "button", dataset: { mode: m }, "aria-pressed": String(m === this.mode), text: m });
      on(b, "click", () => this.setMode(m));
      this.modeButtons[m] = b;
      modeRow.append(b);
    }
    modeRow.append(this.imageSelect);

    this.opacityInput = el("input", { type: "range", min: "0", max: "1", step: "0.01", value: String(this.opacity), dataset: { role: "opacity" } });
    this.opacityLabel = el("span", { class: "val", text: this.opacity.toFixed(2) });
    on(this.opacityInput, "input", () => {
      this.opacity = Number(this.opacityInput.value);
      this.opacityLabel.textContent = this.opacity.toFixed(2);
      this.render();
    });
    const legend = el("span", {}, [
      el("span", { class: "sw", style: `background:${rgb(core.COLORS.fg)}` }), "fg",
      el("span", { class: "sw", style: `background:${rgb(core.COLORS.unknown)}` }), "unknown",
      el("span", { class: "sw", style: `background:${rgb(core.COLORS.bg)}` }), "bg",
    ]);
    const opacityRow = el("div", { class: "row" }, [el("label", { text: "opacity" }), this.opacityInput, this.opacityLabel]);

    this.canvas = el("canvas", { width: "1", height: "1", dataset: { role: "preview" } });

    this.sliders = {};
    const sliderRows = SLIDERS.map((s) => {
      const input = el("input", { type: "range", min: String(s.min), max: String(s.max), step: String(s.step), dataset: { param: s.key }, title: s.key });
      const label = el("span", { class: "val", dataset: { value: s.key } });
      on(input, "input", () => this.onSlider(s, input));
      this.sliders[s.key] = { spec: s, input, label };
      return el("div", { class: "row" }, [el("label", { text: s.label }), input, label]);
    });

    this.info = el("div", { class: "info", dataset: { role: "info" }, text: "Run the workflow to see the trimap preview." });
    this.status = el("div", { class: "status", dataset: { role: "status" } });
    this.root.append(modeRow, this.canvas, el("div", { class: "row" }, [legend]), opacityRow, ...sliderRows, this.info, this.status);
    // Keep slider drags from also dragging the node / panning the graph.
    for (const type of ["pointerdown", "mousedown", "wheel"]) on(this.root, type, (e) => e.target !== this.canvas && e.stopPropagation());
    this.setSliderValues(this.defaults, this.readNodeValues());
  }

  /** Current values of the node's own widgets (only those that exist and are finite numbers). */
  readNodeValues() {
    const out = {};
    for (const k of WATCHED) {
      const v = Number(findWidget(this.node, k)?.value);
      if (findWidget(this.node, k) && Number.isFinite(v)) out[k] = v;
    }
    return out;
  }

  setSliderValues(...sources) {
    for (const src of sources) for (const s of SLIDERS) if (Number.isFinite(src?.[s.key])) this.values[s.key] = src[s.key];
    for (const s of SLIDERS) {
      const { input, label } = this.sliders[s.key];
      input.value = String(this.values[s.key]);
      label.textContent = Number(this.values[s.key]).toFixed(s.digits);
    }
  }

  attach() {
    const node = this.node;
    if (typeof node.addDOMWidget === "function") {
      this.widget = node.addDOMWidget(WIDGET_NAME, "ben2_trimap", this.root, {
        serialize: false,
        hideOnZoom: false,
        getValue: () => "",
        setValue: () => {},
        getMinHeight: () => 320,
      });
      if (this.widget) {
        this.widget.serialize = false; // keep it out of widgets_values (the node's real widgets keep their indices)
        if (this.widget.options) this.widget.options.serialize = false; // and out of the prompt
      }
    } else {
      // Older frontends without DOM widgets: draw the preview into the node on the LiteGraph canvas; the
      // thresholds are then edited with the node's own widgets (hooked below), not with our sliders.
      const preview = this;
      this.widget = {
        name: WIDGET_NAME,
        type: "ben2_trimap_canvas",
        value: "",
        serialize: false,
        options: { serialize: false },
        draw(ctx, _node, width, y) {
          preview.drawFallback(ctx, width, y);
        },
        computeSize(width) {
          return [width, 240];
        },
      };
      if (typeof node.addCustomWidget === "function") node.addCustomWidget(this.widget);
      else (node.widgets ||= []).push(this.widget);
    }
    if (typeof node.computeSize === "function" && typeof node.setSize === "function") {
      const [w, h] = node.computeSize();
      node.setSize([Math.max(w, 340), Math.max(h, 560)]);
    }
  }

  drawFallback(ctx, width, y) {
    const pad = 10;
    const h = 200;
    if (this.decoded) {
      const { width: iw, height: ih } = this.decoded;
      const scale = Math.min((width - 2 * pad) / iw, h / ih);
      const dw = iw * scale;
      ctx.drawImage(this.canvas, (width - dw) / 2, y, dw, ih * scale);
    }
    ctx.fillStyle = "#ccc";
    ctx.font = "11px sans-serif";
    ctx.fillText(this.info.textContent.split("\n")[0], pad, y + h + 16);
  }

  /** Chain onto the node widgets' callbacks so editing them on the node also updates the preview. */
  hookNodeWidgets() {
    for (const key of WATCHED) {
      const w = findWidget(this.node, key);
      if (!w) continue;
      const orig = w.callback;
      const preview = this;
      const wrapper = function (...args) {
        const r = orig?.apply(this, args);
        if (!preview.disposed && !preview.writing) preview.onNodeWidgetChanged(key);
        return r;
      };
      w.callback = wrapper;
      this.hooks.push({ w, orig, wrapper });
    }
  }

  onNodeWidgetChanged(key) {
    if (SLIDERS.some((s) => s.key === key)) this.setSliderValues(this.readNodeValues());
    this.recompute();
  }

  /** New data from onExecuted: message.ben2_trimap (an array of payloads, or one payload). */
  setPayloads(list) {
    this.payloads = (Array.isArray(list) ? list : [list]).filter((p) => p && typeof p === "object");
    this.imageSelect.replaceChildren(...this.payloads.map((_, i) => el("option", { value: String(i), text: `image ${i + 1} / ${this.payloads.length}` })));
    this.imageSelect.style.display = this.payloads.length > 1 ? "" : "none";
    const index = this.index < this.payloads.length ? this.index : 0;
    return this.select(index, true);
  }

  /**
   * Show payload `index`. Decoding is async (zlib probs, then the image): results of a call that a newer
   * select / setPayloads / dispose has overtaken are dropped (generation check), so a slow decode of an
   * older message never replaces a newer one. Resolves when done; never rejects (errors go to the status).
   */
  select(index, fromRun = false) {
    this.index = index;
    this.imageSelect.value = String(index);
    const gen = ++this.generation;
    const stale = () => gen !== this.generation || this.disposed;
    this.root.dataset.ready = "0";
    this.status.textContent = "";
    let stage = "payload";
    this.ready = core
      .decodePayload(this.payloads[index], fetchBytes)
      .then((d) => {
        if (stale()) return null;
        d.cum = core.cumulativeHistogram(d.probs);
        this.decoded = d;
        this.image = null;
        if (fromRun || !this.result) this.setSliderValues(d.params);
        this.canvas.width = d.width;
        this.canvas.height = d.height;
        this.recompute();
        stage = d.imageMime;
        return core.decodeImage(api.apiURL(d.imagePath), d.width, d.height);
      })
      .then((rgba) => {
        if (rgba === null || stale()) return;
        this.image = rgba;
        this.render();
        if (this.root.dataset.ready !== "error") this.root.dataset.ready = "1";
      })
      .catch((err) => {
        if (stale()) return;
        if (stage === "payload") this.fail(err);
        else this.fail(new Error(`could not decode the preview image (${stage}): ${err?.message || err}`));
      });
    return this.ready;
  }

  fail(err) {
    console.error("[BEN2 trimap preview]", err);
    this.status.textContent = `Preview error: ${err?.message || err}`;
    this.root.dataset.ready = "error";
    return Promise.resolve();
  }

  /** Parameters for the browser recompute: slider values + t_min/t_max from the node (else the payload). */
  params() {
    const d = this.decoded;
    const node = this.readNodeValues();
    return {
      t_low: this.values.t_low,
      t_high: this.values.t_high,
      min_unknown_fraction: this.values.min_unknown_fraction,
      t_min: node.t_min ?? d.params.t_min,
      t_max: node.t_max ?? d.params.t_max,
      step: d.params.step,
    };
  }

  recompute() {
    if (!this.decoded) return;
    const d = this.decoded;
    try {
      this.result = core.computeTrimap(d.probs, d.cum, this.params(), d.width, d.height);
    } catch (err) {
      this.fail(err);
      return;
    }
    const r = this.result;
    const n = d.width * d.height;
    const f = d.full;
    let text =
      `preview ${d.width}×${d.height}: unknown ${r.unknown} px (${((100 * r.unknown) / n).toFixed(1)}%, min ${r.minUnknown})\n` +
      `thresholds ${core.fmt(this.values.t_low)} / ${core.fmt(this.values.t_high)} → ${core.fmt(r.tLow)} / ${core.fmt(r.tHigh)}`;
    if (f.unknown_count !== null) {
      text += `\nlast run${f.full_width ? ` (${f.full_width}×${f.full_height})` : ""}: ${core.fmt(f.final_t_low)} / ${core.fmt(f.final_t_high)}, unknown ${f.unknown_count} px`;
    }
    this.info.textContent = text;
    this.info.dataset.unknown = String(r.unknown);
    this.info.dataset.tLow = String(r.tLow);
    this.info.dataset.tHigh = String(r.tHigh);
    this.render();
  }

  render() {
    if (!this.decoded || !this.result) return;
    const { width, height, probs } = this.decoded;
    const ctx = this.canvas.getContext("2d");
    const img = ctx.createImageData(width, height);
    core.renderPixels(img.data, this.image, probs, this.result.labels, this.mode, this.opacity);
    ctx.putImageData(img, 0, 0);
    this.node.setDirtyCanvas?.(true, false);
  }

  setMode(mode) {
    this.mode = mode;
    for (const [m, b] of Object.entries(this.modeButtons)) b.setAttribute("aria-pressed", String(m === mode));
    this.render();
  }

  onSlider(spec, input) {
    let v = Number(input.value);
    if (!Number.isFinite(v)) return;
    // Keep t_low < t_high (the node rejects crossed thresholds).
    const eps = spec.step;
    if (spec.key === "t_low" && v >= this.values.t_high) v = Number((this.values.t_high - eps).toFixed(spec.digits));
    if (spec.key === "t_high" && v <= this.values.t_low) v = Number((this.values.t_low + eps).toFixed(spec.digits));
    this.setSliderValues({ [spec.key]: v });
    this.writeBack(spec.key, v);
    this.recompute();
  }

  /** Write a value into the node's widget of that name and fire its callback (so the next run uses it). */
  writeBack(key, value) {
    const w = findWidget(this.node, key);
    if (!w) {
      this.status.textContent = `'${key}' is not a widget on this node (converted to an input?); the value is not saved.`;
      return;
    }
    this.writing = true;
    try {
      commitWidgetValue(w, value, this.node);
    } finally {
      this.writing = false;
    }
    this.node.setDirtyCanvas?.(true, true);
    this.node.graph?.setDirtyCanvas?.(true, true);
  }

  dispose() {
    if (this.disposed) return;
    this.disposed = true;
    this.generation++;
    this.abort.abort();
    for (const { w, orig, wrapper } of this.hooks) if (w.callback === wrapper) w.callback = orig;
    this.hooks = [];
    this.payloads = [];
    this.decoded = this.image = this.result = null;
  }
}

/**
 * Change a node widget's value the way the frontend commits an edit on the canvas, so undo, the
 * workflow's "modified" mark and Vue-rendered nodes (Nodes 2.0) see it: the widget's own setValue where it
 * has one (litegraph's BaseWidget: value, bound property, callback, node.onWidgetChanged, graph version);
 * for plain-object widgets the same steps by hand. Exported for tests.
 * @param {object} widget a node widget
 * @param {number} value the new value
 * @param {object} node the widget's node
 */
export function commitWidgetValue(widget, value, node) {
  const canvas = app?.canvas;
  if (typeof widget.setValue === "function" && canvas) {
    widget.setValue(value, { node, canvas });
    return;
  }
  const oldValue = widget.value;
  if (value === oldValue) return;
  widget.value = value;
  widget.callback?.call(widget, widget.value, canvas, node);
  node.onWidgetChanged?.(widget.name ?? "", value, oldValue, widget);
  const graph = node.graph;
  if (!graph) return;
  if (typeof graph.incrementVersion === "function") graph.incrementVersion();
  else graph._version = (graph._version ?? 0) + 1;
}

function previewOf(node, defaults) {
  if (!node.ben2TrimapPreview || node.ben2TrimapPreview.disposed) node.ben2TrimapPreview = new TrimapPreview(node, defaults);
  return node.ben2TrimapPreview;
}

/**
 * Patch a node class (chaining every callback we touch). Exported for tests.
 * @param {Function} nodeType the LiteGraph node class
 * @param {object} [defaults] slider defaults ({@link definitionDefaults} of the node definition)
 */
export function patchNodeType(nodeType, defaults = {}) {
  const proto = nodeType.prototype;
  const onNodeCreated = proto.onNodeCreated;
  proto.onNodeCreated = function () {
    const r = onNodeCreated?.apply(this, arguments);
    try {
      previewOf(this, defaults);
    } catch (err) {
      console.error("[BEN2 trimap preview] could not create the widget", err);
    }
    return r;
  };
  const onExecuted = proto.onExecuted;
  proto.onExecuted = function (message) {
    const r = onExecuted?.apply(this, arguments);
    const payloads = message?.ben2_trimap;
    if (payloads) {
      try {
        previewOf(this, defaults).setPayloads(payloads);
      } catch (err) {
        console.error("[BEN2 trimap preview]", err);
      }
    }
    return r;
  };
  // Loading a saved workflow sets the node's widget values without firing their callbacks, then calls
  // onConfigure: re-read them, or the sliders (and the t_low < t_high guard) keep the defaults.
  const onConfigure = proto.onConfigure;
  proto.onConfigure = function () {
    const r = onConfigure?.apply(this, arguments);
    const preview = this.ben2TrimapPreview;
    if (preview && !preview.disposed) {
      try {
        preview.onNodeWidgetChanged("t_low");
      } catch (err) {
        console.error("[BEN2 trimap preview]", err);
      }
    }
    return r;
  };
  const onRemoved = proto.onRemoved;
  proto.onRemoved = function () {
    try {
      this.ben2TrimapPreview?.dispose();
    } finally {
      this.ben2TrimapPreview = undefined;
    }
    return onRemoved?.apply(this, arguments);
  };
}

app.registerExtension({
  name: "BEN2.TrimapPreview",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name === NODE_NAME) patchNodeType(nodeType, definitionDefaults(nodeData));
  },
});
