"""Metrics: classifier metrics with bootstrap CIs (`classification`, `subgroups`), and image-generation metrics."""

from ..lazy import lazy_exports
from .classification import (
    classification_metrics,
    compare_classifiers,
    comparison_to_markdown,
    confusion_matrix,
    format_entry,
    mcnemar_test,
    metrics_to_markdown,
    one_vs_rest_auc,
    plot_confusion_matrix,
    save_metrics,
)

# Lazy: the image-generation metrics import clean-fid, scikit-image, matplotlib. name -> module.
_EXPORTS = {
    "metrics_by_group": ".subgroups",
    "compare_by_group": ".subgroups",
    "subgroups_to_markdown": ".subgroups",
    "fixed_broken": ".fixed_broken",
    "fixed_broken_markdown": ".fixed_broken",
    "FeatureExtractor": ".features",
    "InceptionFeatures": ".features",
    "TorchvisionFeatures": ".features",
    "ClassifierFeatures": ".features",
    "load_extractor": ".features",
    "find_inception_weights": ".features",
    "FeatureSet": ".sources",
    "FolderSource": ".sources",
    "DatasetSource": ".sources",
    "ImageListSource": ".sources",
    "PipelineSource": ".sources",
    "compute_fid_kid": ".fid",
    "fid_with_ci": ".fid",
    "kid_with_ci": ".fid",
    "source_features": ".fid",
    "segment_lesion": ".fidelity",
    "placement_scores": ".fidelity",
    "class_fidelity": ".fidelity",
    "skin_tone_fidelity": ".fidelity",
    "ita_by_skin_type": ".fidelity",
    "nearest_neighbours": ".memorisation",
    "plot_nearest_pairs": ".memorisation",
    "plot_discriminator_gap": ".report",
    "render_report": ".report",
    "read_generated_set": ".generated",
    "write_generated_set": ".generated",
    "generate_evaluation_set": ".generated",
    "evaluate": ".evaluation",
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

# what `from dermdiff.metrics import *` gives: the classifier metrics imported above (the lazy names load on use)
__all__ = [
    "classification_metrics",
    "compare_classifiers",
    "comparison_to_markdown",
    "confusion_matrix",
    "format_entry",
    "mcnemar_test",
    "metrics_to_markdown",
    "one_vs_rest_auc",
    "plot_confusion_matrix",
    "save_metrics",
]
