"""ALMTokenizer as an ESPnet GAN codec (``--codec almtok``).

The generator is :class:`ALMTokenizerGenerator`; the discriminator is ESPnet's multi-period +
multi-band STFT discriminator (as in ESPnet's DAC); adversarial, feature-matching and
multi-scale mel losses are ESPnet's; the multi-resolution STFT loss is ours (ESPnet has none).

Two-stage training is a matter of switches (the recipe sets them):

- stage 1 (``use_mae_loss: true, use_ar_loss: true``): the autoencoder with frozen
  semantic-prior codebooks, the MAE loss and the AR loss along RVQ depth. Both semantic losses
  shape the tokens through the encoder, so they belong where the encoder trains.
- stage 2 (``use_mae_loss: false, use_ar_loss: false``): a reconstruction fine-tune from stage
  1 (``--init_param``) on clean, unmasked encodings, with the token-producing side frozen
  (``--freeze_param``), so the codes of a clip do not change while the decoder adapts.

Validation runs the regime being trained: with ``use_mae_loss`` it masks the encoder input as
training does (drawn from a fixed seed, so every epoch sees the same masks).
"""

import copy
import random
import weakref
from typing import Any, Dict, List, Optional

import torch
from typeguard import typechecked

from espnet2.gan_codec.abs_gan_codec import AbsGANCodec
from espnet2.gan_codec.shared.discriminator.msmpmb_discriminator import (
    MultiScaleMultiPeriodMultiBandDiscriminator,
)
from espnet2.gan_codec.shared.loss.freq_loss import MultiScaleMelSpectrogramLoss
from espnet2.gan_tts.hifigan.loss import (
    DiscriminatorAdversarialLoss,
    FeatureMatchLoss,
    GeneratorAdversarialLoss,
)
from espnet2.torch_utils.device_funcs import force_gatherable
from espnet2.utils.get_default_kwargs import get_default_kwargs

from espnet2_almtok.codec.chunking import ChunkingConfig
from espnet2_almtok.codec.generator import ALMTokenizerGenerator
from espnet2_almtok.codec.stft_loss import MultiResolutionSTFTLoss

DEFAULT_DISCRIMINATOR = {
    "rates": [],
    "fft_sizes": [2048, 1024, 512],
    "periods": [2, 3, 5, 7, 11],
    "period_discriminator_params": {
        "in_channels": 1, "out_channels": 1, "kernel_sizes": [5, 3], "channels": 32,
        "downsample_scales": [3, 3, 3, 3, 1], "max_downsample_channels": 1024, "bias": True,
        "nonlinear_activation": "LeakyReLU", "nonlinear_activation_params": {"negative_slope": 0.1},
        "use_weight_norm": True, "use_spectral_norm": False,
    },
    "band_discriminator_params": {
        "hop_factor": 0.25,
        "bands": [[0.0, 0.1], [0.1, 0.25], [0.25, 0.5], [0.5, 0.75], [0.75, 1.0]],
        "channel": 32,
    },
}


DEFAULT_GENERATOR = {k: v for k, v in get_default_kwargs(ALMTokenizerGenerator).items()
                     if k not in ("sample_rate", "inference_only")}
DEFAULT_ADV_LOSS = {"average_by_discriminators": False, "loss_type": "mse"}
DEFAULT_FEAT_MATCH = {"average_by_discriminators": False, "average_by_layers": False,
                      "include_final_outputs": True}
DEFAULT_MEL_LOSS = {"range_start": 6, "range_end": 11, "n_mels": 80, "log_base": None}


class ALMTokenizerDiscriminator(torch.nn.Module):
    """ESPnet's multi-period + multi-band STFT discriminator; ``(B, 1, T)`` -> list of layer lists."""

    def __init__(self, sample_rate: int, params: Optional[Dict[str, Any]] = None):
        super().__init__()
        params = copy.deepcopy(params if params is not None else DEFAULT_DISCRIMINATOR)
        params["sample_rate"] = sample_rate
        params.setdefault("band_discriminator_params", {})["sample_rate"] = sample_rate
        params["band_discriminator_params"]["bands"] = [
            tuple(b) for b in params["band_discriminator_params"].get(
                "bands", DEFAULT_DISCRIMINATOR["band_discriminator_params"]["bands"])]
        self.msmpmb = MultiScaleMultiPeriodMultiBandDiscriminator(**params)

    def forward(self, x: torch.Tensor) -> List[List[torch.Tensor]]:
        return self.msmpmb(x)


