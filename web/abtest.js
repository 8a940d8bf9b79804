// LoyalNest RFM — the dashboard's nudge results panel (no framework).
//
// Shows, per nudge kind and experiment, each arm and the holdout: shown (assigned for the holdout), viewed,
// clicked, dismissed, converted, revenue, the conversion rate with its 95 % interval, and the lift over the
// holdout with its p-value, as GET /api/v1/rfm/nudges/ab-test computes them. The live socket's frames carry the
// same document as `nudges` (dashboard.js dispatches each frame as `loyalnest:frame`), so the panel follows the
// frames; it asks the REST route only at the start and while no frame with results has come for a while (a socket
// down). Every value is written with textContent.
(function () {
  'use strict';

  var REFRESH_MS = 3000;
  // Frames bring results at least this often while the socket is up; past it the REST route is asked.
  var FRAME_SILENCE_MS = 10000;
  var lastFrameResults = 0;
  var panel = document.getElementById('nudge-results');
  if (!panel) return;
  // dashboard.js takes the token out of the URL fragment and keeps it in sessionStorage (and renews it there
  // inside the Shopify admin), so it is read from there on every request.
  function token() {
    return sessionStorage.getItem('loyalnest-token') ||
      new URLSearchParams(location.hash.slice(1)).get('token') || '';
  }
  var body = panel.querySelector('[data-results]');
  var note = panel.querySelector('[data-results-note]');
  var inFlight = false;

  function pct(x) {
    return x === null || x === undefined ? '—' : (x * 100).toFixed(1) + ' %';
  }

  function interval(ci) {
    return ci ? '[' + pct(ci.low) + ', ' + pct(ci.high) + ']' : '';
  }

  function lift(l) {
    if (!l) return '—';
    var sign = l.absolute >= 0 ? '+' : '';
    return sign + (l.absolute * 100).toFixed(1) + ' pts (p = ' + l.p_value.toFixed(3) + ')';
  }

  function cell(row, text, header) {
    var td = document.createElement(header ? 'th' : 'td');
    if (header) td.scope = 'row';
    td.textContent = text;
    row.appendChild(td);
  }

  function armRow(tbody, name, arm, denominator) {
    var tr = document.createElement('tr');
    tr.dataset.arm = name;
    cell(tr, name, true);
    cell(tr, String(arm[denominator] || 0));
    ['viewed', 'clicked', 'dismissed', 'converted'].forEach(function (k) {
      var td = document.createElement('td');
      td.dataset.count = k;
      td.textContent = String(arm[k] || 0);
      tr.appendChild(td);
    });
    cell(tr, arm.revenue || '0');
    cell(tr, pct(arm.conversion_rate) + ' ' + interval(arm.ci95));
    cell(tr, denominator === 'assigned' ? 'baseline' : lift(arm.lift));
    tbody.appendChild(tr);
  }

  function group(section) {
    var table = document.createElement('table');
    table.className = 'results';
    table.dataset.kind = section.kind;
    var caption = document.createElement('caption');
    caption.textContent = section.kind.replace('_', ' ') +
      (section.experiment_id ? ' — experiment ' + section.experiment_id +
        (section.running ? '' : ' (stopped)') : ' — no experiment');
    table.appendChild(caption);
    var head = document.createElement('thead');
    var hr = document.createElement('tr');
    ['Arm', 'Shown', 'Viewed', 'Clicked', 'Dismissed', 'Converted', 'Revenue', 'Conversion (95 % CI)', 'Lift vs holdout']
      .forEach(function (h) {
        var th = document.createElement('th');
        th.scope = 'col';
        th.textContent = h;
        hr.appendChild(th);
      });
    head.appendChild(hr);
    table.appendChild(head);
    var tbody = document.createElement('tbody');
    (section.arms || []).forEach(function (arm) { armRow(tbody, arm.variant, arm, 'shown'); });
    if (section.holdout) armRow(tbody, 'holdout', section.holdout, 'assigned');
    table.appendChild(tbody);
    return table;
  }

  function render(results) {
    var sections = (results && results.experiments) || [];
    body.replaceChildren.apply(body, sections.map(group));
    note.textContent = sections.length ? 'Conversions within ' + results.attribution_window_days +
      ' days of a view or click (holdout: of the assignment).' : 'No nudge has fired yet.';
    panel.dataset.loaded = 'true';
  }

  function refresh() {
    if (inFlight || document.hidden || !token()) return;
    if (Date.now() - lastFrameResults < FRAME_SILENCE_MS) return;
    inFlight = true;
    fetch('/api/v1/rfm/nudges/ab-test', { headers: { Authorization: 'Bearer ' + token() } })
      .then(function (r) {
        if (!r.ok) throw new Error('results answered ' + r.status);
        return r.json();
      })
      .then(render)
      .catch(function (e) { note.textContent = 'Results unavailable: ' + e.message; })
      .then(function () { inFlight = false; });
  }

  document.addEventListener('loyalnest:frame', function (event) {
    var frame = event.detail;
    if (frame && frame.nudges) {
      lastFrameResults = Date.now();
      render(frame.nudges);
    }
  });
  document.addEventListener('visibilitychange', refresh);
  setInterval(refresh, REFRESH_MS);
  refresh();
})();
