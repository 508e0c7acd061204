// The little script the pages need: a job's live progress, drawing a region, copy buttons.
"use strict";

function followJob(section) {
  const bar = document.getElementById("progress-bar");
  const text = document.getElementById("progress-text");
  const preview = document.getElementById("preview");
  const events = new EventSource(`/jobs/${section.dataset.job}/events`);
  events.addEventListener("waiting", (event) => { text.textContent = event.data; });
  events.addEventListener("refused", (event) => { events.close(); text.textContent = event.data; });
  events.addEventListener("progress", (event) => {
    const progress = JSON.parse(event.data);
    bar.value = progress.percent;
    text.textContent = `${progress.percent}%`;
    if (progress.preview) { preview.src = progress.preview; preview.hidden = false; }
  });
  events.addEventListener("end", async () => {
    events.close();
    bar.value = 100;
    text.textContent = "100%";
    // the finished job (its grid, or why there is none) in place of the progress, without a reload
    const response = await fetch(window.location.href, {headers: {accept: "text/html"}});
    const page = new DOMParser().parseFromString(await response.text(), "text/html");
    const finished = page.querySelector(".job");
    if (finished) { section.replaceWith(finished); setUp(finished); } else { window.location.reload(); }
  });
}

function drawRegion(canvas) {
  // Vary (Region): a box dragged on the picture, sent as fractions of its width and height.
  const picture = document.getElementById("picture");
  const box = document.getElementById("region");
  const send = document.getElementById("region-send");
  let start = null;
  const point = (event) => {
    const rect = picture.getBoundingClientRect();
    return {
      x: Math.min(Math.max((event.clientX - rect.left) / rect.width, 0), 1),
      y: Math.min(Math.max((event.clientY - rect.top) / rect.height, 0), 1),
    };
  };
  const show = (a, b) => {
    const left = Math.min(a.x, b.x), top = Math.min(a.y, b.y);
    const right = Math.max(a.x, b.x), bottom = Math.max(a.y, b.y);
    Object.assign(box.style, {left: `${left * 100}%`, top: `${top * 100}%`,
                              width: `${(right - left) * 100}%`, height: `${(bottom - top) * 100}%`});
    box.hidden = false;
    const sides = {left, top, right, bottom};
    for (const side in sides) document.getElementById(`region-${side}`).value = sides[side].toFixed(4);
    send.disabled = (right - left) * (bottom - top) < 0.01;
  };
  picture.draggable = false;
  canvas.addEventListener("pointerdown", (event) => {
    start = point(event);
    canvas.setPointerCapture(event.pointerId);
    event.preventDefault();
  });
  canvas.addEventListener("pointermove", (event) => { if (start) show(start, point(event)); });
  canvas.addEventListener("pointerup", (event) => { if (start) { show(start, point(event)); start = null; } });
}

function setUp(root) {
  const job = root.matches(".job[data-state='queued'], .job[data-state='running']") ? root
    : root.querySelector(".job[data-state='queued'], .job[data-state='running']");
  if (job) followJob(job);
  const canvas = root.querySelector("#canvas");
  if (canvas && root.querySelector("#region-form")) drawRegion(canvas);
  for (const button of root.querySelectorAll("button.copy")) {
    button.addEventListener("click", async () => {
      const text = document.getElementById(button.dataset.copy).textContent;
      try { await navigator.clipboard.writeText(text); button.textContent = "Copied"; }
      catch { window.getSelection().selectAllChildren(document.getElementById(button.dataset.copy)); }
    });
  }
}

document.addEventListener("DOMContentLoaded", () => setUp(document.body));
