"""Experiment (rejected, see the v2 card): artefact simulation from real photos on the leave-one-out folds.

    python scripts/loo_artefact_simulation.py ../shared/data --work /tmp/gan-face-loo-sim [--families sd3,...]

Two small autoencoders (4x down to 16 channels; up by transposed convolutions or by nearest-neighbour upsampling
and convolution) are fitted to the training reals' aligned crops; every training real that is neither an
evaluation real nor a fold's pipeline partner, passed through one of them (half then saved as JPEG 60-95),
becomes a "generated" crop of no particular generator: an extra fake source (``fake/simulated_autoencoder``,
sampling emphasis 0.5) in every fold. The folds are the protocol's (``scripts/leave_one_out.py``, short schedule).
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from gan_face._runtime import tune_allocator
from gan_face.card import CnnConfig
from gan_face.training.augment import Augmentation
from gan_face.training.conditions import CONDITIONS
from gan_face.training.datasets import Sample, index_tree
from gan_face.training.folds import EVALUATION_REALS, PIPELINE_PARTNERS, folds, run_fold, short_schedule
from gan_face.training.loop import TrainSettings
from gan_face.training.pools import ConditionVariants, CropPool, TrainVariants, build_pool

SIMULATED = "fake/simulated_autoencoder"


class Autoencoder(nn.Module):
    def __init__(self, upsampling: str, latent: int = 16) -> None:
        super().__init__()
        act = nn.LeakyReLU(0.2)
        self.encode = nn.Sequential(
            nn.Conv2d(3, 48, 3, 2, 1), act, nn.Conv2d(48, 96, 3, 2, 1), act, nn.Conv2d(96, latent, 3, 1, 1)
        )

        def up(inp: int, out: int) -> nn.Module:
            if upsampling == "transposed":
                return nn.Sequential(nn.ConvTranspose2d(inp, out, 4, 2, 1), act)
            return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(inp, out, 3, 1, 1), act)

        self.decode = nn.Sequential(
            nn.Conv2d(latent, 96, 3, 1, 1), act, up(96, 64), up(64, 32), nn.Conv2d(32, 3, 3, 1, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def fit_autoencoder(model, crops, donors, rng, steps=1000, patch=64) -> None:
    """L1 on random 64 px patches of the donors' crops (Adam, cosine schedule)."""
    optimizer = torch.optim.Adam(model.parameters(), 2e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    size, variants = crops.shape[2], crops.shape[1]
    for step in range(steps):
        index, k = rng.choice(donors, 32), rng.integers(0, variants, 32)
        y, x = rng.integers(0, size - patch, 2)
        batch = np.stack([crops[i, j, y : y + patch, x : x + patch] for i, j in zip(index, k)])
        inputs = torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255
        loss = F.l1_loss(model(inputs), inputs)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 100 == 0:
            logging.info("autoencoder step %d L1 %.4f", step, loss.item())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--cache", default="/tmp/gan-face-cache")
    parser.add_argument(
        "--families", default="sd3,flux-headshots,astria-headshots,stylegan1,unknown-gan,stylegan2"
    )
    parser.add_argument("--emphasis", type=float, default=0.5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    tune_allocator()
    torch.set_num_threads(2)
    args.work.mkdir(parents=True, exist_ok=True)
    samples = index_tree(args.data)
    trainable = [s for s in samples if s.source not in EVALUATION_REALS]
    evaluated = [s for s in samples if s.label == 1 or s.source in EVALUATION_REALS]
    config, aug, conditions = CnnConfig(), Augmentation(), list(CONDITIONS)
    train_pool = build_pool(
        trainable, args.cache, config, variants=3, spec={"kind": "train", "seed": 0, "aug": str(aug)},
        make_variant=TrainVariants(aug, 0, [s.label for s in trainable]),
    )  # fmt: skip
    eval_pool = build_pool(
        evaluated, args.cache, config, variants=len(conditions), make_variant=ConditionVariants(conditions),
        spec={"kind": "conditions", "conditions": conditions},
    )  # fmt: skip
    partners = {p for ps in PIPELINE_PARTNERS.values() for p in ps}
    donors = [
        i for i, s in enumerate(trainable) if s.label == 0 and train_pool.usable[i] and s.source not in partners
    ]
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    n, variants, size = train_pool.crops.shape[:3]
    shape = (n + len(donors), variants, size, size, 3)
    combined_path, done = args.work / "combined.u8", args.work / "combined.json"
    if not done.exists():
        started = time.time()
        models = []
        for upsampling in ("transposed", "nearest"):
            model = Autoencoder(upsampling)
            fit_autoencoder(model, train_pool.crops, donors, rng)
            models.append(model.eval())
        combined = np.memmap(combined_path, np.uint8, "w+", shape=shape)
        for start in range(0, n, 512):
            combined[start : min(start + 512, n)] = train_pool.crops[start : min(start + 512, n)]
        psnr = []
        with torch.inference_mode():
            for j, i in enumerate(donors):
                x = torch.from_numpy(np.ascontiguousarray(train_pool.crops[i])).permute(0, 3, 1, 2).float() / 255
                y = models[j % 2](x).clamp(0, 1)
                psnr.append(float(-10 * torch.log10(F.mse_loss(y, x))))
                out = (y.permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8)
                for k in range(variants):
                    if rng.random() < 0.5:  # saved as JPEG after the "generator", as fakes are
                        buffer = io.BytesIO()
                        Image.fromarray(out[k]).save(buffer, "JPEG", quality=int(rng.integers(60, 96)))
                        out[k] = np.asarray(Image.open(buffer).convert("RGB"))
                combined[n + j] = out
        combined.flush()
        stats = {
            "donors": len(donors),
            "psnr_median_db": float(np.median(psnr)),
            "psnr_p10_db": float(np.percentile(psnr, 10)),
            "minutes": (time.time() - started) / 60,
        }
        done.write_text(json.dumps(stats))
    stats = json.loads(done.read_text())
    logging.info("simulated crops: %s", stats)
    simulated = [
        Sample(trainable[i].path + "#simulated", 1, SIMULATED, "simulated", trainable[i].identity) for i in donors
    ]
    pool = CropPool(
        trainable + simulated,
        np.memmap(combined_path, np.uint8, "r", shape=shape),
        np.r_[train_pool.usable, np.ones(len(donors), bool)],
    )
    settings = short_schedule(
        TrainSettings(
            epochs=2, samples_per_epoch=3000, warmup_steps=100, source_emphasis={SIMULATED: args.emphasis}
        )
    )
    by_name = {f.family: f for f in folds(samples, partners=PIPELINE_PARTNERS)}
    results = [
        run_fold(by_name[name], pool, eval_pool, config, settings, args.work, conditions=conditions)
        for name in args.families.split(",")
    ]
    if args.json:
        payload = {"command": " ".join(["python scripts/loo_artefact_simulation.py", *(argv or sys.argv[1:])]),
                   "simulation": stats, "folds": results}  # fmt: skip
        args.json.write_text(json.dumps(payload, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
