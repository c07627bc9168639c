// task-scheduler GUI: the little script there is. Every page works without it.
// 1. A run that is queued or running marks its section with data-autorefresh="ms": its output is
//    tailed from the byte offsets the page was drawn with (/runs/<id>/tail), appended in place
//    (the view stays at the bottom unless you scrolled up), the elapsed time ticks, and when the
//    run starts or ends the section is swapped for the one the server draws now (a workflow run's,
//    with its steps, every 2 s while it goes on). Without script the page reloads.
// 2. The footer offers the browser's own time zone (Intl), remembered by the server in a cookie.
// 3. Runs in the timeline and the duration chart show their details on hover or on a first tap
//    (a second tap, or the link in the tip, opens the run); without script, <title> does it.
// 4. The dashboard, the job list, a job's page and the newest runs follow the change feed
//    (/live: Server-Sent Events; where a stream is refused or EventSource missing, the same feed as JSON once a
//    second). A change that concerns the page fetches the page again, at most twice a second,
//    and swaps its [data-live-region] elements: filters and forms outside them keep their
//    values and focus. Without script the pages are as drawn (reload to see more).
(function () {
  "use strict";
  var selector = '[data-testid="run-detail"]';

  function live(section) {
    var delay = parseInt(section && section.getAttribute("data-autorefresh"), 10);
    if (!(delay > 0)) { return; }
    var id = section.getAttribute("data-run-id");
    var offsets = { stdout: section.getAttribute("data-offset-stdout") || "0",
                    stderr: section.getAttribute("data-offset-stderr") || "0" };
    var elapsed = section.querySelector('[data-testid="run-elapsed"]');
    // A workflow run's own output stays empty: its steps are what changes, so its section is
    // drawn again every 4th look (2 s) while it goes on.
    var steps = section.querySelector('[data-testid="run-steps"]'), looks = 0;
    var ticker = elapsed ? window.setInterval(function () { tick(elapsed); }, 1000) : null;
    section.querySelectorAll(".output.live").forEach(function (pre) {
      pre.scrollTop = pre.scrollHeight;
    });

    function step() {
      var url = "/runs/" + encodeURIComponent(id) + "/tail?stdout=" + offsets.stdout +
        "&stderr=" + offsets.stderr;
      fetch(url, { credentials: "same-origin", cache: "no-store" })
        .then(function (response) {
          if (!response.ok) { throw new Error("HTTP " + response.status); }
          return response.json();
        })
        .then(function (answer) {
          ["stdout", "stderr"].forEach(function (stream) {
            var piece = answer[stream];
            if (piece.text) { append(section.querySelector('[data-testid="run-' + stream + '"]'),
                                     piece.text); }
            offsets[stream] = piece.offset;
          });
          // Still as drawn: tail on. It ended, or went from queued to running: redraw it.
          looks += 1;
          if (answer.running && answer.status === section.getAttribute("data-status") &&
              !(steps && looks % 4 === 0)) {
            window.setTimeout(step, delay);
          } else {
            if (ticker) { window.clearInterval(ticker); }
            finish(delay);
          }
        })
        .catch(function () { window.setTimeout(step, delay * 4); });
    }
    window.setTimeout(step, delay);
  }

  function append(pre, text) {
    var atBottom = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 24;
    pre.appendChild(document.createTextNode(text));
    if (atBottom) { pre.scrollTop = pre.scrollHeight; }
  }

  function tick(cell) {
    var seconds = Math.max(0, Math.floor((Date.now() - Date.parse(cell.getAttribute("data-started"))) / 1000));
    var h = Math.floor(seconds / 3600), m = Math.floor(seconds / 60) % 60, s = seconds % 60;
    cell.textContent = (h ? h + ":" + (m < 10 ? "0" : "") : "") + m + ":" + (s < 10 ? "0" : "") + s;
  }

  function finish(delay) {   // the finished run, drawn by the server, in place of this one
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
        live(fresh);   // still going (its end not written yet): tail again
      })
      .catch(function () { window.setTimeout(function () { finish(delay); }, delay * 4); });
  }

  function offerBrowserZone() {
    var link = document.querySelector("[data-tz-switch]");
    var zone = window.Intl && Intl.DateTimeFormat().resolvedOptions().timeZone;
    var service = link && link.closest("[data-service-zone]");
    if (!link || !zone || !service || service.getAttribute("data-service-zone") === zone) {
      return;
    }
    var year = new Date().getFullYear();
    var mine = [new Date(year, 0, 1).getTimezoneOffset(), new Date(year, 6, 1).getTimezoneOffset()];
    if (mine.join(",") === service.getAttribute("data-service-offsets")) {
      return;   // another name for the same clock (UTC and Etc/UTC)
    }
    var url = new URL(window.location.href);
    url.searchParams.delete("lang");
    url.searchParams.set("tz", zone);
    link.setAttribute("href", url.pathname + url.search);
    link.textContent = link.getAttribute("data-label").replace("{zone}", zone);
    link.hidden = false;
  }

  var tip = null, tapped = null, lastPointer = "mouse";

  function showTip(target, withLink) {
    if (!tip) {
      tip = document.createElement("div");
      tip.className = "tip";
      tip.setAttribute("role", "tooltip");
      document.body.appendChild(tip);
    }
    tip.textContent = target.getAttribute("data-tip");
    if (withLink) {
      var open = document.createElement("a");
      open.href = target.getAttribute("href");
      open.textContent = " →";
      tip.appendChild(open);
    }
    var box = target.getBoundingClientRect();
    tip.style.left = Math.max(4, Math.min(window.scrollX + box.left,
      window.scrollX + document.documentElement.clientWidth - tip.offsetWidth - 4)) + "px";
    tip.style.top = (window.scrollY + box.bottom + 6) + "px";
    tip.hidden = false;
  }

  function hideTip() {
    if (tip) { tip.hidden = true; }
    tapped = null;
  }

  function runOf(event) {
    return event.target.closest && event.target.closest(".tl-run[data-tip]");
  }

  function labelRuns(root) {
    root.querySelectorAll(".tl-run[data-tip]").forEach(function (run) {
      run.setAttribute("aria-label", run.getAttribute("data-tip"));
      run.querySelectorAll("title").forEach(function (title) { title.remove(); });
    });
  }

  function wireTips() {
    labelRuns(document);
    document.addEventListener("pointerdown", function (e) { lastPointer = e.pointerType; }, true);
    document.addEventListener("mouseover", function (e) {
      var run = runOf(e);
      if (run && lastPointer === "mouse") { showTip(run, false); }
      else if (!run && lastPointer === "mouse") { hideTip(); }
    });
    document.addEventListener("focusin", function (e) {
      var run = runOf(e);
      if (run) { showTip(run, false); } else { hideTip(); }
    });
    document.addEventListener("click", function (e) {
      var run = runOf(e);
      if (run && lastPointer !== "mouse" && tapped !== run) {
        e.preventDefault();   // the first tap shows the run; the second opens it
        showTip(run, true);
        tapped = run;
      } else if (!run && !(e.target.closest && e.target.closest(".tip"))) {
        hideTip();
      }
    });
  }

  var REFRESH_GAP = 500, POLL_EVERY = 1000;

  function liveLists(main) {
    var cursor = main.getAttribute("data-live-cursor");
    var job = main.getAttribute("data-live-job");
    var badge = document.querySelector('[data-testid="live"]');
    var timer = null, busy = false, again = false, last = 0, waiting = false;

    function show(state) {
      if (!badge) { return; }
      badge.setAttribute("data-state", state);
      badge.textContent = badge.getAttribute("data-label-" + state) || "";
      badge.title = badge.getAttribute("data-title-" + state) || "";
      badge.hidden = false;
    }

    function concerns(kind, data) {
      if (!job || kind === "reset") { return true; }
      return kind === "run" ? data.job_id === job : data.id === job;
    }

    function schedule() {
      if (document.hidden) { waiting = true; return; }   // drawn when the tab is shown
      if (busy) { again = true; return; }
      if (!timer) {
        timer = window.setTimeout(refresh, Math.max(50, last + REFRESH_GAP - Date.now()));
      }
    }

    function refresh() {
      timer = null;
      busy = true;
      last = Date.now();
      fetch(window.location.href, { credentials: "same-origin", cache: "no-store" })
        .then(function (response) {
          if (!response.ok) { throw new Error("HTTP " + response.status); }
          return response.text();
        })
        .then(swap)
        .catch(function () { again = true; })
        .then(function () {
          busy = false;
          if (again) { again = false; schedule(); }
        });
    }

    function swap(html) {
      var fresh = new DOMParser().parseFromString(html, "text/html");
      document.querySelectorAll("[data-live-region]").forEach(function (old) {
        var name = old.getAttribute("data-live-region");
        var next = fresh.querySelector('[data-live-region="' + name + '"]');
        if (!next) { return; }
        var focus = focusIndex(old);
        next = document.adoptNode(next);
        old.replaceWith(next);
        if (focus >= 0) { refocus(next, focus); }
        labelRuns(next);
      });
      hideTip();
    }

    function focusable(root) {
      return root.querySelectorAll("a[href], button, input, select, textarea, summary");
    }

    function focusIndex(region) {   // a button in a row keeps focus when the row is redrawn
      if (!region.contains(document.activeElement)) { return -1; }
      return Array.prototype.indexOf.call(focusable(region), document.activeElement);
    }

    function refocus(region, index) {
      var target = focusable(region)[index];
      if (target) { target.focus({ preventScroll: true }); }
    }

    function heard(kind, data) {
      if (concerns(kind, data)) { schedule(); }
    }

    function poll() {
      show("poll");
      fetch("/live?after=" + encodeURIComponent(cursor),
            { credentials: "same-origin", cache: "no-store" })
        .then(function (response) {
          if (!response.ok) { throw new Error("HTTP " + response.status); }
          return response.json();
        })
        .then(function (answer) {
          cursor = answer.cursor;
          if (answer.reset) { schedule(); }
          answer.events.forEach(function (e) { heard(e.event, e.data); });
          window.setTimeout(poll, POLL_EVERY);
        })
        .catch(function () { window.setTimeout(poll, POLL_EVERY * 5); });
    }

    function stream() {
      var source = new EventSource("/live?after=" + encodeURIComponent(cursor));
      source.addEventListener("open", function () { show("stream"); });
      ["run", "job", "reset"].forEach(function (kind) {
        source.addEventListener(kind, function (e) {
          if (e.lastEventId) { cursor = e.lastEventId; }
          heard(kind, JSON.parse(e.data || "{}"));
        });
      });
      source.addEventListener("error", function () {
        // Closed: refused (no free stream, 503) or not a stream at all. Else it reconnects.
        if (source.readyState === EventSource.CLOSED) { poll(); }
      });
    }

    document.addEventListener("visibilitychange", function () {
      if (!document.hidden && waiting) { waiting = false; schedule(); }
    });
    if (window.EventSource) { stream(); } else { poll(); }
  }

  document.addEventListener("DOMContentLoaded", function () {
    live(document.querySelector(selector));
    offerBrowserZone();
    wireTips();
    var main = document.querySelector("[data-live-cursor]");
    if (main) { liveLists(main); }
  });
})();
