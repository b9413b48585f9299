"""MTCNN's three stages (facenet-pytorch's networks and thresholds), run so each image's faces depend on that
image alone.

facenet-pytorch's batched ``detect_face`` lets the images of a batch interact. Its last stage suppresses
overlapping boxes of all images at once ("Min" NMS in numpy), keeping them apart by adding ``image index x (largest
coordinate of the batch + 1)`` to every coordinate. Box coordinates can be negative (a face cut by the top or left
edge), and the offset depends on the other images, so one image's candidate can be suppressed by its neighbour's
or ranked among them; the face box then moves by up to tens of pixels with the batch size and with which files
sit beside it. The earlier stages use the same trick through torchvision's ``batched_nms``.

The three networks are facenet-pytorch's (their architecture is written out below and their weights are read
from the files in its wheel), so neither facenet-pytorch's code nor torchvision is imported: that import cost
about 3 seconds of every command's start-up. The suppression is torchvision's ``nms`` and facenet-pytorch's
"Min" NMS redone in numpy, decision for decision (``tests/test_align.py`` compares them).

Here the networks still see whole batches (the fast part), but every suppression is done per image, on that
image's candidates in the order they have when it is scored alone, so the result of an image in any batch is
its result alone. The crops the second and third stages look at are cut and area-resampled for all candidates
at once from a summed-area table, with the sums exact (integers) and the same bins as ``interpolate(mode="area")``,
instead of one ``interpolate`` call per candidate (that loop was a third of detection time).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.functional import interpolate


@dataclass(frozen=True)
class Detections:
    """One image's faces in canvas pixels: ``boxes`` ``K x 4`` (x0, y0, x1, y1), ``probs`` ``K``, ``points``
    ``K x 5 x 2``; largest box first, as facenet-pytorch's ``MTCNN(select_largest=True).detect`` orders them."""

    boxes: np.ndarray
    probs: np.ndarray
    points: np.ndarray


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


def detect_faces(
    canvases: np.ndarray,
    pnet: torch.nn.Module,
    rnet: torch.nn.Module,
    onet: torch.nn.Module,
    *,
    min_face_size: int,
    thresholds: tuple[float, float, float],
    factor: float = 0.709,
    device: torch.device | str | None = None,
) -> list[Detections]:
    """Faces in each of ``canvases`` (``N x H x W x 3`` uint8, one size); one :class:`Detections` per image."""
    n, h, w = canvases.shape[:3]
    device = torch.device(device or "cpu")
    images = torch.as_tensor(np.ascontiguousarray(canvases), device=device).permute(0, 3, 1, 2).float()

    # Stage 1: P-Net over the scale pyramid, the whole batch at once; suppression per image and scale.
    per_image: list[list[torch.Tensor]] = [[] for _ in range(n)]
    for scale in pyramid_scales(min(h, w), min_face_size, factor):
        resized = interpolate(images, size=(int(h * scale + 1), int(w * scale + 1)), mode="area")
        reg, probs = _in_chunks(pnet, (resized - 127.5) * 0.0078125, IMAGE_CHUNK)
        boxes, image_inds = _candidates(reg, probs[:, 1], scale, thresholds[0])
        for i, rows in _rows_by_image(image_inds, n):
            found = boxes[rows]
            per_image[i].append(found[nms(found[:, :4], found[:, 4], 0.5)])
    stage1 = []
    for found in per_image:
        boxes = torch.cat(found) if found else torch.zeros(0, 9, device=device)
        boxes = boxes[nms(boxes[:, :4], boxes[:, 4], 0.7)]
        width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        regressed = torch.stack(
            [
                boxes[:, 0] + boxes[:, 5] * width,
                boxes[:, 1] + boxes[:, 6] * height,
                boxes[:, 2] + boxes[:, 7] * width,
                boxes[:, 3] + boxes[:, 8] * height,
                boxes[:, 4],
            ],
            dim=1,
        )
        stage1.append(_square(regressed))

    table = _summed_area_table(canvases)

    # Stage 2: R-Net on 24-pixel crops of every candidate of every image, suppression per image.
    boxes, image_inds = _concat(stage1, device)
    boxes, image_inds = _drop_empty(boxes, image_inds, w, h)
    stage2: list[torch.Tensor] = [torch.zeros(0, 5, device=device)] * n
    if len(boxes):
        reg, probs = _run(rnet, _crops(table, boxes, image_inds, w, h, 24, device), RNET_CHUNK)
        score = probs[:, 1]
        keep = score > thresholds[1]
        boxes = torch.cat([boxes[keep, :4], score[keep, None]], dim=1)
        reg, image_inds = reg[keep], image_inds[keep]
        for i, rows in _rows_by_image(image_inds, n):
            found, moves = boxes[rows], reg[rows]
            pick = nms(found[:, :4], found[:, 4], 0.7)
            stage2[i] = _square(_regress(found[pick], moves[pick]))

    # Stage 3: O-Net on 48-pixel crops: final boxes, probabilities and landmarks; "Min" suppression per image.
    boxes, image_inds = _concat(stage2, device)
    boxes, image_inds = _drop_empty(boxes, image_inds, w, h)
    results = [Detections(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2)))] * n
    if len(boxes):
        reg, marks, probs = _run(onet, _crops(table, boxes, image_inds, w, h, 48, device), ONET_CHUNK)
        score = probs[:, 1]
        keep = score > thresholds[2]
        boxes = torch.cat([boxes[keep, :4], score[keep, None]], dim=1)
        reg, marks, image_inds = reg[keep], marks[keep], image_inds[keep]
        width = boxes[:, 2] - boxes[:, 0] + 1
        height = boxes[:, 3] - boxes[:, 1] + 1
        points_x = width[:, None] * marks[:, :5] + boxes[:, 0:1] - 1
        points_y = height[:, None] * marks[:, 5:10] + boxes[:, 1:2] - 1
        points = torch.stack([points_x, points_y], dim=2)
        boxes = _regress(boxes, reg)
        for i, rows in _rows_by_image(image_inds, n):
            found = boxes[rows].cpu().numpy()
            pick = nms_numpy(found[:, :4], found[:, 4], 0.7, "Min").astype(np.int64)
            found, landmarks = found[pick], points[rows].cpu().numpy()[pick]
            area = (found[:, 2] - found[:, 0]) * (found[:, 3] - found[:, 1])
            order = np.argsort(area)[::-1]  # the largest face first, as MTCNN(select_largest=True) has it
            results[i] = Detections(found[order, :4], found[order, 4], landmarks[order])
    return results


