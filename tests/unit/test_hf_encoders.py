"""backend.model.encoders' Hugging Face path, on tiny random checkpoints built here with save_pretrained.

Nothing is downloaded: every model, tokenizer and processor is made from a config in
a temporary directory, then loaded back by path through HFImageEncoder / HFTextEncoder /
HFAudioEncoder exactly as a user's checkpoint directory would be.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from backend.config import Settings  # noqa: E402
from backend.model.encoders import (  # noqa: E402
    MAX_AUDIO_TOKENS,
    HFAudioEncoder,
    HFImageEncoder,
    HFTextEncoder,
    load_encoders,
)

WORDS = "a an the photo of cat dog bird car tree sky red blue green small big on in with".split()
SENTENCES = ["a photo of a cat", "the big red car", "a small bird in the sky"]
LONG_TEXT = " ".join(WORDS * 20)  # far past every tiny model's position table
PROJ = 16
HIDDEN = 32


def _vit(**extra: object) -> dict:
    return dict(
        hidden_size=HIDDEN,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
        **extra,
    )


def _transformer_text(vocab_size: int, positions: int, **extra: object) -> dict:
    return dict(
        vocab_size=vocab_size,
        hidden_size=HIDDEN,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=positions,
        **extra,
    )


# ---------------------------------------------------------------- checkpoint builders


def _clip_tokenizer(directory: Path):
    """A CLIP BPE tokenizer over single characters (plus their end-of-word forms) and a few merges."""
    from transformers import CLIPTokenizer

    chars = sorted(set("".join(WORDS)) | set("0123456789"))
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    merges = [("c", "a"), ("ca", "t</w>"), ("d", "o"), ("do", "g</w>")]
    for left, right in merges:
        vocab[left + right] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=16)
    tokenizer.save_pretrained(directory)
    return tokenizer


def _word_tokenizer(directory: Path, max_length: int):
    """A word-level `tokenizers` tokenizer (no sentencepiece needed) that appends </s>, SigLIP-style."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=max_length,
    )
    tokenizer.save_pretrained(directory)
    return tokenizer


def build_clip(directory: Path, seed: int = 0) -> Path:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    tokenizer = _clip_tokenizer(directory)
    ids = dict(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    config = CLIPConfig(
        text_config=_transformer_text(len(tokenizer), 16, **ids), vision_config=_vit(), projection_dim=PROJ
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(directory)
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor.save_pretrained(directory)
    return directory


def build_siglip(directory: Path) -> Path:
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    tokenizer = _word_tokenizer(directory, max_length=16)
    text = _transformer_text(len(tokenizer), 16, pad_token_id=0, eos_token_id=1, projection_size=HIDDEN)
    config = SiglipConfig(text_config=text, vision_config=_vit())
    torch.manual_seed(1)
    SiglipModel(config).save_pretrained(directory)
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(directory)
    return directory


def build_bert(directory: Path) -> Path:
    from transformers import BertConfig, BertModel, BertTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    vocab_file = directory / "vocab.txt"
    vocab_file.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, "##s"]) + "\n")
    tokenizer = BertTokenizer(vocab=str(vocab_file), model_max_length=24)
    tokenizer.save_pretrained(directory)
    config = BertConfig(**_transformer_text(len(tokenizer), 24), pad_token_id=0)
    torch.manual_seed(2)
    BertModel(config).save_pretrained(directory)
    return directory


def build_wav2vec2(directory: Path) -> Path:
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    config = Wav2Vec2Config(
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
    )  # the default conv strides: 320 samples per frame, 50 frames/s at 16 kHz
    torch.manual_seed(3)
    Wav2Vec2Model(config).save_pretrained(directory)
    Wav2Vec2FeatureExtractor(sampling_rate=16_000, return_attention_mask=True).save_pretrained(directory)
    return directory


def build_whisper(directory: Path) -> Path:
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    config = WhisperConfig(
        vocab_size=64,
        num_mel_bins=80,
        d_model=HIDDEN,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=37,
        decoder_ffn_dim=37,
        max_source_positions=1500,
        max_target_positions=32,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
    )
    torch.manual_seed(4)
    WhisperModel(config).save_pretrained(directory)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(directory)
    return directory


def build_ast(directory: Path) -> Path:
    from transformers import ASTConfig, ASTFeatureExtractor, ASTModel

    # 32 mel bins x 400 frames (4 s at 10 ms), 16x16 patches every 10 frames -> 2 x 39 patches
    config = ASTConfig(
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        num_mel_bins=32,
        max_length=400,
        patch_size=16,
        frequency_stride=16,
        time_stride=10,
    )
    torch.manual_seed(5)
    ASTModel(config).save_pretrained(directory)
    ASTFeatureExtractor(num_mel_bins=32, max_length=400).save_pretrained(directory)
    return directory


