"""Request and response models of the HTTP API (pydantic), with their documentation.

Coordinates are pixels of the original image (after EXIF orientation), x to the right,
y down; boxes are (x0, y0, x1, y1); bboxes in responses are COCO's (x, y, width, height).
Limits that depend on settings (prompt counts) or on the image (coordinate ranges) are
checked by the pipeline; everything checkable from the body alone is checked here.
"""

from __future__ import annotations

import base64
from typing import Any, Literal, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .outputs import OUTPUT_FORMATS

Point = tuple[float, float]
Box = tuple[float, float, float, float]
OutputFormat = Literal["rle", "png", "polygon", "overlay"]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# /embed with ``Accept: application/x-npy``: the embedding as a NumPy .npy file, the rest of
# EmbedResponse in these headers (sizes as "height,width").
NPY_MEDIA_TYPE = "application/x-npy"
EMBED_HEADERS = ("x-segany-image-id", "x-segany-model", "x-segany-original-size", "x-segany-input-size")


class ArrayPayload(BaseModel):
    """A numeric array: base64 of its little-endian, C-order bytes, with shape and dtype."""

    model_config = ConfigDict(extra="forbid")

    shape: list[int] = Field(description="dimensions, outermost first")
    dtype: Literal["float32", "float16"]
    data: str = Field(description="base64 of the raw little-endian bytes")

    @classmethod
    def from_numpy(cls, array: np.ndarray, dtype: str = "float32") -> "ArrayPayload":
        raw = np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<"))
        return cls(shape=list(raw.shape), dtype=dtype, data=base64.b64encode(raw.tobytes()).decode("ascii"))

    def to_numpy(self) -> np.ndarray:
        raw = base64.b64decode(self.data, validate=True)
        array = np.frombuffer(raw, dtype=np.dtype(self.dtype).newbyteorder("<"))
        if array.size != int(np.prod(self.shape)):
            raise ValueError(f"data holds {array.size} values but shape {self.shape} needs {int(np.prod(self.shape))}")
        return array.reshape(self.shape).astype(np.float32)


class ImageRequest(_Request):
    """Exactly one image source. Multipart uploads and raw image bodies arrive here as ``image``."""

    image: Optional[str] = Field(None, description="the image file (JPEG, PNG or WebP), base64; a data: URL is fine")
    image_id: Optional[str] = Field(None, description="image_id from an earlier response: reuses its cached embedding")
    image_url: Optional[str] = Field(None, description="https://, s3:// or gs:// URL the server downloads the image from")

    @model_validator(mode="after")
    def _one_image_source(self) -> "ImageRequest":
        given = [name for name in ("image", "image_id", "image_url") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                f"send exactly one of image (base64 or a file upload), image_id or image_url; got {given or 'none'}"
            )
        return self


class SegmentRequest(ImageRequest):
    """Prompts -> masks, as ``SamPredictor.predict``. Several boxes give one result per box,
    the points (if any) applying to each box."""

    points: Optional[list[Point]] = Field(None, description="[[x, y], ...] pixel coordinates")
    labels: Optional[list[Literal[0, 1]]] = Field(None, description="one per point: 1 foreground, 0 background")
    boxes: Optional[list[Box]] = Field(None, description="[[x0, y0, x1, y1], ...] pixel coordinates")
    multimask: Optional[bool] = Field(None, description="3 masks per prompt; default true for a single point alone")
    mask_input: Optional[ArrayPayload | list[list[float]] | list[list[list[float]]]] = Field(
        None, description="low-res logits (1, 256, 256) from an earlier response's low_res_logits"
    )
    output: OutputFormat = Field("rle", description=f"mask format: {', '.join(OUTPUT_FORMATS)}")
    return_logits: bool = Field(False, description="include each result's low-res logits (for mask_input)")

    @model_validator(mode="after")
    def _prompts_consistent(self) -> "SegmentRequest":
        if self.points is not None and self.labels is None:
            raise ValueError("labels is missing: send one label per point (1 foreground, 0 background)")
        if self.labels is not None and self.points is None:
            raise ValueError("labels were sent without points")
        if self.points is not None and len(self.points) != len(self.labels or []):
            raise ValueError(f"points has {len(self.points)} entries but labels has {len(self.labels or [])}; send one label per point")
        if self.points == [] or self.boxes == []:
            raise ValueError("points and boxes, when sent, must not be empty")
        if self.points is None and self.boxes is None and self.mask_input is None:
            raise ValueError("no prompt: send points with labels, boxes, or mask_input")
        self.mask_input_array()  # shape and values
        return self

    def mask_input_array(self) -> np.ndarray | None:
        """mask_input as (1, 256, 256) float32."""
        if self.mask_input is None:
            return None
        array = self.mask_input.to_numpy() if isinstance(self.mask_input, ArrayPayload) else np.asarray(self.mask_input, np.float32)
        if array.size != 256 * 256:
            raise ValueError(f"mask_input must be 256x256 low-res logits, got shape {list(array.shape)}")
        if not np.isfinite(array).all():
            raise ValueError("mask_input holds NaN or infinite values")
        return array.reshape(1, 256, 256)


