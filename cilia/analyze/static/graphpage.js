/* cilia's connectivity / diff page (cilia/analyze/graphpage.py writes the data; cytoscape.js draws).
   Edges are computed here from the matrix bitsets, only for what is shown: a closed namespace is one
   node, and its groups and edges are built when it is opened. */
(function () {
  'use strict';
  const data = JSON.parse(document.getElementById('cilia-data').textContent);
  const G = data.groups;
  const n = G.length;
  const W = (n + 7) >> 3;
  const isDiff = data.mode === 'diff';
  const CLASSES = data.classes;
  const LIMITS = data.limits;
  const DENIED_GROUPS = 300; // denied edges are drawn only among this many shown groups
  const MATRIX_GROUPS = 120;

  function decode(b64) {
    const s = atob(b64);
    const a = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) a[i] = s.charCodeAt(i);
    return a;
  }
  const rows = data.rows.map(decode);
  const l7 = data.l7.map(decode);
  const anyRow = new Uint8Array(n * W);
  rows.forEach((r) => { for (let i = 0; i < r.length; i++) anyRow[i] |= r[i]; });
  const bit = (a, s, d) => (a[s * W + (d >> 3)] >> (d & 7)) & 1;
  function targets(a, s) {
    const out = [];
    const base = s * W;
    for (let b = 0; b < W; b++) {
      let v = a[base + b];
      while (v) {
        const low = v & -v;
        out.push(b * 8 + (31 - Math.clz32(low)));
        v ^= low;
      }
    }
    return out;
  }
  const esc = (t) => String(t).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));

  // an edge needs a pod or the host at one end: between two outside peers (world, CIDRs) no policy decides
  const INSIDE = G.map((g) => g.kind === 'pod' || g.kind === 'node' || g.name === 'host');
  const namespaces = [...new Set(G.filter((g) => g.ns).map((g) => g.ns))].sort();
  const nsGroups = {};
  G.forEach((g, i) => { if (g.ns) (nsGroups[g.ns] = nsGroups[g.ns] || []).push(i); });
  const state = {
    expanded: new Set(n > LIMITS.expandGroups ? [] : namespaces),
    cls: -1, ns: '', query: '', denied: false, context: !isDiff,
    kinds: { opened: true, closed: true, 'rule-changed': true },
  };
  const changesByPair = new Map();
  (data.changes || []).forEach((c) => {
    const k = c.src + ',' + c.dst;
    if (!changesByPair.has(k)) changesByPair.set(k, []);
    changesByPair.get(k).push(c);
  });

  function unitOf(i) {
    const ns = G[i].ns;
    return ns && !state.expanded.has(ns) ? 'ns:' + ns : 'g' + i;
  }
  function shortName(g) {
    let name = g.name.replace(/^deployment:/, '');
    if (g.ns && name.startsWith(g.ns + '/')) name = name.slice(g.ns.length + 1);
    return name;
  }
  function peerArg(g) {
    if (g.kind === 'pod') return g.name.startsWith('deployment:') ? g.name : g.pods[0];
    return g.kind === 'entity' ? 'entity:' + g.name : g.name;
  }
  function classesOf(s, d) {
    const out = [];
    CLASSES.forEach((c, ci) => {
      if (state.cls >= 0 && ci !== state.cls) return;
      if (bit(rows[ci], s, d)) out.push(ci);
    });
    return out;
  }

  // ------------------------------------------------------------------ elements of the current view
  function pairKindLabel(list) {
    return list.map((c) => c.kind + ': ' + c.ports).join('; ');
  }
  const MARK = { opened: '+', closed: '−', 'rule-changed': '~' };
  function shortChangeLabel(list) {
    // "+80/TCP −other": the mark of each change and its class (or "every port" when there is one)
    return list.map((c) => MARK[c.kind] + (CLASSES.length === 1 ? 'every port' : (c.cls >= 0 ? CLASSES[c.cls].label : c.ports))).join(' ');
  }

  const KINDS = ['allowed', 'unchanged', 'opened', 'closed', 'rule-changed'];
  function build() {
    const edges = [];
    // units: a group, or the closed namespace it is in; aggregated edges keyed by numbers (a 10,000-pod
    // page walks about a million allowed pairs here)
    const unitIds = [];
    const unitIndex = new Map();
    const unitNo = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      const u = unitOf(i);
      let k = unitIndex.get(u);
      if (k === undefined) { k = unitIds.length; unitIndex.set(u, k); unitIds.push(u); }
      unitNo[i] = k;
    }
    const U = unitIds.length;
    const isGroupUnit = unitIds.map((u) => u[0] === 'g');
    const agg = new Map();
    const addAgg = (s, d, kind) => {
      const k = (unitNo[s] * U + unitNo[d]) * KINDS.length + KINDS.indexOf(kind);
      let e = agg.get(k);
      if (!e) { e = { us: unitIds[unitNo[s]], ud: unitIds[unitNo[d]], kind, count: 0, pairs: [] }; agg.set(k, e); }
      e.count++;
      if (e.pairs.length < 60) e.pairs.push([s, d]);
    };
    const changed = (s, d) => changesByPair.get(s + ',' + d);
    const visibleChanges = (s, d) => (changed(s, d) || []).filter(
      (c) => state.kinds[c.kind] && (state.cls < 0 || c.cls === state.cls || c.cls < 0));
    const allowedRow = state.cls < 0 ? anyRow : rows[state.cls];
    const plain = isDiff ? 'unchanged' : 'allowed';
    if (!isDiff || state.context) {
      for (let s = 0; s < n; s++) {
        const sGroup = isGroupUnit[unitNo[s]];
        for (const d of targets(allowedRow, s)) {
          if (!INSIDE[s] && !INSIDE[d]) continue; // between two outside peers: no policy here decides
          if (isDiff && changesByPair.size && changed(s, d)) continue;
          if (sGroup && isGroupUnit[unitNo[d]]) {
            const cls = classesOf(s, d);
            const isL7 = l7.length > 0 && cls.some((ci) => bit(l7[ci], s, d));
            edges.push({ data: { id: 'e' + s + '_' + d, source: 'g' + s, target: 'g' + d, s, d, kind: plain,
              label: state.cls < 0 && cls.length === CLASSES.length ? 'every port' : cls.map((ci) => CLASSES[ci].label).join(', ') }, classes: isDiff ? 'unchanged' : (isL7 ? 'l7' : 'allowed') });
          } else addAgg(s, d, plain);
        }
      }
    }
    if (isDiff) {
      for (const k of changesByPair.keys()) {
        const [s, d] = k.split(',').map(Number);
        const shown = visibleChanges(s, d);
        if (!shown.length) continue;
        if (isGroupUnit[unitNo[s]] && isGroupUnit[unitNo[d]]) {
          edges.push({ data: { id: 'c' + s + '_' + d, source: 'g' + s, target: 'g' + d, s, d, kind: shown[0].kind,
            label: shortChangeLabel(shown) }, classes: shown[0].kind });
        } else addAgg(s, d, shown[0].kind);
      }
    }
    // a large closed view draws namespace-level edges only where a namespace is opened
    let aggList = [...agg.values()];
    let lazy = false;
    if (aggList.length > LIMITS.edgeLimit) {
      lazy = true;
      aggList = aggList.filter((e) => e.us[0] === 'g' && G[+e.us.slice(1)].ns || e.ud[0] === 'g' && G[+e.ud.slice(1)].ns);
    }
    aggList.forEach((e, i) => {
      edges.push({ data: { id: 'a' + i, source: e.us, target: e.ud, count: e.count, pairs: e.pairs, kind: e.kind,
        label: e.count + (e.count === 1 ? ' pair' : ' pairs'), width: Math.min(1 + Math.log2(e.count), 8) },
        classes: 'agg ' + e.kind });
    });
    // denied edges among shown groups, on demand
    let deniedNote = '';
    if (state.denied) {
      const shownGroups = [];
      for (let i = 0; i < n; i++) if (unitOf(i)[0] === 'g') shownGroups.push(i);
      if (shownGroups.length > DENIED_GROUPS) deniedNote = `denied edges are drawn among at most ${DENIED_GROUPS} shown groups (${shownGroups.length} shown): close namespaces or pick one`;
      else {
        for (const s of shownGroups) for (const d of shownGroups) {
          if ((INSIDE[s] || INSIDE[d]) && !bit(allowedRow, s, d) && !(isDiff && changed(s, d))) {
            edges.push({ data: { id: 'x' + s + '_' + d, source: 'g' + s, target: 'g' + d, s, d, kind: 'denied',
              label: state.cls < 0 ? 'denied on every port' : 'denied' }, classes: 'denied' });
          }
        }
      }
    }
    // the namespace filter: its groups and whatever they talk to
    let keep = null;
    if (state.ns) {
      const focus = new Set((nsGroups[state.ns] || []).map((i) => unitOf(i)));
      keep = new Set(focus);
      for (const e of edges) {
        if (focus.has(e.data.source) || focus.has(e.data.target)) { keep.add(e.data.source); keep.add(e.data.target); }
      }
    }
    const nodes = [];
    const used = (id) => keep === null || keep.has(id);
    for (const ns of namespaces) {
      if (state.expanded.has(ns)) {
        const kids = nsGroups[ns].filter((i) => used('g' + i));
        if (!kids.length) continue;
        nodes.push({ data: { id: 'p:' + ns, label: ns, ns }, classes: 'namespace' });
        for (const i of kids) {
          const g = G[i];
          nodes.push({ data: { id: 'g' + i, parent: 'p:' + ns, label: shortName(g), i }, classes: 'group ' + g.kind + (g.status ? ' ' + g.status : '') });
        }
      } else if (used('ns:' + ns)) {
        const gs = nsGroups[ns];
        const pods = gs.reduce((t, i) => t + G[i].podCount, 0);
        nodes.push({ data: { id: 'ns:' + ns, label: `${ns}\n${gs.length} groups, ${pods} pods`, ns }, classes: 'collapsed' });
      }
    }
    G.forEach((g, i) => {
      if (!g.ns && used('g' + i)) nodes.push({ data: { id: 'g' + i, label: g.name, i }, classes: 'group ' + g.kind + (g.status ? ' ' + g.status : '') });
    });
    for (const x of nodes) { // a node's box fits its label (10px sans-serif: about 6px a character)
      const lines = String(x.data.label).split('\n');
      x.data.w = Math.min(140, 6 * Math.max(...lines.map((l) => l.length))) + 4;
      x.data.h = 13 * lines.length;
    }
    const ids = new Set(nodes.map((x) => x.data.id));
    const kept = edges.filter((e) => ids.has(e.data.source) && ids.has(e.data.target));
    return { nodes, edges: kept, lazy, deniedNote };
  }

  // ------------------------------------------------------------------ drawing
  const style = [
    { selector: 'node', style: { label: 'data(label)', 'font-size': 10, 'text-valign': 'center', 'text-halign': 'center',
      'text-wrap': 'wrap', 'text-max-width': 140, width: 'data(w)', height: 'data(h)', padding: 8, shape: 'round-rectangle',
      'background-color': '#dbe8f7', 'border-width': 1, 'border-color': '#5b7fa8' } },
    { selector: 'node.namespace', style: { 'text-valign': 'top', 'text-halign': 'center', 'font-weight': 'bold',
      'background-color': '#f4f6f9', 'border-color': '#9aa7b5', 'border-style': 'dashed', padding: 14 } },
    { selector: 'node.collapsed', style: { 'background-color': '#e7ecf2', 'border-style': 'dashed', 'border-width': 2 } },
    { selector: 'node.entity', style: { shape: 'diamond', 'background-color': '#fde9c8', 'border-color': '#c08a2b', padding: 16 } },
    { selector: 'node.external', style: { shape: 'hexagon', 'background-color': '#efe0f7', 'border-color': '#8a5aa8', padding: 14 } },
    { selector: 'node.added', style: { 'border-color': '#1f8a3a', 'border-width': 3 } },
    { selector: 'node.removed', style: { 'border-color': '#888', 'border-style': 'dashed', 'border-width': 3, opacity: 0.7 } },
    { selector: 'node.match', style: { 'border-color': '#e0218a', 'border-width': 4 } },
    { selector: '.faded', style: { opacity: 0.2 } },
    { selector: 'edge', style: { 'curve-style': 'bezier', 'target-arrow-shape': 'triangle', width: 1.5, 'line-color': '#6d9c6d',
      'target-arrow-color': '#6d9c6d', label: 'data(label)', 'font-size': 8, 'text-rotation': 'autorotate',
      'text-background-color': '#fff', 'text-background-opacity': 0.8, 'text-background-padding': 1, 'loop-direction': '-45deg', 'loop-sweep': '-60deg' } },
    { selector: 'edge.l7', style: { 'line-color': '#d98b1e', 'target-arrow-color': '#d98b1e', 'line-style': 'dashed' } },
    { selector: 'edge.unchanged', style: { 'line-color': '#b9c4b9', 'target-arrow-color': '#b9c4b9', width: 1 } },
    { selector: 'edge.denied', style: { 'line-color': '#d44', 'target-arrow-color': '#d44', 'line-style': 'dotted', 'target-arrow-shape': 'tee' } },
    { selector: 'edge.opened', style: { 'line-color': '#1f8a3a', 'target-arrow-color': '#1f8a3a', width: 3.5 } },
    { selector: 'edge.closed', style: { 'line-color': '#c62828', 'target-arrow-color': '#c62828', width: 3.5, 'target-arrow-shape': 'tee' } },
    { selector: 'edge.rule-changed', style: { 'line-color': '#1f5fbf', 'target-arrow-color': '#1f5fbf', width: 2.5, 'line-style': 'dashed' } },
    { selector: 'edge.agg', style: { width: 'data(width)' } },
    { selector: 'edge:selected', style: { 'line-color': '#e0218a', 'target-arrow-color': '#e0218a' } },
    { selector: 'node:selected', style: { 'border-color': '#e0218a', 'border-width': 3 } },
  ];
  const cy = cytoscape({ container: document.getElementById('cy'), style, minZoom: 0.02, maxZoom: 4 });
  let current = { nodes: [], edges: [] };

  function layoutFor(count) {
    if (count <= 120) return { name: 'cose', animate: false, nodeDimensionsIncludeLabels: true, randomize: true,
      numIter: 1000, idealEdgeLength: 140, nodeRepulsion: 400000, edgeElasticity: 100, nestingFactor: 1.2,
      gravity: 1, nodeOverlap: 20, componentSpacing: 80, padding: 20 };
    return { name: 'grid', animate: false, avoidOverlap: true, nodeDimensionsIncludeLabels: true, padding: 20 };
  }

  const timing = {};
  function draw() {
    let t = performance.now();
    const lap = (name) => { const now = performance.now(); timing[name] = Math.round(now - t); t = now; };
    current = build();
    lap('build');
    cy.startBatch();
    cy.elements().remove();
    cy.add(current.nodes);
    cy.add(current.edges);
    cy.endBatch();
    // many edges: no labels, straight lines (a bezier's bounds cost most of a large layout); loops stay curved
    const many = current.edges.length > 400;
    cy.style().selector('edge').style({ label: many ? '' : 'data(label)', 'curve-style': many ? 'straight' : 'bezier' })
      .selector('edge:loop').style({ 'curve-style': 'bezier' }).update();
    lap('add');
    const leaves = cy.nodes().filter((x) => !x.isParent()).length;
    cy.layout(layoutFor(leaves)).run();
    if (leaves <= 120) clearBoxes();
    cy.fit(undefined, 20);
    lap('layout');
    highlight();
    notices();
    drawMatrix();
    lap('matrix');
  }

  // cose may leave a node outside every namespace (world, host, …) on top of a namespace's box:
  // such nodes go to a column left of the boxes
  function clearBoxes() {
    const boxes = cy.nodes().filter((x) => x.isParent());
    if (!boxes.length) return;
    const inBox = (bb, b) => !(bb.x2 < b.x1 || bb.x1 > b.x2 || bb.y2 < b.y1 || bb.y1 > b.y2);
    const stray = cy.nodes().filter((x) => x.isOrphan() && !x.isParent()
      && boxes.some((b) => inBox(x.boundingBox(), b.boundingBox())));
    if (!stray.length) return;
    const all = boxes.boundingBox();
    const width = Math.max(...stray.map((x) => x.boundingBox().w));
    stray.forEach((x, k) => x.position({ x: all.x1 - 40 - width / 2, y: all.y1 + 40 + k * 90 }));
  }

  function notices() {
    const parts = [];
    const closed = namespaces.filter((ns) => !state.expanded.has(ns)).length;
    if (closed) parts.push(`${closed} namespaces closed (click one to open it)`);
    if (current.lazy) parts.push(`too many namespace-level edges (over ${LIMITS.edgeLimit}) to draw at once: edges are drawn for opened namespaces`);
    if (current.deniedNote) parts.push(current.deniedNote);
    document.getElementById('notice').textContent = parts.join(' · ');
  }

  function highlight() {
    cy.elements().removeClass('match faded');
    const q = state.query.trim().toLowerCase();
    if (!q) return;
    const hits = cy.nodes().filter((x) => {
      const i = x.data('i');
      if (i !== undefined) return G[i].name.toLowerCase().includes(q) || G[i].pods.some((p) => p.toLowerCase().includes(q));
      return (x.data('ns') || '').toLowerCase().includes(q);
    });
    if (!hits.length) return;
    cy.elements().addClass('faded');
    const keep = hits.union(hits.connectedEdges()).union(hits.connectedEdges().connectedNodes()).union(hits.ancestors());
    keep.removeClass('faded');
    hits.addClass('match');
  }

  // ------------------------------------------------------------------ details
  const details = document.getElementById('details');
  function traceHtml(s, d) {
    const parts = [];
    CLASSES.forEach((c, ci) => {
      if (state.cls >= 0 && ci !== state.cls) return;
      const allowed = bit(rows[ci], s, d);
      const viaL7 = l7.length && bit(l7[ci], s, d);
      const mark = allowed ? (viaL7 ? 'allowed at L4, requests decided by an L7 proxy' : 'allowed') : 'denied';
      let body = '';
      const cell = data.traces[s + ',' + d];
      if (cell) {
        const [dec, eg, ing] = cell[ci].map((k) => data.strings[k]);
        body = `<div class="decider">${esc(dec)}</div><ul><li>${esc(eg)}</li><li>${esc(ing)}</li></ul>`;
      } else {
        body = `<code>cilia trace -f … --from ${esc(peerArg(G[s]))} --to ${esc(peerArg(G[d]))} --port ${esc(c.port)}</code>`;
      }
      parts.push(`<div class="cell ${allowed ? 'ok' : 'no'}"><b>${esc(c.label)}</b> (${esc(c.ports)}): ${mark}${body}</div>`);
    });
    return parts.join('');
  }
  function edgeDetails(e) {
    const dd = e.data();
    if (dd.pairs) {
      const list = dd.pairs.map(([s, d]) => `<li>${esc(G[s].name)} → ${esc(G[d].name)}</li>`).join('');
      const more = dd.count > dd.pairs.length ? `<p>… and ${dd.count - dd.pairs.length} more: open the namespaces.</p>` : '';
      return `<h3>${esc(dd.kind)}: ${dd.count} group pairs</h3><ul>${list}</ul>${more}`;
    }
    return pairDetails(dd.s, dd.d);
  }
  function pairDetails(s, d) {
    let out = `<h3>${esc(G[s].name)} → ${esc(G[d].name)}</h3>`;
    const ch = changesByPair.get(s + ',' + d);
    if (ch) {
      out += ch.map((c) => `<div class="change ${esc(c.kind)}"><b>${esc(c.kind)}</b> ${esc(c.ports)}<br>` +
        `before: ${esc(c.before)}<br>after: ${esc(c.after)}</div>`).join('');
    }
    if (!isDiff || !ch) out += traceHtml(s, d);
    return out;
  }
  function nodeDetails(x) {
    const i = x.data('i');
    if (i === undefined) return `<h3>namespace ${esc(x.data('ns'))}</h3><p>${nsGroups[x.data('ns')].length} groups</p>` +
      `<button id="close-ns">close this namespace</button>`;
    const g = G[i];
    const out = targets(allowedRows(), i).length;
    let inn = 0;
    for (let s = 0; s < n; s++) inn += bit(allowedRows(), s, i);
    const pods = g.pods.map((p) => `<li>${esc(p)}</li>`).join('') + (g.podCount > g.pods.length ? `<li>… ${g.podCount - g.pods.length} more</li>` : '');
    return `<h3>${esc(g.name)}</h3><p>${esc(g.kind)}, identity ${g.identity}${g.status ? ', ' + esc(g.status) : ''}; ` +
      `reaches ${out} groups, reached by ${inn}</p>${pods ? '<ul>' + pods + '</ul>' : ''}`;
  }
  const allowedRows = () => (state.cls < 0 ? anyRow : rows[state.cls]);
  cy.on('tap', 'edge', (ev) => { details.innerHTML = edgeDetails(ev.target); });
  cy.on('tap', 'node', (ev) => {
    const x = ev.target;
    if (x.hasClass('collapsed')) { state.expanded.add(x.data('ns')); draw(); return; }
    details.innerHTML = nodeDetails(x);
    const btn = document.getElementById('close-ns');
    if (btn) btn.onclick = () => { state.expanded.delete(x.data('ns')); draw(); };
  });

  // ------------------------------------------------------------------ the matrix of the shown groups
  function drawMatrix() {
    const shown = [];
    for (let i = 0; i < n; i++) if (unitOf(i)[0] === 'g' && cy.getElementById('g' + i).length) shown.push(i);
    const el = document.getElementById('matrix');
    if (shown.length > MATRIX_GROUPS) {
      el.textContent = `${shown.length} groups shown: the matrix is drawn for at most ${MATRIX_GROUPS} (close namespaces or pick one).`;
      return;
    }
    const head = shown.map((d, k) => `<th title="${esc(G[d].name)}">${k + 1}</th>`).join('');
    const body = shown.map((s, k) => {
      const cells = shown.map((d) => {
        const ch = changesByPair.get(s + ',' + d);
        if (ch) {
          const kind = ch[0].kind;
          const mark = { opened: '+', closed: '−', 'rule-changed': '~' }[kind];
          return `<td class="${kind}" title="${esc(pairKindLabel(ch))}">${mark}</td>`;
        }
        const a = bit(allowedRows(), s, d);
        const viaL7 = a && l7.length && CLASSES.some((c, ci) => (state.cls < 0 || ci === state.cls) && bit(l7[ci], s, d));
        return a ? (viaL7 ? '<td class="l7">L7</td>' : '<td class="allow">✓</td>') : '<td class="deny">✗</td>';
      }).join('');
      return `<tr><th class="row">${k + 1}. ${esc(G[s].name)}</th>${cells}</tr>`;
    }).join('');
    const which = state.cls < 0 ? 'any port class' : CLASSES[state.cls].label;
    el.innerHTML = `<p>Rows: from; columns: to (${esc(which)}).</p><table><tr><th>from \\ to</th>${head}</tr>${body}</table>`;
  }

  // ------------------------------------------------------------------ controls
  const nsSel = document.getElementById('ns-filter');
  namespaces.forEach((ns) => nsSel.add(new Option(ns, ns)));
  nsSel.onchange = () => { state.ns = nsSel.value; if (state.ns) state.expanded.add(state.ns); draw(); };
  const clsSel = document.getElementById('class-filter');
  CLASSES.forEach((c, ci) => clsSel.add(new Option(`${c.label} (${c.ports})`, String(ci))));
  clsSel.onchange = () => { state.cls = Number(clsSel.value); draw(); };
  const toggles = document.getElementById('toggles');
  function toggle(label, get, set) {
    const l = document.createElement('label');
    const box = document.createElement('input');
    box.type = 'checkbox';
    box.checked = get();
    box.onchange = () => { set(box.checked); draw(); };
    l.append(box, ' ' + label);
    toggles.append(l);
  }
  if (isDiff) {
    toggle('opened', () => state.kinds.opened, (v) => { state.kinds.opened = v; });
    toggle('closed', () => state.kinds.closed, (v) => { state.kinds.closed = v; });
    toggle('rule changed', () => state.kinds['rule-changed'], (v) => { state.kinds['rule-changed'] = v; });
    toggle('unchanged allowed', () => state.context, (v) => { state.context = v; });
  } else {
    toggle('allowed', () => state.context, (v) => { state.context = v; });
  }
  toggle('denied', () => state.denied, (v) => { state.denied = v; });
  let timer = 0;
  document.getElementById('search').oninput = (ev) => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      state.query = ev.target.value;
      const q = state.query.trim().toLowerCase();
      let opened = false;
      if (q) G.forEach((g) => {
        if (g.ns && !state.expanded.has(g.ns) && (g.name.toLowerCase().includes(q) || g.pods.some((p) => p.toLowerCase().includes(q)))) {
          state.expanded.add(g.ns); opened = true;
        }
      });
      if (opened) draw(); else highlight();
    }, 200);
  };
  document.getElementById('expand-all').onclick = () => { namespaces.forEach((ns) => state.expanded.add(ns)); draw(); };
  document.getElementById('collapse-all').onclick = () => { state.expanded.clear(); draw(); };
  document.getElementById('fit').onclick = () => cy.fit(undefined, 20);

  const summary = document.getElementById('summary');
  const pods = G.reduce((t, g) => t + g.podCount, 0);
  if (isDiff) {
    const s = data.summary;
    summary.innerHTML = `<b>${s.opened}</b> opened, <b>${s.closed}</b> closed, <b>${s.rule_changed}</b> with a new deciding rule; ` +
      `${s.groups_added} workload groups added, ${s.groups_removed} removed`;
  } else {
    summary.textContent = `${n} groups (${pods} pods) in ${namespaces.length} namespaces; ${CLASSES.length} port classes`;
  }

  // ------------------------------------------------------------------ first render, and what it drew
  draw();
  const drawn = cy.nodes().filter((x) => x.visible() && Number.isFinite(x.renderedPosition('x')) && Number.isFinite(x.renderedPosition('y')));
  const status = document.getElementById('cilia-status');
  status.dataset.leaves = String(drawn.filter((x) => !x.isParent()).length);
  status.dataset.parents = String(drawn.filter((x) => x.isParent()).length);
  status.dataset.edges = String(cy.edges().filter((e) => e.visible()).length);
  status.dataset.collapsed = String(namespaces.some((ns) => !state.expanded.has(ns)));
  status.dataset.ms = String(Math.round(performance.now()));
  status.dataset.timing = JSON.stringify(timing);
  status.dataset.rendered = '1';
  // #pair=S,D (group indices) opens that pair's details: a link to one flow, and what tests look at
  const m = /^#pair=(\d+),(\d+)$/.exec(location.hash);
  if (m && +m[1] < n && +m[2] < n) details.innerHTML = pairDetails(+m[1], +m[2]);
  // #tap=ID taps a drawn element (e.g. e3_5, the edge of groups 3 -> 5), as a click does
  const tap = /^#tap=(.+)$/.exec(location.hash);
  if (tap) cy.getElementById(decodeURIComponent(tap[1])).emit('tap');
  // #open=NS opens a closed namespace after the first render (the benchmark times it)
  const o = /^#open=(.+)$/.exec(location.hash);
  if (o && nsGroups[decodeURIComponent(o[1])]) {
    const t = performance.now();
    state.expanded.add(decodeURIComponent(o[1]));
    draw();
    status.dataset.openMs = String(Math.round(performance.now() - t));
    status.dataset.openTiming = JSON.stringify(timing);
    status.dataset.openEdges = String(cy.edges().length);
    status.dataset.openLeaves = String(cy.nodes().filter((x) => !x.isParent()).length);
  }
  window.ciliaGraph = cy;
})();