def build_clap(directory: Path) -> Path:
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

    audio = dict(
        spec_size=64,
        num_mel_bins=16,
        window_size=4,
        patch_size=4,
        patch_stride=(4, 4),
        patch_embeds_hidden_size=8,
        depths=(1, 1),
        num_attention_heads=(2, 2),
        hidden_size=16,
    )
    text = _transformer_text(40, 40, pad_token_id=1, bos_token_id=0, eos_token_id=2)
    config = ClapConfig(text_config=text, audio_config=audio, projection_dim=PROJ)
    torch.manual_seed(6)
    ClapModel(config).save_pretrained(directory)
    # An unfused model with "rand_trunc", as the released unfused CLAP checkpoints are configured
    extractor = ClapFeatureExtractor(
        feature_size=16,
        sampling_rate=16_000,
        hop_length=320,
        max_length_s=4,
        fft_window_size=400,
        frequency_max=8000,
        truncation="rand_trunc",
    )
    extractor.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf-ckpt")
    builders = {
        "clip": build_clip,
        "siglip": build_siglip,
        "bert": build_bert,
        "wav2vec2": build_wav2vec2,
        "whisper": build_whisper,
        "ast": build_ast,
        "clap": build_clap,
    }
    return {name: build(root / name) for name, build in builders.items()}


def images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    sizes = [(40, 30), (64, 64)]
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB") for h, w in sizes]


def wave(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * rate), dtype=np.float32) / rate
    noise = np.random.default_rng(seed).standard_normal(t.shape).astype(np.float32)
    return (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * noise).astype(np.float32)


def assert_tokens(arrays: list[np.ndarray], n: int, dim: int, tokens: int | None = None) -> None:
    assert len(arrays) == n
    for a in arrays:
        assert isinstance(a, np.ndarray) and a.dtype == np.float32
        assert a.ndim == 2 and a.shape[1] == dim
        assert tokens is None or a.shape[0] == tokens
        assert np.isfinite(a).all()


# ---------------------------------------------------------------- images and text


def test_clip_image_and_text_share_the_projection_space(ckpt: dict[str, Path]) -> None:
    image, text = HFImageEncoder(str(ckpt["clip"])), HFTextEncoder(str(ckpt["clip"]))
    assert image.joint and text.joint
    assert image.dim == text.dim == PROJ
    img, txt = image.encode(images()), text.encode(SENTENCES)
    assert_tokens(img, 2, PROJ, tokens=1)
    assert_tokens(txt, 3, PROJ, tokens=1)
    np.testing.assert_allclose([np.linalg.norm(t) for t in txt], 1.0, rtol=1e-5)
    sim = np.stack([t[0] for t in txt]) @ np.stack([i[0] for i in img]).T  # comparable directly
    assert sim.shape == (3, 2) and np.isfinite(sim).all()
    assert image.encode([]) == [] and text.encode([]) == []


def test_siglip_image_and_text(ckpt: dict[str, Path]) -> None:
    image, text = HFImageEncoder(str(ckpt["siglip"])), HFTextEncoder(str(ckpt["siglip"]))
    assert image.dim == text.dim == HIDDEN  # SigLIP has no projection_dim: its heads keep hidden_size
    assert_tokens(image.encode(images()), 2, HIDDEN, tokens=1)
    assert_tokens(text.encode(SENTENCES), 3, HIDDEN, tokens=1)


@pytest.mark.parametrize("name", ["clip", "siglip", "bert"])
def test_text_embedding_does_not_depend_on_batch_or_length(ckpt: dict[str, Path], name: str) -> None:
    # An item's features must not change with the other items it is batched with (they are cached
    # per item), and text longer than the model's position table must be truncated, not crash.
    enc = HFTextEncoder(str(ckpt[name]))
    alone = enc.encode([SENTENCES[0]])[0]
    batched = enc.encode([SENTENCES[0], LONG_TEXT, SENTENCES[2]])
    np.testing.assert_allclose(batched[0], alone, atol=1e-5)
    assert_tokens(batched, 3, enc.dim, tokens=1)


def test_bert_masked_mean_is_l2_normalised(ckpt: dict[str, Path]) -> None:
    from transformers import AutoModel, AutoTokenizer

    enc = HFTextEncoder(str(ckpt["bert"]))
    assert not enc.joint and enc.dim == HIDDEN
    out = enc.encode(SENTENCES)
    assert_tokens(out, 3, HIDDEN, tokens=1)
    np.testing.assert_allclose([np.linalg.norm(t) for t in out], 1.0, rtol=1e-5)

    # The same numbers by hand: mean over the real (unpadded) tokens only, then unit length.
    tok, model = AutoTokenizer.from_pretrained(ckpt["bert"]), AutoModel.from_pretrained(ckpt["bert"]).eval()
    with torch.inference_mode():
        hidden = model(**tok(SENTENCES[1], return_tensors="pt")).last_hidden_state[0]
    expected = hidden.mean(0) / hidden.mean(0).norm()
    np.testing.assert_allclose(out[1][0], expected.numpy(), atol=1e-5)


