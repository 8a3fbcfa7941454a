// Masks: COCO compressed RLE decoded in the browser, drawn as tinted layers, and colours.

// pycocotools' rleFrString: counts as 6-bit chunks offset by 48, deltas from two counts back.
export function rleCounts(text) {
  const counts = [];
  let p = 0;
  while (p < text.length) {
    let x = 0;
    let k = 0;
    let more = true;
    while (more) {
      const c = text.charCodeAt(p) - 48;
      x |= (c & 0x1f) << (5 * k);
      more = (c & 0x20) !== 0;
      p += 1;
      k += 1;
      if (!more && (c & 0x10)) x |= -1 << (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  return counts;
}

// {size: [h, w], counts} -> Uint8Array of h*w (row-major, 1 inside). RLE runs are column-major:
// filled as runs, then transposed.
export function decodeRle(rle) {
  const [height, width] = rle.size;
  const counts = typeof rle.counts === "string" ? rleCounts(rle.counts) : rle.counts;
  const columns = new Uint8Array(height * width);
  let index = 0;
  counts.forEach((run, i) => {
    if (i % 2 === 1) columns.fill(1, index, index + run);
    index += run;
  });
  const mask = new Uint8Array(height * width);
  for (let x = 0; x < width; x += 1) {
    const column = x * height;
    for (let y = 0, row = x; y < height; y += 1, row += width) mask[row] = columns[column + y];
  }
  return mask;
}

// The decoded mask of an answer's mask or instance, decoded once, when first drawn.
export function maskOf(entry) {
  if (!entry.mask) entry.mask = decodeRle(entry.segmentation);
  return entry.mask;
}

// Distinct colours: hues spread by the golden angle.
export function colour(i) {
  const hue = (i * 137.508 + 200) % 360;
  const s = 0.75;
  const l = 0.5;
  const f = (n) => {
    const k = (n + hue / 30) % 12;
    return Math.round(255 * (l - s * Math.min(l, 1 - l) * Math.max(-1, Math.min(k - 3, 9 - k, 1))));
  };
  return [f(0), f(8), f(4)];
}

export const SELECTION_COLOUR = [30, 144, 255];
const ALPHA = 140;

// Draws masks (Uint8Array each) over a transparent layer, each in its colour.
export function paintMasks(canvas, masks, colours) {
  const context = canvas.getContext("2d");
  const image = context.createImageData(canvas.width, canvas.height);
  const pixels = image.data;
  masks.forEach((mask, m) => {
    const [r, g, b] = colours[m];
    for (let i = 0; i < mask.length; i += 1) {
      if (mask[i]) {
        const o = i * 4;
        pixels[o] = r;
        pixels[o + 1] = g;
        pixels[o + 2] = b;
        pixels[o + 3] = ALPHA;
      }
    }
  });
  context.putImageData(image, 0, 0);
}

export function clearCanvas(canvas) {
  canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
}
