// The page of `python -m crowdjax.serve`: uploads the chosen images one at a time to
// /api/count, shows each count with its overlay (or why it was refused) and builds the CSV of
// the counts in the browser. Text from files and the server is set with textContent only.
"use strict";

const state = { info: null, rows: [], busy: false, queue: [] };

function $(id) {
  return document.getElementById(id);
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function formatCount(record) {
  // Localization methods count heads (whole numbers); density methods a sum (one decimal).
  return record.points ? record.count.toFixed(0) : record.count.toFixed(1);
}

function formatBytes(size) {
  if (size >= 2 ** 20) return `${(size / 2 ** 20).toFixed(size >= 10 * 2 ** 20 ? 0 : 1)} MB`;
  return `${(size / 2 ** 10).toFixed(0)} kB`;
}

async function loadInfo() {
  try {
    const response = await fetch("/api/info");
    state.info = await response.json();
    const step = state.info.step === null ? "" : ` (step ${state.info.step})`;
    const megapixels = (state.info.max_image_pixels / 1e6).toFixed(0);
    $("model").textContent =
      `Model: ${state.info.method}${step}. Up to ${formatBytes(state.info.max_upload_bytes)} ` +
      `and ${megapixels} megapixels per image.`;
  } catch (error) {
    $("model").textContent = `The server does not answer (${error}).`;
  }
}

function renderResult(record) {
  const card = element("article", "result");
  card.dataset.file = record.file;
  card.append(element("h2", "file", record.file));
  const count = element("div", "count", formatCount(record));
  count.dataset.count = String(record.count);
  card.append(count, element("div", "size", `${record.width} x ${record.height} px`));
  if (record.interval) {
    const i = record.interval;
    const text =
      `interval ${i.low.toFixed(1)} to ${i.high.toFixed(1)} (spread ${i.spread.toFixed(1)})` +
      (i.disagree ? ": the variants disagree, trust this count less" : "");
    card.append(element("div", "interval" + (i.disagree ? " disagree" : ""), text));
  }
  if (record.zones && Object.keys(record.zones).length) {
    const table = element("table", "zones");
    const head = table.insertRow();
    head.append(element("th", "", "zone"), element("th", "", "count"));
    for (const [name, value] of Object.entries(record.zones)) {
      const row = table.insertRow();
      row.append(element("td", "", name), element("td", "", value.toFixed(1)));
    }
    card.append(table);
  }
  const image = element("img", "overlay");
  image.alt = `${record.file}: ${formatCount(record)} people`;
  image.src = record.overlay;
  card.append(image);
  return card;
}

function renderFailure(name, message) {
  const card = element("article", "result failed");
  card.dataset.file = name;
  card.append(element("h2", "file", name), element("div", "error", message));
  return card;
}

function tooLarge(file) {
  if (!state.info || file.size <= state.info.max_upload_bytes) return null;
  return (
    `${file.name}: file of ${file.size} bytes is over the upload limit of ` +
    `${state.info.max_upload_bytes} bytes (the server's --max_upload_bytes)`
  );
}

async function countOne(file) {
  const refused = tooLarge(file);
  if (refused) return { file: file.name, error: refused };
  let response;
  try {
    response = await fetch("/api/count", {
      method: "POST",
      headers: {
        "Content-Type": "application/octet-stream",
        "X-File-Name": encodeURIComponent(file.name),
      },
      body: file,
    });
  } catch (error) {
    return { file: file.name, error: `${file.name}: the server does not answer (${error})` };
  }
  let body;
  try {
    body = await response.json();
  } catch (error) {
    return { file: file.name, error: `${file.name}: HTTP ${response.status} from the server` };
  }
  if (!response.ok) return { file: body.file || file.name, error: body.error };
  return body;
}

async function countFiles(files) {
  state.queue.push(...files);
  if (state.busy) return;
  state.busy = true;
  const progress = $("progress");
  let done = 0;
  progress.hidden = false;
  while (state.queue.length) {
    const file = state.queue.shift();
    const total = done + state.queue.length + 1;
    progress.max = total;
    progress.value = done;
    $("progress-text").textContent = `Counting ${done + 1} of ${total}: ${file.name}`;
    const result = await countOne(file);
    state.rows.push(result);
    const card = result.error
      ? renderFailure(result.file, result.error)
      : renderResult(result);
    $("results").append(card);
    done += 1;
    progress.value = done;
    updateSummary();
  }
  $("progress-text").textContent = `Done: ${done} of ${done} image(s).`;
  progress.hidden = true;
  state.busy = false;
}

function updateSummary() {
  const counted = state.rows.filter((r) => !r.error);
  const failed = state.rows.length - counted.length;
  $("summary").textContent =
    `${counted.length} counted` + (failed ? `, ${failed} refused` : "");
  $("download-csv").disabled = state.rows.length === 0;
  $("clear").disabled = state.rows.length === 0;
}

function csvCell(value) {
  let text = value === undefined || value === null ? "" : String(value);
  // A spreadsheet runs a cell that starts with these as a formula: keep it text.
  if (/^[=+\-@\t\r]/.test(text)) text = "'" + text;
  return /[",\n\r]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

function csvText() {
  const zones = [];
  for (const row of state.rows) {
    for (const name of Object.keys(row.zones || {})) if (!zones.includes(name)) zones.push(name);
  }
  const interval = state.rows.some((r) => r.interval);
  const header = ["file", "count", "height", "width"];
  header.push(...zones.map((name) => `zone:${name}`));
  if (interval) header.push("low", "high", "spread", "disagree");
  header.push("error");
  const lines = [header.map(csvCell).join(",")];
  for (const row of state.rows) {
    const cells = [row.file];
    if (row.error) {
      cells.push("", "", "", ...zones.map(() => ""));
      if (interval) cells.push("", "", "", "");
      cells.push(row.error);
    } else {
      cells.push(row.count.toFixed(3), row.height, row.width);
      cells.push(...zones.map((name) => (row.zones && name in row.zones ? row.zones[name].toFixed(3) : "")));
      if (interval) {
        const i = row.interval;
        cells.push(...(i ? [i.low.toFixed(3), i.high.toFixed(3), i.spread.toFixed(3), i.disagree] : ["", "", "", ""]));
      }
      cells.push("");
    }
    lines.push(cells.map(csvCell).join(","));
  }
  return lines.join("\r\n") + "\r\n";
}

function downloadCsv() {
  const url = URL.createObjectURL(new Blob([csvText()], { type: "text/csv" }));
  const link = element("a");
  link.href = url;
  link.download = "counts.csv";
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

function clearResults() {
  state.rows = [];
  $("results").replaceChildren();
  $("progress-text").textContent = "";
  updateSummary();
}

function setUp() {
  const drop = $("drop");
  const input = $("files");
  input.addEventListener("change", () => {
    countFiles(Array.from(input.files));
    input.value = "";
  });
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    countFiles(Array.from(event.dataTransfer.files));
  });
  $("download-csv").addEventListener("click", downloadCsv);
  $("clear").addEventListener("click", clearResults);
  loadInfo();
}

setUp();
