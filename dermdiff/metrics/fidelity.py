"""Conditioning fidelity: is a generated image what its semantic map asked for?

A semantic map asks for a condition, a place and size, and a Fitzpatrick skin type. Each is checked
with an instrument that does not depend on the generator:

- class fidelity: a classifier trained on real images labels the samples; accuracy per requested condition;
- placement: the lesion is segmented in the sample (colour/contrast segmentation by default, any trained
  segmenter can be plugged in) and compared with the requested mask and box (IoU);
- skin tone: the Individual Typology Angle (ITA, `dermdiff.skin_tone`) of the non-lesion skin against real
  images of the requested type (or, for a type without real images, against the type's ITA band);
- sweeps (DermGAN figures 5 and 6): ITA along a skin-type sweep, segmented lesion area along a size sweep.

The default segmenter suits the phantom and clinical close-ups where skin fills most of the picture: the
lesion is what differs most from the typical skin colour. Per pixel, the CIELAB distance (Delta E 1976)
from the image's median colour is smoothed, split by Otsu's threshold, and the largest connected
component (holes filled) is kept; an image with no clear contrast gets an empty mask.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image


# ----------------------------------------------------------------------------------------------------------------
# segmentation and IoU
# ----------------------------------------------------------------------------------------------------------------
def segment_lesion(image, min_contrast: float = 8.0, smooth: float | None = None) -> np.ndarray:
    """Colour/contrast lesion segmentation: `(H, W)` bool mask of the region least like the typical skin.

    Args:
        image: PIL image or (H, W, 3) uint8 array.
        min_contrast (`float`, defaults to 8.0): the lesion's mean Delta E from the skin colour must exceed the
            rest's by this much, else the image is taken as healthy (empty mask).
        smooth (`float`, *optional*): Gaussian sigma in pixels before thresholding; default side / 64 (>= 1),
            so pores and single hairs do not split the lesion.
    """
    from scipy import ndimage
    from skimage.filters import gaussian, threshold_otsu
    from skimage.measure import label

    from ..skin_tone import srgb_to_lab

    lab = srgb_to_lab(image)
    distance = np.linalg.norm(lab - np.median(lab.reshape(-1, 3), axis=0), axis=-1)
    sigma = smooth if smooth is not None else max(1.0, min(distance.shape) / 64)
    distance = gaussian(distance, sigma=sigma, preserve_range=True)
    if np.ptp(distance) < 1e-6:
        return np.zeros(distance.shape, dtype=bool)
    mask = distance > threshold_otsu(distance)
    components = label(mask, connectivity=2)
    if components.max() == 0:
        return mask
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    mask = ndimage.binary_fill_holes(components == sizes.argmax())
    if not (~mask).any() or distance[mask].mean() - distance[~mask].mean() < min_contrast:
        return np.zeros(distance.shape, dtype=bool)
    return mask


def mask_iou(predicted: np.ndarray, target: np.ndarray) -> float:
    """Intersection over union of two bool masks (1.0 when both are empty)."""
    predicted, target = np.asarray(predicted, dtype=bool), np.asarray(target, dtype=bool)
    if predicted.shape != target.shape:
        raise ValueError(f"mask shapes differ: {predicted.shape} vs {target.shape}")
    union = np.logical_or(predicted, target).sum()
    return 1.0 if union == 0 else float(np.logical_and(predicted, target).sum() / union)


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) bounding box of a mask (x1, y1 exclusive), `None` when empty."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def box_iou(box1, box2) -> float:
    """IoU of two (x0, y0, x1, y1) boxes; 0 when one is missing."""
    if box1 is None or box2 is None:
        return 0.0
    ix = max(0, min(box1[2], box2[2]) - max(box1[0], box2[0]))
    iy = max(0, min(box1[3], box2[3]) - max(box1[1], box2[1]))
    inter = ix * iy
    area = (box1[2] - box1[0]) * (box1[3] - box1[1]) + (box2[2] - box2[0]) * (box2[3] - box2[1]) - inter
    return float(inter / area) if area > 0 else 0.0


def _fit(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a bool mask to (H, W), for maps drawn at another resolution."""
    if mask.shape == tuple(size):
        return mask
    image = Image.fromarray(mask.astype(np.uint8) * 255).resize((size[1], size[0]), Image.NEAREST)
    return np.asarray(image) > 127


