// The dashboard's only script: the console's live tail. Pages work without it.
(function () {
  "use strict";
  function tail(pre) {
    var task = pre.getAttribute("data-task");
    var after = pre.getAttribute("data-after") || "0";
    var timer = null;
    function atBottom() {
      return window.innerHeight + window.scrollY >= document.body.scrollHeight - 40;
    }
    function poll() {
      fetch("/web-data/log/" + encodeURIComponent(task) + "?after=" + encodeURIComponent(after),
            { credentials: "same-origin", cache: "no-store" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (data) {
          if (!data) { return; }
          var stick = atBottom();
          data.events.forEach(function (ev) {
            after = String(ev.seq);
            ev.msg.replace(/\n$/, "").split("\n").forEach(function (line) {
              var ts = document.createElement("span");
              ts.className = "ts";
              ts.textContent = ev.time;
              pre.appendChild(ts);
              pre.appendChild(document.createTextNode(" " + line.replace(/\r$/, "") + "\n"));
            });
          });
          if (stick && data.events.length) { window.scrollTo(0, document.body.scrollHeight); }
          var badge = document.querySelector("#task-status .status");
          if (badge && data.status && badge.textContent !== data.status) {
            badge.textContent = data.status;
            badge.className = "status s-" + data.status.replace(/[^A-Za-z0-9_]/g, "");
          }
          // Once the task has ended and every line is here, reload: the page's actions and
          // facts follow the new status.
          if (data.status !== "in_progress" && data.status !== "queued" && data.events.length === 0) {
            clearInterval(timer);
            setTimeout(function () { window.location.reload(); }, 500);
          }
        })
        .catch(function () {});
    }
    timer = setInterval(poll, 2000);
  }
  document.addEventListener("DOMContentLoaded", function () {
    var pre = document.getElementById("console");
    if (pre && pre.getAttribute("data-live") === "1") { tail(pre); }
  });
})();
