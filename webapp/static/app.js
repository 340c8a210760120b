// The page: four tabs over the server's /api. No library, nothing fetched from elsewhere.
"use strict";
const $ = (id) => document.getElementById(id);
let selected = [];   // style ids, in the order they were picked
let tab = "photo";

function say(where, text, isError = false) {
  const el = $(where);
  el.textContent = text;
  el.classList.toggle("error", isError);
}

async function errorOf(response) {
  try {
    const body = await response.json();
    return body.error || body.detail || response.statusText;
  } catch (e) { return response.statusText; }
}

function clock(seconds) {
  if (seconds == null) return "…";
  const s = Math.max(0, Math.round(seconds));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

// ---------------------------------------------------------------- styles and tabs
async function loadStyles() {
  const response = await fetch("/api/models");
  const data = await response.json();
  const box = $("styles");
  box.innerHTML = "";
  for (const model of data.models) {
    const item = document.createElement("div");
    item.className = "style";
    item.dataset.id = model.id;
    item.innerHTML = `<img src="${model.thumbnail}" alt="${model.id}"><span>${model.id}</span>`;
    item.onclick = () => pick(model.id);
    box.appendChild(item);
  }
  selected = selected.filter((id) => data.models.some((m) => m.id === id));
  if (!selected.length && data.models.length) selected = [data.models[0].id];
  showSelection();
  $("train-ready").textContent = data.training.ok
    ? "Trains a new style from a painting in the minutes you give, starting from a shipped model."
      + (data.training.photos_dir ? " Without a folder of photos it learns from the server's own." : "")
    : data.training.why;
  $("train-go").disabled = !data.training.ok;
  $("live-note").textContent = data.live_note || "";
  liveInFlight = data.live_in_flight;
  liveCanSpeedUp = data.live_speed_up;
}

function pick(id) {
  if (tab === "photo") {
    selected = selected.includes(id) ? selected.filter((s) => s !== id) : [...selected, id];
    if (!selected.length) selected = [id];
  } else {
    selected = [id];
    sendLiveSettings();
  }
  showSelection();
}

function showSelection() {
  for (const el of document.querySelectorAll(".style")) {
    el.classList.toggle("selected", selected.includes(el.dataset.id));
  }
}

for (const button of document.querySelectorAll("button.tab")) {
  button.onclick = () => {
    tab = button.dataset.tab;
    for (const b of document.querySelectorAll("button.tab")) b.classList.toggle("active", b === button);
    for (const p of document.querySelectorAll(".panel")) p.classList.toggle("active", p.id === tab);
    $("styles-section").hidden = tab === "train";
    if (tab !== "photo" && selected.length > 1) { selected = [selected[0]]; showSelection(); }
  };
}

for (const [slider, out] of [["photo-strength", "photo-strength-out"], ["video-strength", "video-strength-out"],
                             ["video-smooth", "video-smooth-out"], ["live-strength", "live-strength-out"],
                             ["live-smooth", "live-smooth-out"]]) {
  $(slider).oninput = () => { $(out).textContent = $(slider).value; if (slider.startsWith("live")) sendLiveSettings(); };
}
$("live-colors").onchange = $("live-target").onchange = () => sendLiveSettings();

function dropTarget(dropId, inputId, onFile) {
  const drop = $(dropId), input = $(inputId);
  input.onchange = () => input.files.length && onFile(input.files[0]);
  drop.ondragover = (e) => { e.preventDefault(); drop.classList.add("over"); };
  drop.ondragleave = () => drop.classList.remove("over");
  drop.ondrop = (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files.length) onFile(e.dataTransfer.files[0]);
  };
}

// ---------------------------------------------------------------- photo
let photoFile = null;
dropTarget("photo-drop", "photo-file", (file) => {
  photoFile = file;
  $("photo-go").disabled = false;
  say("photo-message", `${file.name}: pick the style(s), then Stylise`);
});

$("photo-go").onclick = async () => {
  const form = new FormData();
  form.append("file", photoFile);
  form.append("styles", selected.join(","));
  form.append("strength", $("photo-strength").value);
  form.append("preserve_color", $("photo-colors").checked);
  form.append("max_size", $("photo-size").value);
  $("photo-go").disabled = true;
  say("photo-message", "stylising…");
  try {
    const response = await fetch("/api/photo", { method: "POST", body: form });
    if (!response.ok) { say("photo-message", await errorOf(response), true); return; }
    const data = await response.json();
    const box = $("photo-results");
    box.innerHTML = "";
    const shown = data.sheet ? [{ style: "contact sheet", url: data.sheet }, ...data.results] : data.results;
    for (const result of shown) {
      const size = result.width ? ` (${result.width}x${result.height})` : "";
      box.insertAdjacentHTML("beforeend", `<figure><img class="result" src="${result.url}" alt="${result.style}">
        <figcaption>${result.style}${size} <a href="${result.url}" download>download</a></figcaption></figure>`);
    }
    say("photo-message", "done");
  } finally {
    $("photo-go").disabled = false;
  }
};

