import numpy as np
import torch

from backend.model import VLMAE, FusionConfig, collate
from backend.training import from_bytes, to_bytes, version_of


def config(fusion: str) -> FusionConfig:
    return FusionConfig(
        input_dims={"image": 12, "text": 8, "audio": 6},
        objects=[("img", "image"), ("cap", "text"), ("voice", "audio")],
        heads=[("category", 3, False), ("tags", 4, True)],
        fusion=fusion,
        d_model=16,
        n_heads=2,
    )


def features(rng: np.random.Generator, audio: bool = True) -> dict[str, np.ndarray]:
    f = {"img": rng.normal(size=(5, 12)), "cap": rng.normal(size=(1, 8))}
    if audio:
        f["voice"] = rng.normal(size=(int(rng.integers(1, 9)), 6))
    return {k: v.astype(np.float32) for k, v in f.items()}


def test_shapes_and_tasks_without_audio():
    rng = np.random.default_rng(0)
    for fusion in ("attention", "mean", "none"):
        model = VLMAE(config(fusion)).eval()
        batch = collate([features(rng), features(rng, audio=False), {"cap": np.ones((1, 8), np.float32)}], model.cfg)
        logits = model(batch)
        assert [tuple(lg.shape) for lg in logits] == [(3, 3), (3, 4)]
        assert all(torch.isfinite(lg).all() for lg in logits)
        probs = model.probabilities(logits)
        assert torch.allclose(probs[0].sum(-1), torch.ones(3))
        assert model.embed(batch).shape == (3, 16)


def test_untrained_attention_fusion_is_the_vl_model_alone():
    """The gate starts at zero: audio must not change an untrained model's output."""
    rng = np.random.default_rng(1)
    model = VLMAE(config("attention")).eval()
    f = features(rng)
    without = {k: v for k, v in f.items() if k != "voice"}
    a, b = model.embed(collate([f], model.cfg)), model.embed(collate([without], model.cfg))
    assert torch.allclose(a, b, atol=1e-6)


def test_attention_fusion_learns_a_label_only_the_audio_carries():
    rng = np.random.default_rng(2)
    torch.manual_seed(0)
    cfg = FusionConfig(
        input_dims={"image": 12, "audio": 6},
        objects=[("img", "image"), ("voice", "audio")],
        heads=[("policy", 2, False)],
        d_model=16,
        n_heads=2,
        dropout=0.0,
    )
    model = VLMAE(cfg)
    feats, y = [], []
    for i in range(64):
        label = i % 2
        voice = rng.normal(size=(6, 6)) + (2.0 if label else -2.0)
        feats.append({"img": rng.normal(size=(5, 12)).astype(np.float32), "voice": voice.astype(np.float32)})
        y.append(label)
    batch, target = collate(feats, cfg), torch.tensor(y)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(150):
        loss = torch.nn.functional.cross_entropy(model(batch)[0], target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    accuracy = (model(batch)[0].argmax(-1) == target).float().mean().item()
    assert accuracy > 0.95
    assert abs(torch.tanh(model.fuse.gate_attn).item()) > 0.05  # the gate opened


def test_save_load_round_trip_and_version():
    model = VLMAE(config("mean")).eval()
    blob = to_bytes(model)
    again = from_bytes(blob)
    batch = collate([features(np.random.default_rng(3))], model.cfg)
    assert torch.allclose(model(batch)[0], again(batch)[0])
    assert version_of(blob, "mean") == version_of(to_bytes(again), "mean")
    with torch.no_grad():
        again.heads[0].bias += 1
    assert version_of(to_bytes(again), "mean") != version_of(blob, "mean")
