// The RFM settings page: loads the shop's configuration and today's segments, previews every valid edit on the
// live state as you type (sizes beside today's, the move matrix), saves with the ETag it loaded (a 412 says another
// admin saved first), and after a save watches the segments until they match the preview. The form itself is in
// settings-form.js.
(function () {
  "use strict";
  const { el, buildForm, tierRow, readForm, localErrors, showErrors, api, setStatus, state, $, t, language } =
    window.settingsForm;
  const ruleName = (rule) => rule.name[language] || rule.name.en || rule.key;

  function makeChart() {
    if (typeof window.Chart !== "function") {
      $("preview-chart").parentElement.hidden = true;
      return null;
    }
    return new window.Chart($("preview-chart"), {
      type: "bar",
      data: { labels: [], datasets: [
        { label: t.today, data: [], backgroundColor: "#6b7280" },
        { label: t.proposed, data: [], backgroundColor: "#1d4fa3" },
      ] },
      options: { animation: false, responsive: true, maintainAspectRatio: false,
        scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } },
    });
  }

  // Rows by key: the proposed table's segments first, then today's that it drops.
  function sizeRows() {
    const rows = [];
    const today = Object.fromEntries(state.today.map((s) => [s.key, s]));
    for (const s of state.preview ? state.preview.proposed : []) {
      rows.push({ key: s.key, name: ruleName(s), today: today[s.key] ? today[s.key].count : 0, proposed: s.customers });
    }
    for (const s of state.today) {
      if (!rows.some((r) => r.key === s.key)) rows.push({ key: s.key, name: s.name, today: s.count, proposed: 0 });
    }
    return rows;
  }

  function renderSizes() {
    const rows = sizeRows();
    $("sizes").querySelector("tbody").replaceChildren(...rows.map((r) => {
      const row = el("tr");
      row.dataset.segment = r.key;
      row.append(el("th", { scope: "row", textContent: r.name }),
        el("td", { className: "num today", textContent: r.today.toLocaleString(language) }),
        el("td", { className: "num proposed", textContent: r.proposed.toLocaleString(language) }));
      return row;
    }));
    if (state.chart) {
      state.chart.data.labels = rows.map((r) => r.name);
      state.chart.data.datasets[0].data = rows.map((r) => r.today);
      state.chart.data.datasets[1].data = rows.map((r) => r.proposed);
      state.chart.update("none");
    }
  }

  function renderMatrix() {
    const preview = state.preview;
    const head = $("matrix").querySelector("thead");
    const body = $("matrix").querySelector("tbody");
    if (!preview) { head.replaceChildren(); body.replaceChildren(); return; }
    const froms = preview.current.filter((s) => preview.moves.some((m) => m.from === s.key));
    const tos = preview.proposed;
    head.replaceChildren(el("tr", {}, el("th", { scope: "col", textContent: "→" }),
      ...tos.map((s) => el("th", { scope: "col", textContent: ruleName(s) }))));
    body.replaceChildren(...froms.map((from) => el("tr", {}, el("th", { scope: "row", textContent: ruleName(from) }),
      ...tos.map((to) => {
        const move = preview.moves.find((m) => m.from === from.key && m.to === to.key);
        return el("td", { className: from.key === to.key ? "stay" : "", textContent: move ? move.customers : "·" });
      }))));
  }

  async function loadToday() {
    const answer = await api("GET", "/api/v1/rfm/segments");
    if (answer.status === 200) state.today = answer.json.segments;
  }

  async function preview() {
    const config = readForm();
    const local = localErrors(config);
    showErrors(local);
    if (local.length) {
      setStatus($("save-status"), "closed", t.fixErrors);
      return;
    }
    const answer = await api("POST", "/api/v1/rfm/preview", config);
    if (answer.status === 422) {
      showErrors(answer.json.errors || []);
      return;
    }
    if (answer.status !== 200) {
      setStatus($("save-status"), "closed", t.previewFailed);
      return;
    }
    setStatus($("save-status"), "live", "");
    state.preview = answer.json;
    state.previews += 1;
    renderSizes();
    renderMatrix();
  }

  let timer = null;
  function previewSoon() {
    clearTimeout(timer);
    timer = setTimeout(preview, 250);
  }

  function same(rows) {
    return rows.every((r) => r.today === r.proposed);
  }

  // After a save the owner re-scores at once; the segment counts reach this page through the read API.
  async function watchApplied() {
    for (let attempt = 0; attempt < 120; attempt += 1) {
      await loadToday();
      renderSizes();
      if (same(sizeRows())) {
        state.applied = true;
        setStatus($("save-status"), "live", t.applied);
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  }

  function load(answer) {
    state.config = answer.json.config;
    state.etag = answer.etag;
    buildForm(state.config);
    const m = answer.json.measured;
    const days = m.purchase_interval_days == null ? null : m.purchase_interval_days.toFixed(1);
    $("measured").textContent = t.measured(m.aov, days, m.source);
  }

  async function save(event) {
    event.preventDefault();
    const config = readForm();
    const local = localErrors(config);
    showErrors(local);
    if (local.length) return;
    setStatus($("save-status"), "connecting", t.saving);
    const answer = await api("PUT", "/api/v1/rfm/config", config, { "If-Match": state.etag });
    if (answer.status === 200) {
      load(answer);
      setStatus($("save-status"), "live", t.saved);
      await preview();
      await watchApplied();
    } else if (answer.status === 412) {
      setStatus($("save-status"), "closed", t.stale);
    } else if (answer.status === 422) {
      showErrors(answer.json.errors || []);
    } else {
      setStatus($("save-status"), "closed", t.failed);
    }
  }

  async function reset() {
    const answer = await api("POST", "/api/v1/rfm/config/reset", {}, { "If-Match": state.etag });
    if (answer.status === 200) {
      load(answer);
      await preview();
      await watchApplied();
    } else if (answer.status === 422) {
      setStatus($("save-status"), "closed", t.noAov);
    } else if (answer.status === 412) {
      setStatus($("save-status"), "closed", t.stale);
    }
  }

  function rebuildTiers(segments) {
    $("tiers").querySelector("tbody").replaceChildren(...segments.map(tierRow));
  }

  function onTierClick(event) {
    const button = event.target.closest("button");
    if (!button) return;
    const segments = readForm().segments;
    const at = Array.from(button.closest("tbody").children).indexOf(button.closest("tr"));
    if (button.classList.contains("t-remove")) segments.splice(at, 1);
    if (button.classList.contains("t-up") && at > 0) segments.splice(at - 1, 0, ...segments.splice(at, 1));
    rebuildTiers(segments);
    previewSoon();
  }

  async function start() {
    state.chart = makeChart();
    const answer = await api("GET", "/api/v1/rfm/config");
    if (answer.status !== 200) {
      setStatus($("status"), "closed", (answer.json && answer.json.error) || t.failed);
      return;
    }
    // The dashboard reads the same session token (sessionStorage), and keeps the embedding parameters.
    $("to-dashboard").href = "/dashboard" + window.location.search;
    load(answer);
    await loadToday();
    const segments = await api("GET", "/api/v1/rfm/segments");
    $("shop").textContent = segments.json ? segments.json.merchant : "—";
    await preview();
    state.ready = true;
    setStatus($("status"), "live", t.ready);
  }

  $("config-form").addEventListener("input", previewSoon);
  $("config-form").addEventListener("submit", save);
  $("reset").addEventListener("click", reset);
  $("tiers").addEventListener("click", onTierClick);
  $("add-tier").addEventListener("click", () => {
    const segments = readForm().segments;
    const fresh = { key: "", name: { en: "" }, recency: { min: 1, max: 5 }, frequency: { min: 1, max: 5 },
      monetary: { min: 1, max: 5 }, vip: false };
    // Above the last rule, which is usually the catch-all.
    const at = Math.max(segments.length - 1, 0);
    segments.splice(at, 0, fresh);
    rebuildTiers(segments);
    $("tiers").querySelectorAll("tbody tr")[at].querySelector("input").focus();
  });
  start();
})();
