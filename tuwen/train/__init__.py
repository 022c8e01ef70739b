"""Fine-tuning CN-CLIP: CN-CLIP's own contrastive objective on image–caption pairs, resumable.

Split along a run's lifecycle, as cn_clip/training splits params, data, loop and schedule:
- `settings`: the config's train section resolved (recipe learning rate, precision) and
  the run's fingerprint;
- `data`: the pairs, their validation split, and the two image sources (pixels, or the
  base model's locked image features);
- `state`: the resumable state, the RNGs, and the file they are saved to;
- `loop`: the objective, the optimiser and schedule, the step and the epochs (FineTuner);
- `report`: the per-step log, validation before and after, the fine-tuned checkpoint.
Several models train as several runs of the same code, one job each.
"""

from tuwen.data.splits import is_validation
from tuwen.train.data import LockedImages, PixelImages, locked_features, split_pairs, training_pairs
from tuwen.train.loop import LOGIT_SCALE_MAX, FineTuner, _parameter_groups, contrastive_loss, pair_recall
from tuwen.train.options import (
    SPEED_FIELDS,
    TrainOptions,
    recipe_lr,
    resolve_settings,
    run_fingerprint,
)
from tuwen.train.report import save_fine_tuned, validation_rows, validation_summary, write_train_log
from tuwen.train.state import StateFile, TrainState

__all__ = [
    "LOGIT_SCALE_MAX",
    "SPEED_FIELDS",
    "FineTuner",
    "LockedImages",
    "PixelImages",
    "StateFile",
    "TrainOptions",
    "TrainState",
    "_parameter_groups",
    "contrastive_loss",
    "is_validation",
    "locked_features",
    "pair_recall",
    "recipe_lr",
    "resolve_settings",
    "run_fingerprint",
    "save_fine_tuned",
    "split_pairs",
    "training_pairs",
    "validation_rows",
    "validation_summary",
    "write_train_log",
]
