// Minimal stand-in for ComfyUI's "scripts/api.js" shim, served at /scripts/api.js by the widget test:
// like ComfyUI's api, routes live under /api (apiURL) and fetchApi fetches them.
export const api = {
  api_base: "",
  apiURL(route) {
    return `${this.api_base}/api${route}`;
  },
  fetchApi(route, options) {
    return fetch(this.apiURL(route), options);
  },
};
window.comfyAPI = window.comfyAPI || {};
window.comfyAPI.api = { api };
