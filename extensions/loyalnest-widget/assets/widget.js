// LoyalNest shopper nudges: shows the logged-in customer's current nudge on the storefront and every newer one the
// moment it fires. No framework; the same file is served at /widget/widget.js and shipped in the theme app
// extension (extensions/loyalnest-widget/assets/widget.js, kept identical by a test).
//
// It reads its settings from the element carrying `data-loyalnest-nudges`:
//   data-token-url   where to get a widget token: the App Proxy path on the storefront (e.g. /apps/loyalnest/widget-token)
//   data-signer-url  demo only: a URL answering {"url": <signed proxy URL>} to call instead of data-token-url
//   data-api-origin  the LoyalNest server (default: where this script came from); the socket and events go there
//
// Every (re)connection starts with a fresh token, since tokens are short-lived. Reconnects back off exponentially
// with full jitter so many widgets do not come back at once after an outage. Text is only ever set with
// textContent. Announcements go through a polite live region; the card never takes focus; Escape dismisses it.
(function () {
  "use strict";

  const root = document.querySelector("[data-loyalnest-nudges]");
  if (!root || root.dataset.started === "true") return;
  root.dataset.started = "true";

  const script = document.currentScript;
  const scriptOrigin = script && script.src ? new URL(script.src, window.location.href).origin : window.location.origin;
  const apiOrigin = (root.dataset.apiOrigin || scriptOrigin).replace(/\/+$/, "");
  const socketUrl = apiOrigin.replace(/^http/, "ws") + "/api/v1/widget/stream";

  const TOKEN_EXPIRED = 4001;
  const BACKOFF_BASE_MS = 1000;
  const BACKOFF_CAP_MS = 60000;

  // What the widget is doing, for people debugging a storefront and for the browser test.
  const state = { status: "starting", shown: null, received: 0, attempts: 0, events: [] };
  window.loyalnestNudges = state;

  let token = null;
  let socket = null;
  let retryTimer = null;
  const viewed = new Set();

  // Button labels by language; the nudge's own words come from the server in the customer's language.
  const LABELS = {
    en: { cta: "See more", dismiss: "Dismiss" },
    es: { cta: "Ver más", dismiss: "Cerrar" },
    fr: { cta: "Voir", dismiss: "Fermer" },
    de: { cta: "Ansehen", dismiss: "Schließen" },
    ar: { cta: "عرض", dismiss: "إغلاق" },
    he: { cta: "הצג", dismiss: "סגור" },
  };

  function labels(locale) {
    const language = String(locale || "en").toLowerCase().split(/[-_]/)[0];
    return LABELS[language] || LABELS.en;
  }

  // The live region exists from the start: screen readers announce changes to a region they already know.
  const region = document.createElement("div");
  region.className = "ln-nudges";
  region.setAttribute("aria-live", "polite");
  region.setAttribute("aria-atomic", "true");
  root.appendChild(region);

  function el(tag, className, text) {
    const node = document.createElement(tag);
    node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function show(nudge) {
    state.shown = nudge;
    const words = labels(nudge.locale);
    const card = el("div", "ln-card");
    card.setAttribute("role", "group");
    card.setAttribute("aria-labelledby", "ln-title");
    card.lang = nudge.locale || "en";
    card.dir = nudge.dir === "rtl" ? "rtl" : "ltr";
    card.dataset.nudgeId = nudge.nudge_id;
    card.dataset.kind = nudge.kind;
    const title = el("p", "ln-title", nudge.title);
    title.id = "ln-title";
    const body = el("p", "ln-body", nudge.body);
    const actions = el("div", "ln-actions");
    const cta = el("button", "ln-cta", words.cta);
    cta.type = "button";
    cta.addEventListener("click", () => act(nudge, "click"));
    const dismiss = el("button", "ln-dismiss", "×");
    dismiss.type = "button";
    dismiss.setAttribute("aria-label", words.dismiss);
    dismiss.addEventListener("click", () => act(nudge, "dismiss"));
    actions.append(cta, dismiss);
    card.append(title, body, actions);
    // The corner follows the text's direction; replacing the region's content is what gets announced, and focus
    // stays where the shopper left it.
    region.dir = card.dir;
    region.replaceChildren(card);
    maybeViewed();
  }

  function hide() {
    state.shown = null;
    region.replaceChildren();
  }

  function act(nudge, action) {
    report(nudge.nudge_id, action);
    if (state.shown && state.shown.nudge_id === nudge.nudge_id) hide();
  }

  // A view counts once per nudge, when the page is actually visible.
  function maybeViewed() {
    const nudge = state.shown;
    if (!nudge || document.visibilityState !== "visible" || viewed.has(nudge.nudge_id)) return;
    viewed.add(nudge.nudge_id);
    report(nudge.nudge_id, "view");
  }

  function newEventId() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") return window.crypto.randomUUID();
    const bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  }

  // Reports are idempotent by event id, so one retry after a failure cannot count twice.
  async function report(nudgeId, action) {
    const record = { nudge_id: nudgeId, action, event_id: newEventId(), status: 0 };
    state.events.push(record);
    const url = `${apiOrigin}/api/v1/rfm/nudges/${encodeURIComponent(nudgeId)}/events`;
    for (let attempt = 0; attempt < 2; attempt += 1) {
      try {
        const response = await fetch(url, {
          method: "POST",
          keepalive: true,
          headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
          body: JSON.stringify({ action, event_id: record.event_id }),
        });
        record.status = response.status;
        if (response.status < 500 && response.status !== 429) return;
        const wait = Number(response.headers.get("Retry-After")) || 1;
        await new Promise((resolve) => setTimeout(resolve, Math.min(wait, 10) * 1000));
      } catch (e) {
        record.status = -1;
        await new Promise((resolve) => setTimeout(resolve, 1000));
      }
    }
  }

  async function fetchJson(url) {
    const response = await fetch(url, { headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`${url}: ${response.status}`);
    return response.json();
  }

  // A fresh token: through the App Proxy (or, in the demo, a URL the demo server signed the same way).
  async function freshToken() {
    let url = root.dataset.tokenUrl;
    if (root.dataset.signerUrl) url = (await fetchJson(root.dataset.signerUrl)).url;
    if (!url) throw new Error("no data-token-url");
    return (await fetchJson(url)).token;
  }

  function setStatus(status) {
    state.status = status;
    root.dataset.status = status;
  }

  function retryLater(immediately) {
    clearTimeout(retryTimer);
    state.attempts += 1;
    const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** Math.min(state.attempts, 16));
    const delay = immediately ? Math.random() * 500 : Math.random() * ceiling;
    retryTimer = setTimeout(connect, delay);
  }

  async function connect() {
    setStatus("connecting");
    try {
      token = await freshToken();
    } catch (e) {
      setStatus("closed");
      retryLater(false);
      return;
    }
    if (!token) {
      setStatus("anonymous"); // nobody is logged in: there are no nudges to show
      return;
    }
    socket = new WebSocket(socketUrl, ["bearer", token]);
    socket.addEventListener("open", () => {
      state.attempts = 0;
      setStatus("live");
    });
    socket.addEventListener("message", (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch (e) {
        return;
      }
      if (message && message.type === "nudge") {
        state.received += 1;
        show(message);
      }
    });
    socket.addEventListener("close", (event) => {
      socket = null;
      setStatus("closed");
      retryLater(event.code === TOKEN_EXPIRED);
    });
  }

  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && state.shown) act(state.shown, "dismiss");
  });
  document.addEventListener("visibilitychange", maybeViewed);

  connect();
})();