def _run(net: torch.nn.Module, crops: torch.Tensor, chunk: int) -> tuple[torch.Tensor, ...]:
    return _in_chunks(net, (crops - 127.5) * 0.0078125, chunk)


#: Rows per network call. The math libraries pick their kernels by batch size, so the same image gives outputs
#: that differ in the last bits (1e-7) in batches of 1, 8 or 32, and a box edge that lands on a pixel boundary
#: can then move a whole pixel. Calls of one fixed size (the last one padded) give every image the same bits
#: wherever it sits. 8 images for P-Net, 64 crops for R-Net and 16 for O-Net (the last call is padded, and an
#: image has about 40 R-Net and 8 O-Net candidates) cost about the same per image as larger batches.
IMAGE_CHUNK = 8
RNET_CHUNK = 64
ONET_CHUNK = 16


def _in_chunks(net: torch.nn.Module, x: torch.Tensor, chunk: int) -> tuple[torch.Tensor, ...]:
    """``net(x)`` in calls of exactly ``chunk`` rows (the last one padded with zeros), trimmed to ``len(x)``."""
    outputs = []
    for start in range(0, len(x), chunk):
        part = x[start : start + chunk]
        if len(part) < chunk:
            part = torch.cat([part, part.new_zeros((chunk - len(part), *part.shape[1:]))])
        outputs.append(net(part))
    return tuple(torch.cat(parts)[: len(x)] for parts in zip(*outputs))


def _candidates(reg: torch.Tensor, probs: torch.Tensor, scale: float, threshold: float):
    """P-Net's windows above ``threshold`` as ``K x 9`` rows (box, score, regression) and their image indices
    (facenet-pytorch's ``generateBoundingBox``: rows come image by image, each image's in raster order)."""
    stride, cellsize = 2, 12
    reg = reg.permute(1, 0, 2, 3)
    mask = probs >= threshold
    where = mask.nonzero()
    image_inds = where[:, 0]
    score = probs[mask]
    reg = reg[:, mask].permute(1, 0)
    cells = where[:, 1:].to(reg.dtype).flip(1)
    q1 = ((stride * cells + 1) / scale).floor()
    q2 = ((stride * cells + cellsize - 1 + 1) / scale).floor()
    return torch.cat([q1, q2, score.unsqueeze(1), reg], dim=1), image_inds


def _rows_by_image(image_inds: torch.Tensor, n: int):
    """``(image, row indices)`` for each image with rows, the rows in their original order."""
    if not len(image_inds):
        return
    order = torch.argsort(image_inds, stable=True)
    counts = torch.bincount(image_inds, minlength=n).tolist()
    start = 0
    for i, count in enumerate(counts):
        if count:
            yield i, order[start : start + count]
        start += count


