"""The lip reader's loss, its predictions, and how they are scored: per-slot accuracy, word error
rate and character error rate (Levenshtein distance over words or characters, divided by the
reference's length, as jiwer and the GRID lip-reading papers define them)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from lipsync.data.alignments import SLOTS
from lipsync.models import lipreader


def loss(network: torch.nn.Module, batch: dict, device: torch.device) -> tuple[torch.Tensor,
                                                                                  torch.Tensor]:
    """(cross-entropy over the slot's words, number of correct predictions) of one batch."""
    logits = network(batch["mouths"].to(device), batch["slot"].to(device))
    words = batch["word"].to(device)
    return F.cross_entropy(logits, words), (logits.argmax(dim=1) == words).sum()


@torch.no_grad()
def predict(network: torch.nn.Module, examples: np.ndarray, slots: np.ndarray,
            device: torch.device, batch_size: int = 256) -> np.ndarray:
    """Word class of each example (uint8 N x T x rows x columns mouths, slot of each)."""
    network.eval()
    out = []
    for start in range(0, len(examples), batch_size):
        mouths = torch.from_numpy(examples[start:start + batch_size].astype(np.float32) / 255.0)
        slot = torch.from_numpy(np.asarray(slots[start:start + batch_size], dtype=np.int64))
        out.append(network(mouths.to(device), slot.to(device)).argmax(dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.empty(0, np.int64)


def edit_distance(reference: Sequence, hypothesis: Sequence) -> int:
    """Levenshtein distance: fewest substitutions, insertions and deletions."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, 1):
        current = [i]
        for j, hyp in enumerate(hypothesis, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1,
                               previous[j - 1] + (ref != hyp)))
        previous = current
    return previous[-1]


def word_error_rate(reference: str, hypothesis: str) -> float:
    words = reference.split()
    return edit_distance(words, hypothesis.split()) / max(len(words), 1)


def character_error_rate(reference: str, hypothesis: str) -> float:
    """Over the characters of the sentence, spaces included (jiwer.cer's convention)."""
    return edit_distance(reference, hypothesis) / max(len(reference), 1)


def sentences(classes: np.ndarray) -> list[str]:
    """Transcripts of consecutive groups of six word classes (one clip's slots)."""
    words = np.asarray(classes).reshape(-1, len(SLOTS))
    return [" ".join(lipreader.VOCABULARY[k] for k in row) for row in words]


def scores(predicted: np.ndarray, truth: np.ndarray) -> dict:
    """Per-slot accuracy, mean WER and CER of whole clips (six consecutive examples each),
    and chance per slot."""
    predicted = np.asarray(predicted).reshape(-1, len(SLOTS))
    truth = np.asarray(truth).reshape(-1, len(SLOTS))
    correct = predicted == truth
    hypotheses, references = sentences(predicted), sentences(truth)
    return {
        "clips": len(truth),
        "accuracy": float(correct.mean()) if correct.size else float("nan"),
        "slot_accuracy": {slot: float(correct[:, k].mean()) for k, slot in enumerate(SLOTS)},
        "chance": dict(lipreader.CHANCE),
        "wer": float(np.mean([word_error_rate(r, h) for r, h in zip(references, hypotheses,
                                                                    strict=True)])),
        "cer": float(np.mean([character_error_rate(r, h) for r, h in zip(references, hypotheses,
                                                                         strict=True)])),
    }
