// Minimal stand-in for a LiteGraph node as ComfyUI's frontend builds it, enough for the trimap widget:
// number widgets with value/callback, addDOMWidget (optional, to test the canvas fallback),
// addCustomWidget, computeSize/setSize, instance-level onRemoved chaining like ComfyUI's addWidget, and a
// graph whose version counts committed edits.
//
// Widgets commit an edit as the frontend's do (Comfy-Org/ComfyUI_frontend
// src/lib/litegraph/src/widgets/BaseWidget.ts @ 023d654b53559eba8acc02f46edebbb18c444c06, setValue: an equal
// value is no edit; the value, the callback with (value, canvas, node, canvas.graph_mouse, e),
// node.onWidgetChanged(name, value, oldValue, widget), graph.incrementVersion(); it reads canvas.graph_mouse,
// so it throws without a canvas, as there). With { plainWidgets: true } they are plain objects without
// setValue, as addCustomWidget can leave them.

class FakeNumberWidget {
  constructor(name, value, callback) {
    this.name = name;
    this.type = "number";
    this.value = value;
    this.options = { min: 0, max: 1 };
    this.callback = callback;
  }
  setValue(value, { e, node, canvas }) {
    const oldValue = this.value;
    if (value === this.value) return;
    const v = this.type === "number" ? Number(value) : value;
    this.value = v;
    const pos = canvas.graph_mouse;
    this.callback?.(this.value, canvas, node, pos, e);
    node.onWidgetChanged?.(this.name ?? "", v, oldValue, this);
    if (node.graph) node.graph.incrementVersion();
  }
}

function chain(orig, fn) {
  return function (...args) {
    const r = orig?.apply(this, args);
    fn.apply(this, args);
    return r;
  };
}

export function makeNodeType({ withDOMWidget = true, plainWidgets = false } = {}) {
  class FakeNode {
    constructor(values) {
      this.size = [200, 100];
      this.widgets = [];
      this.dirty = 0;
      this.widgetCallbackLog = [];
      this.widgetChangedLog = [];
      this.graph = { _version: 0, incrementVersion() { this._version++; } };
      for (const [name, value] of Object.entries(values)) {
        // a pre-existing widget callback (ComfyUI sets some); it must keep being called
        const callback = (v) => this.widgetCallbackLog.push([name, v]);
        const w = plainWidgets ? { name, type: "number", value, options: { min: 0, max: 1 }, callback }
          : new FakeNumberWidget(name, value, callback);
        this.widgets.push(w);
      }
      this.onNodeCreated?.();
    }
    addCustomWidget(w) {
      this.widgets.push(w);
      return w;
    }
    computeSize() {
      return [220, 40 + 20 * this.widgets.length];
    }
    setSize(s) {
      this.size = [...s];
    }
    setDirtyCanvas() {
      this.dirty++;
    }
    onWidgetChanged(name, value, oldValue) {
      this.widgetChangedLog.push([name, value, oldValue]);
    }
  }
  if (withDOMWidget) {
    FakeNode.prototype.addDOMWidget = function (name, type, element, options = {}) {
      const host = document.createElement("div");
      host.className = "fake-dom-widget-host";
      host.style.cssText = "width:360px;height:520px;position:relative;border:1px solid #888;margin:4px";
      host.append(element);
      document.getElementById("nodes").append(host);
      const widget = { name, type, element, options: { hideOnZoom: true, ...options }, host };
      Object.defineProperty(widget, "value", {
        get() { return this.options.getValue?.() ?? ""; },
        set(v) { this.options.setValue?.(v); this.callback?.(this.value); },
      });
      this.widgets.push(widget);
      // ComfyUI chains instance-level onRemoved to drop the element
      this.onRemoved = chain(this.onRemoved, () => host.remove());
      return widget;
    };
  }
  return FakeNode;
}
