// The inspector page's script. Everything a request carried is inserted with textContent,
// never as HTML: a forged webhook cannot inject markup or script into this page.
//
// The admin token lives in this tab's sessionStorage, which belongs to this origin (port
// included) and this tab only, and goes out only as a bearer header on this page's own
// requests. It arrives in the URL fragment (/#token=…, never sent to any server), which is
// removed from the address bar at once, or through the form. No cookie: a browser sends a
// cookie to every service on the host, whatever its port.
"use strict";
(() => {
  const TOKEN_KEY = "tower-twilio-admin-token";
  const fromFragment = new URLSearchParams(window.location.hash.slice(1)).get("token");
  if (fromFragment !== null) {
    window.history.replaceState(null, "", window.location.pathname + window.location.search);
    if (fromFragment) window.sessionStorage.setItem(TOKEN_KEY, fromFragment);
  }
  const OUTCOMES = ["received", "verified", "rejected", "processed", "failed", "copy", "passed_in_report_only_mode"];
  const POLL_MS = 1000;

  const decode = (text) => {
    try {
      return decodeURIComponent(text.replace(/\+/g, " "));
    } catch (_) {
      return text;
    }
  };

  const cell = (text, className) => {
    const td = document.createElement("td");
    td.textContent = text == null ? "" : String(text);
    if (className) td.className = className;
    return td;
  };

  const timeline = (history, className) => {
    const span = document.createElement("span");
    span.className = `timeline ${className}`;
    for (const step of history) {
      const item = document.createElement("span");
      item.textContent = step.error_code ? `${step.status} (${step.error_code})` : step.status;
      span.append(item);
    }
    return span;
  };

  // The record of the tenant this webhook belongs to: another tenant's callbacks for the same
  // SID are its own record, never mixed in.
  const recordOf = (answer, tenant) => answer && answer.records.find((r) => r.tenant_id === tenant);

  const row = (webhook, histories) => {
    const outcome = OUTCOMES.includes(webhook.outcome) ? webhook.outcome : "unknown";
    const tr = document.createElement("tr");
    tr.className = `outcome-${outcome}`;
    tr.dataset.outcome = outcome;
    tr.dataset.id = String(webhook.id);
    const path = decode(webhook.path) + (webhook.query ? `?${decode(webhook.query)}` : "");
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.textContent = webhook.outcome;
    const outcomeCell = document.createElement("td");
    outcomeCell.className = "outcome";
    outcomeCell.append(badge);
    let detail = "";
    if (webhook.rejection_reason) detail = webhook.rejection_reason;
    if (webhook.status_code != null) detail = `handler ${webhook.status_code}`;
    // A copy: the replay guard answered it with the first answer it stored; the handler did
    // not run. The row of that first answer, when it is in this log.
    if (webhook.outcome === "copy") {
      const first = webhook.copy_of;
      detail = first
        ? `copy: answered with the first answer (#${first.id}, stored ${new Date(first.answered_at).toLocaleTimeString()})`
        : "copy: answered with the stored first answer";
      if (first) tr.dataset.copyOf = String(first.id);
    }
    if (webhook.credential) detail += ` · ${webhook.credential}`;
    const message = cell(webhook.message_sid || webhook.call_sid || "", "message");
    const messageRecord = webhook.message_sid && recordOf(histories.messages.get(webhook.message_sid), webhook.tenant_id);
    if (messageRecord) {
      message.append(document.createElement("br"), timeline(messageRecord.history, "message-timeline"));
    }
    const callRecord = !webhook.message_sid && webhook.call_sid && recordOf(histories.calls.get(webhook.call_sid), webhook.tenant_id);
    if (callRecord) {
      message.append(document.createElement("br"), timeline(callRecord.history, "call-timeline"));
      if (callRecord.recordings.length > 0) {
        const recordings = callRecord.recordings.map((r) => ({ status: `recording ${r.status}`, error_code: r.error_code }));
        message.append(document.createElement("br"), timeline(recordings, "recording-timeline"));
      }
    }
    const client = cell(webhook.client_ip, "client");
    if (webhook.request_id) {
      const id = document.createElement("small");
      id.className = "request-id";
      id.textContent = webhook.request_id;
      client.append(document.createElement("br"), id);
    }
    tr.append(
      cell(new Date(webhook.received_at).toLocaleTimeString(), "time"),
      cell(webhook.method, "method"),
      cell(path, "path"),
      cell(webhook.tenant_id, "tenant"),
      cell(webhook.account_sid, "account"),
      cell(webhook.user_agent, "ua"),
      client,
      outcomeCell,
      cell(detail, "detail"),
      message,
    );
    if (!webhook.diagnosis) return [tr];
    // What the mismatch doctor found, on a row of its own under the rejection.
    const diagnosis = document.createElement("tr");
    diagnosis.className = "diagnosis";
    const td = cell(`The signature matches ${webhook.diagnosis.matched_url} — fix: ${webhook.diagnosis.fix}`);
    td.colSpan = tr.children.length;
    diagnosis.append(td);
    return [tr, diagnosis];
  };

  let timer = null;

  // Shows the token form instead of the log (the token was missing or refused).
  const signedOut = (message) => {
    window.clearInterval(timer);
    timer = null;
    window.sessionStorage.removeItem(TOKEN_KEY);
    document.getElementById("app").hidden = true;
    document.getElementById("login").hidden = false;
    document.getElementById("login-message").textContent = message;
  };

  class SignedOut extends Error {}

  const fetchJson = async (url, options) => {
    const token = window.sessionStorage.getItem(TOKEN_KEY);
    if (!token) throw new SignedOut("");
    const response = await fetch(url, Object.assign({
      cache: "no-store",
      credentials: "omit",
      headers: { authorization: `Bearer ${token}` },
    }, options));
    if (response.status === 401) throw new SignedOut("The admin token was refused.");
    const body = await response.json().catch(() => null);
    return { ok: response.ok, status: response.status, body };
  };

  const refresh = async () => {
    const error = document.getElementById("error");
    try {
      const { ok, status, body } = await fetchJson("/api/webhooks?limit=50");
      if (!ok) throw new Error(`GET /api/webhooks: ${status}`);
      // Status timelines, for the messages and calls that have status callbacks (a few at most).
      const unique = (list) => [...new Set(list)].slice(0, 10);
      const messageSids = unique(body.filter((w) => w.message_status && w.message_sid).map((w) => w.message_sid));
      const callSids = unique(body.filter((w) => (w.call_status || w.recording_status) && w.call_sid).map((w) => w.call_sid));
      const histories = { messages: new Map(), calls: new Map() };
      const load = (kind, sids, into) => sids.map(async (sid) => {
        const answer = await fetchJson(`/api/${kind}/${encodeURIComponent(sid)}`);
        if (answer.ok) into.set(sid, answer.body);
      });
      await Promise.all([
        ...load("messages", messageSids, histories.messages),
        ...load("calls", callSids, histories.calls),
      ]);
      const tbody = document.createElement("tbody");
      tbody.id = "webhooks";
      for (const webhook of body) tbody.append(...row(webhook, histories));
      document.getElementById("webhooks").replaceWith(tbody);
      document.getElementById("empty").hidden = body.length > 0;
      error.hidden = true;
    } catch (e) {
      if (e instanceof SignedOut) return signedOut(e.message);
      error.textContent = `Could not refresh: ${e.message}`;
      error.hidden = false;
    }
  };

  const send = async (kind) => {
    const result = document.getElementById("action-result");
    result.textContent = "sending…";
    try {
      const { ok, body } = await fetchJson(`/inspector/send-${kind}`, { method: "POST" });
      result.textContent = ok && body ? `${kind}: the server answered ${body.status}` : `${kind}: ${body && body.error ? body.error : "failed"}`;
    } catch (e) {
      if (e instanceof SignedOut) return signedOut(e.message);
      result.textContent = `${kind}: ${e.message}`;
    }
    refresh();
  };

  const start = () => {
    document.getElementById("login").hidden = true;
    document.getElementById("app").hidden = false;
    refresh();
    if (timer === null) timer = window.setInterval(refresh, POLL_MS);
  };

  document.getElementById("login").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = document.getElementById("token");
    const token = input.value.trim();
    input.value = "";
    if (!token) return;
    window.sessionStorage.setItem(TOKEN_KEY, token);
    start();
  });
  document.getElementById("send-test").addEventListener("click", () => send("test"));
  document.getElementById("send-forged").addEventListener("click", () => send("forged"));
  if (window.sessionStorage.getItem(TOKEN_KEY)) {
    start();
  } else {
    signedOut("");
  }
})();
