"""MTCNN's three stages (facenet-pytorch's networks, weights and thresholds), run so each image's faces depend on
that image alone, in numpy around OpenVINO networks.

facenet-pytorch's batched ``detect_face`` lets the images of a batch interact. Its last stage suppresses
overlapping boxes of all images at once ("Min" NMS in numpy), keeping them apart by adding ``image index x (largest
coordinate of the batch + 1)`` to every coordinate. Box coordinates can be negative (a face cut by the top or left
edge), and the offset depends on the other images, so one image's candidate can be suppressed by its neighbour's
or ranked among them; the face box then moves by up to tens of pixels with the batch size and with which files
sit beside it. The earlier stages use the same trick through torchvision's ``batched_nms``.

Here the networks still see whole batches (the fast part), but every suppression is done per image, on that
image's candidates in the order they have when it is scored alone, so the result of an image in any batch is
its result alone. The pyramid levels P-Net looks at and the crops the second and third stages look at are all
area-resampled from one summed-area table per batch, with the sums exact (integers) and the same bins as torch's
``interpolate(mode="area")``, so they are the values facenet-pytorch computes, without a call per candidate.
Everything between the networks is float32 numpy, operation for operation as facenet-pytorch does it in torch
(``tests/test_align.py`` compares the two on images), and the networks are OpenVINO graphs
(:mod:`gan_face.graphs.mtcnn`) of facenet-pytorch's layers with its weights, shipped as
``models/mtcnn.safetensors`` (converted from its wheel by ``scripts/convert_mtcnn_weights.py``). Nothing here
imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import numpy as np

#: The weights of P-Net, R-Net and O-Net (facenet-pytorch's, MIT licence), keys ``<net>.<layer>.<tensor>``.
WEIGHTS_FILE = "mtcnn.safetensors"

#: Rows per network call. The math libraries pick their kernels by batch size, so the same image gives outputs
#: that differ in the last bits (1e-7) in batches of 1, 8 or 32, and a box edge that lands on a pixel boundary
#: can then move a whole pixel. Calls of one fixed size (the last one padded) give every image the same bits
#: wherever it sits. 8 images for P-Net, 64 crops for R-Net and 16 for O-Net (an image has about 40 R-Net and 8
#: O-Net candidates).
IMAGE_CHUNK = 8
RNET_CHUNK = 64
ONET_CHUNK = 16

_F32 = np.float32


@dataclass(frozen=True)
class Detections:
    """One image's faces in canvas pixels: ``boxes`` ``K x 4`` (x0, y0, x1, y1), ``probs`` ``K``, ``points``
    ``K x 5 x 2``; largest box first, as facenet-pytorch's ``MTCNN(select_largest=True).detect`` orders them."""

    boxes: np.ndarray
    probs: np.ndarray
    points: np.ndarray


@dataclass(frozen=True)
class Networks:
    """P-Net (one compiled graph per pyramid level's shape), R-Net and O-Net: callables from a float32 ``N x 3 x
    H x W`` batch to their outputs as numpy arrays."""

    pnet: object
    rnet: object
    onet: object


def pyramid_scales(side: int, min_face_size: int, factor: float) -> list[float]:
    """The scales at which P-Net looks at a ``side``-pixel canvas (as facenet-pytorch computes them)."""
    m = 12.0 / min_face_size
    minl = side * m
    scales = []
    scale = m
    while minl >= 12:
        scales.append(scale)
        scale *= factor
        minl *= factor
    return scales


def pyramid_levels(h: int, w: int, min_face_size: int, factor: float) -> list[tuple[float, tuple[int, int]]]:
    """Each pyramid level of an ``h x w`` canvas: its scale and P-Net's input size there (rows, columns)."""
    return [
        (scale, (int(h * scale + 1), int(w * scale + 1)))
        for scale in pyramid_scales(min(h, w), min_face_size, factor)
    ]


