"""Fit the "can't tell" band of a model card: its lower edge on the calibration half's scored rows (where a given
share of the real photos lie above it), and the share of real and generated photos given each answer on the test
half, per condition; written into the card's ``answers`` section.

    python scripts/evaluate.py ../shared/data --held-out-half calibration --save-rows calibration.jsonl
    python scripts/evaluate.py ../shared/data --held-out-half test --save-rows test.jsonl
    python scripts/fit_answers.py --card models/gan-face-v3.json --calibration-rows calibration.jsonl \\
        --test-rows test.jsonl
"""

import argparse
import sys
from pathlib import Path

from gan_face.card import ModelCard
from gan_face.result import ANSWERS
from gan_face.training.fitting import answer_shares, fit_cant_tell
from gan_face.training.scoring import load_rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--card", type=Path, required=True, help="the model card to write the band into")
    parser.add_argument("--calibration-rows", type=Path, required=True, help="scored rows the edge is fitted on")
    parser.add_argument("--test-rows", type=Path, required=True, help="scored rows the shares are measured on")
    parser.add_argument("--real-share", type=float, default=0.05, help="real photos above the edge (default 5%%)")
    args = parser.parse_args(argv)

    card = ModelCard.load(args.card)
    threshold = card.threshold
    edge = fit_cant_tell(load_rows(args.calibration_rows), threshold, args.real_share)
    shares = answer_shares(load_rows(args.test_rows), threshold, edge)
    print(f"can't tell: likelihood {edge:.4f} up to the threshold {threshold:.4f}")
    print(
        f"{'condition':10s} {'kind':10s} {'n':>5s} " + " ".join(f"{a:>22s}" for a in ANSWERS) + "  no likelihood"
    )
    for condition, entry in shares.items():
        for kind, share in entry.items():
            values = " ".join(f"{share[a]:22.1%}" for a in ANSWERS)
            print(f"{condition:10s} {kind:10s} {share['n']:5d} {values}  {share['no_likelihood']:.1%}")
    answers = {
        "cant_tell_from": edge,
        "rule": f"the likelihood above which {args.real_share:.0%} of the calibration half's real photos lie "
        "(every condition pooled), up to the threshold",
        "fitted_on": "calibration half of the held-out sources",
        # per condition and kind: the shares in the order of "columns" (compact: the card is read at start-up)
        "test_half_shares": {
            "columns": [*ANSWERS, "no_likelihood"],
            "n": {kind: share["n"] for kind, share in next(iter(shares.values())).items()},
            **{
                c: {k: [v[a] for a in (*ANSWERS, "no_likelihood")] for k, v in e.items()}
                for c, e in shares.items()
            },
        },
    }
    card.with_sections(answers=answers).save(args.card)
    print(f"wrote the answers section into {args.card}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
