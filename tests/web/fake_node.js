// Minimal stand-in for a LiteGraph node as ComfyUI's frontend builds it, enough for the trimap widget:
// number widgets with value/callback, addDOMWidget (optional, to test the canvas fallback),
// addCustomWidget, computeSize/setSize, and instance-level onRemoved chaining like ComfyUI's addWidget.

function chain(orig, fn) {
  return function (...args) {
    const r = orig?.apply(this, args);
    fn.apply(this, args);
    return r;
  };
}

export function makeNodeType({ withDOMWidget = true } = {}) {
  class FakeNode {
    constructor(values) {
      this.size = [200, 100];
      this.widgets = [];
      this.dirty = 0;
      this.widgetCallbackLog = [];
      for (const [name, value] of Object.entries(values)) {
        const w = { name, type: "number", value, options: { min: 0, max: 1 } };
        // a pre-existing widget callback (ComfyUI sets some); it must keep being called
        w.callback = (v) => this.widgetCallbackLog.push([name, v]);
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
