// caddy-jit pages: progressive enhancement only. Every page is complete without this
// script; with it, the time left on a session counts down every second.
(function () {
  "use strict";
  function format(seconds) {
    if (seconds <= 0) return "ended";
    var h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
    if (h > 0) return h + "h " + m + "m left";
    if (m > 0) return m + "m " + (s < 10 ? "0" : "") + s + "s left";
    return s + "s left";
  }
  function tick() {
    var now = Date.now() / 1000;
    var items = document.querySelectorAll("[data-ends]");
    for (var i = 0; i < items.length; i++) {
      var ends = parseInt(items[i].getAttribute("data-ends"), 10);
      if (!isNaN(ends)) items[i].textContent = "(" + format(Math.floor(ends - now)) + ")";
    }
  }
  if (document.querySelector("[data-ends]")) {
    tick();
    setInterval(tick, 1000);
  }
})();