// ---------------------------------------------------------------- video
let videoFile = null, videoJob = null;
dropTarget("video-drop", "video-file", (file) => {
  videoFile = file;
  $("video-go").disabled = false;
  say("video-message", `${file.name}: pick a style, then Stylise`);
});

function upload(url, form, onProgress) {
  return new Promise((resolve) => {
    const request = new XMLHttpRequest();
    request.open("POST", url);
    request.upload.onprogress = (e) => e.lengthComputable && onProgress(e.loaded / e.total);
    request.onload = () => resolve(request);
    request.onerror = () => resolve(request);
    request.send(form);
  });
}

$("video-go").onclick = async () => {
  const form = new FormData();
  form.append("file", videoFile);
  form.append("style", selected[0]);
  form.append("strength", $("video-strength").value);
  form.append("preserve_color", $("video-colors").checked);
  form.append("smooth", $("video-smooth").value);
  form.append("max_size", $("video-size").value);
  $("video-go").disabled = true;
  $("video-result").innerHTML = "";
  const bar = $("video-progress");
  bar.hidden = false;
  const request = await upload("/api/video", form, (share) => { bar.value = share; say("video-message", `uploading ${Math.round(share * 100)}%`); });
  let body = {};
  try { body = JSON.parse(request.responseText); } catch (e) { body = { error: request.statusText || "the upload failed" }; }
  if (request.status !== 200) {
    say("video-message", body.error || body.detail, true);
    bar.hidden = true;
    $("video-go").disabled = false;
    return;
  }
  videoJob = body.job;
  $("video-cancel").hidden = false;
  pollVideo();
};

async function pollVideo() {
  const job = videoJob;
  const response = await fetch(`/api/video/${job}`);
  const status = await response.json();
  const bar = $("video-progress");
  if (status.state === "running") {
    bar.max = status.total || 1;
    bar.value = status.done;
    const total = status.total ? `/${status.total}` : "";
    say("video-message", `frame ${status.done}${total}, ${clock(status.seconds_left)} left`);
    setTimeout(pollVideo, 500);
    return;
  }
  $("video-cancel").hidden = true;
  $("video-go").disabled = false;
  bar.hidden = true;
  if (status.state === "done") {
    const url = `/api/video/${job}/result`;
    $("video-result").innerHTML = `<figure><video id="video-out" controls src="${url}"></video>
      <figcaption><a href="${url}" download>download (MP4)</a></figcaption></figure>`;
    say("video-message", `done: ${status.done} frames`);
  } else if (status.state === "cancelled") {
    say("video-message", "cancelled");
  } else {
    say("video-message", status.error, true);
  }
}

$("video-cancel").onclick = () => fetch(`/api/video/${videoJob}/cancel`, { method: "POST" });

// ---------------------------------------------------------------- live camera
let socket = null, stream = null, inFlight = 0, shown = [], liveInFlight = 2;
// The server compiles a style on request where it can; liveState is what it last said of the
// camera (the size a frames/s target runs at, whether it runs compiled, how a speed-up went).
const noLiveState = { live_size: null, compiled: false, speed_up: null };
let liveCanSpeedUp = false, liveState = { ...noLiveState };
const grab = document.createElement("canvas");
// Read back every frame: a canvas kept in memory, not on the graphics card (or its software
// stand-in), makes that read a copy instead of a round trip.
const grabContext = grab.getContext("2d", { willReadFrequently: true });

// Setting a canvas's size clears and reallocates it: only when the size changes.
function fitCanvas(canvas, width, height) {
  if (canvas.width !== width) canvas.width = width;
  if (canvas.height !== height) canvas.height = height;
}

function sendLiveSettings() {
  if (socket && socket.readyState === WebSocket.OPEN) {
    socket.send(JSON.stringify({
      style: selected[0], strength: parseFloat($("live-strength").value), preserve_color: $("live-colors").checked,
      smooth: parseFloat($("live-smooth").value), target_fps: parseFloat($("live-target").value),
    }));
  }
}

function sendFrame() {
  const camera = $("live-camera");
  if (!socket || socket.readyState !== WebSocket.OPEN || !camera.videoWidth) return;
  fitCanvas(grab, camera.videoWidth, camera.videoHeight);
  grabContext.drawImage(camera, 0, 0);
  inFlight += 1;
  grab.toBlob((blob) => socket && socket.readyState === WebSocket.OPEN ? socket.send(blob) : (inFlight -= 1), "image/jpeg", 0.85);
}

