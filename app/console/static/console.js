/* UAIP Hub console: keeps the live parts of a page current. Every element with data-live="<url>" is replaced
   by that URL's HTML fragment (same origin, the session cookie) every few seconds while the tab is visible.
   Pages work without this script; it only saves the reload. No inline script anywhere (the CSP forbids it). */
(function () {
  "use strict";
  var PERIOD_MS = 3000;

  function refresh(element) {
    var url = element.getAttribute("data-live");
    if (!url || document.hidden) { return; }
    fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) { if (html !== null) { element.innerHTML = html; } })
      .catch(function () { /* offline for a moment: try again next period */ });
  }

  function start() {
    var parts = document.querySelectorAll("[data-live]");
    if (!parts.length) { return; }
    window.setInterval(function () { parts.forEach(refresh); }, PERIOD_MS);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