def _concat(per_image: list[torch.Tensor], device) -> tuple[torch.Tensor, torch.Tensor]:
    boxes = torch.cat(per_image) if per_image else torch.zeros(0, 5, device=device)
    inds = torch.cat([torch.full((len(b),), i, dtype=torch.long, device=device) for i, b in enumerate(per_image)])
    return boxes, inds


def _regress(boxes: torch.Tensor, moves: torch.Tensor) -> torch.Tensor:
    """Boxes moved by the network's regression (facenet-pytorch's ``bbreg``)."""
    width = boxes[:, 2] - boxes[:, 0] + 1
    height = boxes[:, 3] - boxes[:, 1] + 1
    out = boxes.clone()
    out[:, :4] = torch.stack(
        [
            boxes[:, 0] + moves[:, 0] * width,
            boxes[:, 1] + moves[:, 1] * height,
            boxes[:, 2] + moves[:, 2] * width,
            boxes[:, 3] + moves[:, 3] * height,
        ],
        dim=1,
    )
    return out


def _square(boxes: torch.Tensor) -> torch.Tensor:
    """Boxes made square around their centres, side the longer one (facenet-pytorch's ``rerec``)."""
    out = boxes.clone()
    height = boxes[:, 3] - boxes[:, 1]
    width = boxes[:, 2] - boxes[:, 0]
    side = torch.max(width, height)
    out[:, 0] = boxes[:, 0] + width * 0.5 - side * 0.5
    out[:, 1] = boxes[:, 1] + height * 0.5 - side * 0.5
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def _clip(boxes: torch.Tensor, w: int, h: int) -> np.ndarray:
    """Integer crop rectangles ``x0, y0, x1, y1`` (exclusive ends) clipped to the image, as facenet-pytorch's
    ``pad`` and its ``[y - 1 : ey, x - 1 : ex]`` slices make them."""
    b = boxes[:, :4].trunc().int().cpu().numpy().astype(np.int64)
    x0 = np.maximum(b[:, 0], 1) - 1
    y0 = np.maximum(b[:, 1], 1) - 1
    x1 = np.minimum(b[:, 2], w)
    y1 = np.minimum(b[:, 3], h)
    return np.stack([x0, y0, x1, y1], axis=1)


def _drop_empty(boxes: torch.Tensor, image_inds: torch.Tensor, w: int, h: int):
    """Candidates whose crop would hold no pixel are dropped (facenet-pytorch skips their crops and then
    misaligns the rest)."""
    if not len(boxes):
        return boxes, image_inds
    rect = _clip(boxes, w, h)
    keep = torch.as_tensor((rect[:, 2] > rect[:, 0]) & (rect[:, 3] > rect[:, 1]), device=boxes.device)
    return boxes[keep], image_inds[keep]


def _summed_area_table(canvases: np.ndarray) -> torch.Tensor:
    """``(N * (H+1) * (W+1)) x 3`` int32 sums of the pixels above and left of each point, one row per point
    (at most ``H * W * 255``, exact in int32 and in float32 for canvases up to 256 pixels a side)."""
    n, h, w, c = canvases.shape
    table = np.zeros((n, h + 1, w + 1, c), dtype=np.int32)
    np.cumsum(np.cumsum(canvases, axis=1, dtype=np.int32), axis=2, out=table[:, 1:, 1:])
    return torch.from_numpy(table.reshape(-1, c))


