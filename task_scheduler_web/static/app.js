// task-scheduler GUI: the one bit of script. Everything else works without JavaScript.
// A run that is queued or running marks its section with data-autorefresh="ms": poll the page
// and swap that section in place until the run has finished.
(function () {
  "use strict";
  var selector = '[data-testid="run-detail"]';

  function poll(delay) {
    fetch(window.location.href, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.text();
      })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").querySelector(selector);
        var current = document.querySelector(selector);
        if (!fresh || !current) { return; }
        current.replaceWith(document.adoptNode(fresh));
        schedule(fresh);
      })
      .catch(function () { window.setTimeout(function () { poll(delay); }, delay * 4); });
  }

  function schedule(section) {
    var delay = parseInt(section && section.getAttribute("data-autorefresh"), 10);
    if (delay > 0) { window.setTimeout(function () { poll(delay); }, delay); }
  }

  document.addEventListener("DOMContentLoaded", function () {
    schedule(document.querySelector(selector));
  });
})();
