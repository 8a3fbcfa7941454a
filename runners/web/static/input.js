// Pointer and keyboard input: clicks become points, drags become boxes, keys become actions.
// Pointer events cover mouse, pen and touch (a tablet: tap = point, drag = box).

const DRAG_PX = 6; // a move shorter than this (CSS pixels) is a click

// Calls onPoint(x, y, background) and onBox(x0, y0, x1, y1) in image pixels; onDrag(box|null)
// while a box is being drawn. ``size()`` gives the image's [width, height].
export function bindPointer(canvas, size, { onPoint, onBox, onDrag }) {
  let start = null;

  const toImage = (event) => {
    const rect = canvas.getBoundingClientRect();
    const [width, height] = size();
    const x = ((event.clientX - rect.left) / rect.width) * width;
    const y = ((event.clientY - rect.top) / rect.height) * height;
    return [Math.min(Math.max(x, 0), width), Math.min(Math.max(y, 0), height)];
  };

  canvas.addEventListener("contextmenu", (event) => event.preventDefault());
  canvas.addEventListener("pointerdown", (event) => {
    if (event.button !== 0 && event.button !== 2) return;
    event.preventDefault();
    canvas.setPointerCapture(event.pointerId);
    start = { event, at: toImage(event), dragging: false };
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!start) return;
    const moved = Math.hypot(event.clientX - start.event.clientX, event.clientY - start.event.clientY);
    if (moved >= DRAG_PX) start.dragging = true;
    if (start.dragging) onDrag([...start.at, ...toImage(event)]);
  });
  canvas.addEventListener("pointerup", (event) => {
    if (!start) return;
    const begun = start;
    start = null;
    if (begun.dragging) {
      const [ax, ay] = begun.at;
      const [bx, by] = toImage(event);
      onDrag(null);
      onBox(Math.min(ax, bx), Math.min(ay, by), Math.max(ax, bx), Math.max(ay, by));
    } else {
      const background = begun.event.button === 2 || begun.event.shiftKey || begun.event.altKey;
      onPoint(...begun.at, background);
    }
  });
  canvas.addEventListener("pointercancel", () => {
    start = null;
    onDrag(null);
  });
}

// Shortcuts, ignored while typing in a field. ``actions``: name -> function.
export function bindKeys(actions) {
  document.addEventListener("keydown", (event) => {
    const target = event.target;
    if (target instanceof HTMLInputElement && target.type !== "radio") return;
    if (target instanceof HTMLTextAreaElement) return;
    const key = event.key.toLowerCase();
    let action = null;
    if (key === "z" && !event.shiftKey) action = "undo";
    else if (key === "escape") action = "clear";
    else if (event.ctrlKey || event.metaKey || event.altKey) action = null;
    else if (key === "m") action = "mode";
    else if (key === "e") action = "everything";
    else if (key === "k") action = "keep";
    else if (key === "o") action = "open";
    else if (["1", "2", "3"].includes(key)) action = `candidate${key}`;
    if (action && actions[action]) {
      event.preventDefault();
      actions[action]();
    }
  });
}
