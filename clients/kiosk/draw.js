// The visitor's paint: a canvas at the map's own resolution, laid over the map image.
// Pointer events, so mouse, touch and pen all draw; one pointer at a time.
//
// The canvas keeps the paint in one colour at full strength; the mask sent to the server
// (maskDataUrl) is the kiosk convention: an RGBA PNG of the map's size, painted pixels
// opaque white, everything else fully transparent (app/imaging/masks.py: alpha > 0 changes).

const PAINT = "rgb(255, 61, 165)";
const SIZES = [0.03, 0.06, 0.11]; // brush diameters, as a share of the map's width
const UNDO_LIMIT = 30;

export class Painter {
  constructor(canvas, { onChange = () => {}, onInput = () => {} } = {}) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d", { willReadFrequently: true });
    this.onChange = onChange;
    this.onInput = onInput;
    this.mode = "brush";
    this.sizeIndex = 1;
    this.history = [];
    this.pointerId = null;
    this.last = null;
    this.enabled = true;
    this.keyCursor = null; // keyboard painting: a crosshair moved with the arrow keys
    this.keyPainting = false; // Space toggles painting while the crosshair moves
    this.cursorEl = null;
    this._bind();
  }

  setSize(width, height) {
    this.canvas.width = width;
    this.canvas.height = height;
    this.history = [];
    this.keyCursor = { x: width / 2, y: height / 2 };
    this.onChange();
  }

  get brushDiameter() {
    return Math.max(2, Math.round(SIZES[this.sizeIndex] * this.canvas.width));
  }

  setMode(mode) {
    this.mode = mode === "eraser" ? "eraser" : "brush";
  }

  setSizeIndex(index) {
    this.sizeIndex = Math.min(Math.max(index, 0), SIZES.length - 1);
  }

  get canUndo() {
    return this.history.length > 0;
  }

  get isEmpty() {
    const { width, height } = this.canvas;
    if (!width || !height) return true;
    const data = this.ctx.getImageData(0, 0, width, height).data;
    for (let i = 3; i < data.length; i += 4) if (data[i] >= 128) return false;
    return true;
  }

  undo() {
    const snapshot = this.history.pop();
    if (snapshot) this.ctx.putImageData(snapshot, 0, 0);
    this.onChange();
  }

  clear() {
    if (this.isEmpty) return;
    this._remember();
    this.ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    this.onChange();
  }

  reset() {
    this.ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    this.history = [];
    this.pointerId = null;
    this.onChange();
  }

  // The mask for POST /inpaint: binary (alpha 0 or 255), white where painted.
  maskDataUrl() {
    const { width, height } = this.canvas;
    const out = document.createElement("canvas");
    out.width = width;
    out.height = height;
    const octx = out.getContext("2d");
    const src = this.ctx.getImageData(0, 0, width, height);
    const img = octx.createImageData(width, height);
    for (let i = 0; i < src.data.length; i += 4) {
      const on = src.data[i + 3] >= 128 ? 255 : 0;
      img.data[i] = img.data[i + 1] = img.data[i + 2] = on;
      img.data[i + 3] = on;
    }
    octx.putImageData(img, 0, 0);
    return out.toDataURL("image/png");
  }

  // --- drawing -------------------------------------------------------------------------
  _remember() {
    const { width, height } = this.canvas;
    this.history.push(this.ctx.getImageData(0, 0, width, height));
    if (this.history.length > UNDO_LIMIT) this.history.shift();
  }

  _toMap(event) {
    const rect = this.canvas.getBoundingClientRect();
    return {
      x: ((event.clientX - rect.left) / rect.width) * this.canvas.width,
      y: ((event.clientY - rect.top) / rect.height) * this.canvas.height,
    };
  }

  _stroke(from, to) {
    const ctx = this.ctx;
    ctx.save();
    ctx.globalCompositeOperation = this.mode === "eraser" ? "destination-out" : "source-over";
    ctx.strokeStyle = ctx.fillStyle = PAINT;
    ctx.lineWidth = this.brushDiameter;
    ctx.lineCap = ctx.lineJoin = "round";
    ctx.beginPath();
    if (from.x === to.x && from.y === to.y) {
      ctx.arc(to.x, to.y, this.brushDiameter / 2, 0, Math.PI * 2);
      ctx.fill();
    } else {
      ctx.moveTo(from.x, from.y);
      ctx.lineTo(to.x, to.y);
      ctx.stroke();
    }
    ctx.restore();
  }

  _bind() {
    const c = this.canvas;
    c.addEventListener("pointerdown", (e) => {
      if (!this.enabled || this.pointerId !== null) return;
      if (e.pointerType === "mouse" && e.button !== 0) return;
      e.preventDefault();
      this.pointerId = e.pointerId;
      try { c.setPointerCapture(e.pointerId); } catch { /* synthetic events */ }
      this._remember();
      const p = this._toMap(e);
      this._stroke(p, p);
      this.last = p;
      this.onInput();
    });
    c.addEventListener("pointermove", (e) => {
      if (e.pointerId !== this.pointerId || !this.last) return;
      e.preventDefault();
      const events = typeof e.getCoalescedEvents === "function" ? e.getCoalescedEvents() : [];
      for (const ev of events.length ? events : [e]) {
        const p = this._toMap(ev);
        this._stroke(this.last, p);
        this.last = p;
      }
      this.onInput();
    });
    const end = (e) => {
      if (e.pointerId !== this.pointerId) return;
      this.pointerId = null;
      this.last = null;
      try { c.releasePointerCapture(e.pointerId); } catch { /* already released */ }
      this.onChange();
    };
    c.addEventListener("pointerup", end);
    c.addEventListener("pointercancel", end);
    c.addEventListener("lostpointercapture", end);
    c.addEventListener("contextmenu", (e) => e.preventDefault());

    // Keyboard: arrows move a crosshair, Space/Enter paints a dab (Shift: bigger steps).
    c.addEventListener("keydown", (e) => {
      if (!this.enabled || !this.keyCursor) return;
      const step = (e.shiftKey ? 0.08 : 0.025) * this.canvas.width;
      const moves = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
      if (moves[e.key]) {
        const [dx, dy] = moves[e.key];
        const from = { ...this.keyCursor };
        this.keyCursor.x = Math.min(Math.max(from.x + dx * step, 0), this.canvas.width);
        this.keyCursor.y = Math.min(Math.max(from.y + dy * step, 0), this.canvas.height);
        if (this.keyPainting) this._stroke(from, this.keyCursor);
      } else if (e.key === " " || e.key === "Enter") {
        if (!this.keyPainting) this._remember();
        this.keyPainting = e.key === " " ? !this.keyPainting : false;
        this._stroke(this.keyCursor, this.keyCursor);
        this.onChange();
      } else {
        return;
      }
      e.preventDefault();
      this._showCursor();
      this.onInput();
    });
    c.addEventListener("focus", () => this._showCursor());
    c.addEventListener("blur", () => {
      this.keyPainting = false;
      if (this.cursorEl) this.cursorEl.hidden = true;
      this.onChange();
    });
  }

  _showCursor() {
    if (!this.cursorEl || !this.keyCursor || this.canvas.offsetParent === null) return;
    const d = (this.brushDiameter / this.canvas.width) * 100;
    const s = this.cursorEl.style;
    s.left = `${(this.keyCursor.x / this.canvas.width) * 100}%`;
    s.top = `${(this.keyCursor.y / this.canvas.height) * 100}%`;
    s.width = `${d}%`; // a circle: aspect-ratio 1 in kiosk.css
    this.cursorEl.classList.toggle("painting", !!this.keyPainting);
    this.cursorEl.hidden = false;
  }
}
