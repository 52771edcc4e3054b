// Switchyard web UI: keeps the tasks page and a task's page up to date by
// polling /ui/tasks/poll. Builds rows with textContent only (no HTML from
// data), and runs from this file only, as the Content-Security-Policy wants.
(function () {
  "use strict";
  var ENDED = { success: true, failed: true, cancelled: true };
  var FAST = 400, SLOW = 3000, HIDDEN = 5000, MAX_ROWS = 500;

  function get(url, done, fail) {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" }, cache: "no-store" })
      .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.json(); })
      .then(done, fail);
  }

  function cell(text, cls) {
    var td = document.createElement("td");
    if (cls) { td.className = cls; }
    td.textContent = text == null ? "" : String(text);
    return td;
  }

  function rowOf(t, admin) {
    var tr = document.createElement("tr");
    tr.dataset.id = t.id;
    tr.dataset.seq = t.seq;
    tr.dataset.state = t.state;
    var id = cell("", "id"), a = document.createElement("a");
    a.href = "/ui/tasks/" + encodeURIComponent(t.id);
    a.textContent = t.id;
    id.appendChild(a);
    tr.appendChild(id);
    tr.appendChild(cell(t.endpoint));
    tr.appendChild(cell(t.kind));
    var st = cell(""), badge = document.createElement("span");
    badge.className = "state " + t.state;
    badge.textContent = t.state;
    badge.title = t.error || "";
    st.appendChild(badge);
    tr.appendChild(st);
    if (admin) { tr.appendChild(cell(t.owner)); }
    tr.appendChild(cell(t.created, "t"));
    tr.appendChild(cell(t.took, "t"));
    tr.appendChild(cell(t.attempts, "n"));
    return tr;
  }

  function tasksPage(body, live) {
    var admin = body.dataset.admin === "true";
    var base = live.dataset.poll;
    var after = body.dataset.after || "";
    var empty = document.getElementById("no-tasks");

    function open() {
      var ids = [];
      var rows = body.rows;
      for (var i = 0; i < rows.length && ids.length < 200; i++) {
        if (!ENDED[rows[i].dataset.state]) { ids.push(rows[i].dataset.id); }
      }
      return ids;
    }

    function tick() {
      var ids = open();
      var url = base + (base.indexOf("?") < 0 ? "?" : "&") + "ids=" + ids.join(",");
      if (after) { url += "&after=" + encodeURIComponent(after); }
      get(url, function (res) {
        live.classList.remove("stale");
        var seen = {};
        for (var i = 0; i < body.rows.length; i++) { seen[body.rows[i].dataset.id] = body.rows[i]; }
        if (res.after) { after = res.after; }
        (res.tasks || []).forEach(function (t) {
          var old = seen[t.id];
          var tr = rowOf(t, admin);
          if (old) { body.replaceChild(tr, old); return; }
          tr.className = "fresh";
          body.insertBefore(tr, body.firstChild);
          seen[t.id] = tr;
        });
        Object.keys(res.states || {}).forEach(function (id) {
          var t = res.states[id], old = seen[id];
          if (old && old.dataset.state !== t.state) { body.replaceChild(rowOf(t, admin), old); }
        });
        while (body.rows.length > MAX_ROWS) { body.deleteRow(body.rows.length - 1); }
        if (empty && body.rows.length > 0) { empty.remove(); empty = null; }
        body.dataset.after = after;
        schedule(document.hidden ? HIDDEN : FAST);
      }, function () {
        live.classList.add("stale");
        schedule(SLOW);
      });
    }

    function schedule(ms) { setTimeout(tick, ms); }
    schedule(FAST);
  }

  // A task's page reloads once its state changes, until it has ended.
  function taskPage(el) {
    var id = el.dataset.id, state = el.dataset.state;
    if (ENDED[state]) { return; }
    function tick() {
      get("/ui/tasks/poll?ids=" + encodeURIComponent(id), function (res) {
        var t = (res.states || {})[id];
        if (t && t.state !== state) { location.reload(); return; }
        setTimeout(tick, document.hidden ? HIDDEN : 700);
      }, function () { setTimeout(tick, SLOW); });
    }
    setTimeout(tick, 700);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var body = document.getElementById("task-rows"), live = document.getElementById("live");
    if (body && live && live.dataset.poll) { tasksPage(body, live); }
    var st = document.getElementById("task-state");
    if (st) { taskPage(st); }
  });
}());
