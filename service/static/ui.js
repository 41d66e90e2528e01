// yoloxpai demo page: plain JavaScript, no build step, no third-party code. It calls only the public API
// (GET v1/models, POST v1/models/{name}/detect with the raw image as the body) with same-origin, relative URLs,
// keeps an API key in this page's memory only, and draws the answer on a canvas over the image.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const el = {
    model: $("model"),
    threshold: $("threshold"),
    thresholdValue: $("threshold-value"),
    maxDetections: $("max-detections"),
    classes: $("classes"),
    classNames: $("class-names"),
    keyForm: $("key-form"),
    apiKey: $("api-key"),
    drop: $("drop"),
    file: $("file"),
    webcam: $("webcam"),
    status: $("status"),
    stage: $("stage"),
    image: $("image"),
    overlay: $("overlay"),
    timing: $("timing"),
    detections: $("detections"),
    video: $("video"),
  };
  const ACCEPTED = ["image/jpeg", "image/png", "image/webp"];

  const state = {
    apiKey: "", // page memory only: never stored, never put in a URL
    models: [],
    still: null, // {blob, bitmap}: the chosen image
    inFlight: false, // one request at a time
    again: false, // options changed while a request was in flight: run once more when it ends
    webcam: null, // {stream, frames} while the webcam streams
    drawn: 0,
  };

  class ApiError extends Error {
    constructor(status, code, message, retryAfterS) {
      super(message);
      this.status = status;
      this.code = code;
      this.retryAfterS = retryAfterS;
    }
  }

  // ---- talking to the server -------------------------------------------------------------------------------

  function headers(extra) {
    const h = Object.assign({}, extra);
    if (state.apiKey) h.Authorization = `Bearer ${state.apiKey}`;
    return h;
  }

  async function apiError(response) {
    let code = "";
    let message = response.statusText || `HTTP ${response.status}`;
    try {
      const body = await response.json();
      if (body && body.error) {
        code = body.error.code || "";
        message = body.error.message || message;
      }
    } catch (_) {
      // not our JSON envelope (a proxy's page): keep the status text
    }
    const retry = Number.parseInt(response.headers.get("Retry-After") || "", 10);
    return new ApiError(response.status, code, message, Number.isFinite(retry) ? retry : null);
  }

  async function api(path, init) {
    let response;
    try {
      response = await fetch(path, Object.assign({ cache: "no-store" }, init));
    } catch (err) {
      throw new ApiError(0, "unreachable", `cannot reach the server (${err.message})`, null);
    }
    if (!response.ok) throw await apiError(response);
    return response.json();
  }

  function currentModel() {
    return state.models.find((m) => m.name === el.model.value) || null;
  }

  function detectPath() {
    const model = currentModel();
    if (model === null) return "v1/detect"; // no model list (yet): the default model, its default options
    const params = new URLSearchParams();
    const threshold = Math.max(Number.parseFloat(el.threshold.value), model.score_threshold.minimum);
    params.set("score_threshold", String(threshold));
    const limit = Number.parseInt(el.maxDetections.value, 10);
    if (Number.isFinite(limit)) params.set("max_detections", String(limit));
    const classes = el.classes.value.split(",").map((c) => c.trim()).filter((c) => c);
    if (classes.length) params.set("classes", classes.join(","));
    return `v1/models/${encodeURIComponent(model.name)}/detect?${params}`;
  }

  function detect(blob) {
    const type = ACCEPTED.includes(blob.type) ? blob.type : "application/octet-stream"; // the server sniffs
    return api(detectPath(), { method: "POST", body: blob, headers: headers({ "Content-Type": type }) });
  }

  // ---- telling the person ----------------------------------------------------------------------------------

  function formatBytes(n) {
    if (n >= 1024 * 1024) return `${(n / (1024 * 1024)).toFixed(1)} MiB`;
    if (n >= 1024) return `${(n / 1024).toFixed(n % 1024 ? 1 : 0)} KiB`;
    return `${n} bytes`;
  }

  function tooLarge(message) {
    // The server says what the limit is: "request body of N bytes exceeds the limit of M bytes", or
    // "image of WxH pixels exceeds the limit of P pixels".
    const bytes = /limit of (\d+) bytes/.exec(message);
    if (bytes) {
      const size = /body of (\d+) bytes/.exec(message);
      const have = size ? `, this one is ${formatBytes(Number(size[1]))}` : "";
      return `The image is too large: this server accepts at most ${formatBytes(Number(bytes[1]))} per request${have}.`;
    }
    const pixels = /image of (\d+)x(\d+) pixels exceeds the limit of (\d+) pixels/.exec(message);
    if (pixels) {
      const limit = Number(pixels[3]).toLocaleString("en");
      return `The image is too large: this server accepts at most ${limit} pixels, this one is ${pixels[1]}×${pixels[2]}.`;
    }
    return `The image is too large: ${message}.`;
  }

  function explain(err) {
    switch (err.status) {
      case 401:
        return err.message === "invalid API key"
          ? "The server refused this API key: check it and enter it again."
          : "This server needs an API key: enter it above.";
      case 413:
        return tooLarge(err.message);
      case 503: {
        const when = err.retryAfterS === null ? "in a moment" : `in ${err.retryAfterS} s`;
        return `The server is busy (${err.message}): retry ${when}.`;
      }
      case 0:
        return `Cannot reach the server: ${err.message}.`;
      default:
        return `${err.status >= 500 ? "Server error" : "Refused"} (${err.status} ${err.code}): ${err.message}`;
    }
  }

  function say(text, kind) {
    el.status.textContent = text;
    el.status.className = `status ${kind || ""}`.trim();
  }

  function showError(err) {
    if (!(err instanceof ApiError)) {
      say(`Something went wrong in this page: ${err && err.message ? err.message : err}`, "error");
      return;
    }
    say(explain(err), err.status === 503 ? "busy" : "error");
    if (err.status === 401) askForKey();
  }

  function askForKey() {
    el.keyForm.hidden = false;
    el.apiKey.focus();
    el.apiKey.select();
  }

  // ---- models and options ----------------------------------------------------------------------------------

  async function loadModels() {
    let body;
    try {
      body = await api("v1/models", { headers: headers() });
    } catch (err) {
      showError(err);
      return false;
    }
    // One entry per model: the version a request without one gets (older versions served beside it are left out).
    state.models = body.models.filter((m) => m.default_version !== false);
    const previous = el.model.value;
    el.model.replaceChildren(
      ...state.models.map((m) => {
        const option = new Option(`${m.name} (v${m.version}, ${m.backend})`, m.name);
        option.selected = previous ? m.name === previous : m.default;
        return option;
      }),
    );
    el.model.disabled = state.models.length === 0;
    applyModel();
    say(state.models.length ? "Drop an image, choose one, or start the webcam." : "This server serves no model.");
    return true;
  }

  function applyModel() {
    const model = currentModel();
    if (model === null) return;
    el.threshold.value = String(model.score_threshold.default);
    el.maxDetections.max = String(model.max_detections);
    el.maxDetections.value = String(model.max_detections);
    el.classNames.replaceChildren(...model.classes.map((c) => new Option(c)));
    showThreshold();
  }

  function showThreshold() {
    el.thresholdValue.textContent = Number.parseFloat(el.threshold.value).toFixed(2);
  }

  // ---- drawing ---------------------------------------------------------------------------------------------

  function classHue(classId) {
    // The golden angle spreads neighbouring ids around the hue circle; the same class always gets one colour.
    return Math.round((classId * 137.508) % 360);
  }

  function classColor(classId) {
    return `hsl(${classHue(classId)}, 85%, 52%)`;
  }

  function labelInk(classId) {
    const hue = classHue(classId);
    return hue >= 200 && hue <= 320 ? "#fff" : "#000"; // blues and purples are dark: white text reads better
  }

  function draw(source, result) {
    const width = source.width;
    const height = source.height;
    for (const canvas of [el.image, el.overlay]) {
      canvas.width = width;
      canvas.height = height;
    }
    el.image.getContext("2d").drawImage(source, 0, 0, width, height);
    const ctx = el.overlay.getContext("2d");
    ctx.clearRect(0, 0, width, height);
    const sx = width / result.width;
    const sy = height / result.height;
    const line = Math.max(2, Math.round(Math.max(width, height) / 300));
    const fontPx = Math.max(12, Math.round(Math.max(width, height) / 45));
    ctx.font = `600 ${fontPx}px system-ui, "DejaVu Sans", sans-serif`;
    ctx.textBaseline = "top";
    ctx.lineWidth = line;
    for (const d of result.detections) {
      const [x1, y1, x2, y2] = [d.box[0] * sx, d.box[1] * sy, d.box[2] * sx, d.box[3] * sy];
      const color = classColor(d.class_id);
      ctx.strokeStyle = color;
      ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
      const label = `${d.class_name} ${d.score.toFixed(2)}`;
      const labelW = ctx.measureText(label).width + 2 * line;
      const labelH = fontPx + 2 * line;
      const ly = y1 - labelH >= 0 ? y1 - labelH : y1; // above the box, or inside it at the image's top
      ctx.fillStyle = color;
      ctx.fillRect(x1, ly, labelW, labelH);
      ctx.fillStyle = labelInk(d.class_id);
      ctx.fillText(label, x1 + line, ly + line);
    }
    el.stage.hidden = false;
    state.drawn += 1;
    el.stage.dataset.drawn = String(state.drawn); // a tick tests (and curious people) can wait on
  }

  function fillTables(body, roundTripMs) {
    const result = body.results[0];
    const rows = result.detections.map((d, i) => {
      const tr = document.createElement("tr");
      tr.dataset.classId = String(d.class_id);
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.backgroundColor = classColor(d.class_id); // CSSOM, not an inline style attribute
      const cells = [String(i + 1), d.class_name, d.score.toFixed(3), d.box.map((v) => v.toFixed(1)).join(", ")];
      for (const text of cells) {
        const td = document.createElement("td");
        td.textContent = text;
        tr.append(td);
      }
      tr.children[1].prepend(swatch);
      return tr;
    });
    el.detections.tBodies[0].replaceChildren(...rows);
    el.detections.hidden = false;
    const timing = Object.assign({}, body.timing_ms, { round_trip: roundTripMs });
    for (const td of el.timing.querySelectorAll("td[data-stage]")) {
      const ms = timing[td.dataset.stage];
      td.textContent = typeof ms === "number" ? ms.toFixed(1) : "–";
    }
    el.timing.hidden = false;
  }

  function show(source, body, roundTripMs, what) {
    const result = body.results[0];
    draw(source, result);
    fillTables(body, roundTripMs);
    const n = result.detections.length;
    say(`${what}: ${n} detection${n === 1 ? "" : "s"} by ${body.model} (version ${body.model_version}).`);
  }

  // ---- a still image ---------------------------------------------------------------------------------------

  async function useFile(file) {
    if (!file) return;
    stopWebcam();
    if (file.type && !ACCEPTED.includes(file.type)) {
      say(`${file.name} is ${file.type}: choose a JPEG, PNG or WebP image.`, "error");
      return;
    }
    let bitmap;
    try {
      bitmap = await createImageBitmap(file);
    } catch (_) {
      say(`This browser cannot read ${file.name} as an image: choose a JPEG, PNG or WebP image.`, "error");
      return;
    }
    state.still = { blob: file, bitmap, name: file.name };
    detectStill();
  }

  async function detectStill() {
    if (state.still === null || state.webcam !== null) return;
    if (state.inFlight) {
      state.again = true; // coalesce: one request in flight, one more when it ends
      return;
    }
    state.inFlight = true;
    try {
      do {
        state.again = false;
        const still = state.still;
        say(`Detecting objects in ${still.name}…`);
        const start = performance.now();
        const body = await detect(still.blob);
        show(still.bitmap, body, performance.now() - start, still.name);
      } while (state.again && state.webcam === null);
    } catch (err) {
      showError(err);
    } finally {
      state.inFlight = false;
    }
  }

  // ---- the webcam ------------------------------------------------------------------------------------------

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  function grab(video) {
    const canvas = document.createElement("canvas");
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    canvas.getContext("2d").drawImage(video, 0, 0);
    return new Promise((resolve) => canvas.toBlob((blob) => resolve({ canvas, blob }), "image/jpeg", 0.85));
  }

  async function startWebcam() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      say("This browser offers no webcam to this page (browsers allow it over HTTPS or on localhost only).", "error");
      return;
    }
    let stream;
    el.webcam.disabled = true; // until the browser (or the person) has answered
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 640 } }, audio: false });
    } catch (err) {
      say(`No webcam: ${err.message || err.name}.`, "error");
      return;
    } finally {
      el.webcam.disabled = false;
    }
    const session = { stream, frames: 0 };
    state.webcam = session;
    state.still = null; // the canvas shows the camera from now on
    el.webcam.textContent = "Stop webcam";
    el.webcam.classList.add("active");
    el.video.srcObject = stream;
    try {
      await el.video.play();
    } catch (err) {
      stopWebcam();
      say(`The webcam does not play: ${err.message || err.name}.`, "error");
      return;
    }
    say("Webcam on: each frame goes to the server when the previous answer has arrived.");
    pump(session);
  }

  async function pump(session) {
    // One frame in flight: the next one is grabbed when the answer to this one has arrived.
    while (state.webcam === session) {
      if (el.video.videoWidth === 0) {
        await new Promise((resolve) => el.video.addEventListener("loadeddata", resolve, { once: true }));
        continue;
      }
      const frame = await grab(el.video);
      const start = performance.now();
      try {
        const body = await detect(frame.blob);
        if (state.webcam !== session) break;
        session.frames += 1;
        el.stage.dataset.frames = String(session.frames);
        show(frame.canvas, body, performance.now() - start, `Webcam frame ${session.frames}`);
      } catch (err) {
        if (state.webcam !== session) break;
        if (err instanceof ApiError && err.status === 503) {
          showError(err); // busy: wait as long as the server asks, then go on streaming
          await sleep(1000 * (err.retryAfterS === null ? 1 : Math.max(err.retryAfterS, 0.2)));
        } else {
          stopWebcam(); // a refusal that a retry will not change (key, size, options)
          showError(err);
        }
      }
    }
  }

  function stopWebcam() {
    const session = state.webcam;
    if (session === null) return;
    state.webcam = null;
    for (const track of session.stream.getTracks()) track.stop();
    el.video.srcObject = null;
    el.webcam.textContent = "Start webcam";
    el.webcam.classList.remove("active");
  }

  // ---- wiring ----------------------------------------------------------------------------------------------

  function optionsChanged() {
    if (state.webcam === null) detectStill(); // the webcam's next frame picks them up by itself
  }

  el.model.addEventListener("change", () => {
    applyModel();
    optionsChanged();
  });
  el.threshold.addEventListener("input", () => {
    showThreshold();
    optionsChanged();
  });
  el.maxDetections.addEventListener("change", optionsChanged);
  el.classes.addEventListener("change", optionsChanged);

  el.keyForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    state.apiKey = el.apiKey.value.trim();
    if (await loadModels()) {
      say("Key accepted." + (state.still ? "" : " Drop an image, choose one, or start the webcam."));
      detectStill();
    }
  });

  el.file.addEventListener("change", () => {
    const file = el.file.files[0];
    el.file.value = ""; // choosing the same file again is a new choice
    useFile(file);
  });
  for (const name of ["dragenter", "dragover"]) {
    el.drop.addEventListener(name, (event) => {
      event.preventDefault();
      el.drop.classList.add("over");
    });
  }
  el.drop.addEventListener("dragleave", () => el.drop.classList.remove("over"));
  el.drop.addEventListener("drop", (event) => {
    event.preventDefault();
    el.drop.classList.remove("over");
    useFile(event.dataTransfer.files[0]);
  });
  // A file dropped next to the zone must not make the browser navigate away from the page.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());

  el.webcam.addEventListener("click", () => {
    if (state.webcam === null) startWebcam();
    else {
      stopWebcam();
      say("Webcam off.");
    }
  });

  loadModels();
})();
