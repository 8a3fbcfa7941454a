// Exports of the kept objects: a PNG label map and one PNG per object, COCO JSON with the
// server's RLE, and a cut-out (the photo's pixels inside the selection, transparent elsewhere).

import { maskOf } from "./masks.js";

function download(blob, name) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

function canvasBlob(canvas) {
  return new Promise((resolve, reject) => {
    canvas.toBlob((blob) => (blob ? resolve(blob) : reject(new Error("the browser could not encode the PNG"))), "image/png");
  });
}

function canvasOf(width, height) {
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  return canvas;
}

// Grey levels: object i (from 1) has value i in R, G and B; background 0. One object: 0/255.
export async function exportLabelMap(objects, width, height, name = "masks.png") {
  const canvas = canvasOf(width, height);
  const context = canvas.getContext("2d");
  const image = context.createImageData(width, height);
  const pixels = image.data;
  const single = objects.length === 1;
  for (let i = 0; i < width * height; i += 1) pixels[i * 4 + 3] = 255;
  objects.forEach((object, n) => {
    const value = single ? 255 : n + 1;
    maskOf(object).forEach((inside, i) => {
      if (inside) pixels.fill(value, i * 4, i * 4 + 3);
    });
  });
  context.putImageData(image, 0, 0);
  download(await canvasBlob(canvas), name);
}

export function exportCoco(objects, width, height, fileName) {
  const coco = {
    info: { description: "segment-anywhere", date_created: new Date().toISOString() },
    images: [{ id: 1, width, height, file_name: fileName }],
    categories: [{ id: 1, name: "object" }],
    annotations: objects.map((object, n) => ({
      id: n + 1,
      image_id: 1,
      category_id: 1,
      segmentation: object.segmentation,
      area: object.area,
      bbox: object.bbox,
      iscrowd: 0,
      score: object.score,
    })),
  };
  download(new Blob([JSON.stringify(coco)], { type: "application/json" }), "annotations.json");
}

// The photo's pixels where any of ``masks`` is set, cropped to their bounding box.
export async function exportCutout(photo, masks, name = "cutout.png") {
  const { width, height } = photo;
  const union = new Uint8Array(width * height);
  let [x0, y0, x1, y1] = [width, height, -1, -1];
  masks.forEach((mask) => mask.forEach((inside, i) => {
    if (!inside) return;
    union[i] = 1;
    const x = i % width;
    const y = (i - x) / width;
    x0 = Math.min(x0, x); y0 = Math.min(y0, y); x1 = Math.max(x1, x); y1 = Math.max(y1, y);
  }));
  if (x1 < 0) throw new Error("the selection is empty: click the object first, or keep one");
  const source = photo.getContext("2d").getImageData(0, 0, width, height);
  for (let i = 0; i < union.length; i += 1) if (!union[i]) source.data[i * 4 + 3] = 0;
  const full = canvasOf(width, height);
  full.getContext("2d").putImageData(source, 0, 0);
  const cut = canvasOf(x1 - x0 + 1, y1 - y0 + 1);
  cut.getContext("2d").drawImage(full, x0, y0, cut.width, cut.height, 0, 0, cut.width, cut.height);
  download(await canvasBlob(cut), name);
}
