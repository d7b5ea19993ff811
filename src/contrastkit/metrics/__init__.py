"""Numbers that tell: embedding geometry, retrieval and probes.

- :mod:`~contrastkit.metrics.geometry`: alignment, uniformity, modality gap, effective rank,
  neural / class collapse, representation harm, tolerance, class-centre similarity.
- :mod:`~contrastkit.metrics.retrieval`: Recall@K, MRR, mean / median rank, mAP, mAP@R, nDCG,
  ROC-AUC, Mean Rank Variance, intra- vs inter-modal retrieval; streamed over key chunks.
- :mod:`~contrastkit.metrics.probes`: kNN, linear probe, zero-shot, mean classifier.
- :mod:`~contrastkit.metrics.curves`: power-law fits of loss curves.

Example:
    >>> import torch
    >>> from contrastkit import metrics
    >>> img, txt = torch.randn(100, 32), torch.randn(100, 32)
    >>> sorted(metrics.retrieval_metrics(img, txt))[:3]
    ['R@1', 'R@10', 'R@5']
"""

from contrastkit.metrics.curves import PowerLaw, fit_power_law
from contrastkit.metrics.geometry import (
    NeuralCollapse,
    alignment,
    class_center_similarity,
    class_collapse,
    effective_rank,
    info_nce_mi_bound,
    modality_gap,
    neural_collapse,
    representation_harm,
    tolerance,
    uniformity,
)
from contrastkit.metrics.probes import (
    LinearProbe,
    knn_accuracy,
    knn_predict,
    linear_probe,
    mean_classifier_accuracy,
    zero_shot_accuracy,
)
from contrastkit.metrics.retrieval import (
    RelevantRanks,
    intra_inter_retrieval,
    map_at_r,
    mean_average_precision,
    mean_rank,
    mean_rank_variance,
    mean_reciprocal_rank,
    median_rank,
    ndcg,
    recall_at_k,
    relevant_ranks,
    retrieval_auc,
    retrieval_metrics,
    roc_auc,
)

__all__ = [
    "alignment",
    "uniformity",
    "modality_gap",
    "effective_rank",
    "NeuralCollapse",
    "neural_collapse",
    "class_collapse",
    "representation_harm",
    "tolerance",
    "class_center_similarity",
    "info_nce_mi_bound",
    "RelevantRanks",
    "relevant_ranks",
    "recall_at_k",
    "mean_reciprocal_rank",
    "mean_rank",
    "median_rank",
    "mean_average_precision",
    "map_at_r",
    "ndcg",
    "retrieval_auc",
    "roc_auc",
    "mean_rank_variance",
    "retrieval_metrics",
    "intra_inter_retrieval",
    "knn_predict",
    "knn_accuracy",
    "LinearProbe",
    "linear_probe",
    "zero_shot_accuracy",
    "mean_classifier_accuracy",
    "PowerLaw",
    "fit_power_law",
]
