"use strict";
/*
 * The timeline viewer (pipeline/views/viewer.py): a video and, under it, one canvas lane per genre with one
 * column per sampled frame (frame k stands for time k / fps and lasts 1 / fps, the decode stage's
 * sampling rule), a truth lane under each when labels exist, a playhead, hover read-outs, a
 * threshold slider with its segment list, zoom and pan. Every string from the data reaches the page
 * through textContent. The segment list decodes the probabilities by each genre's rule as
 * pipeline/core/timeline.py does (smoothing, hysteresis, gaps bridged, short segments dropped);
 * the slider starts at the mean onset and moves every genre's onset and offset by as much.
 *
 * Test hook, read-only, not an API: window.viewer.columns() (columns per lane),
 * playheadColumn() (the column the playhead is drawn on), segments() (the segment list's rows),
 * view() (the visible columns, {first, count}), sliderStart() (the slider's first value).
 */
(() => {
  const BELOW_THRESHOLD_TINT = 0.55; // a bar under the threshold: its colour mixed with this much white
  const BACKGROUND = [244, 244, 244];
  const WHITE = [255, 255, 255];
  const THRESHOLD_LINE = "rgba(0, 0, 0, 0.45)";
  const COLUMN_GAP_FROM_PX = 8; // columns this wide (device pixels) or wider get a 1 px gap
  const MIN_VISIBLE_COLUMNS = 8;
  const ZOOM_STEP = 1.6;
  const WHEEL_ZOOM_RATE = 0.0015; // zoom factor per wheel delta unit: exp(delta * rate)
  const FOLLOW_MARGIN = 0.1; // playback leaving the view pans it to put the playhead this far in
  const TICK_SPACING_PX = 90;
  const TICK_STEPS_S = [0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600];
  const TIME_EPSILON = 1e-6; // a time k / fps that floating point puts a hair before column k
  const SEGMENT_ROW_PX = 24;
  const SEGMENT_ROWS_BEYOND = 10; // rows made above and below those in sight

  const data = JSON.parse(document.getElementById("timeline-data").textContent);
  const genres = data.genres;
  const frames = data.frames;
  const fps = data.fps;
  const probabilities = new Float32Array(decodeBase64(data.probabilities).buffer);
  const truth = data.truth === null ? null : decodeBase64(data.truth);
  const colours = data.colours.map(hexColour);

  const video = document.getElementById("video");
  const timeline = document.getElementById("timeline");
  const playheadLayer = document.getElementById("playhead-layer");
  const playhead = document.getElementById("playhead");
  const hover = document.getElementById("hover");
  const slider = document.getElementById("threshold");
  const sliderValue = document.getElementById("threshold-value");
  const segmentCount = document.getElementById("segment-count");
  const segmentList = document.getElementById("segment-list");
  const segmentRows = document.getElementById("segment-rows");
  const pan = document.getElementById("pan");
  const status = document.getElementById("status");

  const state = {
    shift: 0, // the slider's move from its start, added to every onset and offset
    rules: data.rules,
    first: 0, // first visible column (fractional when zoomed)
    count: frames, // visible columns
    playhead: -1,
    segments: [],
    current: [], // indices of the segments the playhead is in
  };

  function decodeBase64(text) {
    return Uint8Array.from(atob(text), (char) => char.charCodeAt(0));
  }

  function hexColour(hex) {
    return [1, 3, 5].map((start) => parseInt(hex.slice(start, start + 2), 16));
  }

  function mix(colour, other, amount) {
    return colour.map((value, index) => Math.round(value + (other[index] - value) * amount));
  }

  function clamp(value, low, high) {
    return Math.min(Math.max(value, low), high);
  }

  function probability(frame, genre) {
    return probabilities[frame * genres.length + genre];
  }

  function label(frame, genre) {
    return truth[frame * genres.length + genre];
  }

  function formatTime(seconds, decimals) {
    const scale = 10 ** decimals;
    const total = Math.round(seconds * scale) / scale;
    const hours = Math.floor(total / 3600);
    const minutes = Math.floor((total - hours * 3600) / 60);
    const rest = (total - hours * 3600 - minutes * 60).toFixed(decimals);
    const secondsText = rest.padStart(decimals > 0 ? 3 + decimals : 2, "0");
    return hours > 0
      ? `${hours}:${String(minutes).padStart(2, "0")}:${secondsText}`
      : `${minutes}:${secondsText}`;
  }

  function columnAt(time) {
    return clamp(Math.floor(time * fps + TIME_EPSILON), 0, frames - 1);
  }

  // Segments: pipeline/core/timeline.py's decode_runs and genre_segments, step for step. The page
  // holds the probabilities as float32, and numpy compares a float32 array with a Python float in
  // float32 (Math.fround).
  function nudged(threshold, delta) {
    return Math.min(Math.max(threshold + delta, data.slider_limits[0]), data.slider_limits[1]);
  }

  function shiftedRules(delta) {
    return data.rules.map((rule) => (
      { ...rule, onset: nudged(rule.onset, delta), offset: nudged(rule.offset, delta) }));
  }

  function columnOf(genre) {
    const column = new Float32Array(frames);
    for (let frame = 0; frame < frames; frame += 1) column[frame] = probability(frame, genre);
    return column;
  }

  function runsOf(active) {
    const found = [];
    let first = -1;
    for (let frame = 0; frame <= active.length; frame += 1) {
      const on = frame < active.length && active[frame];
      if (on && first < 0) {
        first = frame;
      } else if (!on && first >= 0) {
        found.push([first, frame]);
        first = -1;
      }
    }
    return found;
  }

  function framesOf(seconds) {
    return Math.floor(seconds * fps + 0.5);
  }

  function medianSmoothed(column, windowS) {
    const half = Math.floor(framesOf(windowS) / 2);
    if (half === 0 || column.length === 0) return column;
    const smoothed = new Float32Array(column.length);
    const window = new Float32Array(2 * half + 1);
    for (let frame = 0; frame < column.length; frame += 1) {
      for (let offset = -half; offset <= half; offset += 1) {
        window[offset + half] = column[clamp(frame + offset, 0, column.length - 1)];
      }
      window.sort();
      smoothed[frame] = window[half];
    }
    return smoothed;
  }

  function viterbiPath(column, onset, switchCost) {
    const count = column.length;
    const path = new Array(count).fill(false);
    if (count === 0) return path;
    const floor = data.probability_floor;
    const clipped = (frame) => Math.min(Math.max(column[frame], floor), 1 - floor);
    const logOnset = Math.log(onset);
    const logOffset = Math.log(1 - onset);
    const on = (frame) => Math.log(clipped(frame)) - logOnset;
    const off = (frame) => Math.log(1 - clipped(frame)) - logOffset;
    const stayedOn = new Array(count).fill(true);
    const stayedOff = new Array(count).fill(true);
    let bestOn = on(0);
    let bestOff = off(0);
    for (let frame = 1; frame < count; frame += 1) {
      const switchOn = bestOff - switchCost;
      const switchOff = bestOn - switchCost;
      stayedOn[frame] = bestOn >= switchOn;
      stayedOff[frame] = bestOff >= switchOff;
      const nextOn = (stayedOn[frame] ? bestOn : switchOn) + on(frame);
      const nextOff = (stayedOff[frame] ? bestOff : switchOff) + off(frame);
      bestOn = nextOn;
      bestOff = nextOff;
    }
    let state = bestOn > bestOff;
    for (let frame = count - 1; frame >= 0; frame -= 1) {
      path[frame] = state;
      if (!(state ? stayedOn[frame] : stayedOff[frame])) state = !state;
    }
    return path;
  }

  function hysteresisRuns(column, onset, offset) {
    const high = Math.fround(onset);
    const low = Math.fround(offset);
    const found = [];
    let first = -1;
    let peak = 0;
    for (let frame = 0; frame <= column.length; frame += 1) {
      const above = frame < column.length && column[frame] > low;
      if (above) {
        peak = first < 0 ? column[frame] : Math.max(peak, column[frame]);
        if (first < 0) first = frame;
      } else if (first >= 0) {
        if (peak > high) found.push([first, frame]);
        first = -1;
      }
    }
    return found;
  }

  function candidateRuns(column, rule) {
    if (rule.smoothing === "viterbi") return runsOf(viterbiPath(column, rule.onset, rule.switch_cost));
    const smoothed = rule.smoothing === "median" ? medianSmoothed(column, rule.median_window_s) : column;
    return hysteresisRuns(smoothed, rule.onset, rule.offset);
  }

  function tidiedRuns(found, rule) {
    const tolerance = data.duration_tolerance_s;
    const bridged = [];
    for (const [first, stop] of found) {
      const last = bridged[bridged.length - 1];
      if (last !== undefined && first / fps - last[1] / fps < rule.min_gap_s - tolerance) {
        last[1] = stop;
      } else {
        bridged.push([first, stop]);
      }
    }
    return bridged.filter(([first, stop]) => (
      Math.min(stop / fps, data.duration_s) - first / fps >= rule.min_segment_s - tolerance));
  }

  function computeSegments(rules) {
    const rows = [];
    genres.forEach((genre, index) => {
      const column = columnOf(index);
      for (const [first, stop] of tidiedRuns(candidateRuns(column, rules[index]), rules[index])) {
        rows.push(makeSegment(index, first, stop));
      }
    });
    return rows.sort((a, b) => a.start_s - b.start_s || a.genre_index - b.genre_index);
  }

  function makeSegment(genre, first, stop) {
    let sum = 0;
    for (let frame = first; frame < stop; frame += 1) sum += probability(frame, genre);
    return {
      genre: genres[genre],
      genre_index: genre,
      first,
      stop,
      start_s: first / fps,
      end_s: Math.min(stop / fps, data.duration_s),
      mean_probability: sum / (stop - first),
    };
  }

  // Layout: a ruler, then per genre a label and a lane (and a truth lane when labels exist).
  const ruler = addCanvas("ruler", 1);
  const lanes = genres.map((genre, index) => {
    const row = 2 + index * (truth === null ? 1 : 2);
    addLabel(genre, colours[index], row, "lane-label");
    const lane = { genre: index, canvas: addCanvas("lane", row), truth: null };
    lane.canvas.dataset.genre = genre;
    lane.canvas.setAttribute("aria-label", `${genre}: probability per sample`);
    if (truth !== null) {
      addLabel("labels", null, row + 1, "lane-label truth");
      lane.truth = addCanvas("truth", row + 1);
      lane.truth.dataset.genre = genre;
      lane.truth.setAttribute("aria-label", `${genre}: labelled samples`);
    }
    return lane;
  });
  const rows = 1 + genres.length * (truth === null ? 1 : 2);
  timeline.style.gridTemplateRows = `repeat(${rows}, auto)`;
  playheadLayer.style.gridRow = `1 / ${rows + 1}`;

  function addCanvas(kind, row) {
    const canvas = document.createElement("canvas");
    canvas.className = kind;
    canvas.setAttribute("role", "img");
    canvas.style.gridRow = String(row);
    timeline.appendChild(canvas);
    return canvas;
  }

  function addLabel(text, colour, row, className) {
    const element = document.createElement("div");
    element.className = className;
    element.style.gridRow = String(row);
    if (colour !== null) element.appendChild(swatch(colour));
    const name = document.createElement("span");
    name.textContent = text;
    element.appendChild(name);
    timeline.appendChild(element);
  }

  function swatch(colour) {
    const element = document.createElement("span");
    element.className = "swatch";
    element.style.background = `rgb(${colour.join(",")})`;
    return element;
  }

  // Drawing: each device pixel shows the highest value of the columns it covers, so a short spike
  // stays visible however far out the view is zoomed.
  function pixelColumns(x, width) {
    const perPixel = state.count / width;
    const low = Math.floor(state.first + x * perPixel);
    const high = Math.max(low + 1, Math.ceil(state.first + (x + 1) * perPixel));
    return [low, Math.min(high, frames)];
  }

  function columnStartsAt(x, width) {
    const perPixel = state.count / width;
    return Math.floor(state.first + x * perPixel) !== Math.floor(state.first + (x - 1) * perPixel);
  }

  function drawLane(canvas, genre, valueAt, isTruth) {
    const { width, height } = canvas;
    const context = canvas.getContext("2d");
    const image = context.createImageData(width, height);
    const colour = colours[genre];
    const tint = mix(colour, WHITE, BELOW_THRESHOLD_TINT);
    const onset = state.rules[genre].onset;
    const limit = Math.fround(onset);
    const gaps = (width / state.count) >= COLUMN_GAP_FROM_PX;
    for (let x = 0; x < width; x += 1) {
      const [low, high] = pixelColumns(x, width);
      let value = 0;
      for (let frame = low; frame < high; frame += 1) value = Math.max(value, valueAt(frame, genre));
      const gap = gaps && x > 0 && columnStartsAt(x, width);
      const bar = gap ? 0 : isTruth ? (value > 0 ? height : 0) : Math.round(value * height);
      const fill = isTruth || value > limit ? colour : tint;
      for (let y = 0; y < height; y += 1) {
        const pixel = y >= height - bar ? fill : BACKGROUND;
        const offset = (y * width + x) * 4;
        image.data[offset] = pixel[0];
        image.data[offset + 1] = pixel[1];
        image.data[offset + 2] = pixel[2];
        image.data[offset + 3] = 255;
      }
    }
    context.putImageData(image, 0, 0);
    if (!isTruth) drawThresholdLine(context, width, height, onset);
  }

  function drawThresholdLine(context, width, height, threshold) {
    const y = Math.round(height - threshold * height) + 0.5;
    context.strokeStyle = THRESHOLD_LINE;
    context.setLineDash([4, 3]);
    context.beginPath();
    context.moveTo(0, y);
    context.lineTo(width, y);
    context.stroke();
  }

  function drawRuler() {
    const { width, height } = ruler;
    const context = ruler.getContext("2d");
    const scale = window.devicePixelRatio || 1;
    const pixelsPerSecond = (width / state.count) * fps;
    const step = TICK_STEPS_S.find((s) => s * pixelsPerSecond >= TICK_SPACING_PX * scale)
      || TICK_STEPS_S[TICK_STEPS_S.length - 1];
    const decimals = step < 1 ? 1 : 0;
    context.clearRect(0, 0, width, height);
    context.fillStyle = "#444";
    context.strokeStyle = "#888";
    context.font = `${11 * scale}px system-ui, sans-serif`;
    context.textBaseline = "top";
    const start = state.first / fps;
    const end = (state.first + state.count) / fps;
    for (let tick = Math.ceil(start / step); tick * step <= end; tick += 1) {
      const x = Math.round(((tick * step - start) * pixelsPerSecond)) + 0.5;
      context.beginPath();
      context.moveTo(x, height * 0.6);
      context.lineTo(x, height);
      context.stroke();
      context.fillText(formatTime(tick * step, decimals), x + 3 * scale, 2 * scale);
    }
  }

  function draw() {
    drawRuler();
    for (const lane of lanes) {
      drawLane(lane.canvas, lane.genre, probability, false);
      if (lane.truth !== null) drawLane(lane.truth, lane.genre, label, true);
    }
    placePlayhead();
  }

  function resize() {
    const scale = window.devicePixelRatio || 1;
    for (const canvas of timeline.querySelectorAll("canvas")) {
      canvas.width = Math.max(1, Math.round(canvas.clientWidth * scale));
      canvas.height = Math.max(1, Math.round(canvas.clientHeight * scale));
    }
    draw();
  }

  // View: which columns show. Zoom keeps the column under the pointer in place.
  function setView(first, count) {
    state.count = clamp(count, Math.min(MIN_VISIBLE_COLUMNS, frames), frames);
    state.first = clamp(first, 0, frames - state.count);
    pan.max = String(frames - state.count);
    pan.value = String(state.first);
    pan.disabled = state.count >= frames;
    draw();
  }

  function zoomAround(column, factor) {
    const count = state.count / factor;
    setView(column - (column - state.first) * (count / state.count), count);
  }

  function zoomCentre(factor) {
    zoomAround(state.first + state.count / 2, factor);
  }

  // Playhead: the column of the time on screen, drawn over every lane.
  function showPlayhead(time) {
    state.playhead = columnAt(time);
    const visible = state.playhead >= state.first && state.playhead < state.first + state.count;
    if (!visible && !video.paused) {
      setView(state.playhead - state.count * FOLLOW_MARGIN, state.count);
    } else {
      placePlayhead();
    }
    markCurrentSegments();
  }

  function placePlayhead() {
    if (state.playhead < 0) return;
    const width = playheadLayer.clientWidth;
    const left = ((state.playhead - state.first) / state.count) * width;
    const right = ((state.playhead + 1 - state.first) / state.count) * width;
    playhead.hidden = right <= 0 || left >= width;
    playhead.style.left = `${left}px`;
    playhead.style.width = `${right - left}px`;
  }

  function seekColumn(column) {
    const target = clamp(column, 0, frames - 1);
    video.currentTime = target / fps;
    showPlayhead(target / fps);
  }

  function step(direction) {
    video.pause();
    seekColumn(columnAt(video.currentTime) + direction);
  }

  function togglePlay() {
    if (video.paused) {
      video.play().catch((error) => {
        status.textContent = `cannot play the video: ${error.message}`;
      });
    } else {
      video.pause();
    }
  }

  // Segment list: one button per segment, seeking to its start. Only the rows in sight (and a few
  // beyond) exist: a film's list holds thousands, and laying out 12,000 buttons took seconds.
  function showSegments() {
    state.rules = state.shift === 0 ? data.rules : shiftedRules(state.shift);
    state.segments = computeSegments(state.rules);
    const count = state.segments.length;
    sliderValue.textContent = Number(slider.value).toFixed(2);
    segmentCount.textContent = `${count} segment${count === 1 ? "" : "s"}`;
    segmentRows.style.height = `${count * SEGMENT_ROW_PX}px`;
    state.current = currentSegments();
    renderSegmentRows();
  }

  function renderSegmentRows() {
    const top = segmentList.scrollTop;
    const first = Math.max(0, Math.floor(top / SEGMENT_ROW_PX) - SEGMENT_ROWS_BEYOND);
    const stop = Math.min(
      state.segments.length,
      Math.ceil((top + segmentList.clientHeight) / SEGMENT_ROW_PX) + SEGMENT_ROWS_BEYOND,
    );
    const rows = document.createDocumentFragment();
    for (let index = first; index < stop; index += 1) rows.appendChild(segmentRow(index));
    segmentRows.replaceChildren(rows);
  }

  function segmentRow(index) {
    const segment = state.segments[index];
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.index = String(index);
    button.style.top = `${index * SEGMENT_ROW_PX}px`;
    button.style.height = `${SEGMENT_ROW_PX}px`;
    button.classList.toggle("current", state.current.includes(index));
    const parts = [
      ["segment-genre", segment.genre],
      ["segment-time", `${formatTime(segment.start_s, 2)}–${formatTime(segment.end_s, 2)}`],
      ["segment-score", segment.mean_probability.toFixed(2)],
    ];
    button.appendChild(swatch(colours[segment.genre_index]));
    for (const [className, text] of parts) {
      const span = document.createElement("span");
      span.className = className;
      span.textContent = text;
      button.appendChild(span);
    }
    button.addEventListener("click", () => {
      video.pause();
      seekColumn(segment.first);
    });
    return button;
  }

  function currentSegments() {
    const current = [];
    state.segments.forEach((segment, index) => {
      if (state.playhead >= segment.first && state.playhead < segment.stop) current.push(index);
    });
    return current;
  }

  function markCurrentSegments() {
    state.current = currentSegments();
    for (const row of segmentRows.children) {
      row.classList.toggle("current", state.current.includes(Number(row.dataset.index)));
    }
  }

  // Hover: the time and every genre's probability (and label) of the column under the pointer.
  const hoverTime = document.createElement("div");
  const hoverRows = genres.map((genre, index) => {
    const row = document.createElement("div");
    const name = document.createElement("span");
    const value = document.createElement("span");
    name.textContent = genre;
    value.className = "hover-value";
    row.append(swatch(colours[index]), name, value);
    return value;
  });
  hover.append(hoverTime, ...hoverRows.map((value) => value.parentElement));

  function columnUnder(event) {
    const box = event.currentTarget.getBoundingClientRect();
    const x = clamp(event.clientX - box.left, 0, box.width - Number.EPSILON);
    return clamp(Math.floor(state.first + (x / box.width) * state.count), 0, frames - 1);
  }

  function showHover(event) {
    const column = columnUnder(event);
    const legend = truth === null ? "" : ", ✓ labelled";
    hoverTime.textContent = `${formatTime(column / fps, 2)} (sample ${column}${legend})`;
    hoverRows.forEach((value, genre) => {
      const labelled = truth !== null && label(column, genre) ? " ✓" : "";
      value.textContent = `${probability(column, genre).toFixed(2)}${labelled}`;
    });
    hover.hidden = false;
    const margin = 14;
    const left = event.clientX + margin + hover.offsetWidth > window.innerWidth
      ? event.clientX - margin - hover.offsetWidth : event.clientX + margin;
    hover.style.left = `${left}px`;
    hover.style.top = `${Math.max(0, event.clientY - hover.offsetHeight - margin)}px`;
  }

  function listenToLane(canvas) {
    canvas.addEventListener("pointerdown", (event) => {
      canvas.setPointerCapture(event.pointerId);
      seekColumn(columnUnder(event));
    });
    canvas.addEventListener("pointermove", (event) => {
      showHover(event);
      if (canvas.hasPointerCapture(event.pointerId)) seekColumn(columnUnder(event));
    });
    canvas.addEventListener("pointerleave", () => {
      hover.hidden = true;
    });
  }

  for (const lane of lanes) {
    listenToLane(lane.canvas);
    if (lane.truth !== null) listenToLane(lane.truth);
  }

  timeline.addEventListener("wheel", (event) => {
    if (event.target === ruler || !(event.target instanceof HTMLCanvasElement)) return;
    event.preventDefault();
    const box = event.target.getBoundingClientRect();
    const perPixel = state.count / box.width;
    if (event.shiftKey || Math.abs(event.deltaX) > Math.abs(event.deltaY)) {
      const delta = event.shiftKey ? event.deltaY || event.deltaX : event.deltaX;
      setView(state.first + delta * perPixel, state.count);
    } else {
      const column = state.first + (event.clientX - box.left) * perPixel;
      zoomAround(column, Math.exp(-event.deltaY * WHEEL_ZOOM_RATE));
    }
  }, { passive: false });

  // Keys: space plays and pauses, left and right step one sample, + - 0 zoom. A focused slider
  // keeps its own arrow keys.
  window.addEventListener("keydown", (event) => {
    if (event.target instanceof HTMLInputElement || event.altKey || event.ctrlKey || event.metaKey) {
      return;
    }
    const actions = {
      " ": togglePlay,
      ArrowLeft: () => step(-1),
      ArrowRight: () => step(1),
      "+": () => zoomCentre(ZOOM_STEP),
      "=": () => zoomCentre(ZOOM_STEP),
      "-": () => zoomCentre(1 / ZOOM_STEP),
      0: () => setView(0, frames),
    };
    const action = actions[event.key];
    if (action === undefined) return;
    event.preventDefault();
    action();
  }, true);

  document.getElementById("zoom-in").addEventListener("click", () => zoomCentre(ZOOM_STEP));
  document.getElementById("zoom-out").addEventListener("click", () => zoomCentre(1 / ZOOM_STEP));
  document.getElementById("zoom-fit").addEventListener("click", () => setView(0, frames));
  pan.addEventListener("input", () => setView(Number(pan.value), state.count));
  slider.min = String(data.slider_limits[0]);
  slider.max = String(data.slider_limits[1]);
  slider.value = String(data.rules.reduce((sum, rule) => sum + rule.onset, 0) / data.rules.length);
  const sliderStart = Number(slider.value); // the value as the slider's step rounds it
  slider.addEventListener("input", () => {
    state.shift = Number(slider.value) - sliderStart;
    showSegments();
    draw();
  });

  // Playback: requestVideoFrameCallback reports each frame as it is shown; timeupdate (a few
  // times a second) stands in where the browser lacks it. A paused video's time is the one sought.
  if ("requestVideoFrameCallback" in HTMLVideoElement.prototype) {
    const onFrame = (now, metadata) => {
      if (!video.paused) showPlayhead(metadata.mediaTime);
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  } else {
    video.addEventListener("timeupdate", () => showPlayhead(video.currentTime));
  }
  for (const name of ["seeked", "pause", "loadedmetadata"]) {
    video.addEventListener(name, () => showPlayhead(video.currentTime));
  }
  video.addEventListener("error", () => {
    status.textContent = `cannot play the video ${decodeURIComponent(data.video)}`;
  });

  document.title = `${data.title} — genre timeline`;
  document.getElementById("title").textContent = data.title;
  video.src = data.video;
  showSegments();
  new ResizeObserver(resize).observe(timeline);
  new ResizeObserver(renderSegmentRows).observe(segmentList);
  segmentList.addEventListener("scroll", renderSegmentRows);
  resize();
  showPlayhead(0);

  window.viewer = Object.freeze({
    columns: () => frames,
    playheadColumn: () => state.playhead,
    segments: () => state.segments.map(({ genre, start_s, end_s, mean_probability }) => (
      { genre, start_s, end_s, mean_probability })),
    view: () => ({ first: state.first, count: state.count }),
    sliderStart: () => sliderStart,
  });
})();
