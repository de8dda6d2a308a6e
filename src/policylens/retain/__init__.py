"""retain: fine-tune a policy on a new task while keeping its bridge features near a cached
teacher's (CRaFT: retention loss, A-GEM projection of conflicting gradients, dual ascent on λ;
``projection="active"`` for the rule that reaches the constrained optimum).

>>> student = student_extractor(model, open_store(cache).manifest)
>>> retainer = Retainer(model, lambda m, b: m(**b), student, RetentionConfig(epsilon=0.01))
>>> stats = retainer.backward(task_batch, anchor_batch)   # combined gradient now in .grad
>>> torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); optimizer.step()
"""

from ._anchors import AnchorSet
from ._dual import DualAscent
from ._loss import RETENTION_LOSSES, retention_loss
from ._projection import agem_project, grad_dot, pcgrad_combine
from ._retainer import METHODS, PROJECTIONS, Retainer, RetentionConfig
from ._task_stats import Z_LIMIT, StreamCheck, adopt_task_stats, check_task_stats
from ._train import RetainTrainConfig, check_retain_out, finished_message, open_anchors, retain_train, retention_step

__all__ = [
    "METHODS",
    "PROJECTIONS",
    "RETENTION_LOSSES",
    "Z_LIMIT",
    "AnchorSet",
    "DualAscent",
    "RetainTrainConfig",
    "Retainer",
    "RetentionConfig",
    "StreamCheck",
    "adopt_task_stats",
    "agem_project",
    "check_retain_out",
    "check_task_stats",
    "finished_message",
    "grad_dot",
    "open_anchors",
    "pcgrad_combine",
    "retain_train",
    "retention_loss",
    "retention_step",
]