async function showFrame(blob) {
  const picture = await createImageBitmap(blob);
  const out = $("live-out");
  fitCanvas(out, picture.width, picture.height);
  out.getContext("2d").drawImage(picture, 0, 0);
  picture.close();
  const now = performance.now();
  shown = [...shown.filter((t) => now - t < 2000), now];
  $("live-fps").textContent = `${(shown.length / 2).toFixed(1)} frames/s` + (liveState.live_size ? `, stylised at ${liveState.live_size}` : "")
    + (liveState.compiled ? ", compiled" : "");
  out.dataset.frames = String(Number(out.dataset.frames || 0) + 1);
}

$("live-start").onclick = async () => {
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 360 }, audio: false });
  } catch (e) {
    say("live-message", `the camera could not be opened (${e.name}): allow the page to use it`, true);
    return;
  }
  $("live-camera").srcObject = stream;
  socket = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/live`);
  socket.binaryType = "blob";
  socket.onopen = () => {
    sendLiveSettings();
    say("live-message", "");
    // As many frames in flight as the server stylises at once, and one more: the network never waits.
    const start = () => { for (let i = 0; i < liveInFlight; i += 1) sendFrame(); };
    $("live-camera").videoWidth ? start() : ($("live-camera").onloadeddata = start);
  };
  socket.onmessage = (event) => {
    if (typeof event.data === "string") {
      const data = JSON.parse(event.data);
      if ("error" in data) say("live-message", data.error, true);
      Object.assign(liveState, data);
      if ("speed_up" in data) showSpeedUp();
      showSpeedUpButton();
      return;
    }
    inFlight -= 1;
    showFrame(event.data);
    sendFrame();
  };
  socket.onclose = () => stopLive();
  $("live-start").hidden = true;
  $("live-stop").hidden = false;
  showSpeedUpButton();
};

function showSpeedUpButton() {
  $("live-speed-up").hidden = !socket || !liveCanSpeedUp || liveState.compiled || liveState.speed_up === "building";
}

function showSpeedUp() {
  const state = liveState.speed_up;
  if (state === "building") {
    say("live-message", "Compiling this style for the camera's size: about a minute, and the camera is slower meanwhile.");
  } else if (state === "done") {
    say("live-message", "Compiled: this style now runs faster at this size, here and whenever the camera starts again.");
  } else if (state) {
    say("live-message", `Speeding up did not work (${state.replace(/^failed: /, "")}); the camera goes on as before.`, true);
  }
}

$("live-speed-up").onclick = () => {
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ speed_up: true }));
  $("live-speed-up").hidden = true;
};

function stopLive() {
  if (socket) { const s = socket; socket = null; s.close(); }
  if (stream) { stream.getTracks().forEach((t) => t.stop()); stream = null; }
  inFlight = 0;
  liveState = { ...noLiveState };
  $("live-speed-up").hidden = true;
  $("live-start").hidden = false;
  $("live-stop").hidden = true;
}
$("live-stop").onclick = stopLive;

// ---------------------------------------------------------------- your own style
let trainJob = null;
$("train-go").onclick = async () => {
  const painting = $("train-painting").files[0];
  if (!painting) { say("train-message", "pick the painting first", true); return; }
  const form = new FormData();
  form.append("painting", painting);
  form.append("name", $("train-name").value.trim());
  form.append("minutes", $("train-minutes").value);
  for (const photo of $("train-photos").files) {
    if (photo.type.startsWith("image/")) form.append("photos", photo);
  }
  say("train-message", "uploading…");
  const response = await fetch("/api/train", { method: "POST", body: form });
  if (!response.ok) { say("train-message", await errorOf(response), true); return; }
  trainJob = (await response.json()).job;
  pollTraining();
};

async function pollTraining() {
  const response = await fetch(`/api/train/${trainJob}`);
  const status = await response.json();
  const stamp = Date.now();
  if (status.has_sample) $("train-sample").src = `/api/train/${trainJob}/sample?t=${stamp}`;
  if (status.has_losses) $("train-losses").src = `/api/train/${trainJob}/losses?t=${stamp}`;
  $("train-go").disabled = status.state === "running" || status.state === "stopped";
  $("train-stop").hidden = status.state !== "running";
  $("train-resume").hidden = status.state !== "stopped";
  if (status.state === "running") {
    say("train-message", `training ${status.name}: ${clock(status.seconds_left)} left`);
    setTimeout(pollTraining, 2000);
  } else if (status.state === "stopped") {
    say("train-message", `stopped: Resume continues where it stood`);
  } else if (status.state === "done") {
    say("train-message", `${status.name} is ready: it is in the style list`);
    loadStyles();
  } else {
    say("train-message", status.error, true);
  }
}

$("train-stop").onclick = async () => { await fetch(`/api/train/${trainJob}/stop`, { method: "POST" }); pollTraining(); };
$("train-resume").onclick = async () => { await fetch(`/api/train/${trainJob}/resume`, { method: "POST" }); pollTraining(); };

loadStyles();
