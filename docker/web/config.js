// Default for the image: the API is served from the same origin under /api/v1.
// In Kubernetes a ConfigMap is mounted over this file
// (/usr/share/nginx/html/config.js) to point elsewhere.
window.API_BASE_URL = window.API_BASE_URL || "/api/v1";
