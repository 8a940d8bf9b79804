// The merchant dashboard: opens /api/v1/rfm/stream with the session token and redraws on every frame.
// Every frame is complete (sizes, recent moves, rates), so rendering replaces what is shown instead of merging.
// The token arrives in the URL fragment (never sent to the server, so never in access logs), is kept in
// sessionStorage and removed from the address bar.
(function () {
  "use strict";

  const state = { frames: 0, lastFrame: null, chart: null, paused: false, socket: null, retry: 500 };
  window.dashboard = state;

  const $ = (id) => document.getElementById(id);

  function takeToken() {
    const fragment = new URLSearchParams(window.location.hash.slice(1));
    const fromUrl = fragment.get("token");
    if (fromUrl) {
      sessionStorage.setItem("loyalnest-token", fromUrl);
      history.replaceState(null, "", window.location.pathname + window.location.search);
    }
    return fromUrl || sessionStorage.getItem("loyalnest-token");
  }

  function setStatus(kind, text) {
    const el = $("status");
    el.dataset.state = kind;
    el.textContent = text;
  }

  function makeChart() {
    if (typeof window.Chart !== "function") {
      // Chart.js is served from web/node_modules; without it the table below carries the same numbers.
      $("segments-chart").parentElement.hidden = true;
      return null;
    }
    return new window.Chart($("segments-chart"), {
      type: "bar",
      data: { labels: [], datasets: [{ label: "Customers", data: [], backgroundColor: "#1d4fa3" }] },
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        plugins: { legend: { display: false } },
        scales: { y: { beginAtZero: true, ticks: { precision: 0 } } },
      },
    });
  }

  function renderTable(segments) {
    const body = $("segments-table").querySelector("tbody");
    body.replaceChildren(
      ...segments.map((s) => {
        const row = document.createElement("tr");
        row.dataset.segment = s.key;
        const name = document.createElement("th");
        name.scope = "row";
        name.textContent = s.name;
        const count = document.createElement("td");
        count.className = "num";
        count.textContent = s.count.toLocaleString();
        const share = document.createElement("td");
        share.className = "num";
        share.textContent = (s.share * 100).toFixed(1) + "%";
        row.append(name, count, share);
        return row;
      })
    );
  }

  function renderMoves(moves) {
    $("no-moves").hidden = moves.length > 0;
    $("moves").replaceChildren(
      ...moves.map((m) => {
        const item = document.createElement("li");
        item.textContent = "Customer " + m.customer_id + ": " + label(m.from) + " → " + label(m.to);
        const when = document.createElement("time");
        when.dateTime = m.at;
        when.textContent = new Date(m.at).toLocaleTimeString();
        item.append(when);
        return item;
      })
    );
  }

  let names = {};
  function label(key) {
    return names[key] || key;
  }

  function render(frame) {
    state.frames += 1;
    state.lastFrame = frame;
    if (state.paused) return;
    names = Object.fromEntries(frame.segments.map((s) => [s.key, s.name]));
    $("shop").textContent = frame.merchant;
    $("customers").textContent = frame.customers.toLocaleString();
    $("eps").textContent = frame.events_per_second.toFixed(1);
    $("mpm").textContent = frame.moves_per_minute.toLocaleString();
    $("updated").textContent = frame.server_time;
    renderTable(frame.segments);
    renderMoves(frame.moves);
    if (state.chart) {
      state.chart.data.labels = frame.segments.map((s) => s.name);
      state.chart.data.datasets[0].data = frame.segments.map((s) => s.count);
      state.chart.update("none");
    }
  }

  function connect() {
    const token = takeToken();
    if (!token) {
      setStatus("closed", "No session token: open the dashboard link that `loyalnest-rfm demo` or `token` printed.");
      return;
    }
    const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(scheme + "//" + window.location.host + "/api/v1/rfm/stream", ["bearer", token]);
    state.socket = socket;
    setStatus("connecting", "Connecting…");
    socket.onopen = () => {
      state.retry = 500;
      setStatus("live", "Live");
    };
    socket.onmessage = (event) => {
      const frame = JSON.parse(event.data);
      render(frame);
      // The nudge results panel (abtest.js) draws the results the frame carries.
      document.dispatchEvent(new CustomEvent('loyalnest:frame', { detail: frame }));
    };
    socket.onclose = (event) => {
      if (state.socket !== socket) return;
      // 4001: the session token expired. Inside the Shopify admin App Bridge hands out a fresh one; standalone,
      // the token came from the link, so retrying with it would only be refused.
      if (event.code === 4001) {
        if (window.shopify && typeof window.shopify.idToken === "function") {
          window.shopify.idToken().then((fresh) => {
            sessionStorage.setItem("loyalnest-token", fresh);
            connect();
          });
        } else {
          sessionStorage.removeItem("loyalnest-token");
          setStatus("closed", "Session expired: open a fresh dashboard link (`loyalnest-rfm token`).");
        }
        return;
      }
      setStatus("closed", "Disconnected; retrying in " + Math.round(state.retry / 1000) + " s");
      setTimeout(connect, state.retry);
      state.retry = Math.min(state.retry * 2, 15000);
    };
  }

  $("pause").addEventListener("click", () => {
    state.paused = !state.paused;
    $("pause").setAttribute("aria-pressed", String(state.paused));
    if (!state.paused && state.lastFrame) render(state.lastFrame);
  });
  $("reconnect").addEventListener("click", () => {
    const old = state.socket;
    state.socket = null;
    if (old) old.close();
    connect();
  });

  state.chart = makeChart();
  connect();

  // History brought in from Shopify on install (GET /api/v1/backfill/status): shown while it runs, and once when
  // it is done, so the merchant knows the segments include their past orders.
  function renderBackfill(body) {
    const el = $("backfill");
    const run = body && body.backfill;
    if (!run) {
      el.hidden = true;
      return;
    }
    const lines = run.lines_done.toLocaleString();
    const of = run.object_count != null ? " of " + Number(run.object_count).toLocaleString() : "";
    const texts = {
      running: "Shopify is preparing your order history…",
      downloading: "Importing order history: " + lines + of + " orders",
      completed: "Order history imported: " + lines + " orders",
      failed: "Importing order history failed: " + (run.error || "unknown error"),
    };
    el.dataset.state = run.phase;
    el.textContent = texts[run.phase] || run.phase;
    el.hidden = false;
    state.backfill = run;
  }

  function pollBackfill() {
    const token = sessionStorage.getItem("loyalnest-token");
    if (!token) return;
    fetch("/api/v1/backfill/status", { headers: { Authorization: "Bearer " + token } })
      .then((r) => (r.ok ? r.json() : null))
      .then((body) => {
        renderBackfill(body);
        const phase = body && body.backfill && body.backfill.phase;
        if (phase === "running" || phase === "downloading") setTimeout(pollBackfill, 2000);
      })
      .catch(() => setTimeout(pollBackfill, 5000));
  }
  window.addEventListener("load", pollBackfill);
})();
