"""Join a frame CNN (trained by ``scripts/train.py --view frame``) to a model card as its second network.

    python scripts/add_frame_cnn.py --card models/gan-face-v2.json --frame /tmp/frame/gan-face-v2-frame.json

Copies the frame CNN's weights beside the card (``<card name>-frame.safetensors``), names them in the card's
``frame_cnn`` entry with their sha256, and keeps the frame run's ``training`` section under
``training.frame_cnn``. The fusion is left as it was, so the frame carries no weight until
``scripts/fit_fusion.py --features cnn,frame,...`` refits it on the calibration half; refuses a frame CNN
trained on other held-out sources than the card's (the calibration and test halves would no longer be unseen).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from gan_face.card import ModelCard, Network, file_sha256


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--card", type=Path, required=True, help="the model card to extend (changed in place)")
    parser.add_argument("--frame", type=Path, required=True, help="the card written by train.py --view frame")
    args = parser.parse_args(argv)

    card, frame = ModelCard.load(args.card), ModelCard.load(args.frame)
    if frame.face is None or frame.face.config.view != "frame":
        parser.error(f"{args.frame}: not a frame CNN (train it with scripts/train.py --view frame)")
    config = frame.face.config
    held_out = [c.sections.get("training", {}).get("held_out_sources") for c in (card, frame)]
    if held_out[0] != held_out[1]:
        parser.error(f"{args.frame} held out {held_out[1]}, {args.card} held out {held_out[0]}: they must agree")
    target = args.card.with_name(args.card.stem + "-frame.safetensors")
    shutil.copyfile(frame.face.weights_path, target)
    training = {**card.sections.get("training", {}), "frame_cnn": frame.sections.get("training", {})}
    card = card.replace(frame=Network(config, target, file_sha256(target))).with_sections(training=training)
    card.save(args.card)
    print(f"{args.card}: frame CNN {target.name} ({config.architecture}, {config.input_size} px) joined")
    if "frame" not in card.fusion.features:
        print(
            "its fusion does not weigh the frame yet: refit it with scripts/fit_fusion.py --features cnn,frame,..."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