class EverythingRequest(ImageRequest):
    """All instances, as ``SamAutomaticMaskGenerator`` with these parameters (its defaults)."""

    points_per_side: int = Field(32, ge=1, description="grid of n x n point prompts")
    points_per_batch: int = Field(64, ge=1, le=4096, description="point prompts per decoder forward")
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = Field(0.7, ge=0.0, le=1.0)
    crop_n_layers: int = Field(0, ge=0, le=3)
    crop_nms_thresh: float = Field(0.7, ge=0.0, le=1.0)
    crop_overlap_ratio: float = Field(512 / 1500, ge=0.0, lt=1.0)
    crop_n_points_downscale_factor: int = Field(1, ge=1)
    min_mask_region_area: int = Field(0, ge=0)
    output: OutputFormat = "rle"

    @model_validator(mode="after")
    def _every_crop_layer_has_points(self) -> "EverythingRequest":
        deepest = int(self.points_per_side / self.crop_n_points_downscale_factor**self.crop_n_layers)
        if deepest < 1:  # the generator would divide by zero building that layer's grid
            raise ValueError(
                f"crop layer {self.crop_n_layers} would get points_per_side {self.points_per_side} / "
                f"{self.crop_n_points_downscale_factor}**{self.crop_n_layers} < 1 points per side; raise points_per_side "
                "or lower crop_n_layers or crop_n_points_downscale_factor"
            )
        return self

    def generator_kwargs(self) -> dict[str, Any]:
        return self.model_dump(exclude={"image", "image_id", "image_url", "output"})


class EmbedRequest(ImageRequest):
    dtype: Literal["float32", "float16"] = Field("float32", description="dtype of the returned embedding")


# --- responses ------------------------------------------------------------------------------------


class MaskResult(BaseModel):
    segmentation: Any = Field(description="rle: {size, counts}; png: base64 PNG; polygon: regions; overlay: null")
    score: float = Field(description="the decoder's predicted IoU")
    bbox: list[float] = Field(description="[x, y, width, height]")
    area: int


class PromptResult(BaseModel):
    masks: list[MaskResult]
    low_res_logits: Optional[ArrayPayload] = None


class SegmentResponse(BaseModel):
    image_id: str = Field(description="send it as image_id to prompt this image again without re-sending it")
    width: int
    height: int
    output: str
    results: list[PromptResult] = Field(description="one per prompt (one per box when boxes are sent)")
    overlay: Optional[str] = Field(None, description="output=overlay: base64 PNG of the masks over the image")


class Instance(BaseModel):
    segmentation: Any
    bbox: list[float]
    area: int
    predicted_iou: float
    stability_score: float
    point_coords: list[list[float]]
    crop_box: list[float]


class EverythingResponse(BaseModel):
    image_id: str
    width: int
    height: int
    output: str
    instances: list[Instance]
    overlay: Optional[str] = None


class EmbedResponse(BaseModel):
    image_id: str
    model: str
    embedding: ArrayPayload = Field(description="(1, 256, 64, 64) image embedding")
    original_size: list[int] = Field(description="[height, width] of the image")
    input_size: list[int] = Field(description="[height, width] after resizing the long side to 1024")