class ALMTokenizerCodec(AbsGANCodec):
    """ALMTokenizer GAN codec.

    Args:
        sampling_rate: audio rate in Hz.
        generator_params: keyword arguments of :class:`ALMTokenizerGenerator`.
        discriminator_params: keyword arguments of ESPnet's
            ``MultiScaleMultiPeriodMultiBandDiscriminator`` (``sample_rate`` is filled in).
        inference_window: ``w`` used for validation, ``encode``/``decode`` without a window,
            and ``meta_info()['frame_shift']``.
        use_mae_loss / use_ar_loss: the semantic objectives (stage 1: both; stage 2: neither).
        valid_mask_seed: seed of the MAE masks drawn in validation.
        lambda_*: loss weights.
        cache_generator_outputs: reuse the generator pass between the D and G turns.
    """

    @typechecked
    def __init__(
        self,
        sampling_rate: int = 16000,
        generator_params: Dict[str, Any] = DEFAULT_GENERATOR,
        discriminator_params: Dict[str, Any] = DEFAULT_DISCRIMINATOR,
        inference_window: int = 4,
        generator_adv_loss_params: Dict[str, Any] = DEFAULT_ADV_LOSS,
        discriminator_adv_loss_params: Dict[str, Any] = DEFAULT_ADV_LOSS,
        use_feat_match_loss: bool = True,
        feat_match_loss_params: Dict[str, Any] = DEFAULT_FEAT_MATCH,
        mel_loss_params: Dict[str, Any] = DEFAULT_MEL_LOSS,
        stft_loss_params: Dict[str, Any] = get_default_kwargs(MultiResolutionSTFTLoss),
        use_mae_loss: bool = True,
        use_ar_loss: bool = True,
        lambda_mel: float = 15.0,
        lambda_stft: float = 1.0,
        lambda_adv: float = 1.0,
        lambda_feat_match: float = 2.0,
        lambda_commit: float = 1.0,
        lambda_codebook: float = 1.0,
        lambda_mae: float = 1.0,
        lambda_ar: float = 1.0,
        cache_generator_outputs: bool = True,
        valid_mask_seed: int = 0,
    ):
        super().__init__()
        generator_params = {**DEFAULT_GENERATOR, **generator_params, "sample_rate": sampling_rate}
        self.generator = ALMTokenizerGenerator(**generator_params)
        self.discriminator = ALMTokenizerDiscriminator(sampling_rate, discriminator_params)
        self.inference_window = self.generator.check_window(inference_window)

        self.generator_adv_loss = GeneratorAdversarialLoss(**generator_adv_loss_params)
        self.discriminator_adv_loss = DiscriminatorAdversarialLoss(**discriminator_adv_loss_params)
        self.use_feat_match_loss = use_feat_match_loss
        self.feat_match_loss = FeatureMatchLoss(**feat_match_loss_params)
        self.mel_loss = MultiScaleMelSpectrogramLoss(**{**mel_loss_params, "fs": sampling_rate})
        self.stft_loss = MultiResolutionSTFTLoss(**stft_loss_params)

        self.use_mae_loss = use_mae_loss
        self.use_ar_loss = use_ar_loss
        self.lambdas = dict(mel=lambda_mel, stft=lambda_stft, adv=lambda_adv, feat_match=lambda_feat_match,
                            commit=lambda_commit, codebook=lambda_codebook, mae=lambda_mae, ar=lambda_ar)
        self.cache_generator_outputs = cache_generator_outputs
        self._cache = None
        self.fs = sampling_rate
        self.valid_mask_seed = valid_mask_seed

    # ---------------------------------------------------------------- ESPnet codec contract
    def meta_info(self) -> Dict[str, Any]:
        g = self.generator
        return {
            "fs": self.fs,
            "num_streams": g.n_q,
            "frame_shift": g.hop_length * self.inference_window,
            "code_size_per_stream": [g.codebook_size] * g.n_q,
            "windows": list(g.windows),
            "token_rate": g.frame_rate / self.inference_window,
        }

    def forward(self, audio: torch.Tensor, forward_generator: bool = True,
                audio_lengths: Optional[torch.Tensor] = None, **kwargs) -> Dict[str, Any]:
        """``audio`` ``(B, T_wav)`` (``audio_lengths`` ``(B,)`` real samples, when the batch is
        padded); returns ESPnet's ``loss/stats/weight/optim_idx`` dict."""
        if forward_generator:
            return self._forward_generator(audio, audio_lengths)
        return self._forward_discriminator(audio, audio_lengths)

    def _generate(self, audio: torch.Tensor, lengths: Optional[torch.Tensor], turn: str):
        """The generator pass of this batch: computed, or reused from the other turn.

        In training the two turns of a step share one pass (ESPnet's cache: the second turn
        reuses the first's). In validation too, but only for the very tensor the cached pass
        was made from (eval passes are deterministic), so the generator runs once per
        validation batch and a lone call never gets another batch's output. Only the other
        turn reuses a pass: two calls of one turn each run the generator."""
        if self.cache_generator_outputs and self._cache is not None:
            if self._cached_for(audio, lengths, turn):
                return self._cache, True
            self._cache = None
        window = random.choice(self.generator.windows) if self.training else self.inference_window
        mae_generator = None
        if not self.training and self.use_mae_loss:
            mae_generator = torch.Generator(audio.device).manual_seed(self.valid_mask_seed)
        out = self.generator(audio.unsqueeze(1), window, use_mae=self.use_mae_loss,
                             use_ar=self.use_ar_loss, lengths=lengths,
                             mae_generator=mae_generator)
        out["window"] = window
        if self.cache_generator_outputs:
            self._cache = out
            self._cache_key = (turn, "train") if self.training else (
                turn, weakref.ref(audio), audio._version, None if lengths is None else weakref.ref(lengths))
        return out, False

    def _cached_for(self, audio: torch.Tensor, lengths: Optional[torch.Tensor], turn: str) -> bool:
        """Whether the cached pass serves this call of ``turn``: one made by the other turn, in
        training a training pass; in validation a pass of the same ``audio``/``lengths`` tensors."""
        key = getattr(self, "_cache_key", None)
        if key is None or key[0] == turn:
            return False
        if self.training or key[1] == "train":
            return self.training and key[1] == "train"
        cached_lengths = None if key[3] is None else key[3]()
        return (key[1]() is audio and key[2] == audio._version and cached_lengths is lengths
                and (lengths is None) == (key[3] is None))

    def _forward_generator(self, audio: torch.Tensor, lengths: Optional[torch.Tensor]) -> Dict[str, Any]:
        out, reused = self._generate(audio, lengths, "generator")
        wav = audio.unsqueeze(1)
        resyn = out["resyn"]
        p_hat = self.discriminator(resyn)
        with torch.no_grad():
            p = self.discriminator(wav)
        lam = self.lambdas
        with torch.autocast(wav.device.type, enabled=False):  # spectra in float32 under autocast
            # (float16's mel-loss gradient is NaN: its log of tiny mel energies)
            mel_loss = self.mel_loss(resyn.float(), wav.float())
            stft_loss = self.stft_loss(resyn.float(), wav.float())
        terms = {
            "mel_loss": lam["mel"] * mel_loss,
            "stft_loss": lam["stft"] * stft_loss,
            "adv_loss": lam["adv"] * self.generator_adv_loss(p_hat),
            "commit_loss": lam["commit"] * out["commit"],
            "codebook_loss": lam["codebook"] * out["codebook"],
        }
        if self.use_feat_match_loss:
            terms["feat_match_loss"] = lam["feat_match"] * self.feat_match_loss(p_hat, p)
        if self.use_mae_loss:
            terms["mae_loss"] = lam["mae"] * out["mae"]
        if self.use_ar_loss:
            terms["ar_loss"] = lam["ar"] * out["ar"]
        loss = sum(terms.values())
        stats = {k: v.item() for k, v in terms.items()}
        stats["reconstruct_loss"] = (terms["mel_loss"] + terms["stft_loss"]).item()
        stats["window"] = float(out["window"])
        stats["loss"] = loss.item()
        loss, stats, weight = force_gatherable((loss, stats, audio.size(0)), loss.device)
        if reused:
            self._cache = None
        return {"loss": loss, "stats": stats, "weight": weight, "optim_idx": 0}

    def _forward_discriminator(self, audio: torch.Tensor, lengths: Optional[torch.Tensor]) -> Dict[str, Any]:
        out, reused = self._generate(audio, lengths, "discriminator")
        p_hat = self.discriminator(out["resyn"].detach())
        p = self.discriminator(audio.unsqueeze(1))
        real_loss, fake_loss = self.discriminator_adv_loss(p_hat, p)
        loss = real_loss + fake_loss
        stats = dict(discriminator_loss=loss.item(), real_loss=real_loss.item(), fake_loss=fake_loss.item())
        loss, stats, weight = force_gatherable((loss, stats, audio.size(0)), loss.device)
        if reused:
            self._cache = None
        return {"loss": loss, "stats": stats, "weight": weight, "optim_idx": 1}

    # ------------------------------------------------------------------------- inference
    def encode(self, x: torch.Tensor, window: Optional[int] = None,
               chunking: Optional[ChunkingConfig] = None, **kwargs) -> torch.Tensor:
        """``x`` ``(B, 1, T_wav)`` -> codes ``(n_q, B, N)`` (ESPnet's stream-first layout);
        ``chunking``: Transformer windows for long audio (default: one pass over the clip)."""
        if x.dim() == 1:
            x = x.view(1, 1, -1)
        elif x.dim() == 2:
            x = x.unsqueeze(1)
        codes = self.generator.encode(x, window or self.inference_window, chunking=chunking)
        return codes.transpose(0, 1)

    def decode(self, x: torch.Tensor, window: Optional[int] = None,
               chunking: Optional[ChunkingConfig] = None, **kwargs) -> torch.Tensor:
        """codes ``(n_q, B, N)`` -> waveform ``(B, 1, N * w * hop_length)``."""
        return self.generator.decode(x.transpose(0, 1), window or self.inference_window, chunking=chunking)

    def inference(self, x: torch.Tensor, window: Optional[int] = None, **kwargs) -> Dict[str, torch.Tensor]:
        """``x`` ``(T_wav,)`` -> ``{"wav": (T_wav,), "codec": (n_q, 1, N)}``."""
        codes = self.encode(x, window)
        wav = self.decode(codes, window)[..., : x.shape[-1]]
        return {"wav": wav.reshape(-1), "codec": codes}