# ---------------------------------------------------------------- audio


@pytest.mark.parametrize("name", ["wav2vec2", "whisper", "ast", "clap"])
def test_audio_tokens(ckpt: dict[str, Path], name: str) -> None:
    enc = HFAudioEncoder(str(ckpt[name]))
    rate = enc.sample_rate
    assert rate == 16_000
    short, long = enc.encode([wave(1.0, rate), wave(3.0, rate, seed=1)])
    assert_tokens([short, long], 2, enc.dim)
    for a in (short, long):
        assert 1 <= a.shape[0] <= MAX_AUDIO_TOKENS
    if name == "clap":
        assert enc.joint and enc.dim == PROJ and short.shape == long.shape == (1, PROJ)
    else:
        assert enc.dim == HIDDEN
        # ~0.2 s windows over the clip's own frames: 5 for 1 s, 15 for 3 s (padding is not kept)
        assert long.shape[0] >= short.shape[0]
        assert short.shape[0] == 5 and long.shape[0] == 15
    assert enc.encode([]) == []


def test_clap_clip_longer_than_its_window_encodes_the_same_every_time(ckpt: dict[str, Path]) -> None:
    enc = HFAudioEncoder(str(ckpt["clap"]))  # its window is 4 s
    clip = wave(9.0, enc.sample_rate, seed=2)
    first, second = enc.encode([clip, clip])
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(first, enc.encode([clip[: 4 * enc.sample_rate]])[0], atol=1e-6)


# ---------------------------------------------------------------- ids and loading


def test_ids_stable_per_directory_and_distinct_between_checkpoints(ckpt: dict[str, Path]) -> None:
    clip = str(ckpt["clip"])
    assert HFImageEncoder(clip).id == HFImageEncoder(clip).id
    assert HFTextEncoder(clip).id == HFTextEncoder(clip).id
    assert HFAudioEncoder(str(ckpt["wav2vec2"])).id == HFAudioEncoder(str(ckpt["wav2vec2"])).id
    assert HFImageEncoder(clip).id != HFImageEncoder(str(ckpt["siglip"])).id
    assert HFTextEncoder(clip).id != HFTextEncoder(str(ckpt["bert"])).id
    assert HFImageEncoder(clip).id != HFTextEncoder(clip).id
    ids = {HFAudioEncoder(str(ckpt[n])).id for n in ("wav2vec2", "whisper", "ast", "clap")}
    assert len(ids) == 4


def test_a_labelled_directory_has_the_same_id_wherever_it_lives(ckpt: dict[str, Path], tmp_path: Path) -> None:
    # The packaged text encoder is assembled under each machine's cache directory.
    here = shutil.copytree(ckpt["bert"], tmp_path / "a" / "bert")
    there = shutil.copytree(ckpt["bert"], tmp_path / "b" / "bert")
    assert HFTextEncoder(here, label="packaged").id == HFTextEncoder(there, label="packaged").id


def test_id_changes_when_a_directory_gets_new_weights(tmp_path: Path) -> None:
    # Same path, same config, different weights (a re-saved fine-tune): cached features must not be reused.
    directory = build_clip(tmp_path / "clip", seed=0)
    before = HFImageEncoder(str(directory))
    shutil.rmtree(directory)
    after = HFImageEncoder(str(build_clip(tmp_path / "clip", seed=7)))
    assert not np.allclose(before.encode(images())[0], after.encode(images())[0])
    assert before.id != after.id


def test_load_encoders_uses_the_hf_classes(ckpt: dict[str, Path], tmp_path: Path) -> None:
    settings = Settings(
        image_encoder=str(ckpt["clip"]),
        text_encoder=str(ckpt["clip"]),
        audio_encoder=str(ckpt["wav2vec2"]),
        cache_dir=str(tmp_path),
        torch_threads=1,
    )
    threads = torch.get_num_threads()
    try:
        enc = load_encoders(settings)
    finally:
        torch.set_num_threads(threads)  # load_encoders sets it for the whole process
    assert isinstance(enc.image, HFImageEncoder)
    assert isinstance(enc.text, HFTextEncoder)
    assert isinstance(enc.audio, HFAudioEncoder)
    assert enc.image.dim == enc.text.dim == PROJ
    assert enc.audio_sample_rate == 16_000
    assert enc.for_modality("audio") is enc.audio
