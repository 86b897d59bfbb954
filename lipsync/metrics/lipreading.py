"""Do the lips say the words? Word and character error rates of each generated clip as the GRID
lip reader (lipsync.models.lipreader, trained by `lipsync train-lipreader`) reads it, against
the clip's GRID transcript (its `.align` words).

The lip reader classifies each of the six grammar slots from the mouths of the word's aligned
span; a clip's transcript is those six words. WER and CER are Levenshtein distances over words
and characters divided by the transcript's length (jiwer's definitions); the real video's score
is the ceiling a generator can reach with this reader, the identity copy's a floor. Per-slot
accuracy is in the summary (`extra`). n/a with the reason when no lip reader is configured.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lipsync.core.errors import LipsyncError
from lipsync.core.options import Option, resolve
from lipsync.data import alignments
from lipsync.experts.lipread import objective
from lipsync.experts.lipread.dataset import clip_examples
from lipsync.metrics.base import Batch, Column, Context, Metric, Result
from lipsync.metrics.registry import register_metric
from lipsync.models import lipreader

OPTIONS = {
    "weights": Option("results/lipreader/lipreader.pt", str, "The lip reader (lipsync "
                      "train-lipreader's lipreader.pt); empty: wer and cer are n/a."),
    "words": Option("results/alignments/{speaker}.tsv", str, "Word tables of the test clips "
                    "({speaker} is filled in; lipsync words)."),
}
NO_WORDS = "no GRID word alignment for the clip"


def settings(options: dict | None) -> dict:
    return resolve(OPTIONS, options, "evaluate.wer (and evaluate.cer)")


def _inputs(options: dict) -> list[str]:
    s = settings(options)
    return [s["weights"], s["words"]] if s["weights"] else []


def _protocol(options: dict) -> dict:
    s = settings(options)
    return {"definition": "WER/CER = Levenshtein distance over words/characters (spaces "
                          "included) / the GRID transcript's length, per clip; mean over clips",
            "reader": "lipsync.models.lipreader: per-slot word classification over GRID's "
                      "grammar from grey mouth crops of each aligned word span",
            "weights": s["weights"] or "none configured", "transcripts": s["words"],
            "chance_per_slot": dict(lipreader.CHANCE),
            "ceiling": "the real video's score (system real); floor: the identity copy"}


class _Transcriber:
    """Collects the generated mouths of every sample; reads each clip once at the end."""

    def __init__(self, options: dict, context: Context):
        s = settings(options)
        if not s["weights"]:
            raise LipsyncError("evaluate.wer.weights is empty: no lip reader configured")
        from lipsync.experts.lipread.train import load_lipreader

        self.context = context
        self.network, state = load_lipreader(s["weights"], context.device)
        self.model_options = state["model_options"]
        speakers = sorted(set(context.samples["speaker"]))
        self.words = alignments.read_words([s["words"].format(speaker=k) for k in speakers])
        self.mouths: list[np.ndarray] = []

    def update(self, batch: Batch) -> None:
        self.mouths.append(lipreader.mouth_crops(batch.generated, self.model_options))

    def read(self) -> pd.DataFrame:
        mouths = np.concatenate(self.mouths)
        fps = float(self.context.test_set.packing_config.get("video", {}).get("fps", 25.0))
        rows = []
        for (speaker, clip), group in self.context.samples.groupby(["speaker", "clip"],
                                                                   sort=False):
            words = self.words.get((speaker, clip))
            if words is None:
                rows.append({"speaker": speaker, "clip": clip, "wer": np.nan, "cer": np.nan})
                continue
            group = group.sort_values("frame")
            examples = clip_examples(mouths[group["sample"].to_numpy()],
                                     group["frame"].to_numpy(), words,
                                     self.model_options["frames"], fps)
            slots = np.arange(len(alignments.SLOTS))
            predicted = objective.predict(self.network, examples, slots, self.context.device)
            truth = np.array([lipreader.WORD_INDEX[w.word] for w in words])
            scores = objective.scores(predicted, truth)
            rows.append({"speaker": speaker, "clip": clip, "wer": scores["wer"],
                         "cer": scores["cer"],
                         **{f"correct_{slot}": float(predicted[k] == truth[k])
                            for k, slot in enumerate(alignments.SLOTS)}})
        return pd.DataFrame(rows)


class _LipReading(Metric):
    """wer and cer: the same options (evaluate.wer, evaluate.cer) and, when those agree, one
    transcription per job."""

    column = ""

    @classmethod
    def protocol(cls, options: dict) -> dict:
        return _protocol(options)

    @classmethod
    def inputs(cls, options: dict) -> list[str]:
        return _inputs(options)

    def __init__(self, options: dict, context: Context):
        super().__init__(options, context)
        s = settings(options)
        key = ("lipreading", s["weights"], s["words"])
        self.transcriber = context.shared(key, lambda: _Transcriber(options, context))
        self.feeds = context.shared((*key, "feeder"), lambda: self.name)
        self.key = key

    def update(self, batch: Batch) -> None:
        if self.feeds == self.name:  # one metric collects the mouths for both
            self.transcriber.update(batch)

    def result(self) -> Result:
        table = self.context.shared((*self.key, "clips"), self.transcriber.read)
        missing = int(table[self.column].isna().sum())
        slots = {slot: float(table[f"correct_{slot}"].mean())
                 for slot in alignments.SLOTS if f"correct_{slot}" in table}
        return Result(table[["speaker", "clip", self.column]],
                      missing={NO_WORDS: missing} if missing else {},
                      extra={"slot_accuracy": slots, "chance_per_slot": dict(lipreader.CHANCE)})


@register_metric("wer", level="clip", options=OPTIONS,
                 description="word error rate of the GRID lip reader on the generated mouths",
                 columns=(Column("wer", "word error rate of the lip reader against the GRID "
                                        "transcript", higher_is_better=False, decimals=3),))
class WordErrorRate(_LipReading):
    """Lip-reading word error rate against GRID's transcript."""

    column = "wer"


@register_metric("cer", level="clip", options=OPTIONS,
                 description="character error rate of the GRID lip reader on the generated "
                             "mouths",
                 columns=(Column("cer", "character error rate of the lip reader against the "
                                        "GRID transcript", higher_is_better=False, decimals=3),))
class CharacterErrorRate(_LipReading):
    """Lip-reading character error rate against GRID's transcript."""

    column = "cer"
