// The inspector page's script. Everything a request carried is inserted with textContent,
// never as HTML: a forged webhook cannot inject markup or script into this page.
"use strict";
(() => {
  const csrf = document.querySelector('meta[name="inspector-csrf"]').content;
  const OUTCOMES = ["received", "verified", "rejected", "processed", "failed", "duplicate", "passed_in_report_only_mode"];
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

  const timeline = (history) => {
    const span = document.createElement("span");
    span.className = "timeline";
    for (const step of history) {
      const item = document.createElement("span");
      item.textContent = step.error_code ? `${step.status} (${step.error_code})` : step.status;
      span.append(item);
    }
    return span;
  };

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
    if (webhook.credential) detail += ` · ${webhook.credential}`;
    const message = cell(webhook.message_sid || "", "message");
    const history = webhook.message_sid && histories.get(webhook.message_sid);
    if (history) {
      message.append(document.createElement("br"), timeline(history.history));
    }
    tr.append(
      cell(new Date(webhook.received_at).toLocaleTimeString(), "time"),
      cell(webhook.method, "method"),
      cell(path, "path"),
      cell(webhook.tenant_id, "tenant"),
      cell(webhook.account_sid, "account"),
      cell(webhook.user_agent, "ua"),
      outcomeCell,
      cell(detail, "detail"),
      message,
    );
    return tr;
  };

  const fetchJson = async (url, options) => {
    const response = await fetch(url, Object.assign({ cache: "no-store", credentials: "same-origin" }, options));
    const body = await response.json().catch(() => null);
    return { ok: response.ok, status: response.status, body };
  };

  const refresh = async () => {
    const error = document.getElementById("error");
    try {
      const { ok, status, body } = await fetchJson("/api/webhooks?limit=50");
      if (!ok) throw new Error(`GET /api/webhooks: ${status}`);
      // Status timelines, for the messages that have status callbacks (a few at most).
      const sids = [...new Set(body.filter((w) => w.message_status && w.message_sid).map((w) => w.message_sid))].slice(0, 10);
      const histories = new Map();
      await Promise.all(sids.map(async (sid) => {
        const answer = await fetchJson(`/api/messages/${encodeURIComponent(sid)}`);
        if (answer.ok) histories.set(sid, answer.body);
      }));
      const tbody = document.createElement("tbody");
      tbody.id = "webhooks";
      for (const webhook of body) tbody.append(row(webhook, histories));
      document.getElementById("webhooks").replaceWith(tbody);
      document.getElementById("empty").hidden = body.length > 0;
      error.hidden = true;
    } catch (e) {
      error.textContent = `Could not refresh: ${e.message}`;
      error.hidden = false;
    }
  };

  const send = async (kind) => {
    const result = document.getElementById("action-result");
    result.textContent = "sending…";
    const { ok, body } = await fetchJson(`/inspector/send-${kind}`, {
      method: "POST",
      headers: { "x-inspector-csrf": csrf },
    });
    result.textContent = ok && body ? `${kind}: the server answered ${body.status}` : `${kind}: ${body && body.error ? body.error : "failed"}`;
    refresh();
  };

  document.getElementById("send-test").addEventListener("click", () => send("test"));
  document.getElementById("send-forged").addEventListener("click", () => send("forged"));
  refresh();
  setInterval(refresh, POLL_MS);
})();