def _image_size(image) -> tuple[int, int]:
    return (image.size[1], image.size[0]) if isinstance(image, Image.Image) else tuple(np.asarray(image).shape[:2])


def placement_scores(images: Sequence, maps: Sequence, segmenter: Callable | None = None) -> dict:
    """IoU between the lesion found in each image and the one its map asked for.

    Args:
        images: generated images (PIL or uint8 arrays).
        maps (`Sequence[SemanticMap]`): the requested maps, one per image.
        segmenter (`Callable`, *optional*): image -> (H, W) bool mask; default `segment_lesion`.

    Returns:
        `dict` with `per_image` (condition, skin type, `iou_mask`, `iou_box`), `per_condition` and `overall`
        (mean IoUs and counts); healthy maps (no lesion asked for) are left out.
    """
    if len(images) != len(maps):
        raise ValueError(f"got {len(images)} images for {len(maps)} maps")
    segmenter = segmenter or segment_lesion
    rows = []
    for image, smap in zip(images, maps):
        if smap.condition is None:
            continue
        size = _image_size(image)
        target = _fit(smap.lesion_mask, size)
        predicted = np.asarray(segmenter(image), dtype=bool)
        rows.append({"condition": smap.condition, "skin_type": smap.skin_type or 0,
                     "iou_mask": mask_iou(predicted, target),
                     "iou_box": box_iou(mask_box(predicted), mask_box(target))})
    return {"per_image": rows, "per_condition": _mean_by(rows, "condition", ("iou_mask", "iou_box")),
            "overall": _mean_by(rows, None, ("iou_mask", "iou_box")).get("all", {})}


def _mean_by(rows: list[dict], key: str | None, fields: Sequence[str]) -> dict:
    groups = defaultdict(list)
    for row in rows:
        groups[str(row[key]) if key else "all"].append(row)
    return {name: {"n": len(group), **{f: float(np.mean([r[f] for r in group])) for f in fields}}
            for name, group in sorted(groups.items())}


# ----------------------------------------------------------------------------------------------------------------
# class fidelity
# ----------------------------------------------------------------------------------------------------------------
def _classifier_predict(classifier, batch_size: int = 32, device: str = "cpu") -> Callable:
    """A function images -> predicted names from a dermdiff `SkinClassifier` (images resized to its size)."""
    classifier = classifier.to(device).eval()
    size = int(getattr(classifier.config, "image_size", 224))
    names = list(classifier.config.label_names)

    def predict(images):
        predictions = []
        for start in range(0, len(images), batch_size):
            arrays = [np.asarray(_as_pil(im).resize((size, size), Image.BICUBIC), dtype=np.float32)
                      for im in images[start:start + batch_size]]
            batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).to(device) / 127.5 - 1.0
            predictions.extend(names[i] for i in classifier.predict_proba(batch).argmax(-1).tolist())
        return predictions

    return predict


def _as_pil(image) -> Image.Image:
    return image.convert("RGB") if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))


