// The live page: every 2 s read /metrics, derive what each panel shows, write it into dashboard.html's elements.
// Metric names and definitions: server/metrics.py; formulas: docs/formulas.md. "Last window" values are rates
// or ratios of increases between the two latest scrapes; "since start" ones come from the latest scrape alone.
"use strict";

(() => {
  const P = "fastdraft:";
  const EVERY_MS = 2000;
  const HISTORY = 150; // sparkline points: five minutes at one scrape every 2 s
  const SVG = "http://www.w3.org/2000/svg"; // a namespace name, not a resource: nothing is fetched from it

  let previous = null;
  let scrapes = 0;
  const history = {requests: [], generation: [], running: [], waiting: []};

  const ratio = (numerator, denominator) =>
    numerator === null || denominator === null || !(denominator > 0) ? null : numerator / denominator;

  // --- what each panel shows, from the two latest scrapes

  // One row per position up to the last one any draft reached: accepted / reached since start and in the window.
  function acceptanceByPosition(before, now) {
    const name = (kind) => P + `spec_decode_num_${kind}_tokens_per_pos_total`;
    const reachedAt = Prometheus.series(now, name("reached")).filter((sample) => sample.value > 0);
    const last = Math.max(-1, ...reachedAt.map((sample) => Number(sample.labels.position)));
    const rows = [];
    for (let position = 0; position <= last; position++) {
      const at = {position};
      rows.push({
        position,
        reached: Prometheus.total(now, name("reached"), at),
        sinceStart: ratio(Prometheus.total(now, name("accepted"), at), Prometheus.total(now, name("reached"), at)),
        lastWindow: ratio(Prometheus.increase(before, now, name("accepted"), at),
                          Prometheus.increase(before, now, name("reached"), at)),
      });
    }
    return rows;
  }

  function derive(before, now) {
    const total = (name, match) => Prometheus.total(now, P + name, match);
    const increase = (name, match) => Prometheus.increase(before, now, P + name, match);
    const rate = (name, match) => Prometheus.rate(before, now, P + name, match);
    const info = (Prometheus.series(now, P + "model_info")[0] || {labels: {}}).labels;

    const requestTokensPerSecond = (mode, grown) => {  // 1 / mean time per output token
      const of = grown ? increase : total;
      return ratio(of("time_per_output_token_seconds_count", {mode}), of("time_per_output_token_seconds_sum", {mode}));
    };
    const errors = Prometheus.series(now, P + "requests_total")
      .filter((sample) => /^[45]/.test(sample.labels.status || ""))
      .reduce((sum, sample) => sum + sample.value, 0);
    const kvUsed = total("kv_blocks_used");
    const kvTotal = kvUsed === null ? null : kvUsed + (total("kv_blocks_free") || 0);
    const accepted = total("spec_decode_num_accepted_tokens_total");
    const drafts = total("spec_decode_num_drafts_total");
    const plainTpot = ratio(total("time_per_output_token_seconds_sum", {mode: "plain"}),
                            total("time_per_output_token_seconds_count", {mode: "plain"}));
    const speculativeTpot = ratio(total("time_per_output_token_seconds_sum", {mode: "speculative"}),
                                  total("time_per_output_token_seconds_count", {mode: "speculative"}));
    return {
      info,
      windowSeconds: Prometheus.seconds(before, now),
      acceptance: acceptanceByPosition(before, now),
      values: {
        "requests-per-second": rate("requests_total"),
        "requests-total": total("requests_total"),
        "requests-errors": total("requests_total") === null ? null : errors,
        "generation-tokens-per-second": rate("generation_tokens_total"),
        "prompt-tokens-per-second": rate("prompt_tokens_total"),
        "generation-tokens-total": total("generation_tokens_total"),
        "stream-speculative-tokens-per-second": requestTokensPerSecond("speculative", true),
        "stream-speculative-tokens-per-second-total": requestTokensPerSecond("speculative", false),
        "stream-plain-tokens-per-second": requestTokensPerSecond("plain", true),
        "stream-plain-tokens-per-second-total": requestTokensPerSecond("plain", false),
        "speedup": ratio(plainTpot, speculativeTpot),
        "acceptance-alpha": ratio(total("spec_decode_num_accepted_tokens_per_pos_total"),
                                  total("spec_decode_num_reached_tokens_per_pos_total")),
        "acceptance-alpha-window": ratio(increase("spec_decode_num_accepted_tokens_per_pos_total"),
                                         increase("spec_decode_num_reached_tokens_per_pos_total")),
        "mean-accepted-length": drafts > 0 ? 1 + accepted / drafts : null,
        "draft-k-current": total("spec_decode_current_k"),
        "draft-k-mean-window": ratio(increase("spec_decode_chosen_k_sum"), increase("spec_decode_chosen_k_count")),
        "draft-k-mean": ratio(total("spec_decode_chosen_k_sum"), total("spec_decode_chosen_k_count")),
        "queue-running": total("num_requests_running"),
        "queue-waiting": total("num_requests_waiting"),
        "engine-sequences": total("engine_sequences"),
        "kv-blocks-used": kvUsed,
        "kv-blocks-total": kvTotal,
        "kv-blocks-percent": ratio(kvUsed, kvTotal),
        "engine-preemptions": total("engine_preemptions_total"),
      },
    };
  }

  // --- how each number is written (the precision a reader of the page can rely on)

  const fixed = (decimals, suffix = "") => (value) => value.toFixed(decimals) + suffix;
  const percent = (value) => (100 * value).toFixed(1) + "%";
  const FORMAT = {
    "requests-per-second": fixed(2), "requests-total": fixed(0), "requests-errors": fixed(0),
    "generation-tokens-per-second": fixed(1), "prompt-tokens-per-second": fixed(1), "generation-tokens-total": fixed(0),
    "stream-speculative-tokens-per-second": fixed(1), "stream-speculative-tokens-per-second-total": fixed(1),
    "stream-plain-tokens-per-second": fixed(1), "stream-plain-tokens-per-second-total": fixed(1),
    "speedup": fixed(2, "×"),
    "acceptance-alpha": percent, "acceptance-alpha-window": percent, "mean-accepted-length": fixed(2),
    "draft-k-current": fixed(0), "draft-k-mean-window": fixed(2), "draft-k-mean": fixed(2),
    "queue-running": fixed(0), "queue-waiting": fixed(0), "engine-sequences": fixed(0),
    "kv-blocks-used": fixed(0), "kv-blocks-total": fixed(0), "kv-blocks-percent": percent,
    "engine-preemptions": fixed(0),
  };

  function show(element, value, format) {
    const defined = value !== null && value !== undefined && Number.isFinite(value);
    element.textContent = defined ? format(value) : "—";
    element.dataset.value = defined ? String(value) : "";
  }

  // --- rendering

  function element(tag, attributes = {}, text = null) {
    const made = tag === "svg" || ["rect", "circle", "line", "polyline", "text"].includes(tag)
      ? document.createElementNS(SVG, tag) : document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) made.setAttribute(name, value);
    if (text !== null) made.textContent = text;
    return made;
  }

  function renderAcceptanceRows(acceptance) {
    const rows = document.getElementById("acceptance-rows");
    if (!acceptance.length) {
      rows.replaceChildren(element("tr", {}, null));
      rows.firstChild.append(element("td", {colspan: "4"}, "no drafts yet"));
      return;
    }
    rows.replaceChildren(...acceptance.map(({position, reached, sinceStart, lastWindow}) => {
      const row = element("tr", {"data-position": String(position)});
      row.append(element("th", {}, String(position)));
      for (const [id, value, format] of [[`acceptance-pos-${position}`, sinceStart, percent],
                                         [`acceptance-window-pos-${position}`, lastWindow, percent],
                                         [`reached-pos-${position}`, reached, fixed(0)]]) {
        const cell = element("td", {id});
        show(cell, value, format);
        row.append(cell);
      }
      return row;
    }));
  }

  function renderAcceptanceChart(acceptance) {
    const chart = document.getElementById("acceptance-chart");
    const [width, height, left, bottom, top] = [400, 140, 34, 18, 6];
    const plot = height - bottom - top;
    const y = (fraction) => top + plot * (1 - fraction);
    const parts = [];
    for (const fraction of [0, 0.5, 1]) {
      parts.push(element("line", {x1: left, x2: width, y1: y(fraction), y2: y(fraction), class: "grid"}));
      parts.push(element("text", {x: left - 4, y: y(fraction) + 4, class: "axis", "text-anchor": "end"},
                         `${100 * fraction}%`));
    }
    const slot = (width - left) / Math.max(acceptance.length, 1);
    acceptance.forEach(({position, sinceStart, lastWindow}, index) => {
      const x = left + index * slot;
      if (sinceStart !== null) {
        parts.push(element("rect", {x: x + slot * 0.15, width: slot * 0.7, y: y(sinceStart),
                                    height: plot * sinceStart, class: "bar"}));
      }
      if (lastWindow !== null) {
        parts.push(element("circle", {cx: x + slot / 2, cy: y(lastWindow), r: 3.5, class: "dot"}));
      }
      parts.push(element("text", {x: x + slot / 2, y: height - 4, class: "axis", "text-anchor": "middle"},
                         String(position)));
    });
    chart.replaceChildren(...parts);
  }

  function renderSpark(id, seriesList) {
    const spark = document.getElementById(id);
    const peak = Math.max(1e-9, ...seriesList.flatMap((points) => points.filter((v) => v !== null)));
    spark.replaceChildren(...seriesList.map((points, index) => {
      const coordinates = points.map((value, i) => value === null ? null
        : `${(HISTORY - points.length + i).toFixed(0)},${(29 - 28 * value / peak).toFixed(2)}`).filter(Boolean);
      return element("polyline", {points: coordinates.join(" "), class: `line line-${index}`});
    }));
  }

  function remember(name, value) {
    history[name].push(value === undefined ? null : value);
    if (history[name].length > HISTORY) history[name].shift();
  }

  function render(view) {
    for (const [id, format] of Object.entries(FORMAT)) show(document.getElementById(id), view.values[id], format);
    show(document.getElementById("window-seconds"), view.windowSeconds, fixed(1));
    const info = view.info;
    document.getElementById("model-target").textContent = info.target || "—";
    document.getElementById("model-draft").textContent = info.draft || "—";
    document.getElementById("model-proposer").textContent = info.proposer || "—";
    document.getElementById("model-state").textContent = info.ready === "true" ? "ready" : "loading";
    document.getElementById("updated-at").textContent = new Date().toLocaleTimeString();
    const meter = view.values["kv-blocks-percent"];
    document.getElementById("kv-blocks-meter").style.width = `${100 * (meter || 0)}%`;
    renderAcceptanceRows(view.acceptance);
    renderAcceptanceChart(view.acceptance);
    if (view.windowSeconds !== null) {
      remember("requests", view.values["requests-per-second"]);
      remember("generation", view.values["generation-tokens-per-second"]);
      remember("running", view.values["queue-running"]);
      remember("waiting", view.values["queue-waiting"]);
      renderSpark("spark-requests", [history.requests]);
      renderSpark("spark-generation", [history.generation]);
      renderSpark("spark-queue", [history.running, history.waiting]);
    }
  }

  function showError(message) {
    const banner = document.getElementById("scrape-error");
    banner.hidden = message === null;
    banner.textContent = message === null ? "" : `cannot read /metrics (${message}); trying again every 2 s`;
  }

  // --- the loop: one scrape at a time, the next one 2 s after the last answer (or failure)

  async function scrape() {
    try {
      const response = await fetch("metrics", {cache: "no-store"});
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const current = Prometheus.parse(await response.text(), performance.now());
      render(derive(previous, current));
      previous = current;
      scrapes += 1;
      document.body.dataset.scrapes = String(scrapes);
      showError(null);
    } catch (error) {
      showError(error.message);
    } finally {
      setTimeout(scrape, EVERY_MS);
    }
  }

  scrape();
})();
