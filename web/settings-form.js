// The settings page's form and its plumbing: the session token (the URL fragment standalone, as on the dashboard;
// App Bridge's `shopify.idToken()` embedded in the Shopify admin), API calls, the labelled inputs and the tiers
// table, reading them back into a configuration, the checks that need no server, and placing errors (local or the
// server's 422 fields) on the inputs they name. settings.js drives it.
(function () {
  "use strict";
  const { language, t } = window.settingsI18n;
  const state = { config: null, etag: null, today: [], preview: null, chart: null, ready: false, previews: 0,
    applied: false, errors: [] };
  window.settings = state;
  const $ = (id) => document.getElementById(id);
  const el = (tag, props = {}, ...children) => {
    const node = Object.assign(document.createElement(tag), props);
    node.append(...children);
    return node;
  };

  document.documentElement.lang = language;
  document.querySelectorAll("[data-t]").forEach((node) => {
    const text = t[node.dataset.t];
    if (typeof text === "string") node.textContent = text;
  });
  document.title = "LoyalNest — " + t.title;

  let fragmentToken = null;
  async function token() {
    if (window.shopify && typeof window.shopify.idToken === "function") return window.shopify.idToken();
    if (!fragmentToken) {
      const fromUrl = new URLSearchParams(window.location.hash.slice(1)).get("token");
      if (fromUrl) {
        sessionStorage.setItem("loyalnest-token", fromUrl);
        history.replaceState(null, "", window.location.pathname + window.location.search);
      }
      fragmentToken = fromUrl || sessionStorage.getItem("loyalnest-token");
    }
    return fragmentToken;
  }

  async function api(method, path, body, headers = {}) {
    const response = await fetch(path, {
      method,
      headers: { Authorization: "Bearer " + (await token()), "Content-Type": "application/json", ...headers },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let json = null;
    try { json = await response.json(); } catch (_) { json = null; }
    return { status: response.status, etag: response.headers.get("ETag"), json };
  }

  function setStatus(node, kind, text) {
    node.dataset.state = kind;
    node.textContent = text;
  }

  // One labelled input with its own error line, addressed by the server's field name.
  function field(container, id, fieldName, label, value, attrs = {}) {
    const wrap = el("div", { className: "field" });
    const input = el("input", { id, value: value ?? "", ...attrs });
    input.dataset.field = fieldName;
    const error = el("p", { id: "err-" + id, className: "field-error", hidden: true });
    input.setAttribute("aria-describedby", error.id);
    wrap.append(el("label", { htmlFor: id, textContent: label }), input, error);
    container.append(wrap);
    return input;
  }

  function buildForm(config) {
    const number = { type: "number", inputMode: "numeric", min: "0" };
    $("recency").replaceChildren();
    $("frequency").replaceChildren();
    $("monetary").replaceChildren();
    $("weights").replaceChildren();
    $("timing").replaceChildren();
    config.recency_days.forEach((v, i) => field($("recency"), `f-recency_days-${i}`, `recency_days[${i}]`, t.r(i), v, number));
    config.frequency_orders.forEach((v, i) => field($("frequency"), `f-frequency_orders-${i}`, `frequency_orders[${i}]`, t.f(i), v, number));
    config.monetary.forEach((v, i) => field($("monetary"), `f-monetary-${i}`, `monetary[${i}]`, t.m(i), v, { inputMode: "decimal" }));
    const weight = { type: "number", step: "0.05", min: "0", max: "1" };
    field($("weights"), "f-w-recency", "weights.recency", t.wr, config.weights.recency, weight);
    field($("weights"), "f-w-frequency", "weights.frequency", t.wf, config.weights.frequency, weight);
    field($("weights"), "f-w-monetary", "weights.monetary", t.wm, config.weights.monetary, weight);
    field($("timing"), "f-grace", "grace_period_days", t.grace, config.grace_period_days ?? 0, number);
    field($("timing"), "f-churned", "churned_after_days", t.churned, config.churned_after_days, number);
    $("tiers").querySelector("tbody").replaceChildren(...config.segments.map(tierRow));
  }

  function tierRow(rule, i) {
    const row = el("tr");
    const cell = (...nodes) => { const td = el("td"); td.append(...nodes); row.append(td); };
    const input = (cls, value, label, fieldName, attrs = {}) => {
      const node = el("input", { className: cls, value: value ?? "", ...attrs });
      node.setAttribute("aria-label", label + " " + (i + 1));
      node.dataset.field = fieldName;
      return node;
    };
    cell(input("t-key", rule.key, t.key, `segments[${i}].key`));
    for (const locale of ["en", "es", "fr"]) {
      cell(input("t-name-" + locale, rule.name[locale], locale.toUpperCase(), `segments[${i}].name.${locale}`));
    }
    for (const dim of ["recency", "frequency", "monetary"]) {
      const span = el("span", { className: "range" });
      const bound = { type: "number", min: "1", max: "5", inputMode: "numeric" };
      const letter = dim[0].toUpperCase();
      span.append(input(`t-${dim}-min`, rule[dim].min, `${letter} ${t.min}`, `segments[${i}].${dim}`, bound),
        input(`t-${dim}-max`, rule[dim].max, `${letter} ${t.max}`, `segments[${i}].${dim}`, bound));
      cell(span);
    }
    const up = el("button", { type: "button", textContent: "↑", className: "t-up" });
    up.setAttribute("aria-label", t.up + " " + (i + 1));
    const remove = el("button", { type: "button", textContent: "✕", className: "t-remove" });
    remove.setAttribute("aria-label", t.remove + " " + (i + 1));
    cell(up, remove);
    row.dataset.vip = rule.vip ? "1" : "";
    return row;
  }

  function readTiers() {
    return Array.from($("tiers").querySelectorAll("tbody tr")).map((row) => {
      const value = (cls) => row.querySelector("." + cls).value.trim();
      const name = {};
      for (const locale of ["en", "es", "fr"]) if (value("t-name-" + locale)) name[locale] = value("t-name-" + locale);
      const range = (dim) => ({ min: Number(value(`t-${dim}-min`)), max: Number(value(`t-${dim}-max`)) });
      return { key: value("t-key"), name, recency: range("recency"), frequency: range("frequency"),
        monetary: range("monetary"), vip: row.dataset.vip === "1" };
    });
  }

  function readForm() {
    const raw = (id) => $(id).value.trim();
    const num = (id) => (raw(id) === "" ? NaN : Number(raw(id)));
    return {
      ...state.config,
      recency_days: [0, 1, 2, 3].map((i) => num(`f-recency_days-${i}`)),
      frequency_orders: [0, 1, 2, 3].map((i) => num(`f-frequency_orders-${i}`)),
      monetary: [0, 1, 2, 3].map((i) => raw(`f-monetary-${i}`)),
      weights: { recency: num("f-w-recency"), frequency: num("f-w-frequency"), monetary: num("f-w-monetary") },
      grace_period_days: num("f-grace"),
      churned_after_days: num("f-churned"),
      segments: readTiers(),
    };
  }

  // What can be told without the server, at once: numbers, order of thresholds, weights summing to 1.
  function localErrors(config) {
    const errors = [];
    const series = (name, values) => values.forEach((v, i) => {
      if (!Number.isFinite(v)) errors.push({ field: `${name}[${i}]`, message: t.number });
      else if (v < 0) errors.push({ field: `${name}[${i}]`, message: t.negative });
      else if (i > 0 && Number.isFinite(values[i - 1]) && v <= values[i - 1]) {
        errors.push({ field: `${name}[${i}]`, message: t.increasing });
      }
    });
    series("recency_days", config.recency_days);
    series("frequency_orders", config.frequency_orders);
    series("monetary", config.monetary.map((m) => (m === "" || isNaN(Number(m)) ? NaN : Number(m))));
    const w = config.weights;
    const sum = w.recency + w.frequency + w.monetary;
    if (!Number.isFinite(sum) || Math.abs(sum - 1) > 1e-6) errors.push({ field: "weights", message: t.sum });
    return errors;
  }

  function showErrors(errors) {
    state.errors = errors;
    document.querySelectorAll("#config-form [aria-invalid]").forEach((n) => n.removeAttribute("aria-invalid"));
    document.querySelectorAll("#config-form .field-error").forEach((n) => { n.hidden = true; n.textContent = ""; });
    const unplaced = [];
    for (const error of errors) {
      const inputs = document.querySelectorAll(`#config-form input[data-field="${CSS.escape(error.field)}"]`);
      const line = document.querySelector(`#config-form p[data-field="${CSS.escape(error.field)}"]`);
      inputs.forEach((input) => {
        input.setAttribute("aria-invalid", "true");
        const own = $("err-" + input.id);
        if (own) { own.hidden = false; own.textContent = error.message; }
      });
      if (line) { line.hidden = false; line.textContent = error.message; }
      if (!inputs.length && !line) unplaced.push(error);
      if (inputs.length && !$("err-" + inputs[0].id)) unplaced.push(error);
    }
    const summary = $("form-errors");
    summary.hidden = errors.length === 0;
    summary.replaceChildren(el("p", { textContent: t.invalid(errors.length) }),
      ...unplaced.map((e) => el("p", { textContent: (e.field ? e.field + ": " : "") + e.message })));
  }

  window.settingsForm = { el, buildForm, tierRow, readForm, localErrors, showErrors, api, setStatus, state, $, t, language };
})();