def class_fidelity(images: Sequence, requested: Sequence[str], classifier, batch_size: int = 32,
                   device: str = "cpu") -> dict:
    """Accuracy of a real-data classifier on generated images, per requested condition.

    Args:
        images: generated images.
        requested (`Sequence[str]`): the condition each image was generated for.
        classifier: a dermdiff `SkinClassifier`, or any callable images -> predicted condition names.

    Returns:
        `dict`: `per_condition` ({name: {n, accuracy, predicted: {name: count}}}), `overall` ({n, accuracy}),
        `not_in_classifier` (requested conditions the classifier cannot predict; left out of the accuracy).
    """
    if len(images) != len(requested):
        raise ValueError(f"got {len(images)} images for {len(requested)} requested conditions")
    known = None
    if hasattr(classifier, "predict_proba"):
        known = set(classifier.config.label_names)
        classifier = _classifier_predict(classifier, batch_size, device)
    keep = [i for i, name in enumerate(requested) if name and (known is None or name in known)]
    predicted = classifier([images[i] for i in keep]) if keep else []
    per_condition = defaultdict(lambda: {"n": 0, "correct": 0, "predicted": defaultdict(int)})
    for i, guess in zip(keep, predicted):
        entry = per_condition[requested[i]]
        entry["n"] += 1
        entry["correct"] += int(guess == requested[i])
        entry["predicted"][guess] += 1
    table = {name: {"n": e["n"], "accuracy": e["correct"] / e["n"], "predicted": dict(e["predicted"])}
             for name, e in sorted(per_condition.items())}
    total = sum(e["n"] for e in table.values())
    correct = sum(e["accuracy"] * e["n"] for e in table.values())
    missing = sorted({name for name in requested if name} - (known or set(requested)))
    return {"per_condition": table, "overall": {"n": total, "accuracy": correct / total if total else float("nan")},
            "not_in_classifier": missing}


# ----------------------------------------------------------------------------------------------------------------
# skin tone
# ----------------------------------------------------------------------------------------------------------------
def skin_ita(image, lesion_mask: np.ndarray | None = None, segmenter: Callable | None = segment_lesion) -> float:
    """Median ITA of the non-lesion skin: the given lesion mask and the segmented lesion are both left out."""
    from ..skin_tone import image_ita

    size = _image_size(image)
    exclude = np.zeros(size, dtype=bool)
    if lesion_mask is not None:
        exclude |= _fit(np.asarray(lesion_mask, dtype=bool), size)
    if segmenter is not None:
        exclude |= np.asarray(segmenter(image), dtype=bool)
    if exclude.all():
        exclude[:] = False  # nothing left: measure the whole picture rather than fail
    return image_ita(image, lesion_mask=exclude)


def ita_by_skin_type(images: Sequence, skin_types: Sequence, lesion_masks: Sequence | None = None,
                     segmenter: Callable | None = segment_lesion) -> dict:
    """Per Fitzpatrick type: number of images, median ITA and its quartiles (unknown types left out).

    Used on real photos (e.g. PAD-UFES-20, which has Fitzpatrick labels) as the reference for generated skin.
    """
    values = defaultdict(list)
    for index, (image, skin_type) in enumerate(zip(images, skin_types)):
        if not skin_type:
            continue
        mask = lesion_masks[index] if lesion_masks is not None else None
        values[int(skin_type)].append(skin_ita(image, mask, segmenter))
    return {str(t): _ita_summary(values[t]) for t in sorted(values)}


def _ita_summary(values: Sequence[float]) -> dict:
    q25, median, q75 = np.percentile(values, [25, 50, 75])
    return {"n": len(values), "median": float(median), "q25": float(q25), "q75": float(q75)}


