// gmini status page: keeps the server-rendered pages live with the API's
// Server-Sent Events (GET /events, /experiments/{id}/events,
// /experiments/{id}/logs?follow=true), and cancels without a reload. No
// framework, no build step; text from the server only ever goes in through
// textContent. EventSource resumes a dropped stream by itself, with
// Last-Event-ID.
(function () {
  "use strict";

  var body = document.body;
  var csrf = body.dataset.csrf || "";
  var ui = body.dataset.ui || "./";
  var FINAL = { Succeeded: true, Failed: true, Cancelled: true };

  function cancellable(state) {
    return !FINAL[state] && state !== "Deleting";
  }

  function parse(data) {
    try {
      return JSON.parse(data);
    } catch (e) {
      return null;
    }
  }

  function el(tag, className, text) {
    var e = document.createElement(tag);
    if (className) e.className = className;
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }

  function badge(state) {
    return el("span", "badge state-" + state, state);
  }

  // fmtTime shows an RFC 3339 time as the server does: UTC, to the second.
  function fmtTime(iso) {
    var d = new Date(iso);
    if (isNaN(d.getTime())) return "";
    return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
  }

  function setNote(note, on, text) {
    if (!note) return;
    note.className = "live " + (on ? "on" : "off");
    note.textContent = text;
  }

  // follow opens an EventSource on url (relative to the page) and hands
  // each named event to its handler; note says whether it is live.
  function follow(url, note, liveText, handlers) {
    var es = new EventSource(new URL(url, document.baseURI).href);
    es.addEventListener("open", function () {
      setNote(note, true, liveText);
    });
    es.addEventListener("error", function (e) {
      // A named "error" event is the server's, with a reason; the stream
      // then ends and the browser reconnects. Without data, the
      // connection failed: closed for good on a refusal (401, 404, 503).
      var v = e.data ? parse(e.data) : null;
      if (v && v.error) {
        setNote(note, false, "The stream stopped (" + v.error + "); reconnecting…");
      } else if (es.readyState === EventSource.CLOSED) {
        setNote(note, false, "Live updates are unavailable here; reload the page to try again.");
      } else {
        setNote(note, false, "Reconnecting…");
      }
    });
    Object.keys(handlers).forEach(function (name) {
      es.addEventListener(name, function (e) {
        handlers[name](e, es);
      });
    });
    return es;
  }

  // Rows of a table of experiments, by ID.
  function rowIndex(tbody) {
    var rows = new Map();
    Array.prototype.forEach.call(tbody.rows, function (tr) {
      rows.set(tr.dataset.id, tr);
    });
    return rows;
  }

  // updateRow shows a state change (a wire.Event) in a row.
  function updateRow(tr, ev) {
    tr.dataset.state = ev.state;
    var cell = tr.querySelector("td.state");
    if (cell) cell.replaceChildren(badge(ev.state));
    var reason = tr.querySelector("td.reason");
    if (reason) {
      reason.textContent = ev.reason || "";
      reason.title = ev.message || "";
    }
    if (FINAL[ev.state]) {
      var done = tr.querySelector("td.completed");
      if (done && ev.time) done.textContent = fmtTime(ev.time);
    }
    var pos = tr.querySelector("td.position");
    if (pos && ev.state !== "Queued") pos.textContent = "";
    if (!cancellable(ev.state)) {
      var form = tr.querySelector("form.cancel");
      if (form) form.remove();
    }
  }

  function cancelForm(action, id) {
    var form = el("form", "cancel");
    form.method = "post";
    form.action = action;
    form.dataset.id = id;
    var hidden = el("input");
    hidden.type = "hidden";
    hidden.name = "csrf";
    hidden.value = csrf;
    var button = el("button", "", "Cancel");
    button.type = "submit";
    form.append(hidden, button);
    return form;
  }

  // newRow is the row of an experiment first seen in an event, as the
  // list renders it.
  function newRow(ev) {
    var tr = el("tr", "new");
    tr.dataset.id = ev.experiment;
    var id = el("td", "id");
    var a = el("a", "", ev.experiment);
    a.href = ui + "experiments/" + encodeURIComponent(ev.experiment);
    id.append(a);
    var set = el("td", "set");
    if (ev.set) {
      var sa = el("a", "", ev.set);
      sa.href = ui + "sets/" + encodeURIComponent(ev.set);
      set.append(sa);
    }
    var actions = el("td", "actions");
    if (cancellable(ev.state)) {
      actions.append(cancelForm(ui + "experiments/" + encodeURIComponent(ev.experiment) + "/cancel", ev.experiment));
    }
    tr.append(id, el("td", "state"), el("td", "reason"), set, el("td", "submitter", ev.submitter || ""),
      el("td", "created", fmtTime(ev.time)), el("td", "completed"), actions);
    updateRow(tr, ev);
    return tr;
  }

  // The list: rows change state as events arrive; a new experiment (its
  // first event, Submitted) comes in at the top of the newest page.
  function listPage() {
    var live = document.getElementById("live");
    var tbody = document.querySelector("#experiments tbody");
    if (!live || !tbody) return;
    var rows = rowIndex(tbody);
    var only = live.dataset.state;
    var first = live.dataset.first === "true";
    follow(live.dataset.events, live, "Live: state changes and new experiments appear as they happen.", {
      state: function (e) {
        var ev = parse(e.data);
        if (!ev || !ev.experiment) return;
        var tr = rows.get(ev.experiment);
        if (tr) {
          updateRow(tr, ev);
          // A row that left the state filtered on stays, marked.
          tr.classList.toggle("stale", !!only && ev.state !== only);
          return;
        }
        if (!first || ev.state !== "Submitted" || (only && ev.state !== only)) return;
        tr = newRow(ev);
        tbody.prepend(tr);
        rows.set(ev.experiment, tr);
        var empty = document.getElementById("empty");
        if (empty) empty.hidden = true;
      },
    });
  }

  // A set: its rows change as events arrive, and its counts are read
  // again (a moment after a burst of events) from its JSON status.
  function setPage() {
    var progress = document.getElementById("progress");
    var tbody = document.querySelector("#experiments tbody");
    if (!progress || !tbody) return;
    var rows = rowIndex(tbody);
    var only = progress.dataset.state;
    var timer = null;
    function refreshCounts() {
      timer = null;
      fetch(new URL(progress.dataset.status, document.baseURI).href, { headers: { Accept: "application/json" }, credentials: "same-origin" })
        .then(function (res) {
          return res.ok ? res.json() : null;
        })
        .then(function (s) {
          if (s && s.counts) showCounts(s);
        })
        .catch(function () {});
    }
    function showCounts(s) {
      var finished = 0;
      var counts = document.querySelector("#counts tbody");
      counts.replaceChildren();
      Object.keys(s.counts).forEach(function (st) {
        if (FINAL[st]) finished += s.counts[st];
      });
      // The order of the vocabulary, as the server renders it.
      ["Submitted", "Queued", "Pending", "Running", "Succeeded", "Failed", "Cancelled", "Suspended", "Deleting"].forEach(function (st) {
        var n = s.counts[st] || 0;
        if (!n) return;
        var tr = el("tr");
        tr.dataset.state = st;
        var th = el("th");
        th.append(badge(st));
        tr.append(th, el("td", "count", String(n)));
        counts.append(tr);
      });
      document.getElementById("finished").textContent = String(finished);
      document.getElementById("total").textContent = String(s.total);
      var bar = document.getElementById("bar");
      bar.max = s.total;
      bar.value = finished;
    }
    follow(progress.dataset.events, document.getElementById("live"), "Live: counts and rows change as they happen.", {
      state: function (e) {
        var ev = parse(e.data);
        if (!ev || !ev.experiment) return;
        var tr = rows.get(ev.experiment);
        if (tr) {
          updateRow(tr, ev);
          tr.classList.toggle("stale", !!only && ev.state !== only);
        }
        if (!timer) timer = setTimeout(refreshCounts, 1000);
      },
    });
  }

  // One experiment: its fields and timeline follow its status stream, its
  // log the log follow; both end with the experiment.
  function experimentPage() {
    var fields = document.getElementById("fields");
    if (!fields) return;
    var timeline = document.getElementById("timeline");
    var seen = new Set();
    function showState(st, reason, message) {
      document.getElementById("state").replaceChildren(badge(st));
      if (reason !== undefined) document.getElementById("reason").textContent = reason || "";
      if (message !== undefined) document.getElementById("message").textContent = message || "";
      if (!cancellable(st)) {
        var form = document.getElementById("cancel");
        if (form) form.remove();
      }
    }
    var note = document.getElementById("timeline-note");
    follow(fields.dataset.events, note, "Live: state changes appear as they happen.", {
      state: function (e) {
        var ev = parse(e.data);
        if (!ev || seen.has(ev.seq)) return;
        seen.add(ev.seq);
        var li = el("li");
        var t = el("time", "", fmtTime(ev.time));
        t.dateTime = ev.time;
        li.append(t, badge(ev.state));
        var why = [ev.reason, ev.message].filter(Boolean).join(": ");
        if (ev.exitCode !== undefined && ev.exitCode !== null) why += (why ? "; " : "") + "exit code " + ev.exitCode;
        if (why) li.append(el("span", "why", why));
        timeline.append(li);
        showState(ev.state, ev.reason, ev.message);
      },
      done: function (e, es) {
        es.close();
        var d = parse(e.data) || {};
        setNote(note, true, "Final: " + (d.state || "ended") + ".");
        if (d.state) showState(d.state);
      },
    });

    var log = document.getElementById("log");
    var logNote = document.getElementById("log-note");
    function append(text, className) {
      var atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 24;
      if (className) log.append(el("span", className, text));
      else log.append(document.createTextNode(text));
      if (atBottom) log.scrollTop = log.scrollHeight;
    }
    follow(fields.dataset.logs, logNote, "Following the log as it is written…", {
      // Output: the data is the chunk as written (its lines joined by LF).
      message: function (e) {
        append(e.data);
      },
      attempt: function (e) {
        if (log.textContent && !log.textContent.endsWith("\n")) append("\n");
        append(e.data + "\n", "attempt");
      },
      done: function (e, es) {
        es.close();
        var d = parse(e.data) || {};
        var end = "The experiment ended: " + (d.state || "?");
        if (d.exitCode !== undefined && d.exitCode !== null) end += ", exit code " + d.exitCode;
        setNote(logNote, true, end + ".");
        if (d.state) showState(d.state, d.reason, d.message);
      },
    });
  }

  // Cancel buttons: the script's fetch (with the CSRF token in a header)
  // instead of the form's POST and reload.
  document.addEventListener("submit", function (e) {
    var form = e.target;
    if (!(form instanceof HTMLFormElement) || !form.classList.contains("cancel")) return;
    e.preventDefault();
    var id = form.dataset.id;
    if (!window.confirm("Cancel experiment " + id + "? Its Job and pods are deleted.")) return;
    var button = form.querySelector("button");
    button.disabled = true;
    fetch(form.action, {
      method: "POST",
      headers: { Accept: "application/json", "X-CSRF-Token": csrf },
      credentials: "same-origin",
    })
      .then(function (res) {
        return res.json().then(function (v) {
          if (!res.ok) throw new Error((v && v.error) || "HTTP " + res.status);
          return v;
        });
      })
      .then(function (v) {
        // A deleted Job's state is the one it had; it is being deleted now.
        var st = v.deleted && !FINAL[v.state] ? "Deleting" : v.state || "Deleting";
        var tr = form.closest("tr");
        if (tr) updateRow(tr, { state: st });
        var state = document.getElementById("state");
        if (state && !tr) state.replaceChildren(badge(st));
        form.remove();
      })
      .catch(function (err) {
        button.disabled = false;
        window.alert("Could not cancel " + id + ": " + err.message);
      });
  });

  switch (body.dataset.page) {
    case "list":
      listPage();
      break;
    case "set":
      setPage();
      break;
    case "experiment":
      experimentPage();
      break;
  }
})();