def detect_faces(
    canvases: np.ndarray,
    nets: Networks,
    *,
    min_face_size: int,
    thresholds: tuple[float, float, float],
    factor: float = 0.709,
) -> list[Detections]:
    """Faces in each of ``canvases`` (``N x H x W x 3`` uint8, one size); one :class:`Detections` per image."""
    n, h, w = canvases.shape[:3]
    table = _summed_area_table(canvases)
    whole = np.repeat(np.array([[0, 0, w, h]], dtype=np.int64), n, axis=0)
    every_image = np.arange(n)

    # Stage 1: P-Net over the scale pyramid, the whole batch at once; suppression per image and scale.
    per_image: list[list[np.ndarray]] = [[] for _ in range(n)]
    for scale, size in pyramid_levels(h, w, min_face_size, factor):
        level = _area_resample(table, whole, every_image, w, h, size)
        reg, probs = nets.pnet(_normalise(level))
        boxes, image_inds = _candidates(reg, probs[:, 1], scale, thresholds[0])
        for i, rows in _rows_by_image(image_inds, n):
            found = boxes[rows]
            per_image[i].append(found[nms(found[:, :4], found[:, 4], 0.5)])
    stage1 = []
    for found in per_image:
        boxes = np.concatenate(found) if found else np.zeros((0, 9), _F32)
        boxes = boxes[nms(boxes[:, :4], boxes[:, 4], 0.7)]
        width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        regressed = np.stack(
            [
                boxes[:, 0] + boxes[:, 5] * width,
                boxes[:, 1] + boxes[:, 6] * height,
                boxes[:, 2] + boxes[:, 7] * width,
                boxes[:, 3] + boxes[:, 8] * height,
                boxes[:, 4],
            ],
            axis=1,
        )
        stage1.append(_square(regressed))

    # Stage 2: R-Net on 24-pixel crops of every candidate of every image, suppression per image.
    boxes, image_inds = _drop_empty(*_concat(stage1), w, h)
    stage2: list[np.ndarray] = [np.zeros((0, 5), _F32)] * n
    if len(boxes):
        reg, probs = nets.rnet(_normalise(_area_resample(table, _clip(boxes, w, h), image_inds, w, h, (24, 24))))
        score = probs[:, 1]
        keep = score > thresholds[1]
        boxes = np.concatenate([boxes[keep, :4], score[keep, None]], axis=1)
        reg, image_inds = reg[keep], image_inds[keep]
        for i, rows in _rows_by_image(image_inds, n):
            found, moves = boxes[rows], reg[rows]
            pick = nms(found[:, :4], found[:, 4], 0.7)
            stage2[i] = _square(_regress(found[pick], moves[pick]))

    # Stage 3: O-Net on 48-pixel crops: final boxes, probabilities and landmarks; "Min" suppression per image.
    boxes, image_inds = _drop_empty(*_concat(stage2), w, h)
    results = [Detections(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2)))] * n
    if len(boxes):
        crops = _area_resample(table, _clip(boxes, w, h), image_inds, w, h, (48, 48))
        reg, marks, probs = nets.onet(_normalise(crops))
        score = probs[:, 1]
        keep = score > thresholds[2]
        boxes = np.concatenate([boxes[keep, :4], score[keep, None]], axis=1)
        reg, marks, image_inds = reg[keep], marks[keep], image_inds[keep]
        width = boxes[:, 2] - boxes[:, 0] + 1
        height = boxes[:, 3] - boxes[:, 1] + 1
        points_x = width[:, None] * marks[:, :5] + boxes[:, 0:1] - 1
        points_y = height[:, None] * marks[:, 5:10] + boxes[:, 1:2] - 1
        points = np.stack([points_x, points_y], axis=2)
        boxes = _regress(boxes, reg)
        for i, rows in _rows_by_image(image_inds, n):
            found = boxes[rows]
            pick = nms_numpy(found[:, :4], found[:, 4], 0.7, "Min").astype(np.int64)
            found, landmarks = found[pick], points[rows][pick]
            area = (found[:, 2] - found[:, 0]) * (found[:, 3] - found[:, 1])
            order = np.argsort(area)[::-1]  # the largest face first, as MTCNN(select_largest=True) has it
            results[i] = Detections(found[order, :4], found[order, 4], landmarks[order])
    return results


def _normalise(pixels: np.ndarray) -> np.ndarray:
    """MTCNN's input scaling, ``(x - 127.5) / 128`` (as facenet-pytorch writes it)."""
    return (pixels - _F32(127.5)) * _F32(0.0078125)


def _candidates(reg: np.ndarray, probs: np.ndarray, scale: float, threshold: float):
    """P-Net's windows above ``threshold`` as ``K x 9`` float32 rows (box, score, regression) and their image
    indices (facenet-pytorch's ``generateBoundingBox``: rows come image by image, each image's in raster order)."""
    stride, cellsize = 2, 12
    mask = probs >= threshold
    image_inds, ys, xs = np.nonzero(mask)
    score = probs[mask]
    moves = reg.transpose(0, 2, 3, 1)[mask]  # K x 4
    cells = np.stack([xs, ys], axis=1).astype(_F32)
    q1 = np.floor((stride * cells + 1) / _F32(scale))
    q2 = np.floor((stride * cells + cellsize - 1 + 1) / _F32(scale))
    return np.concatenate([q1, q2, score[:, None], moves], axis=1).astype(_F32), image_inds


