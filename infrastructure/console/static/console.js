// Live pages: poll the log's head and reload when it moves, unless the operator is typing.
(function () {
  "use strict";
  var body = document.body;
  if (!body || body.dataset.live !== "1") return;
  var head = body.dataset.head;
  function busy() {
    var el = document.activeElement;
    if (el && (el.tagName === "INPUT" || el.tagName === "SELECT" || el.tagName === "TEXTAREA")) return true;
    var inputs = document.querySelectorAll("form[method=post] input:not([type=hidden])");
    for (var i = 0; i < inputs.length; i++) if (inputs[i].value) return true;
    return false;
  }
  function poll() {
    fetch("/api/head", { cache: "no-store", credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        if (data && String(data.head) !== head && !busy()) window.location.reload();
      })
      .catch(function () {})
      .finally(function () { window.setTimeout(poll, 3000); });
  }
  window.setTimeout(poll, 3000);
})();