def _crops(
    table: torch.Tensor, boxes: torch.Tensor, image_inds: torch.Tensor, w: int, h: int, size: int, device
) -> torch.Tensor:
    """Each box's crop (clipped to the image) area-resampled to ``size x size``: ``K x 3 x size x size`` float.

    The bins are ``interpolate(mode="area")``'s (adaptive average pooling: rows ``floor(i * H / size)`` to
    ``ceil((i + 1) * H / size)``), their sums exact from the summed-area table, each divided once by its area.
    """
    rect = torch.from_numpy(_clip(boxes, w, h))
    i = torch.arange(size)
    heights = (rect[:, 3] - rect[:, 1])[:, None]
    widths = (rect[:, 2] - rect[:, 0])[:, None]
    r0 = rect[:, 1:2] + torch.div(i * heights, size, rounding_mode="floor")
    r1 = rect[:, 1:2] - torch.div(-(i + 1) * heights, size, rounding_mode="floor")
    c0 = rect[:, 0:1] + torch.div(i * widths, size, rounding_mode="floor")
    c1 = rect[:, 0:1] - torch.div(-(i + 1) * widths, size, rounding_mode="floor")
    base = image_inds.cpu()[:, None, None] * ((h + 1) * (w + 1))
    row0, row1 = base + r0[:, :, None] * (w + 1), base + r1[:, :, None] * (w + 1)
    col0, col1 = c0[:, None, :], c1[:, None, :]

    def at(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return table.index_select(0, (rows + cols).reshape(-1))

    sums = at(row1, col1) - at(row0, col1) - at(row1, col0) + at(row0, col0)  # K * size * size x 3
    area = ((r1 - r0)[:, :, None] * (c1 - c0)[:, None, :]).reshape(-1, 1)
    crops = (sums.float() / area.float()).view(len(rect), size, size, 3)
    return crops.to(device).permute(0, 3, 1, 2)


def nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """torchvision's ``ops.nms`` in numpy: indices of the boxes kept, by decreasing score (ties in input order);
    a box is dropped when its intersection over union with a kept one exceeds ``threshold``. Same float32
    arithmetic (the overlap is symmetric, so a matrix of all pairs holds the values torchvision computes one by
    one), so the same decisions."""
    b = boxes.detach().cpu().numpy().astype(np.float32, copy=False)
    order = np.argsort(-scores.detach().cpu().numpy(), kind="stable")
    b = b[order]
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    w = np.maximum(np.float32(0), np.minimum(x2[:, None], x2[None]) - np.maximum(x1[:, None], x1[None]))
    h = np.maximum(np.float32(0), np.minimum(y2[:, None], y2[None]) - np.maximum(y1[:, None], y1[None]))
    inter = w * h
    with np.errstate(divide="ignore", invalid="ignore"):
        overlap = inter / (areas[:, None] + areas[None] - inter)
    suppresses = (overlap.astype(np.float64) > threshold).tolist()
    removed = [False] * len(b)
    keep = []
    for i in range(len(b)):
        if removed[i]:
            continue
        keep.append(i)
        row = suppresses[i]
        for j in range(i + 1, len(b)):
            if row[j]:
                removed[j] = True
    return torch.as_tensor(order[np.array(keep, dtype=np.int64)], device=boxes.device)


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


# The three networks of MTCNN (Zhang et al. 2016) as facenet-pytorch (MIT licence) defines them, so its weights
# files load into them as they are.


class PNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, kernel_size=3)
        self.prelu1 = nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(10, 16, kernel_size=3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, kernel_size=3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
        self.softmax4_1 = nn.Softmax(dim=1)
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)

    def forward(self, x):
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(self.pool1(self.prelu1(self.conv1(x)))))))
        return self.conv4_2(x), self.softmax4_1(self.conv4_1(x))


class RNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, kernel_size=3)
        self.prelu1 = nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, kernel_size=3)
        self.prelu2 = nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, kernel_size=2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.softmax5_1 = nn.Softmax(dim=1)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x):
        x = self.pool2(self.prelu2(self.conv2(self.pool1(self.prelu1(self.conv1(x))))))
        x = self.prelu3(self.conv3(x)).permute(0, 3, 2, 1).contiguous()
        x = self.prelu4(self.dense4(x.view(x.shape[0], -1)))
        return self.dense5_2(x), self.softmax5_1(self.dense5_1(x))


class ONet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, kernel_size=2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.softmax6_1 = nn.Softmax(dim=1)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x):
        x = self.pool2(self.prelu2(self.conv2(self.pool1(self.prelu1(self.conv1(x))))))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x)).permute(0, 3, 2, 1).contiguous()
        x = self.prelu5(self.dense5(x.view(x.shape[0], -1)))
        return self.dense6_2(x), self.dense6_3(x), self.softmax6_1(self.dense6_1(x))


def weights_folder() -> str:
    """The folder of MTCNN's weights inside the installed facenet-pytorch wheel (found without importing it)."""
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("facenet-pytorch is not installed: its wheel ships MTCNN's weights")
    return os.path.join(list(spec.submodule_search_locations)[0], "data")


def load_nets(device: torch.device | str | None = None) -> tuple[nn.Module, nn.Module, nn.Module]:
    """P-Net, R-Net and O-Net with facenet-pytorch's weights, in evaluation mode, running channels-last."""
    nets = []
    for name, net in (("pnet", PNet()), ("rnet", RNet()), ("onet", ONet())):
        state = torch.load(os.path.join(weights_folder(), f"{name}.pt"), map_location="cpu", weights_only=True)
        net.load_state_dict(state)
        nets.append(_channels_last(net.eval().to(device or "cpu")))
    return nets[0], nets[1], nets[2]


class _ChannelsLast(nn.Module):
    """A network run in channels-last memory layout: the same numbers, and its max-pooling is about 3x faster on
    CPUs than in the default layout (P-Net's pooling was a third of detection time)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor):
        return self.inner(x.contiguous(memory_format=torch.channels_last))


def _channels_last(net: nn.Module) -> nn.Module:
    return _ChannelsLast(net)