def skin_tone_fidelity(images: Sequence, maps: Sequence, reference: dict | None = None,
                       segmenter: Callable | None = segment_lesion) -> dict:
    """ITA of each generated image's skin against real images of the requested Fitzpatrick type.

    Args:
        images: generated images; maps (`Sequence[SemanticMap]`): what was requested.
        reference (`dict`, *optional*): `ita_by_skin_type` of real images. A type without real images is
            compared with the centre of its ITA band instead (types I and VI: 5 degrees inside the open end).

    Returns:
        `dict` per requested type: `n`, `median_ita`, `reference_ita`, `reference` ("real" or "band"),
        `error` (median generated - reference), `mean_abs_error` (per image), `band_accuracy` (share whose ITA
        falls in the type's band), plus `overall` mean absolute error and band accuracy.
    """
    from ..skin_tone import ita_to_skin_type, skin_type_ita_range

    measured = defaultdict(list)
    for image, smap in zip(images, maps):
        if smap.skin_type:
            measured[int(smap.skin_type)].append(skin_ita(image, smap.lesion_mask, segmenter))
    reference = reference or {}
    per_type = {}
    for skin_type in sorted(measured):
        values = np.array(measured[skin_type])
        if str(skin_type) in reference and reference[str(skin_type)]["n"] > 0:
            target, kind = reference[str(skin_type)]["median"], "real"
        else:
            low, high = skin_type_ita_range(skin_type)
            target, kind = ((low + 5.0) if np.isinf(high) else (high - 5.0) if np.isinf(low) else (low + high) / 2,
                            "band")
        per_type[str(skin_type)] = {
            "n": int(values.size), "median_ita": float(np.median(values)), "reference_ita": float(target),
            "reference": kind, "error": float(np.median(values) - target),
            "mean_abs_error": float(np.abs(values - target).mean()),
            "band_accuracy": float(np.mean(np.asarray(ita_to_skin_type(values)) == skin_type)),
        }
    n = sum(v["n"] for v in per_type.values())
    overall = {"n": n}
    if n:
        overall["mean_abs_error"] = sum(v["mean_abs_error"] * v["n"] for v in per_type.values()) / n
        overall["band_accuracy"] = sum(v["band_accuracy"] * v["n"] for v in per_type.values()) / n
    return {"per_type": per_type, "overall": overall}


# ----------------------------------------------------------------------------------------------------------------
# sweeps
# ----------------------------------------------------------------------------------------------------------------
def skin_type_sweep_scores(images: Sequence, maps: Sequence, segmenter: Callable | None = segment_lesion) -> dict:
    """ITA per swept Fitzpatrick type (one image per type of `SemanticMap.skin_type_sweep`).

    Returns rows (`skin_type`, `ita`, `measured_type`) and `monotonic`: whether ITA falls as the type rises
    (darker skin has a lower ITA), the property a skin-type control must have.
    """
    from ..skin_tone import ita_to_skin_type

    rows = []
    for image, smap in zip(images, maps):
        ita = skin_ita(image, smap.lesion_mask, segmenter)
        rows.append({"skin_type": int(smap.skin_type or 0), "ita": ita, "measured_type": int(ita_to_skin_type(ita))})
    rows.sort(key=lambda row: row["skin_type"])
    itas = [row["ita"] for row in rows]
    return {"rows": rows, "monotonic": bool(all(a > b for a, b in zip(itas, itas[1:])))}


def size_sweep_scores(images: Sequence, maps: Sequence, factors: Sequence[float] | None = None,
                      segmenter: Callable | None = None) -> dict:
    """Requested vs segmented lesion area (share of the image) per swept size (`SemanticMap.size_sweep`).

    Returns rows (`factor`, `requested_area`, `measured_area`, `iou_mask`) and `spearman` between requested
    and measured areas (1.0 = the lesion grows whenever asked to).
    """
    from scipy.stats import spearmanr

    segmenter = segmenter or segment_lesion
    rows = []
    for index, (image, smap) in enumerate(zip(images, maps)):
        size = _image_size(image)
        target = _fit(smap.lesion_mask, size)
        predicted = np.asarray(segmenter(image), dtype=bool)
        rows.append({"factor": float(factors[index]) if factors is not None else float(index),
                     "requested_area": float(target.mean()), "measured_area": float(predicted.mean()),
                     "iou_mask": mask_iou(predicted, target)})
    requested, measured = [r["requested_area"] for r in rows], [r["measured_area"] for r in rows]
    rho = float(spearmanr(requested, measured).statistic) if len(rows) > 2 and np.ptp(measured) > 0 else float("nan")
    return {"rows": rows, "spearman": rho}

