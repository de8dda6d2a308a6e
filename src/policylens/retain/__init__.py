"""retain: fine-tune a policy on a new task while keeping its bridge features near a cached
teacher's (CRaFT: retention loss, A-GEM projection of conflicting gradients, dual ascent on λ;
``projection="active"`` for the rule that reaches the constrained optimum). Each method
(``plain``, ``fixed``, ``pcgrad``, ``agem``, ``craft``) is one :class:`RetentionMethod` class.

>>> student = student_extractor(model, open_store(cache).manifest)
>>> retainer = Retainer(model, lambda m, b: m(**b), student, RetentionConfig(epsilon=0.01))
>>> stats = retainer.backward(task_batch, anchor_batch)   # combined gradient now in .grad
>>> torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); optimizer.step()
"""

from ._anchors import ANCHOR_FEATURES, AnchorSet
from ._data_parallel import task_retainer
from ._dual import DualAscent
from ._loss import RETENTION_LOSSES, retention_loss
from ._methods import AGEM, METHOD_TYPES, CRaFT, Fixed, PCGrad, Plain, RetentionMethod, make_method
from ._policy_train import PolicyTrainConfig, check_trainable, policy_train
from ._projection import agem_project, grad_dot, pcgrad_combine
from ._retainer import METHODS, PROJECTIONS, Retainer, RetentionConfig
from ._task_stats import Z_LIMIT, StreamCheck, adopt_task_stats, check_task_stats
from ._train import RetainTrainConfig, check_retain_out, finished_message, open_anchors, retain_train, retention_step

__all__ = [
    "AGEM",
    "ANCHOR_FEATURES",
    "METHODS",
    "METHOD_TYPES",
    "PROJECTIONS",
    "RETENTION_LOSSES",
    "Z_LIMIT",
    "AnchorSet",
    "CRaFT",
    "DualAscent",
    "Fixed",
    "PCGrad",
    "Plain",
    "PolicyTrainConfig",
    "RetainTrainConfig",
    "Retainer",
    "RetentionConfig",
    "RetentionMethod",
    "StreamCheck",
    "adopt_task_stats",
    "agem_project",
    "check_retain_out",
    "check_task_stats",
    "check_trainable",
    "finished_message",
    "grad_dot",
    "make_method",
    "open_anchors",
    "pcgrad_combine",
    "policy_train",
    "retain_train",
    "retention_loss",
    "retention_step",
    "task_retainer",
]
