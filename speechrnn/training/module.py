"""The Lightning module: trains a ``KeywordSpotter`` on its last hidden state.

The loss is cross-entropy on ``W_hy h_T + b_y``; an optional auxiliary loss on the
per-step outputs ``y_t = W_hy h_t + b_y`` (``aux_loss_weight``) gives early steps a
short gradient path, while the prediction still uses the last hidden state.

Validation accuracy is a ``torchmetrics`` metric: correct and total counts are summed over
the batches (and, under DDP, the processes) before the one division. The test split is not
run here but by ``speechrnn.evaluate.evaluate_clips`` on the best checkpoint, which also
writes the report files.

Gradient clipping is part of the loop: Lightning's ``gradient_clip_val`` /
``gradient_clip_algorithm`` from ``conf/trainer`` drive ``configure_gradient_clipping``,
which logs the gradient norm *before* clipping and whether clipping fired.
Everything the checkpoint needs to rebuild the model (labels, feature settings,
encoder settings) is saved as hyper-parameters; the normalisation statistics are
buffers of the frontend, so they are in the state dict.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy

from speechrnn.data.augment import SpecAugment
from speechrnn.data.layout import SILENCE_CUT, STAGE_SPLITS
from speechrnn.training.diagnostics import hidden_grad_norms
from speechrnn.training.graphs import GraphedEncoder
from speechrnn.core.errors import SpeechRNNError
from speechrnn.model.spotter import KeywordSpotter


AUX_PROFILES = ("uniform", "linear")
log = logging.getLogger(__name__)


def _plain(cfg: Any) -> Any:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg



class NonFiniteLossError(SpeechRNNError, RuntimeError):
    """Training produced a NaN or infinite loss or gradient; the message names the step and files."""

class KeywordModule(L.LightningModule):
    """Lightning wrapper of ``KeywordSpotter``.

    Args:
        labels (list[str]): class names.
        features (dict): ``MFCC`` arguments.
        encoder (dict): ``build_encoder`` arguments.
        optimizer (dict): Hydra config of a ``torch.optim`` class, called with the parameters.
        scheduler (dict, optional): Hydra config of an LR scheduler (``_target_`` plus args) called
            with ``optimizer`` and ``total_steps`` and stepped every step, such as ``warmup_cosine``
            or ``torch.optim.lr_scheduler.OneCycleLR``; ``None`` keeps the LR fixed. (Default: ``None``)
        specaugment (dict, optional): ``SpecAugment`` arguments; ``None`` disables it. (Default: ``None``)
        aux_loss_weight (float, optional): weight of the per-step auxiliary loss. (Default: ``0``)
        aux_loss_profile (str, optional): how the auxiliary loss weighs the steps: ``"uniform"``
            (every y_t alike) or ``"linear"`` (step t of T weighs 2t / (T + 1), mean 1): late steps,
            which have heard most of the word, count most, early ones barely. (Default: ``"uniform"``)
        label_smoothing (float, optional): cross-entropy label smoothing. (Default: ``0``)
        mixup (float, optional): in training, mix each batch's features with the same batch in
            another order, ``lam x + (1 - lam) x[perm]``, and its losses alike, with ``lam`` drawn from
            Beta(mixup, mixup) once a batch (the larger of lam and 1 - lam, so a clip's own label
            weighs most); 0 turns it off. (Default: ``0``)
        diagnostics_every (int, optional): every this many steps, log ||dL/dh_t|| over t
            (``speechrnn.training.diagnostics``) to ``grad_norms.jsonl`` in the log folder; 0 turns it off. (Default: ``0``)
        cuda_graphs (bool, optional): on one CUDA device, train the encoder through CUDA graphs
            (``speechrnn.training.graphs``); off, or on a CPU or under DDP, eagerly. (Default: ``False``)
    """

    def __init__(self, labels: list[str], features: dict, encoder: dict, optimizer: dict,
                 scheduler: dict | None = None, specaugment: dict | None = None,
                 aux_loss_weight: float = 0.0, aux_loss_profile: str = "uniform", label_smoothing: float = 0.0,
                 mixup: float = 0.0, diagnostics_every: int = 0, cuda_graphs: bool = False):
        super().__init__()
        if aux_loss_profile not in AUX_PROFILES:
            raise ValueError(f"aux_loss_profile must be one of {AUX_PROFILES}, got {aux_loss_profile!r}")
        if isinstance(mixup, bool) or not (isinstance(mixup, (int, float)) and math.isfinite(mixup) and mixup >= 0):
            raise ValueError(f"mixup must be a finite number >= 0 (0: off), got {mixup!r}")
        labels, features, encoder = list(labels), _plain(features), _plain(encoder)
        optimizer, scheduler, specaugment = _plain(optimizer), _plain(scheduler), _plain(specaugment)
        self.save_hyperparameters(dict(labels=labels, features=features, encoder=encoder, optimizer=optimizer,
                                       scheduler=scheduler, specaugment=specaugment,
                                       aux_loss_weight=aux_loss_weight, aux_loss_profile=aux_loss_profile,
                                       label_smoothing=label_smoothing, mixup=mixup,
                                       diagnostics_every=diagnostics_every, cuda_graphs=cuda_graphs))
        self.model = KeywordSpotter(labels, features, encoder)
        self.val_acc = MulticlassAccuracy(num_classes=len(labels), average="micro")
        self.specaugment = SpecAugment(**specaugment) if specaugment else None
        self.graphed: GraphedEncoder | None = None  # made in on_fit_start when training runs on one GPU

    def on_fit_start(self) -> None:
        """With ``cuda_graphs``, train on one CUDA device through CUDA graphs."""
        if self.hparams.cuda_graphs and self.device.type == "cuda":
            if self.trainer.world_size > 1:
                log.info("cuda_graphs: off under DDP (%d processes): the encoder runs eagerly", self.trainer.world_size)
            else:
                self.graphed = GraphedEncoder(self.model.encoder)

    def forward(self, wave: Tensor) -> Tensor:
        return self.model(wave)

    def _step(self, batch: Any, stage: str) -> Tensor:
        wave, y, index = batch
        mask = self.specaugment if stage == "train" else None
        x = self.model.frontend(wave, mask=mask)  # (B, T, F)
        mixed = stage == "train" and self.hparams.mixup > 0
        if mixed:
            lam, perm = self._mixup_draw(len(y))
            x = lam * x + (1 - lam) * x[perm]
        logits, hs = self.model.forward_features(x, self.graphed)  # (B, C), (B, T, H)
        loss = self._loss(logits, hs, y, stage)
        if mixed:  # the partner's label, by its share of the features
            loss = lam * loss + (1 - lam) * self._loss(logits, hs, y[perm], stage)
        if not torch.isfinite(loss):
            self._raise_non_finite(f"the {stage} loss is {loss.item()}", index, stage)
        if stage == "train":
            acc = (logits.argmax(-1) == y).float().mean()
        else:  # counts summed over every batch and process (exact under DDP), one division at the epoch's end
            self.val_acc.update(logits, y)
            acc = self.val_acc
        self.log_dict({f"{stage}/loss": loss, f"{stage}/acc": acc}, prog_bar=True,
                      on_step=stage == "train", on_epoch=True, batch_size=len(y), sync_dist=stage != "train")
        return loss

    def _mixup_draw(self, B: int) -> tuple[float, Tensor]:
        """This batch's mixup weight in [0.5, 1] and partner order (B,), from torch's generator, which
        the data module seeds per batch: a resumed run draws them again."""
        alpha = torch.tensor(float(self.hparams.mixup))
        lam = float(torch.distributions.Beta(alpha, alpha).sample())
        return max(lam, 1 - lam), torch.randperm(B, device=self.device)

    def _loss(self, logits: Tensor, hs: Tensor, y: Tensor, stage: str) -> Tensor:
        """Cross-entropy of the last step's logits against ``y``, plus the auxiliary loss in training."""
        loss = F.cross_entropy(logits, y, label_smoothing=self.hparams.label_smoothing)
        if stage == "train" and self.hparams.aux_loss_weight > 0:
            loss = loss + self.hparams.aux_loss_weight * self._aux_loss(hs, y)
        return loss

    def _aux_loss(self, hs: Tensor, y: Tensor) -> Tensor:
        """Cross-entropy of every step's y_t = W_hy h_t + b_y, averaged over steps by ``aux_loss_profile``."""
        B, T, _ = hs.shape
        logits, target = self.model.encoder.readout(hs).flatten(0, 1), y.repeat_interleave(T)  # (B*T, C), (B*T,)
        if self.hparams.aux_loss_profile == "uniform":
            return F.cross_entropy(logits, target)
        w = torch.arange(1, T + 1, dtype=hs.dtype, device=hs.device) * (2 / (T + 1))  # (T,) step weights, mean 1
        return (F.cross_entropy(logits, target, reduction="none").view(B, T) * w).mean()

    def _raise_non_finite(self, what: str, index: Tensor, stage: str) -> None:
        split = STAGE_SPLITS[stage]
        files = []
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "files"):
            paths = datamodule.files(split)
            files = [paths[i] or SILENCE_CUT for i in index.tolist()[:5]]
        raise NonFiniteLossError(
            f"step {self.global_step}: {what}; batch files {files}{' ...' if len(index) > 5 else ''}; "
            "try a lower model.optimizer.lr, gradient clipping (trainer.gradient_clip_val), or check those clips")

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        every = self.hparams.diagnostics_every
        if every and self.global_step % every == 0:
            self._log_hidden_grads(batch)
        return self._step(batch, "train")

    def _log_hidden_grads(self, batch: Any) -> None:
        """||dL/dh_t|| over t on (part of) this batch: scalars to the logger, the curve to a JSONL file."""
        wave, y, _ = batch
        norms = hidden_grad_norms(self.model.encoder, self.model.frontend(wave[:32]), y[:32])  # (T,)
        self.log_dict({"diag/grad_h_first": norms[0], "diag/grad_h_last": norms[-1],
                       "diag/grad_h_first_over_last": norms[0] / norms[-1].clamp_min(1e-30)}, on_step=True)
        log_dir = getattr(self.logger, "log_dir", None) if self.logger else None
        if log_dir and self.trainer.is_global_zero:
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            with open(Path(log_dir) / "grad_norms.jsonl", "a") as f:
                f.write(json.dumps({"step": self.global_step, "grad_h": norms.tolist()}) + "\n")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "val")

    def configure_gradient_clipping(self, optimizer: Any, gradient_clip_val: float | None = None,
                                    gradient_clip_algorithm: str | None = None) -> None:
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        if not torch.isfinite(norm):
            self._raise_non_finite(f"the gradient norm is {norm.item()}", self._last_index, "train")
        if gradient_clip_val:
            if gradient_clip_algorithm == "value":
                fired = max(g.abs().max() for g in grads) > gradient_clip_val
            else:
                fired = norm > gradient_clip_val
            # the epoch mean of grad/clipped is how often clipping fired
            self.log_dict({"grad/norm_pre_clip": norm, "grad/clipped": fired.float()}, on_step=True, on_epoch=True)
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
        else:
            self.log("grad/norm_pre_clip", norm, on_step=True, on_epoch=False)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._last_index = batch[2]

    def on_train_epoch_end(self) -> None:
        encoder = self.model.encoder
        if hasattr(encoder, "spectral_radius"):
            self.log("diag/spectral_radius_W_hh", encoder.spectral_radius().max())

    def configure_optimizers(self) -> Any:
        optimizer = hydra.utils.instantiate(self.hparams.optimizer, params=self.parameters())
        if not self.hparams.scheduler:
            return optimizer
        # schedulers that plan a whole run (warmup_cosine, OneCycleLR) are told its length
        scheduler = hydra.utils.instantiate(self.hparams.scheduler, optimizer=optimizer,
                                            total_steps=int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 100,
                  min_lr_ratio: float = 0.02) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up for ``warmup_steps``, then cosine decay to ``min_lr_ratio`` of the peak at ``total_steps``."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
