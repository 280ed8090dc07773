// Prometheus text exposition read in the browser, and rates between two scrapes as PromQL's rate() computes them.
// Boundary: text in, numbers out; knows no fastdraft metric name (dashboard.js does).
"use strict";

const Prometheus = (() => {
  // name{labels} value [timestamp]; a '}' inside a label value is fine: the value itself holds none
  const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?[ \t]+(\S+)(?:[ \t]+-?\d+)?[ \t]*$/;
  const LABEL = /[ \t]*([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"((?:[^"\\]|\\.)*)"[ \t]*,?/y;
  const UNESCAPE = {"\\\\": "\\", "\\\"": "\"", "\\n": "\n"};

  function parseValue(text) {
    if (text === "+Inf" || text === "Inf") return Infinity;
    if (text === "-Inf") return -Infinity;
    if (text === "NaN") return NaN;
    const value = Number(text);
    if (Number.isNaN(value)) throw new Error(`not a sample value: ${text}`);
    return value;
  }

  function parseLabels(text) {
    const labels = {};
    LABEL.lastIndex = 0;
    while (LABEL.lastIndex < text.length) {
      const start = LABEL.lastIndex;
      const match = LABEL.exec(text);
      if (match === null) {
        if (text.slice(start).trim() === "") break;
        throw new Error(`bad labels: {${text}}`);
      }
      labels[match[1]] = match[2].replace(/\\[\\"n]/g, (escape) => UNESCAPE[escape]);
    }
    return labels;
  }

  // One series per (name, label set): its key is the sorted labels, so two scrapes can be matched series by series.
  function seriesKey(labels) {
    return JSON.stringify(Object.keys(labels).sort().map((name) => [name, labels[name]]));
  }

  // A scrape: when it was read (ms on a monotonic clock) and, per metric name, its series by key.
  function parse(text, at) {
    const metrics = new Map();
    for (const raw of text.split("\n")) {
      const line = raw.trim();
      if (line === "" || line.startsWith("#")) continue;
      const match = SAMPLE.exec(line);
      if (match === null) throw new Error(`not a sample line: ${line}`);
      const labels = match[2] === undefined ? {} : parseLabels(match[2]);
      if (!metrics.has(match[1])) metrics.set(match[1], new Map());
      metrics.get(match[1]).set(seriesKey(labels), {labels, value: parseValue(match[3])});
    }
    return {at, metrics};
  }

  // The series of `name` whose labels include every pair of `match`.
  function series(scrape, name, match = {}) {
    const found = [];
    for (const [key, sample] of scrape.metrics.get(name) || []) {
      if (Object.entries(match).every(([label, value]) => sample.labels[label] === String(value))) {
        found.push({key, ...sample});
      }
    }
    return found;
  }

  // Sum of the matching series now (what sum(name{match}) gives); null when there is none.
  function total(scrape, name, match = {}) {
    const found = series(scrape, name, match);
    return found.length ? found.reduce((sum, sample) => sum + sample.value, 0) : null;
  }

  // How much the matching counters grew from `previous` to `current`, summed as sum(increase(...)) would: a
  // counter lower than before was reset (the server restarted), so its whole new value is increase. A series
  // absent before was born since: prometheus-client creates a labelled counter at its first increment, so
  // everything it counts is increase too. null when either scrape is missing or nothing matches.
  function increase(previous, current, name, match = {}) {
    if (!previous || !current) return null;
    const before = new Map(series(previous, name, match).map((sample) => [sample.key, sample.value]));
    const now = series(current, name, match);
    if (!now.length) return null;
    return now.reduce((sum, sample) => {
      const old = before.get(sample.key);
      return sum + (old === undefined || sample.value < old ? sample.value : sample.value - old);
    }, 0);
  }

  function seconds(previous, current) {
    return previous && current ? (current.at - previous.at) / 1000 : null;
  }

  // Per-second rate between the two scrapes (rate() over a range holding exactly these two samples).
  function rate(previous, current, name, match = {}) {
    const grown = increase(previous, current, name, match);
    const elapsed = seconds(previous, current);
    return grown === null || !(elapsed > 0) ? null : grown / elapsed;
  }

  return {parse, series, total, increase, seconds, rate};
})();
