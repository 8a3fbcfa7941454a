// The API as the page uses it: one image sent once, then prompted by image_id.
//
// Every answer the server can give is handled here: image_not_found (the image is sent again,
// transparently), not_ready / overloaded (wait Retry-After, then retry), 413 (the caller gets
// the code and decides: the page sends a smaller copy), network errors (a message, nothing lost).

const RETRY_CODES = new Set(["not_ready", "overloaded", "unavailable"]);
const MAX_WAIT_S = 300; // give up retrying a 503 after five minutes
const OPEN_FIELDS = { points_per_side: 1, pred_iou_thresh: 2, output: "rle" }; // no mask passes: only the image_id

export class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

async function readError(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  const error = body && body.error ? body.error : {};
  const code = error.code || (response.status === 413 ? "payload_too_large" : `http_${response.status}`);
  const message = error.message || `the server answered ${response.status} ${response.statusText}`.trim();
  const retryAfter = Number(response.headers.get("Retry-After"));
  const failure = new ApiError(response.status, code, message, error.field);
  failure.retryAfter = Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter : 2;
  return failure;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export class Api {
  // base: the API's URL prefix ("../" from /ui/); onWait(message) tells the user about retries.
  constructor(base, onWait) {
    this.base = base;
    this.onWait = onWait || (() => {});
  }

  async post(route, body) {
    const started = performance.now();
    for (;;) {
      let response;
      try {
        response = await fetch(this.base + route, {
          method: "POST",
          headers: { "Content-Type": "application/json", Accept: "application/json" },
          body: JSON.stringify(body),
        });
      } catch (cause) {
        throw new ApiError(0, "network_error",
          `cannot reach the server (${cause.message}); check that it is running and reachable, then click again: ` +
          "your image and prompts are kept.");
      }
      if (response.ok) return response.json();
      const failure = await readError(response);
      const waited = (performance.now() - started) / 1000;
      if (response.status !== 503 || !RETRY_CODES.has(failure.code) || waited > MAX_WAIT_S) throw failure;
      const reason = failure.code === "not_ready" ? "the model is still loading" : "the server is busy";
      this.onWait(`${reason}; retrying in ${failure.retryAfter} s…`);
      await sleep(failure.retryAfter * 1000);
    }
  }
}

// One image on the server: its source (a data: URL of the file, or a URL the server fetches)
// and the image_id it answered with.
export class ImageSession {
  constructor(api, source) {
    this.api = api;
    this.source = source; // {image: "data:..."} or {image_url: "https://..."}
    this.imageId = null;
    this.width = 0;
    this.height = 0;
  }

  // Sends the image (the only upload): its image_id and size; output "overlay" also returns
  // the photo as the server sees it (for a URL the browser cannot read itself).
  async open(output = "rle") {
    const answer = await this.api.post("segment_everything", { ...this.source, ...OPEN_FIELDS, output });
    this.imageId = answer.image_id;
    this.width = answer.width;
    this.height = answer.height;
    return answer;
  }

  // A request on this image by image_id; sent again with the image if the server lost it
  // (evicted from the cache, or another replica behind the load balancer).
  async call(route, fields) {
    try {
      return await this.api.post(route, { image_id: this.imageId, ...fields });
    } catch (failure) {
      if (failure.code !== "image_not_found") throw failure;
      const answer = await this.api.post(route, { ...this.source, ...fields });
      this.imageId = answer.image_id;
      return answer;
    }
  }
}
