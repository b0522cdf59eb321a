// Resguardo dashboard: live rows (server-sent events), and forms that call the JSON API with
// the session's CSRF token. No framework, no third-party code; every page works with a keyboard.
"use strict";

(function () {
  function $(sel, root) { return (root || document).querySelector(sel); }
  function $all(sel, root) { return Array.prototype.slice.call((root || document).querySelectorAll(sel)); }

  async function api(method, path, body, csrf) {
    const response = await fetch(path, {
      method: method,
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = {};
    try { data = await response.json(); } catch (e) { data = {}; }
    if (!response.ok) {
      const err = (data && data.error) || {};
      const field = err.field ? " (" + err.field + ")" : "";
      throw new Error((err.message || ("The request failed: HTTP " + response.status)) + field);
    }
    return data;
  }

  // --- live rows ------------------------------------------------------------------------------
  function say(text) {
    const status = $("#live-status");
    if (status) { status.textContent = text; }
  }

  function setCell(tr, field, value, html) {
    const td = $('[data-field="' + field + '"]', tr);
    if (!td) { return; }
    if (html) { td.replaceChildren(html); } else { td.textContent = value; }
  }

  function stateBadge(state) {
    const span = document.createElement("span");
    span.className = "state state-" + state;
    span.textContent = state;
    return span;
  }

  function newRow(table, row) {
    const tr = document.createElement("tr");
    tr.dataset.recordingId = row.recording_id;
    const link = document.createElement("a");
    link.href = "/ui/recordings/" + encodeURIComponent(row.recording_id);
    const code = document.createElement("code");
    code.textContent = row.recording_id;
    link.appendChild(code);
    const first = document.createElement("td");
    first.appendChild(link);
    tr.appendChild(first);
    const headers = $all("thead th", table).map(function (th) { return th.textContent; });
    if (headers.indexOf("Tenant") >= 0) {
      const td = document.createElement("td");
      td.textContent = row.tenant_id;
      tr.appendChild(td);
    }
    ["label", "state", "destination", "started", "duration", "size"].forEach(function (field) {
      const td = document.createElement("td");
      td.dataset.field = field;
      tr.appendChild(td);
    });
    return tr;
  }

  function onRecording(row) {
    const table = $("table[data-live]");
    if (!table) { return; }
    let tr = $('tr[data-recording-id="' + CSS.escape(row.recording_id) + '"]', table);
    if (!tr) {
      if (table.dataset.live !== "all") { return; }
      const empty = $("tr.empty", table);
      if (empty) { empty.remove(); }
      tr = newRow(table, row);
      $("tbody", table).prepend(tr);
      say("New recording " + row.recording_id + ": " + row.state + ".");
    } else {
      const before = $('[data-field="state"]', tr);
      if (before && before.textContent.trim() !== row.state) {
        say("Recording " + row.recording_id + " is now " + row.state + ".");
      }
    }
    setCell(tr, "label", row.label);
    setCell(tr, "state", row.state, stateBadge(row.state));
    setCell(tr, "destination", row.destination);
    setCell(tr, "started", row.started);
    setCell(tr, "duration", row.duration);
    setCell(tr, "size", row.size);
    tr.dataset.state = row.state;
  }

  if ($("table[data-live]") && window.EventSource) {
    const source = new EventSource("/ui/live");
    source.addEventListener("recording", function (e) { onRecording(JSON.parse(e.data)); });
    source.addEventListener("open", function () { document.body.dataset.live = "connected"; });
  }

  // --- re-send --------------------------------------------------------------------------------
  const resendDialog = $("#resend-dialog");
  if (resendDialog) {
    const form = $("#resend-form");
    let opener = null;
    $all("button.resend").forEach(function (button) {
      button.addEventListener("click", function () {
        opener = button;
        form.dataset.recordingId = button.dataset.recordingId;
        $("#resend-id").textContent = button.dataset.recordingId;
        $("#resend-error").textContent = "";
        resendDialog.showModal();
        $("#resend-confirm").focus();
      });
    });
    $("#resend-cancel").addEventListener("click", function () { resendDialog.close(); });
    resendDialog.addEventListener("close", function () { if (opener) { opener.focus(); } });
    form.addEventListener("submit", async function (e) {
      e.preventDefault();
      const rid = form.dataset.recordingId;
      const destination = $("#resend-destination").value;
      try {
        await api("POST", "/v1/recordings/" + encodeURIComponent(rid) + "/resend",
          destination ? { destination: destination } : {}, form.dataset.csrf);
        resendDialog.close();
        if (opener) { opener.disabled = true; opener.textContent = "Re-sent"; }
        say("Recording " + rid + " is being sent again.");
      } catch (err) {
        $("#resend-error").textContent = err.message;
      }
    });
  }

  // --- destinations ---------------------------------------------------------------------------
  const destForm = $("#destination-form");
  if (destForm) {
    const provider = $("#d-provider", destForm);
    const limit = parseInt(destForm.dataset.limit, 10);
    const counter = $("#secret-counter");
    function current() { return $('fieldset[data-provider="' + provider.value + '"]', destForm); }
    function value(input) {
      const type = input.dataset.type;
      const raw = input.value.trim();
      if (raw === "") { return undefined; }
      if (type === "int") { return parseInt(raw, 10); }
      if (type === "bool") { return raw === "true"; }
      if (type === "list") { return raw.split(",").map(function (s) { return s.trim(); }).filter(Boolean); }
      return input.value;
    }
    function collect(secretOnly) {
      const out = {};
      $all("input, select", current()).forEach(function (input) {
        if (secretOnly && !input.dataset.secret) { return; }
        const v = value(input);
        if (v !== undefined) { out[input.name] = v; }
      });
      return out;
    }
    function count() {
      // The vault counts the characters of the secret fields' JSON, keys sorted.
      const secret = collect(true);
      const sorted = {};
      Object.keys(secret).sort().forEach(function (k) { sorted[k] = secret[k]; });
      const n = Object.keys(sorted).length ? Array.from(JSON.stringify(sorted)).length : 0;
      counter.textContent = n + " / " + limit + " characters of credentials";
      counter.classList.toggle("over", n > limit);
      return n;
    }
    provider.addEventListener("change", function () {
      $all("fieldset.provider", destForm).forEach(function (fs) {
        const on = fs.dataset.provider === provider.value;
        fs.hidden = !on;
        fs.disabled = !on;
      });
      count();
    });
    destForm.addEventListener("input", count);
    destForm.addEventListener("submit", async function (e) {
      e.preventDefault();
      const error = $("#destination-error");
      error.textContent = "";
      const n = count();
      if (n > limit) {
        error.textContent = "the secret part of the config is " + n + " characters; the vault " +
          "stores at most " + limit + " characters; raise RESGUARDO_MAX_CREDENTIAL_CHARS to allow more (config)";
        return;
      }
      const body = {
        name: $("#d-name", destForm).value.trim(),
        provider: provider.value,
        config: collect(false),
        probe: destForm.elements.probe.checked,
      };
      const submit = $('button[type="submit"]', destForm);
      submit.disabled = true;
      try {
        await api("POST", "/v1/destinations", body, destForm.dataset.csrf);
        // Secrets leave the page: the form is cleared before the list is reloaded.
        destForm.reset();
        window.location.reload();
      } catch (err) {
        $all('input[data-secret]', destForm).forEach(function (i) { i.value = ""; });
        error.textContent = err.message;
      } finally {
        submit.disabled = false;
        count();
      }
    });
    count();
  }

  $all("button.dest-test").forEach(function (button) {
    button.addEventListener("click", async function () {
      const status = $("#destinations-status");
      status.textContent = "Testing " + button.dataset.name + "…";
      try {
        const out = await api("POST", "/v1/destinations/" + encodeURIComponent(button.dataset.name) + "/test",
          {}, $("#destination-form").dataset.csrf);
        status.textContent = button.dataset.name + " passed: a test object was written, confirmed (" +
          ((out.probe && out.probe.checksum_algorithm) || "checksum") + ") and deleted.";
      } catch (err) {
        status.textContent = button.dataset.name + " failed: " + err.message;
      }
    });
  });

  $all("form.dest-settings").forEach(function (form) {
    form.addEventListener("submit", async function (e) {
      e.preventDefault();
      const config = {};
      $all("input", form).forEach(function (input) {
        const raw = input.value.trim();
        const type = input.dataset.type;
        if (raw === "") { config[input.name] = null; return; }
        if (type === "int") { config[input.name] = parseInt(raw, 10); }
        else if (type === "bool") { config[input.name] = raw === "true"; }
        else if (type === "list") { config[input.name] = raw.split(",").map(function (s) { return s.trim(); }).filter(Boolean); }
        else { config[input.name] = raw; }
      });
      const tenant = form.dataset.tenant ? "?tenant_id=" + encodeURIComponent(form.dataset.tenant) : "";
      try {
        await api("PATCH", "/v1/destinations/" + encodeURIComponent(form.dataset.name) + tenant,
          { config: config }, form.dataset.csrf);
        window.location.reload();
      } catch (err) {
        $(".error", form).textContent = err.message;
      }
    });
  });

  const deleteDialog = $("#delete-dialog");
  if (deleteDialog) {
    const form = $("#delete-form");
    let opener = null;
    $all("button.dest-delete").forEach(function (button) {
      button.addEventListener("click", function () {
        opener = button;
        form.dataset.name = button.dataset.name;
        $("#delete-name").textContent = button.dataset.name;
        deleteDialog.showModal();
      });
    });
    $("#delete-cancel").addEventListener("click", function () { deleteDialog.close(); });
    deleteDialog.addEventListener("close", function () { if (opener) { opener.focus(); } });
    form.addEventListener("submit", async function (e) {
      e.preventDefault();
      try {
        await api("DELETE", "/v1/destinations/" + encodeURIComponent(form.dataset.name), undefined, form.dataset.csrf);
        window.location.reload();
      } catch (err) {
        $("#delete-error").textContent = err.message;
      }
    });
  }
})();
