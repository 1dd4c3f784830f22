// Offline use: the app shell, the runtime and the verified bundle files are served from the cache
// once fetched (app.js caches the bundle after checking its sha256).
const SHELL = "qwen-edge-shell-v2";
const FILES = ["./", "index.html", "src/app.js", "src/generate.js", "src/worker.js", "src/tokenizer.js", "src/style.css", "manifest.webmanifest"];

self.addEventListener("install", (event) => event.waitUntil(caches.open(SHELL).then((c) => c.addAll(FILES))));

// A new app version drops the old shell (cache-first would otherwise serve stale scripts forever).
self.addEventListener("activate", (event) =>
  event.waitUntil(caches.keys().then((keys) => Promise.all(keys.filter((k) => k.startsWith("qwen-edge-shell-") && k !== SHELL).map((k) => caches.delete(k))))),
);

self.addEventListener("fetch", (event) => {
  if (event.request.method !== "GET" || new URL(event.request.url).origin !== location.origin) return;
  event.respondWith(
    caches.match(event.request).then(
      (hit) =>
        hit ||
        fetch(event.request).then((response) => {
          const path = new URL(event.request.url).pathname;
          if (response.ok && path.includes("/vendor/")) {
            const copy = response.clone();
            caches.open(SHELL).then((c) => c.put(event.request, copy));
          }
          return response;
        }),
    ),
  );
});
