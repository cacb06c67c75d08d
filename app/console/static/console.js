/* UAIP Hub console: keeps the live parts of a page current. The page's body names its event stream
   (data-events: the hub's event stream for this operator session, docs/events.md); every event refreshes each
   element with data-live="<url>" from that URL's HTML fragment (same origin, the session cookie), a quarter of a
   second later so a burst of events costs one refresh. The browser's EventSource reconnects by itself and resumes
   with Last-Event-ID. Without EventSource, or while the stream is down, the parts are refreshed every few
   seconds instead. Pages work without this script; it only saves the reload. No inline script anywhere (the
   CSP forbids it). */
(function () {
  "use strict";
  var POLL_MS = 3000;        // without a stream
  var BACKSTOP_MS = 30000;   // with a stream: a refresh now and then all the same
  var DEBOUNCE_MS = 250;
  var EVENT_TYPES = ["device.registered", "device.updated", "device.deleted", "device.online", "device.offline",
                     "state.reported", "state.desired", "command.status", "reset"];

  function refresh(element) {
    var url = element.getAttribute("data-live");
    if (!url || document.hidden) { return; }
    fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) { if (html !== null) { element.innerHTML = html; } })
      .catch(function () { /* offline for a moment: the next event or period tries again */ });
  }

  function start() {
    var parts = document.querySelectorAll("[data-live]");
    if (!parts.length) { return; }
    var refreshAll = function () { parts.forEach(refresh); };
    var pending = null;
    var soon = function () {
      if (pending === null) { pending = window.setTimeout(function () { pending = null; refreshAll(); }, DEBOUNCE_MS); }
    };
    var url = document.body.getAttribute("data-events");
    if (!url || !window.EventSource) {
      window.setInterval(refreshAll, POLL_MS);
      return;
    }
    var source = new EventSource(url);
    var streaming = false;
    EVENT_TYPES.forEach(function (type) { source.addEventListener(type, soon); });
    source.addEventListener("open", function () { streaming = true; document.body.setAttribute("data-stream", "open"); });
    source.addEventListener("error", function () { streaming = false; document.body.setAttribute("data-stream", "down"); });
    window.setInterval(function () { if (!streaming) { refreshAll(); } }, POLL_MS);
    window.setInterval(refreshAll, BACKSTOP_MS);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
