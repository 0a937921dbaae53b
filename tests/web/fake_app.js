// Minimal stand-in for ComfyUI's "scripts/app.js" shim, served at /scripts/app.js by the widget test.
// Records what extensions register so the test can call their hooks like the frontend does.
export const app = {
  extensions: [],
  canvas: { fake: true, graph_mouse: [0, 0] },
  registerExtension(ext) {
    if (!ext || typeof ext.name !== "string") throw new TypeError("extension needs a name");
    if (this.extensions.some((e) => e.name === ext.name)) throw new Error(`extension ${ext.name} registered twice`);
    this.extensions.push(ext);
  },
};
window.comfyAPI = window.comfyAPI || {};
window.comfyAPI.app = { app };