def _rows_by_image(image_inds: np.ndarray, n: int):
    """``(image, row indices)`` for each image with rows, the rows in their original order."""
    if not len(image_inds):
        return
    order = np.argsort(image_inds, kind="stable")
    counts = np.bincount(image_inds, minlength=n)
    start = 0
    for i, count in enumerate(counts.tolist()):
        if count:
            yield i, order[start : start + count]
        start += count


def _concat(per_image: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    boxes = np.concatenate(per_image) if per_image else np.zeros((0, 5), _F32)
    inds = np.concatenate(
        [np.full(len(b), i, dtype=np.int64) for i, b in enumerate(per_image)] or [np.zeros(0, int)]
    )
    return boxes, inds


def _regress(boxes: np.ndarray, moves: np.ndarray) -> np.ndarray:
    """Boxes moved by the network's regression (facenet-pytorch's ``bbreg``)."""
    width = boxes[:, 2] - boxes[:, 0] + 1
    height = boxes[:, 3] - boxes[:, 1] + 1
    out = boxes.copy()
    out[:, 0] = boxes[:, 0] + moves[:, 0] * width
    out[:, 1] = boxes[:, 1] + moves[:, 1] * height
    out[:, 2] = boxes[:, 2] + moves[:, 2] * width
    out[:, 3] = boxes[:, 3] + moves[:, 3] * height
    return out


def _square(boxes: np.ndarray) -> np.ndarray:
    """Boxes made square around their centres, side the longer one (facenet-pytorch's ``rerec``)."""
    out = boxes.copy()
    height = boxes[:, 3] - boxes[:, 1]
    width = boxes[:, 2] - boxes[:, 0]
    side = np.maximum(width, height)
    out[:, 0] = boxes[:, 0] + width * _F32(0.5) - side * _F32(0.5)
    out[:, 1] = boxes[:, 1] + height * _F32(0.5) - side * _F32(0.5)
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def _clip(boxes: np.ndarray, w: int, h: int) -> np.ndarray:
    """Integer crop rectangles ``x0, y0, x1, y1`` (exclusive ends) clipped to the image, as facenet-pytorch's
    ``pad`` and its ``[y - 1 : ey, x - 1 : ex]`` slices make them."""
    b = np.trunc(boxes[:, :4]).astype(np.int64)
    x0 = np.maximum(b[:, 0], 1) - 1
    y0 = np.maximum(b[:, 1], 1) - 1
    x1 = np.minimum(b[:, 2], w)
    y1 = np.minimum(b[:, 3], h)
    return np.stack([x0, y0, x1, y1], axis=1)


def _drop_empty(boxes: np.ndarray, image_inds: np.ndarray, w: int, h: int):
    """Candidates whose crop would hold no pixel are dropped (facenet-pytorch skips their crops and then
    misaligns the rest)."""
    if not len(boxes):
        return boxes, image_inds
    rect = _clip(boxes, w, h)
    keep = (rect[:, 2] > rect[:, 0]) & (rect[:, 3] > rect[:, 1])
    return boxes[keep], image_inds[keep]


def _summed_area_table(canvases: np.ndarray) -> np.ndarray:
    """``(N * (H+1) * (W+1)) x 3`` int32 sums of the pixels above and left of each point, one row per point
    (at most ``H * W * 255``, exact in int32 and in float32 for canvases up to 256 pixels a side)."""
    n, h, w, c = canvases.shape
    table = np.zeros((n, h + 1, w + 1, c), dtype=np.int32)
    np.cumsum(np.cumsum(canvases, axis=1, dtype=np.int32), axis=2, out=table[:, 1:, 1:])
    return table.reshape(-1, c)


def _area_resample(
    table: np.ndarray, rect: np.ndarray, image_inds: np.ndarray, w: int, h: int, size: tuple[int, int]
) -> np.ndarray:
    """Each rectangle of its image area-resampled to ``size`` (rows, columns): ``K x 3 x rows x columns`` float32.

    The bins are ``interpolate(mode="area")``'s (adaptive average pooling: rows ``floor(i * H / size)`` to
    ``ceil((i + 1) * H / size)``), their sums exact from the summed-area table, each divided once by its area.
    """
    rows, cols = np.arange(size[0]), np.arange(size[1])
    heights = (rect[:, 3] - rect[:, 1])[:, None]
    widths = (rect[:, 2] - rect[:, 0])[:, None]
    r0 = rect[:, 1:2] + (rows * heights) // size[0]
    r1 = rect[:, 1:2] - (-(rows + 1) * heights) // size[0]
    c0 = rect[:, 0:1] + (cols * widths) // size[1]
    c1 = rect[:, 0:1] - (-(cols + 1) * widths) // size[1]
    base = image_inds.astype(np.int64)[:, None, None] * ((h + 1) * (w + 1))
    row0, row1 = base + r0[:, :, None] * (w + 1), base + r1[:, :, None] * (w + 1)
    col0, col1 = c0[:, None, :], c1[:, None, :]

    def at(index: np.ndarray) -> np.ndarray:
        return np.take(table, index, axis=0)  # 4x faster than table[index] for rows of 3

    sums = at(row1 + col1) - at(row0 + col1) - at(row1 + col0) + at(row0 + col0)  # K x r x c x 3
    area = (r1 - r0)[:, :, None] * (c1 - c0)[:, None, :]
    return (sums.astype(_F32) / area.astype(_F32)[..., None]).transpose(0, 3, 1, 2)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """torchvision's ``ops.nms`` in numpy: indices of the boxes kept, by decreasing score (ties in input order);
    a box is dropped when its intersection over union with a kept one exceeds ``threshold``. Same float32
    arithmetic (the overlap is symmetric, so a matrix of all pairs holds the values torchvision computes one by
    one), so the same decisions."""
    b = np.asarray(boxes, dtype=_F32)
    order = np.argsort(-np.asarray(scores), kind="stable")
    b = b[order]
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    w = np.maximum(_F32(0), np.minimum(x2[:, None], x2[None]) - np.maximum(x1[:, None], x1[None]))
    h = np.maximum(_F32(0), np.minimum(y2[:, None], y2[None]) - np.maximum(y1[:, None], y1[None]))
    inter = w * h
    with np.errstate(divide="ignore", invalid="ignore"):
        overlap = inter / (areas[:, None] + areas[None] - inter)
    suppresses = np.triu(overlap.astype(np.float64) > threshold, 1)  # only boxes ranked below can be dropped
    removed = np.zeros(len(b), dtype=bool)
    keep = []
    for i in range(len(b)):
        if not removed[i]:
            keep.append(i)
            removed |= suppresses[i]
    return order[np.array(keep, dtype=np.int64)]


def nms_numpy(boxes: np.ndarray, scores: np.ndarray, threshold: float, method: str) -> np.ndarray:
    """facenet-pytorch's ``nms_numpy`` (its last stage's "Min" suppression), kept as it is written there."""
    if boxes.size == 0:
        return np.empty((0, 3))
    x1, y1, x2, y2 = (boxes[:, k].copy() for k in range(4))
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(scores)
    pick = np.zeros_like(scores, dtype=np.int16)
    counter = 0
    while order.size > 0:
        i = order[-1]
        pick[counter] = i
        counter += 1
        idx = order[0:-1]
        w = np.maximum(0.0, np.minimum(x2[i], x2[idx]) - np.maximum(x1[i], x1[idx]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[idx]) - np.maximum(y1[i], y1[idx]) + 1)
        inter = w * h
        if method == "Min":
            o = inter / np.minimum(area[i], area[idx])
        else:
            o = inter / (area[i] + area[idx] - inter)
        order = order[np.where(o <= threshold)]
    return pick[:counter].copy()


def load_weights() -> dict[str, dict[str, np.ndarray]]:
    """P-Net's, R-Net's and O-Net's tensors (float32) from the file shipped with the package, by network."""
    from safetensors.numpy import load_file

    path = resources.files("gan_face.models").joinpath(WEIGHTS_FILE)
    flat = load_file(str(path))
    nets: dict[str, dict[str, np.ndarray]] = {"pnet": {}, "rnet": {}, "onet": {}}
    for key, tensor in flat.items():
        net, name = key.split(".", 1)
        nets[net][name] = tensor.astype(_F32)
    return nets


def load_nets(device: str = "CPU", streams: int = 1) -> Networks:
    """The three networks, compiled for OpenVINO ``device`` with ``streams`` inferences able to run at once."""
    from .graphs.mtcnn import onet, pnet, rnet
    from .graphs.runtime import CompiledNetwork, ShapeCache

    weights = load_weights()
    return Networks(
        pnet=ShapeCache(lambda h, w, rows: pnet(weights["pnet"], h, w, rows), IMAGE_CHUNK, device, streams),
        rnet=CompiledNetwork(rnet(weights["rnet"], RNET_CHUNK), RNET_CHUNK, device, streams),
        onet=CompiledNetwork(onet(weights["onet"], ONET_CHUNK), ONET_CHUNK, device, streams),
    )
