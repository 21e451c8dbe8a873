"""Metrics: classifier metrics with bootstrap CIs (`classification`), and image-generation metrics."""

from .classification import (
    classification_metrics,
    compare_classifiers,
    comparison_to_markdown,
    confusion_matrix,
    mcnemar_test,
    metrics_to_markdown,
    one_vs_rest_auc,
    plot_confusion_matrix,
    save_metrics,
)
